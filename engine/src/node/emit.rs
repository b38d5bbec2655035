//! What a node receives and how it hands on what it makes: [`Input`] (one item or a batch on
//! one port), [`End`] (how the stream ended), and [`Emitter`], the handle a node emits through.
//! The executor plugs in behind the crate-private [`Io`] trait, so node code depends on this
//! module only and never on the executor.

use super::NodeError;
use super::session::{Msg, SessionId, SessionTags};
use crate::payload::Payload;
use smallvec::SmallVec;

/// The items of one [`Input`]: a vector that holds one item inline. Most calls carry a single
/// un-batched item, and a `Vec` would cost a heap allocation (and a free) per item per node;
/// batches live on the heap as in a `Vec`. It reads like a `Vec<Payload>`: it derefs to
/// `[Payload]` (`len`, `iter`, `first`, indexing…), iterates by value or by reference, and
/// has `push`, `pop`, `drain`…; `Items::from_vec(v)` or `v.into()` makes one from a `Vec`,
/// `items.into_vec()` turns it back.
pub type Items = SmallVec<[Payload; 1]>;

/// A batch (or a single item) arriving on one input port.
#[derive(Debug)]
pub struct Input {
    /// Index of the port in the kind's declared inputs.
    pub port: usize,
    pub items: Items,
    /// The session of each item, in the same order (see [`super::session`]); all
    /// [`SessionId::NONE`] in a batch run. In a serve graph a batch may hold items of several
    /// sessions.
    pub sessions: SessionTags,
}

impl Input {
    /// One un-batched item (stored inline: no allocation).
    pub fn one(port: usize, item: Payload) -> Input {
        Input::one_of(port, item, SessionId::NONE)
    }
    /// A batch (of more than one item, the `Vec`'s buffer is kept, not copied).
    pub fn batch(port: usize, items: Vec<Payload>) -> Input {
        let sessions = SessionTags::from_elem(SessionId::NONE, items.len());
        Input {
            port,
            items: Items::from_vec(items),
            sessions,
        }
    }
    /// One item of `session`.
    pub fn one_of(port: usize, item: Payload, session: SessionId) -> Input {
        Input {
            port,
            items: Items::from_buf([item]),
            sessions: SessionTags::from_buf([session]),
        }
    }
    /// A batch whose items belong to `sessions` (one per item).
    pub fn batch_of(port: usize, items: Vec<Payload>, sessions: Vec<SessionId>) -> Input {
        debug_assert_eq!(items.len(), sessions.len());
        Input {
            port,
            items: Items::from_vec(items),
            sessions: SessionTags::from_vec(sessions),
        }
    }
    /// The session of item `i` ([`SessionId::NONE`] past the end).
    pub fn session(&self, i: usize) -> SessionId {
        self.sessions.get(i).copied().unwrap_or_default()
    }
    /// The one session all items belong to, or `None` when the batch mixes sessions.
    pub fn single_session(&self) -> Option<SessionId> {
        let first = self.session(0);
        self.sessions.iter().all(|s| *s == first).then_some(first)
    }
}

/// How the stream ended, given to `finish`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every input reached its end normally: flush and finalise outputs.
    Complete,
    /// The run is stopping early (Ctrl-C or a failure elsewhere): close files so they are valid,
    /// but do not present them as finished.
    Stopped,
}

/// The runner's side of one node, as its [`Emitter`] sees it. The executor implements it over
/// its channels and counters; the test harness over plain vectors.
pub(crate) trait Io: Sync {
    /// True once the run is stopping.
    fn stopping(&self) -> bool;
    /// Sends `msg` on output `port` at once (blocking while a queue is full); false when no
    /// consumer of any port is left.
    fn send(&self, port: usize, msg: Msg) -> bool;
    /// Sends a session's start or end to every consumer of every port.
    fn broadcast(&self, msg: Msg) -> bool;
    /// How many items the node will emit in all (progress ETA).
    fn set_total(&self, n: u64);
    /// How many items the node will emit on output `port`.
    fn set_port_total(&self, port: usize, n: u64);
    /// Progress inside one call: `done` of `total` units (0 of 0: none).
    fn set_work(&self, done: u64, total: u64);
}

