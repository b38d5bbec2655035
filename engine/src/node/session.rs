//! Sessions in the node API. In a serve graph (`vidflow serve`), many independent streams,
//! *sessions*, share one running graph: a `session-in` source brings their items in, every node
//! after it is shared by all of them (a batched input forms batches across sessions), and a
//! `session-out` sink hands each result back to its own session. Every item on an edge carries
//! its [`SessionId`] on the envelope the executor moves ([`Msg`]), not inside the payload, so
//! any payload type works in a session; a batch run's items all carry [`SessionId::NONE`].
//!
//! A session's start and end travel along the edges too, in order with its items: the
//! executor opens a node's per-session state when the start reaches it, and at the end (once
//! it has arrived on every connected input, so after the session's last item) calls
//! [`Process::end_session`](super::Process::end_session), drops the state and passes the end
//! on. A node kind says how it treats sessions with [`NodeKind::sessions`](super::NodeKind):
//! [`SessionUse::Stateless`] (each output depends on one input item; kinds declared
//! `Temporal::PerItem` are stateless without saying so) or [`SessionUse::PerSession`] (it
//! keeps its state across items in a [`SessionState`], one per session, returned from
//! [`Process::session_state`](super::Process::session_state)). `vidflow check` refuses a serve
//! graph with a node that declares neither, since its state would mix sessions.
//!
//! ```
//! use vidflow_engine::{Emitter, Input, NodeError, Payload, Process};
//! use vidflow_engine::node::{SessionState, SessionStore};
//!
//! /// Numbers each session's items 0, 1, 2… (state: the next number, one per session).
//! struct Counter {
//!     next: SessionState<u64>,
//! }
//! impl Process for Counter {
//!     fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
//!         for (i, _item) in input.items.iter().enumerate() {
//!             let session = input.session(i);
//!             let n = self.next.get(session);
//!             out.emit_for(0, session, Payload::record(serde_json::json!({ "n": *n })))?;
//!             *n += 1;
//!         }
//!         Ok(())
//!     }
//!     fn session_state(&mut self) -> Option<&mut dyn SessionStore> {
//!         Some(&mut self.next)
//!     }
//! }
//! let _ = Counter { next: SessionState::new(|_| 0) };
//! ```

use crate::payload::Payload;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::fmt;

/// Which session an item belongs to. Ids are given by the session hub, from 1;
/// [`SessionId::NONE`] (0) marks the items of a batch run, which has no sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl SessionId {
    /// No session: the items of a batch run.
    pub const NONE: SessionId = SessionId(0);
    /// Crate-private marker: "the session of the input item in the same position" (a plain
    /// `emit` inside a call on a batch of several sessions).
    pub(crate) const POSITIONAL: SessionId = SessionId(u64::MAX);

    pub fn is_none(self) -> bool {
        self == SessionId::NONE
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            f.write_str("no session")
        } else {
            write!(f, "session {}", self.0)
        }
    }
}

/// The sessions of an [`Input`](super::Input)'s items, one per item (stored inline for one).
pub type SessionTags = SmallVec<[SessionId; 1]>;

/// How a node kind treats sessions in a serve graph (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionUse {
    /// Each output depends on one input item only: the node may serve every session at once,
    /// and a batch may hold items of several sessions.
    Stateless,
    /// The node keeps state across items, one [`SessionState`] per session.
    PerSession,
    /// A source that brings sessions' items into the graph (`session-in`); it starts and
    /// ends each session downstream ([`Emitter::open_session`](super::Emitter::open_session)).
    Entry,
    /// A sink that hands each item back to its own session (`session-out`).
    Exit,
}

/// What the executor drives on a node with per-session state: it opens a session's state
/// when the session starts and closes (drops) it when the session ends.
pub trait SessionStore: Send {
    fn open(&mut self, session: SessionId);
    fn close(&mut self, session: SessionId);
    /// How many sessions have state now.
    fn open_count(&self) -> usize;
}

/// Per-session state: one `S` per open session, made by `init` when the session starts and
/// dropped when it ends. In a batch run (no sessions) the one state of [`SessionId::NONE`] is
/// made at first use and lives for the run, so the same node code serves both.
pub struct SessionState<S> {
    states: HashMap<SessionId, S>,
    init: Box<dyn Fn(SessionId) -> S + Send>,
}

impl<S: Send> SessionState<S> {
    pub fn new(init: impl Fn(SessionId) -> S + Send + 'static) -> SessionState<S> {
        SessionState {
            states: HashMap::new(),
            init: Box::new(init),
        }
    }
    /// The state of `session` (made now if the session has none yet).
    pub fn get(&mut self, session: SessionId) -> &mut S {
        let init = &self.init;
        self.states.entry(session).or_insert_with(|| init(session))
    }
    /// The state of `session`, if it has one.
    pub fn existing(&mut self, session: SessionId) -> Option<&mut S> {
        self.states.get_mut(&session)
    }
    /// Takes a session's state out (it is made anew on the next [`SessionState::get`]).
    pub fn take(&mut self, session: SessionId) -> Option<S> {
        self.states.remove(&session)
    }
    /// Every open session's state (`finish` flushes them in a batch run).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SessionId, &mut S)> {
        self.states.iter_mut().map(|(k, v)| (*k, v))
    }
    pub fn len(&self) -> usize {
        self.states.len()
    }
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

impl<S: Send> SessionStore for SessionState<S> {
    fn open(&mut self, session: SessionId) {
        self.get(session);
    }
    fn close(&mut self, session: SessionId) {
        self.states.remove(&session);
    }
    fn open_count(&self) -> usize {
        self.states.len()
    }
}

/// What travels on an edge: an item with its session, or a session's start or end (sent to
/// every consumer, in order with the session's items).
#[derive(Clone, Debug)]
pub(crate) enum Msg {
    Item(Payload, SessionId),
    Open(SessionId),
    Close(SessionId),
}

/// Counts a session's starts and ends over a node's connected inputs, so the node acts on the
/// first start and on the end that arrives last (after the session's items on every input).
#[derive(Default)]
pub(crate) struct SessionGate {
    inputs: usize,
    /// Open sessions and how many of the inputs have ended them.
    open: HashMap<SessionId, usize>,
}

impl SessionGate {
    pub fn new(inputs: usize) -> SessionGate {
        SessionGate {
            inputs: inputs.max(1),
            open: HashMap::new(),
        }
    }
    /// The control to act on now, if any.
    pub fn on(&mut self, msg: Msg) -> Option<Msg> {
        match msg {
            Msg::Open(s) => {
                if self.open.contains_key(&s) {
                    return None;
                }
                self.open.insert(s, 0);
                Some(Msg::Open(s))
            }
            Msg::Close(s) => {
                let seen = self.open.entry(s).or_insert(0);
                *seen += 1;
                if *seen >= self.inputs {
                    self.open.remove(&s);
                    Some(Msg::Close(s))
                } else {
                    None
                }
            }
            item @ Msg::Item(..) => Some(item),
        }
    }
}
