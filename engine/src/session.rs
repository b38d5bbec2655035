//! The session hub: where a server (`vidflow serve`) and a running serve graph meet. The
//! server admits sessions ([`SessionHub::open`], refused past `max_sessions`), pushes each
//! session's items in ([`SessionHub::push`]), and ends them ([`SessionHub::finish_input`] when
//! the client is done, [`SessionHub::cancel`] when it went away). The graph's `session-in`
//! source takes them out with [`SessionHub::next`]: a session's start, its items, its end, and
//! across sessions always the oldest waiting event first, so a busy session cannot starve a
//! quiet one. The `session-out` sink hands results back with [`SessionHub::deliver`] and a
//! session's end with [`SessionHub::ended`]; each session's replies go to the callback it was
//! opened with ([`Reply`]), in order. The hub is synchronous (a mutex and a condition
//! variable): the server calls it from async code without blocking, since nothing it calls
//! waits.
//!
//! The server puts the hub in the run's [`Shared`](crate::node::Shared) map; `session-in` and
//! `session-out` find it there ([`SessionHub::of`]). Node kinds use the per-session state of
//! [`crate::node::session`]; they never see the hub.

use crate::node::{NodeError, SessionId, Shared};
use crate::payload::Payload;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What a session is told, in order: its results, then its end or its failure.
#[derive(Debug)]
pub enum Reply {
    Item(Payload),
    /// Every result has been delivered.
    End,
    /// A node failed on the session's items (the message names the node and the item); no
    /// more replies follow.
    Failed(String),
}

/// Where a session's replies go (the server forwards them to its client).
pub type ReplyFn = Arc<dyn Fn(Reply) + Send + Sync>;

/// What `session-in` takes from the hub.
#[derive(Debug)]
pub enum HubEvent {
    Open(SessionId),
    Item(SessionId, Payload),
    Close(SessionId),
}

/// The result of [`SessionHub::next`].
#[derive(Debug)]
pub enum HubNext {
    Event(HubEvent),
    /// Nothing arrived within the wait.
    Idle,
    /// The hub was shut down and every session has ended: the source should end.
    Shutdown,
}

/// Why a session was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("the server holds its maximum of {0} sessions; try again when one ends")]
    Full(usize),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Counters for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct HubStats {
    /// Sessions holding a slot now.
    pub active: usize,
    pub max_sessions: usize,
    pub admitted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Items delivered to sessions, in all.
    pub items_out: u64,
    /// Items delivered, per session still open.
    pub items_out_per_session: Vec<(SessionId, u64)>,
}

struct Session {
    reply: ReplyFn,
    /// Arrival number of its start (for oldest-first).
    opened_at: u64,
    /// Its start was handed to the graph.
    announced: bool,
    queue: VecDeque<(u64, Payload)>,
    /// No more input: its end follows its queue (arrival number of the end).
    closing: Option<u64>,
    /// Its end was handed to the graph.
    close_sent: bool,
    /// Cancelled or failed: replies are dropped and its slot is free.
    gone: bool,
    items_out: u64,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Arrival counter: every start, item and end gets the next number.
    clock: u64,
    sessions: BTreeMap<SessionId, Session>,
    shut: bool,
    admitted: u64,
    rejected: u64,
    failed: u64,
    items_out: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
    fn active(&self) -> usize {
        self.sessions.values().filter(|s| !s.gone).count()
    }
}

/// See the module doc.
pub struct SessionHub {
    inner: Mutex<Inner>,
    wake: Condvar,
    max_sessions: usize,
}

impl SessionHub {
    pub fn new(max_sessions: usize) -> SessionHub {
        SessionHub {
            inner: Mutex::new(Inner::default()),
            wake: Condvar::new(),
            max_sessions: max_sessions.max(1),
        }
    }

    /// The hub of this run, as the server put it in the run's shared map, or the error of a
    /// node (`kind`) used outside `vidflow serve`.
    pub fn of(shared: &Shared, node: &str, kind: &str) -> Result<Arc<SessionHub>, NodeError> {
        shared
            .get_or_try_init::<SessionHub, NodeError>(|| {
                Err(NodeError::input(format!(
                    "node `{node}`: `{kind}` exchanges items with live sessions and runs only under a server; serve this graph with `vidflow serve GRAPH --listen 127.0.0.1:50051`"
                )))
            })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }

    /// Admits a session whose replies go to `reply`, or refuses it at once.
    pub fn open(&self, reply: ReplyFn) -> Result<SessionId, AdmitError> {
        let mut g = self.lock();
        if g.shut {
            return Err(AdmitError::ShuttingDown);
        }
        if g.active() >= self.max_sessions {
            g.rejected += 1;
            return Err(AdmitError::Full(self.max_sessions));
        }
        g.next_id += 1;
        let id = SessionId(g.next_id);
        let opened_at = g.tick();
        g.admitted += 1;
        g.sessions.insert(
            id,
            Session {
                reply,
                opened_at,
                announced: false,
                queue: VecDeque::new(),
                closing: None,
                close_sent: false,
                gone: false,
                items_out: 0,
            },
        );
        drop(g);
        self.wake.notify_all();
        Ok(id)
    }

    /// Queues an item of `session`; false when the session has ended or was cancelled.
    pub fn push(&self, session: SessionId, item: Payload) -> bool {
        let mut g = self.lock();
        let at = g.tick();
        match g.sessions.get_mut(&session) {
            Some(s) if !s.gone && s.closing.is_none() => {
                s.queue.push_back((at, item));
                drop(g);
                self.wake.notify_all();
                true
            }
            _ => false,
        }
    }

    /// The client sent its last item: the session ends after its queued items, once their
    /// results are delivered.
    pub fn finish_input(&self, session: SessionId) {
        let mut g = self.lock();
        let at = g.tick();
        if let Some(s) = g.sessions.get_mut(&session)
            && s.closing.is_none()
        {
            s.closing = Some(at);
        }
        drop(g);
        self.wake.notify_all();
    }

    /// The client went away: its slot is free at once, its queued items are dropped, and
    /// results still in the graph are discarded when they come out.
    pub fn cancel(&self, session: SessionId) {
        let mut g = self.lock();
        let at = g.tick();
        let remove = match g.sessions.get_mut(&session) {
            Some(s) => {
                s.gone = true;
                s.queue.clear();
                if s.closing.is_none() {
                    s.closing = Some(at);
                }
                // Never announced to the graph: nothing in it to wait for.
                !s.announced
            }
            None => false,
        };
        if remove {
            g.sessions.remove(&session);
        }
        drop(g);
        self.wake.notify_all();
    }

    /// A node failed on the session's items: it is told once, then cancelled.
    pub fn fail(&self, session: SessionId, message: &str) {
        let reply = {
            let mut g = self.lock();
            let reply = match g.sessions.get(&session) {
                Some(s) if !s.gone => Some(s.reply.clone()),
                _ => None,
            };
            if reply.is_some() {
                g.failed += 1;
            }
            reply
        };
        if let Some(reply) = reply {
            reply(Reply::Failed(message.to_string()));
        }
        self.cancel(session);
    }

    /// No more sessions are admitted; [`SessionHub::next`] says `Shutdown` once every open
    /// session has ended.
    pub fn shutdown(&self) {
        self.lock().shut = true;
        self.wake.notify_all();
    }