/// The outputs of one `process` call, held until the call succeeds. Items and their ports are
/// kept side by side rather than as `(port, item)` pairs: each item is then moved into and out
/// of the buffer as it is, with no pair built around it on the stack. (Copying such pairs made
/// the CPU stall on every item; in the chain benchmark this cut the pass-through nodes' own
/// time per item by about a third.)
///
/// A session's start or end goes to every port: its port is [`Outbox::EVERY_PORT`].
#[derive(Default)]
pub(crate) struct Outbox {
    items: Vec<Msg>,
    ports: Vec<usize>,
}

impl Outbox {
    /// The port of a message for every consumer (a session's start or end).
    pub const EVERY_PORT: usize = usize::MAX;

    #[inline]
    pub(crate) fn push(&mut self, port: usize, item: Msg) {
        self.items.push(item);
        self.ports.push(port);
    }
    /// Gives the outputs of a call on a batch of several sessions that were emitted with a
    /// plain `emit` the session of the input item in the same position, port by port: the
    /// k-th such output on a port belongs to the session of item k. Fails (with the port,
    /// the count and the batch size) when a port's count is not the batch size.
    pub(crate) fn assign_positional(
        &mut self,
        sessions: &[SessionId],
    ) -> Result<(), (usize, usize)> {
        let mut next: Vec<(usize, usize)> = vec![];
        for (item, port) in self.items.iter_mut().zip(&self.ports) {
            let Msg::Item(_, s) = item else { continue };
            if *s != SessionId::POSITIONAL {
                continue;
            }
            let k = match next.iter_mut().find(|(p, _)| p == port) {
                Some((_, k)) => k,
                None => {
                    next.push((*port, 0));
                    &mut next.last_mut().expect("pushed").1
                }
            };
            *s = sessions.get(*k).copied().unwrap_or(SessionId::POSITIONAL);
            *k += 1;
        }
        match next.into_iter().find(|(_, k)| *k != sessions.len()) {
            Some((port, k)) => Err((port, k)),
            None => Ok(()),
        }
    }
    /// Moves every output of `other` after this one's.
    pub(crate) fn append(&mut self, other: &mut Outbox) {
        self.items.append(&mut other.items);
        self.ports.append(&mut other.ports);
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn clear(&mut self) {
        self.items.clear();
        self.ports.clear();
    }
    /// Hands every output to `send`, in order, leaving the buffer empty (its capacity kept).
    #[inline]
    pub fn deliver(&mut self, mut send: impl FnMut(usize, Msg)) {
        // One output per call is the common case.
        if self.items.len() == 1 {
            let item = self.items.pop().expect("one output");
            send(self.ports[0], item);
        } else {
            for (item, port) in self.items.drain(..).zip(&self.ports) {
                send(*port, item);
            }
        }
        self.ports.clear();
    }
}

/// The handle a node emits through. Sources and `finish` send directly (blocking when queues
/// are full); inside `process` outputs are buffered and delivered when the call succeeds.
pub struct Emitter<'a> {
    /// `Some` inside `process`.
    buf: Option<&'a mut Outbox>,
    io: &'a dyn Io,
    node: &'a str,
    outputs: usize,
    /// The session a plain `emit` tags its item with: the input's session, or (a batch of
    /// several sessions) [`SessionId::POSITIONAL`].
    session: SessionId,
}

