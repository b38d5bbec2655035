//! The producing side of edges: each output port fans out to one bounded crossbeam channel per
//! consumer. A full queue blocks the producer (backpressure) and the time is counted as
//! "blocked on output"; an edge with `when_full: drop_oldest` instead evicts its oldest item
//! and counts the drop on the consumer. [`NodeIo`] connects a node's `Emitter` to them.

use super::RunState;
use super::stats::{self, NodeStats};
use crate::node::emit::{Io, Outbox};
use crate::node::session::Msg;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

pub(crate) struct EdgeTx {
    pub tx: Sender<Msg>,
    /// Set for `drop_oldest` edges: the producer pops from the queue's head to make room.
    pub evict: Option<Receiver<Msg>>,
    pub consumer: Arc<NodeStats>,
    pub alive: AtomicBool,
}

/// All outgoing edges of one node, by output port.
pub(crate) struct Outputs {
    pub ports: Vec<Vec<EdgeTx>>,
    pub stats: Arc<NodeStats>,
    /// How many edges still have a consumer (`usize::MAX`: the node has no edges at all, so
    /// emitting is never pointless).
    live: AtomicUsize,
}

impl Outputs {
    pub fn new(ports: Vec<Vec<EdgeTx>>, stats: Arc<NodeStats>) -> Outputs {
        let n: usize = ports.iter().map(Vec::len).sum();
        Outputs {
            ports,
            stats,
            live: AtomicUsize::new(if n == 0 { usize::MAX } else { n }),
        }
    }

    /// Sends to every consumer of `port`, then counts the item as out. Returns false when no
    /// consumer of any port is left.
    #[inline(always)]
    pub fn send(&self, port: usize, p: Msg) -> bool {
        if port == Outbox::EVERY_PORT {
            return self.broadcast(p);
        }
        let item = matches!(p, Msg::Item(..));
        match self.ports[port].as_slice() {
            [] => {}
            [one] => self.send_one(one, p),
            [rest @ .., last] => {
                for e in rest {
                    self.send_one(e, p.clone());
                }
                self.send_one(last, p);
            }
        }
        if item {
            stats::bump(&self.stats.items_out);
        }
        self.live.load(Relaxed) > 0
    }

    /// Sends a session's start or end to every consumer of every port (not counted as an
    /// item).
    pub fn broadcast(&self, msg: Msg) -> bool {
        for e in self.ports.iter().flatten() {
            self.send_one(e, msg.clone());
        }
        self.live.load(Relaxed) > 0
    }

    fn dead(&self, e: &EdgeTx) {
        if e.alive.swap(false, Relaxed) {
            self.live.fetch_sub(1, Relaxed);
        }
    }

    #[inline(always)]
    fn send_one(&self, e: &EdgeTx, p: Msg) {
        if !e.alive.load(Relaxed) {
            return;
        }
        match e.tx.try_send(p) {
            Ok(()) => {}
            Err(TrySendError::Disconnected(_)) => self.dead(e),
            Err(TrySendError::Full(p)) => self.send_full(e, p),
        }
    }

    /// The queue is full: evict its oldest item (`drop_oldest`) or wait for room.
    #[inline(never)]
    fn send_full(&self, e: &EdgeTx, mut p: Msg) {
        if let Some(evict) = &e.evict {
            loop {
                if evict.try_recv().is_ok() {
                    e.consumer.dropped.fetch_add(1, Relaxed);
                }
                p = match e.tx.try_send(p) {
                    Ok(()) => return,
                    Err(TrySendError::Disconnected(_)) => return self.dead(e),
                    Err(TrySendError::Full(p)) => p,
                };
            }
        }
        let t = Instant::now();
        if e.tx.send(p).is_err() {
            self.dead(e);
        }
        stats::add(&self.stats.wait_out_ns, t.elapsed());
    }
}

/// Sends every output of a successful call on, in order.
#[inline(always)]
pub(crate) fn deliver(buf: &mut Outbox, out: &Outputs) {
    buf.deliver(|port, item| {
        out.send(port, item);
    });
}

/// The executor's side of one node's [`Emitter`](crate::node::Emitter): its outgoing edges
/// (`None` inside `process`, whose outputs are buffered), the run's stop flag and its counters.
pub(crate) struct NodeIo<'a> {
    pub outputs: Option<&'a Outputs>,
    pub state: &'a RunState,
    pub stats: &'a NodeStats,
}

impl Io for NodeIo<'_> {
    fn stopping(&self) -> bool {
        self.state.stopping()
    }
    fn send(&self, port: usize, item: Msg) -> bool {
        match self.outputs {
            Some(out) => out.send(port, item),
            // Only reached when a buffered emitter is used from outside `process`.
            None => true,
        }
    }
    fn broadcast(&self, msg: Msg) -> bool {
        match self.outputs {
            Some(out) => out.broadcast(msg),
            None => true,
        }
    }
    fn set_total(&self, n: u64) {
        self.stats.total.store(n, Relaxed);
    }
    fn set_port_total(&self, port: usize, n: u64) {
        let mut totals = self
            .stats
            .port_totals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        totals.retain(|&(p, _)| p != port);
        totals.push((port, n));
    }
    fn set_work(&self, done: u64, total: u64) {
        self.stats.work_total.store(total, Relaxed);
        self.stats.work_done.store(done, Relaxed);
    }
}
