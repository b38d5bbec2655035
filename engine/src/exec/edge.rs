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
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
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
}

impl Outputs {
    /// Sends to every consumer of `port`. Returns false when no consumer of any port is left.
    pub fn send(&self, port: usize, p: Payload) -> bool {
        self.stats.items_out.fetch_add(1, Relaxed);
        let edges = &self.ports[port];
        if let Some((last, rest)) = edges.split_last() {
            for e in rest {
                self.send_one(e, p.clone());
            }
            self.send_one(last, p);
        }
        self.any_alive()
    }

    fn any_alive(&self) -> bool {
        self.ports.iter().flatten().any(|e| e.alive.load(Relaxed))
            || self.ports.iter().all(Vec::is_empty)
    }

    fn send_one(&self, e: &EdgeTx, p: Payload) {
        if !e.alive.load(Relaxed) {
            return;
        }
        let mut p = match e.tx.try_send(p) {
            Ok(()) => return,
            Err(TrySendError::Disconnected(_)) => return e.alive.store(false, Relaxed),
            Err(TrySendError::Full(p)) => p,
        };
        if let Some(evict) = &e.evict {
            loop {
                if evict.try_recv().is_ok() {
                    e.consumer.dropped.fetch_add(1, Relaxed);
                }
                p = match e.tx.try_send(p) {
                    Ok(()) => return,
                    Err(TrySendError::Disconnected(_)) => return e.alive.store(false, Relaxed),
                    Err(TrySendError::Full(p)) => p,
                };
            }
        }
        let t = Instant::now();
        if e.tx.send(p).is_err() {
            e.alive.store(false, Relaxed);
        }
        stats::add(&self.stats.wait_out_ns, t.elapsed());
    }
}

enum Sink<'a> {
    Direct(&'a Outputs),
    Buffer(&'a mut Vec<(usize, Payload)>),
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
        buf: &'a mut Vec<(usize, Payload)>,
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
    pub fn emit(&mut self, port: usize, item: Payload) -> Result<(), NodeError> {
        if port >= self.outputs {
            return Err(NodeError::runtime(format!(
                "node `{}` emitted on output #{port}, which it does not declare",
                self.node
            )));
        }
        match &mut self.sink {
            Sink::Buffer(buf) => {
                buf.push((port, item));
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
    /// True once the run is stopping; long-running sources and sinks should check it.
    pub fn stopping(&self) -> bool {
        self.state.stopping()
    }
    /// Tells progress how many items this node will emit in all (enables ETA).
    pub fn set_total(&self, n: u64) {
        self.stats.total.store(n, Relaxed);
    }
    pub fn node_id(&self) -> &str {
        self.node
    }
}