impl<'a> Emitter<'a> {
    /// Sends at once through `io`.
    pub(crate) fn direct(io: &'a dyn Io, outputs: usize, node: &'a str) -> Emitter<'a> {
        Emitter {
            buf: None,
            io,
            node,
            outputs,
            session: SessionId::NONE,
        }
    }
    /// Collects into `buf`.
    pub(crate) fn buffer(
        buf: &'a mut Outbox,
        io: &'a dyn Io,
        outputs: usize,
        node: &'a str,
    ) -> Emitter<'a> {
        Emitter {
            buf: Some(buf),
            io,
            node,
            outputs,
            session: SessionId::NONE,
        }
    }
    /// Tags plain emits with `session` (see [`Emitter::emit`]).
    pub(crate) fn in_session(mut self, session: SessionId) -> Self {
        self.session = session;
        self
    }

    /// Emits an item on output port `port` (the index in the kind's declared outputs).
    /// Returns `NodeError::Stopped` when the run is stopping or nobody consumes the output.
    ///
    /// The item belongs to the session of the call's input. In a call on a batch that holds
    /// items of several sessions (a serve graph), the k-th item emitted this way on a port
    /// belongs to the session of input item k, which is right for kinds that emit one output
    /// per input item in order; others say whose each output is with [`Emitter::emit_for`].
    #[inline]
    pub fn emit(&mut self, port: usize, item: Payload) -> Result<(), NodeError> {
        let session = self.session;
        self.emit_for(port, session, item)
    }

    /// Emits an item of `session` on output port `port` (nodes that take batches of several
    /// sessions and do not emit one output per item, and sources that bring sessions in).
    #[inline]
    pub fn emit_for(
        &mut self,
        port: usize,
        session: SessionId,
        item: Payload,
    ) -> Result<(), NodeError> {
        // Inside `process` (the hot path) the item is only buffered.
        if let (Some(buf), true) = (&mut self.buf, port < self.outputs) {
            buf.push(port, Msg::Item(item, session));
            return Ok(());
        }
        self.emit_direct(port, Msg::Item(item, session))
    }

    /// Starts a session downstream: every node after this one opens its state for
    /// `session`. Only sources that bring sessions in (`session-in`) call it, before the
    /// session's first item.
    pub fn open_session(&mut self, session: SessionId) -> Result<(), NodeError> {
        self.control(Msg::Open(session))
    }
    /// Ends a session downstream, after its last item: every node after this one flushes and
    /// drops its state for `session`.
    pub fn close_session(&mut self, session: SessionId) -> Result<(), NodeError> {
        self.control(Msg::Close(session))
    }

    fn control(&mut self, msg: Msg) -> Result<(), NodeError> {
        if let Some(buf) = &mut self.buf {
            buf.push(Outbox::EVERY_PORT, msg);
            return Ok(());
        }
        if self.io.stopping() {
            return Err(NodeError::Stopped);
        }
        if self.io.broadcast(msg) {
            Ok(())
        } else {
            Err(NodeError::Stopped)
        }
    }

    /// The session of the call's input, or `None` in a call on a batch of several sessions
    /// (then see [`Input::session`]).
    pub fn session(&self) -> Option<SessionId> {
        (self.session != SessionId::POSITIONAL).then_some(self.session)
    }

    /// [`Emitter::emit`] from a source or `finish` (sent at once, blocking while a queue is
    /// full), or on an undeclared port.
    #[inline(never)]
    fn emit_direct(&mut self, port: usize, msg: Msg) -> Result<(), NodeError> {
        if port >= self.outputs {
            return Err(self.undeclared(port));
        }
        if self.io.stopping() {
            return Err(NodeError::Stopped);
        }
        if self.io.send(port, msg) {
            Ok(())
        } else {
            Err(NodeError::Stopped)
        }
    }

    #[cold]
    fn undeclared(&self, port: usize) -> NodeError {
        NodeError::runtime(format!(
            "node `{}` emitted on output #{port}, which it does not declare",
            self.node
        ))
    }
    /// True once the run is stopping; long-running sources and sinks should check it.
    pub fn stopping(&self) -> bool {
        self.io.stopping()
    }
    /// Tells progress how many items this node will emit in all (enables ETA).
    pub fn set_total(&self, n: u64) {
        self.io.set_total(n);
    }
    /// Tells progress how many items this node will emit on output `port`, so the nodes fed
    /// by that port show their own total (frames, not frames plus audio packets).
    pub fn set_port_total(&self, port: usize, n: u64) {
        self.io.set_port_total(port, n);
    }
    pub fn node_id(&self) -> &str {
        self.node
    }
    /// A handle for reporting progress inside this call, for calls that take long before
    /// their outputs are delivered (a model call making 81 frames). Progress shows the last
    /// [`WorkMeter::set`] beside the node until the handle is dropped.
    pub fn work(&self) -> WorkMeter<'a> {
        WorkMeter { io: self.io }
    }
}

/// Progress inside one call (see [`Emitter::work`]); `Sync`, so a callback on another thread
/// may report through it.
pub struct WorkMeter<'a> {
    io: &'a dyn Io,
}

impl WorkMeter<'_> {
    /// `done` of the call's `total` units (frames made of a model call's frames).
    pub fn set(&self, done: u64, total: u64) {
        self.io.set_work(done, total);
    }
}

impl Drop for WorkMeter<'_> {
    fn drop(&mut self) {
        self.io.set_work(0, 0);
    }
}
