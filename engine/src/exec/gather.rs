//! The consuming side: a node's input ports are read with a crossbeam `Select`, and the
//! batched port (if any) forms dynamic batches: up to `max` items, or what arrived within
//! `wait_ms` of the batch's first item, and at end of stream whatever is left.
//!
//! In a serve graph the items come from many sessions and a batch takes them as they arrived
//! (so the oldest item, of whichever session, goes first and no session starves), whatever
//! session each belongs to. A session's end that arrives while the forming batch still holds
//! items of that session is passed on right after the batch, so it follows them.

use super::stats::{self, NodeStats};
use crate::config::BatchConfig;
use crate::node::Input;
use crate::node::session::{Msg, SessionId};
use crate::payload::Payload;
use crossbeam_channel::{Receiver, Select, TryRecvError};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a node's input side hands its loop: an item or batch, or a session's start or end.
pub(crate) enum Next {
    Input(Input),
    Control(Msg),
}

/// The next message of one input (items counted in `items_in`), or `None` at its end. Time is
/// measured only when the queue is empty and the node really waits.
#[inline]
pub(crate) fn recv_counted(rx: &Receiver<Msg>, stats: &NodeStats) -> Option<Msg> {
    let item = match rx.try_recv() {
        Ok(item) => item,
        Err(TryRecvError::Disconnected) => return None,
        Err(TryRecvError::Empty) => {
            let t = Instant::now();
            let r = rx.recv();
            stats::add(&stats.wait_in_ns, t.elapsed());
            r.ok()?
        }
    };
    if let Msg::Item(..) = item {
        stats::bump(&stats.items_in);
    }
    Some(item)
}

pub(crate) struct Gather {
    /// (input port index, receiver) for each connected port still open.
    ports: Vec<(usize, Receiver<Msg>)>,
    batch: Option<(usize, BatchConfig)>,
    pending: Vec<Payload>,
    /// The session of each pending item.
    pending_sessions: Vec<SessionId>,
    /// Session starts and ends read while a batch was forming that must follow it.
    deferred: VecDeque<Msg>,
    deadline: Option<Instant>,
    stats: Arc<NodeStats>,
}

impl Gather {
    pub fn new(
        ports: Vec<(usize, Receiver<Msg>)>,
        batch: Option<(usize, BatchConfig)>,
        stats: Arc<NodeStats>,
    ) -> Gather {
        Gather {
            ports,
            batch,
            pending: vec![],
            pending_sessions: vec![],
            deferred: VecDeque::new(),
            deadline: None,
            stats,
        }
    }

    /// The next item, batch or session control, or `None` when every input has ended.
    #[inline]
    pub fn next(&mut self) -> Option<Next> {
        // Deferred controls follow the batch they were read during.
        if self.pending.is_empty()
            && let Some(c) = self.deferred.pop_front()
        {
            return Some(Next::Control(c));
        }
        // The common case, one unbatched input, skips the Select machinery.
        if self.batch.is_none() && self.ports.len() == 1 {
            let port = self.ports[0].0;
            return match recv_counted(&self.ports[0].1, &self.stats) {
                Some(Msg::Item(item, s)) => Some(Next::Input(Input::one_of(port, item, s))),
                Some(control) => Some(Next::Control(control)),
                None => {
                    self.ports.clear();
                    None
                }
            };
        }
        loop {
            if let Some((port, cfg)) = self.batch
                && !self.pending.is_empty()
            {
                let mut full = self.pending.len() >= cfg.max;
                let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
                if timed_out && !full {
                    // Items already queued arrived within the wait (they are only late to be
                    // read, e.g. with `wait_ms: 0` or after a slow call): they join the batch.
                    self.top_up(port, cfg.max);
                    full = self.pending.len() >= cfg.max;
                }
                let ended = !self.ports.iter().any(|(p, _)| *p == port);
                if full || timed_out || ended {
                    self.deadline = None;
                    let items = std::mem::take(&mut self.pending);
                    let sessions = std::mem::take(&mut self.pending_sessions);
                    self.stats.record_batch(items.len(), distinct(&sessions));
                    return Some(Next::Input(Input::batch_of(port, items, sessions)));
                }
            }
            if self.ports.is_empty() {
                return None;
            }
            let mut sel = Select::new();
            for (_, rx) in &self.ports {
                sel.recv(rx);
            }
            let t = Instant::now();
            let op = match self.deadline.filter(|_| !self.pending.is_empty()) {
                Some(d) => match sel.select_deadline(d) {
                    Ok(op) => op,
                    Err(_) => {
                        stats::add(&self.stats.wait_in_ns, t.elapsed());
                        continue;
                    }
                },
                None => sel.select(),
            };
            let i = op.index();
            let result = op.recv(&self.ports[i].1);
            stats::add(&self.stats.wait_in_ns, t.elapsed());
            let port = self.ports[i].0;
            match result {
                Ok(Msg::Item(item, session)) => {
                    stats::bump(&self.stats.items_in);
                    match self.batch {
                        Some((bp, cfg)) if bp == port => {
                            if self.pending.is_empty() {
                                self.deadline =
                                    Some(Instant::now() + Duration::from_millis(cfg.wait_ms));
                            }
                            self.pending.push(item);
                            self.pending_sessions.push(session);
                        }
                        _ => {
                            return Some(Next::Input(Input::one_of(port, item, session)));
                        }
                    }
                }
                // A session's end must follow the batch that holds its last items.
                Ok(Msg::Close(s))
                    if self.batch.is_some_and(|(bp, _)| bp == port)
                        && self.pending_sessions.contains(&s) =>
                {
                    self.deferred.push_back(Msg::Close(s));
                }
                Ok(control) => return Some(Next::Control(control)),
                Err(_) => {
                    self.ports.remove(i);
                }
            }
        }
    }

    /// Moves items already waiting on batch port `port` into the pending batch, up to `max`.
    fn top_up(&mut self, port: usize, max: usize) {
        let Some(i) = self.ports.iter().position(|(p, _)| *p == port) else {
            return;
        };
        // Session controls read here follow the batch; a session's start ends the top-up, so
        // the session's items come after it.
        while self.pending.len() < max {
            match self.ports[i].1.try_recv() {
                Ok(Msg::Item(item, session)) => {
                    stats::bump(&self.stats.items_in);
                    self.pending.push(item);
                    self.pending_sessions.push(session);
                }
                Ok(Msg::Open(s)) => {
                    self.deferred.push_back(Msg::Open(s));
                    break;
                }
                Ok(control) => self.deferred.push_back(control),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.ports.remove(i);
                    break;
                }
            }
        }
    }
}

/// How many different sessions a batch holds.
fn distinct(sessions: &[SessionId]) -> usize {
    let mut seen: Vec<SessionId> = Vec::with_capacity(4);
    for s in sessions {
        if !seen.contains(s) {
            seen.push(*s);
        }
    }
    seen.len()
}
