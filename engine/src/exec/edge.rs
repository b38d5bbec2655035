//! The producing side of edges: each output port fans out to one bounded crossbeam channel per
//! consumer. A full queue blocks the producer (backpressure) and the time is counted as
//! "blocked on output"; an edge with `when_full: drop_oldest` instead evicts its oldest item
//! and counts the drop on the consumer. [`Emitter`] is the handle nodes emit through.

use super::RunState;
use super::stats::{self, NodeStats};
use crate::node::NodeError;
use crate::payload::Payload;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

pub(crate) struct EdgeTx {
    pub tx: Sender<Payload>,
    /// Set for `drop_oldest` edges: the producer pops from the queue's head to make room.
    pub evict: Option<Receiver<Payload>>,
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
    pub fn send(&self, port: usize, p: Payload) -> bool {
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
        stats::bump(&self.stats.items_out);
        self.live.load(Relaxed) > 0
    }

    fn dead(&self, e: &EdgeTx) {
        if e.alive.swap(false, Relaxed) {
            self.live.fetch_sub(1, Relaxed);
        }
    }

    #[inline(always)]
    fn send_one(&self, e: &EdgeTx, p: Payload) {
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
    fn send_full(&self, e: &EdgeTx, mut p: Payload) {
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

/// The outputs of `process` calls, held until the call succeeds. Items and their ports are
/// kept side by side rather than as `(port, item)` pairs: each item is then moved into and out
/// of the buffer as it is, with no pair built around it on the stack. (Copying such pairs made
/// the CPU stall on every item; in the chain benchmark this cut the pass-through nodes' own
/// time per item by about a third.)
#[derive(Default)]
pub(crate) struct Outbox {
    items: Vec<Payload>,
    ports: Vec<usize>,
}

impl Outbox {
    #[inline]
    fn push(&mut self, port: usize, item: Payload) {
        self.items.push(item);
        self.ports.push(port);
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    pub fn clear(&mut self) {
        self.items.clear();
        self.ports.clear();
    }
    /// Sends every output on, in order, leaving the buffer empty (its capacity kept).
    #[inline]
    pub fn deliver(&mut self, out: &Outputs) {
        // One output per call is the common case.
        if self.items.len() == 1 {
            let item = self.items.pop().expect("one output");
            out.send(self.ports[0], item);
        } else {
            for (item, port) in self.items.drain(..).zip(&self.ports) {
                out.send(*port, item);
            }
        }
        self.ports.clear();
    }
}

enum Sink<'a> {
    Direct(&'a Outputs),
    Buffer(&'a mut Outbox),
}

/// The handle a node emits through. Sources and `finish` send directly (blocking when queues
/// are full); inside `process` outputs are buffered and delivered when the call succeeds.
pub struct Emitter<'a> {
    sink: Sink<'a>,
    state: &'a RunState,
    stats: &'a NodeStats,
    node: &'a str,
    outputs: usize,
}

impl<'a> Emitter<'a> {
    pub(crate) fn direct(outputs: &'a Outputs, state: &'a RunState, node: &'a str) -> Emitter<'a> {
        Emitter {
            outputs: outputs.ports.len(),
            sink: Sink::Direct(outputs),
            state,
            stats: &outputs.stats,
            node,
        }
    }
    pub(crate) fn buffer(
        buf: &'a mut Outbox,
        n_outputs: usize,
        stats: &'a NodeStats,
        state: &'a RunState,
        node: &'a str,
    ) -> Emitter<'a> {
        Emitter {
            outputs: n_outputs,
            sink: Sink::Buffer(buf),
            state,
            stats,
            node,
        }
    }

    /// Emits an item on output port `port` (the index in the kind's declared outputs).
    /// Returns `NodeError::Stopped` when the run is stopping or nobody consumes the output.
    #[inline]
    pub fn emit(&mut self, port: usize, item: Payload) -> Result<(), NodeError> {
        // Inside `process` (the hot path) the item is only buffered.
        if let (Sink::Buffer(buf), true) = (&mut self.sink, port < self.outputs) {
            buf.push(port, item);
            return Ok(());
        }
        self.emit_direct(port, item)
    }

    /// [`Emitter::emit`] from a source or `finish` (sent at once, blocking while a queue is
    /// full), or on an undeclared port.
    #[inline(never)]
    fn emit_direct(&mut self, port: usize, item: Payload) -> Result<(), NodeError> {
        if port >= self.outputs {
            return Err(self.undeclared(port));
        }
        match &mut self.sink {
            Sink::Buffer(buf) => {
                buf.push(port, item);
                Ok(())
            }
            Sink::Direct(out) => {
                if self.state.stopping() {
                    return Err(NodeError::Stopped);
                }
                if out.send(port, item) {
                    Ok(())
                } else {
                    Err(NodeError::Stopped)
                }
            }
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
        self.state.stopping()
    }
    /// Tells progress how many items this node will emit in all (enables ETA).
    pub fn set_total(&self, n: u64) {
        self.stats.total.store(n, Relaxed);
    }
    /// Tells progress how many items this node will emit on output `port`, so the nodes fed
    /// by that port show their own total (frames, not frames plus audio packets).
    pub fn set_port_total(&self, port: usize, n: u64) {
        let mut totals = self
            .stats
            .port_totals
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        totals.retain(|&(p, _)| p != port);
        totals.push((port, n));
    }
    pub fn node_id(&self) -> &str {
        self.node
    }
    /// A handle for reporting progress inside this call, for calls that take long before
    /// their outputs are delivered (a model call making 81 frames). Progress shows the last
    /// [`WorkMeter::set`] beside the node until the handle is dropped.
    pub fn work(&self) -> WorkMeter<'a> {
        WorkMeter { stats: self.stats }
    }
}

/// Progress inside one call (see [`Emitter::work`]); `Sync`, so a callback on another thread
/// may report through it.
pub struct WorkMeter<'a> {
    stats: &'a NodeStats,
}

impl WorkMeter<'_> {
    /// `done` of the call's `total` units (frames made of a model call's frames).
    pub fn set(&self, done: u64, total: u64) {
        self.stats.work_done.store(done, Relaxed);
        self.stats.work_total.store(total, Relaxed);
    }
}

impl Drop for WorkMeter<'_> {
    fn drop(&mut self) {
        self.stats.work_total.store(0, Relaxed);
        self.stats.work_done.store(0, Relaxed);
    }
}
