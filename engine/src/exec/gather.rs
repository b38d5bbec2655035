//! The consuming side: a node's input ports are read with a crossbeam `Select`, and the
//! batched port (if any) forms dynamic batches: up to `max` items, or what arrived within
//! `wait_ms` of the batch's first item, and at end of stream whatever is left.

use super::stats::{self, NodeStats};
use crate::node::{BatchConfig, Input};
use crate::payload::Payload;
use crossbeam_channel::{Receiver, Select};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

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
    pub fn next(&mut self) -> Option<Input> {
        // The common case, one unbatched input, skips the Select machinery.
        if self.batch.is_none() && self.ports.len() == 1 {
            let t = Instant::now();
            let r = self.ports[0].1.recv();
            stats::add(&self.stats.wait_in_ns, t.elapsed());
            return match r {
                Ok(item) => {
                    self.stats.items_in.fetch_add(1, Relaxed);
                    Some(Input {
                        port: self.ports[0].0,
                        items: vec![item],
                    })
                }
                Err(_) => {
                    self.ports.clear();
                    None
                }
            };
        }
        loop {
            if let Some((port, cfg)) = self.batch {
                let full = self.pending.len() >= cfg.max;
                let timed_out = self.deadline.is_some_and(|d| Instant::now() >= d);
                let ended = !self.ports.iter().any(|(p, _)| *p == port);
                if !self.pending.is_empty() && (full || timed_out || ended) {
                    self.deadline = None;
                    let items = std::mem::take(&mut self.pending);
                    self.stats.record_batch(items.len());
                    return Some(Input { port, items });
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
                    self.stats.items_in.fetch_add(1, Relaxed);
                    match self.batch {
                        Some((bp, cfg)) if bp == port => {
                            if self.pending.is_empty() {
                                self.deadline =
                                    Some(Instant::now() + Duration::from_millis(cfg.wait_ms));
                            }
                            self.pending.push(item);
                        }
                        _ => {
                            return Some(Input {
                                port,
                                items: vec![item],
                            });
                        }
                    }
                }
                Err(_) => {
                    self.ports.remove(i);
                }
            }
        }
    }
}