    /// The oldest waiting start, item or end of any session, waiting up to `wait`.
    pub fn next(&self, wait: Duration) -> HubNext {
        let mut g = self.lock();
        let deadline = std::time::Instant::now() + wait;
        loop {
            // The oldest event over all sessions: a session's start, else its first queued
            // item, else its end once its queue is empty.
            let mut best: Option<(u64, SessionId)> = None;
            for (id, s) in &g.sessions {
                let at = if !s.announced {
                    Some(s.opened_at)
                } else if let Some((at, _)) = s.queue.front() {
                    Some(*at)
                } else if !s.close_sent {
                    s.closing
                } else {
                    None
                };
                if let Some(at) = at
                    && best.is_none_or(|(b, _)| at < b)
                {
                    best = Some((at, *id));
                }
            }
            if let Some((_, id)) = best {
                let s = g.sessions.get_mut(&id).expect("found above");
                let event = if !s.announced {
                    s.announced = true;
                    HubEvent::Open(id)
                } else if let Some((_, item)) = s.queue.pop_front() {
                    HubEvent::Item(id, item)
                } else {
                    s.close_sent = true;
                    HubEvent::Close(id)
                };
                return HubNext::Event(event);
            }
            if g.shut && g.sessions.values().all(|s| s.close_sent) {
                return HubNext::Shutdown;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return HubNext::Idle;
            }
            g = self
                .wake
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// A result of `session` came out of the graph.
    pub fn deliver(&self, session: SessionId, item: Payload) {
        let reply = {
            let mut g = self.lock();
            let reply = match g.sessions.get_mut(&session) {
                Some(s) if !s.gone => {
                    s.items_out += 1;
                    Some(s.reply.clone())
                }
                _ => None,
            };
            if reply.is_some() {
                g.items_out += 1;
            }
            reply
        };
        if let Some(reply) = reply {
            reply(Reply::Item(item));
        }
    }

    /// The end of `session` came out of the graph: every result was delivered.
    pub fn ended(&self, session: SessionId) {
        let removed = self.lock().sessions.remove(&session);
        if let Some(s) = removed
            && !s.gone
        {
            (s.reply)(Reply::End);
        }
        self.wake.notify_all();
    }

    /// Ends every session still open (the graph stopped): each is told `message`.
    pub fn abort_all(&self, message: &str) {
        let sessions: Vec<Session> = {
            let mut g = self.lock();
            g.shut = true;
            std::mem::take(&mut g.sessions).into_values().collect()
        };
        for s in sessions.into_iter().filter(|s| !s.gone) {
            (s.reply)(Reply::Failed(message.to_string()));
        }
        self.wake.notify_all();
    }

    pub fn stats(&self) -> HubStats {
        let g = self.lock();
        HubStats {
            active: g.active(),
            max_sessions: self.max_sessions,
            admitted: g.admitted,
            rejected: g.rejected,
            failed: g.failed,
            items_out: g.items_out,
            items_out_per_session: g
                .sessions
                .iter()
                .filter(|(_, s)| !s.gone)
                .map(|(id, s)| (*id, s.items_out))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    fn sink() -> (ReplyFn, Arc<StdMutex<Vec<String>>>) {
        let got = Arc::new(StdMutex::new(vec![]));
        let g = got.clone();
        let f: ReplyFn = Arc::new(move |r: Reply| {
            g.lock().unwrap().push(match r {
                Reply::Item(p) => p.describe(),
                Reply::End => "end".into(),
                Reply::Failed(m) => format!("failed: {m}"),
            })
        });
        (f, got)
    }

    fn record(n: u64) -> Payload {
        Payload::record(serde_json::json!({ "index": n }))
    }

    fn event(hub: &SessionHub) -> String {
        match hub.next(Duration::from_millis(1)) {
            HubNext::Event(HubEvent::Open(s)) => format!("open {}", s.0),
            HubNext::Event(HubEvent::Item(s, p)) => format!("{} {}", s.0, p.describe()),
            HubNext::Event(HubEvent::Close(s)) => format!("close {}", s.0),
            HubNext::Idle => "idle".into(),
            HubNext::Shutdown => "shutdown".into(),
        }
    }

    #[test]
    fn admits_up_to_the_maximum_and_a_cancel_frees_the_slot_at_once() {
        let hub = SessionHub::new(2);
        let a = hub.open(sink().0).unwrap();
        hub.open(sink().0).unwrap();
        assert_eq!(hub.open(sink().0), Err(AdmitError::Full(2)));
        hub.cancel(a);
        assert!(hub.open(sink().0).is_ok());
        assert_eq!(hub.stats().rejected, 1);
    }

    #[test]
    fn events_come_oldest_first_across_sessions_and_an_end_follows_its_items() {
        let hub = SessionHub::new(4);
        let a = hub.open(sink().0).unwrap();
        let b = hub.open(sink().0).unwrap();
        hub.push(a, record(0));
        hub.push(b, record(0));
        hub.push(a, record(1));
        hub.finish_input(a);
        let got: Vec<String> = (0..7).map(|_| event(&hub)).collect();
        assert_eq!(
            got,
            [
                "open 1",
                "open 2",
                "1 record 0",
                "2 record 0",
                "1 record 1",
                "close 1",
                "idle"
            ]
        );
    }

    #[test]
    fn replies_go_to_their_session_and_a_cancelled_session_gets_none() {
        let hub = SessionHub::new(4);
        let (fa, got_a) = sink();
        let (fb, got_b) = sink();
        let a = hub.open(fa).unwrap();
        let b = hub.open(fb).unwrap();
        for _ in 0..2 {
            event(&hub);
        }
        hub.deliver(a, record(7));
        hub.cancel(b);
        hub.deliver(b, record(8));
        hub.ended(a);
        assert_eq!(*got_a.lock().unwrap(), ["record 7", "end"]);
        assert!(got_b.lock().unwrap().is_empty());
        hub.shutdown();
        assert_eq!(event(&hub), "close 2");
        assert_eq!(event(&hub), "shutdown");
    }
}
