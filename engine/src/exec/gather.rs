//! The consuming side: a node's input ports are read with a crossbeam `Select`, and the
//! batched port (if any) forms dynamic batches: up to `max` items, or what arrived within
//! `wait_ms` of the batch's first item, and at end of stream whatever is left.

use super::stats::{self, NodeStats};
use crate::config::BatchConfig;
use crate::node::Input;
use crate::payload::Payload;
use crossbeam_channel::{Receiver, Select, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The next item of one input (counted in `items_in`), or `None` at its end. Time is measured
/// only when the queue is empty and the node really waits.
#[inline]
pub(crate) fn recv_counted(rx: &Receiver<Payload>, stats: &NodeStats) -> Option<Payload> {
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
    stats::bump(&stats.items_in);
    Some(item)
}

pub(crate) struct Gather {
    /// (input port index, receiver) for each connected port still open.
    ports: Vec<(usize, Receiver<Payload>)>,
    batch: Option<(usize, BatchConfig)>,
    pending: Vec<Payload>,
    deadline: Option<Instant>,
    stats: Arc<NodeStats>,
}

impl Gather {
    pub fn new(
        ports: Vec<(usize, Receiver<Payload>)>,
        batch: Option<(usize, BatchConfig)>,
        stats: Arc<NodeStats>,
    ) -> Gather {
        Gather {
            ports,
            batch,
            pending: vec![],
            deadline: None,
            stats,
        }
    }

    /// The next item or batch, or `None` when every input has ended.
    #[inline]
    pub fn next(&mut self) -> Option<Input> {
        // The common case, one unbatched input, skips the Select machinery.
        if self.batch.is_none() && self.ports.len() == 1 {
            let port = self.ports[0].0;
            return match recv_counted(&self.ports[0].1, &self.stats) {
                Some(item) => Some(Input::one(port, item)),
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
                    self.stats.record_batch(items.len());
                    return Some(Input::batch(port, items));
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
                Ok(item) => {
                    stats::bump(&self.stats.items_in);
                    match self.batch {
                        Some((bp, cfg)) if bp == port => {
                            if self.pending.is_empty() {
                                self.deadline =
                                    Some(Instant::now() + Duration::from_millis(cfg.wait_ms));
                            }
                            self.pending.push(item);
                        }
                        _ => {
                            return Some(Input::one(port, item));
                        }
                    }
                }
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
        while self.pending.len() < max {
            match self.ports[i].1.try_recv() {
                Ok(item) => {
                    stats::bump(&self.stats.items_in);
                    self.pending.push(item);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.ports.remove(i);
                    break;
                }
            }
        }
    }
}
