//! Per-node counters, updated lock-free by the node's threads and read by the progress
//! reporter while the run goes on; frozen into a [`NodeReport`] at the end.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// How many skipped items are named in the summary (the count is always exact).
const NAMED_SKIPS: usize = 20;

/// The upper bounds of the batch-size histogram's buckets ([`NodeReport::batch_sizes`]); a
/// last bucket counts the larger batches.
pub const BATCH_BUCKETS: [u64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

#[derive(Debug)]
pub struct NodeStats {
    /// Items taken from the node's input queues (including any later discarded).
    pub items_in: AtomicU64,
    /// Items emitted, counted once each (whatever the number of consumers) after they were
    /// handed to every consumer's queue: a producer blocked on a full queue has not yet
    /// counted the item it is trying to send.
    pub items_out: AtomicU64,
    pub batches: AtomicU64,
    pub batch_items: AtomicU64,
    pub max_batch: AtomicU64,
    /// Batches by size: one counter per bucket of [`BATCH_BUCKETS`], then one for larger.
    pub batch_hist: [AtomicU64; BATCH_BUCKETS.len() + 1],
    /// Batches that held items of more than one session (serve graphs).
    pub mixed_batches: AtomicU64,
    pub busy_ns: AtomicU64,
    pub wait_in_ns: AtomicU64,
    pub wait_out_ns: AtomicU64,
    pub retries: AtomicU64,
    pub skipped: AtomicU64,
    /// Items dropped from this node's `when_full: drop_oldest` inputs.
    pub dropped: AtomicU64,
    /// Items that arrived after the run began stopping and were not processed.
    pub discarded: AtomicU64,
    /// Expected number of output items, when the node knows it (`u64::MAX`: unknown).
    pub total: AtomicU64,
    /// Expected items per output port, for the ports the node announced (a decoder knows its
    /// frames apart from its audio packets), so a consumer's bar gets its own port's total.
    pub port_totals: Mutex<Vec<(usize, u64)>>,
    pub done: std::sync::atomic::AtomicBool,
    pub skipped_items: Mutex<Vec<String>>,
    /// Work inside the call in progress, for calls that take long before they emit anything
    /// (a model call making 81 frames): units done and units in all; 0 in all when idle.
    pub work_done: AtomicU64,
    pub work_total: AtomicU64,
}

impl Default for NodeStats {
    fn default() -> Self {
        NodeStats {
            items_in: AtomicU64::new(0),
            items_out: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_items: AtomicU64::new(0),
            max_batch: AtomicU64::new(0),
            batch_hist: Default::default(),
            mixed_batches: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            wait_in_ns: AtomicU64::new(0),
            wait_out_ns: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
            port_totals: Mutex::new(vec![]),
            done: std::sync::atomic::AtomicBool::new(false),
            skipped_items: Mutex::new(vec![]),
            work_done: AtomicU64::new(0),
            work_total: AtomicU64::new(0),
        }
    }
}

pub(crate) fn add(counter: &AtomicU64, d: Duration) {
    counter.fetch_add(d.as_nanos() as u64, Relaxed);
}

/// Adds one to a counter that only one thread ever writes (others only read it): a plain
/// load and store, cheaper than a locked read-modify-write on every item. `items_in` is
/// written only by the node's input side (its loop or its dispatcher), `items_out` only by its
/// output side (its loop or its merger).
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Relaxed) + 1, Relaxed);
}

impl NodeStats {
    /// A batch of `n` items from `sessions` different sessions was formed.
    pub(crate) fn record_batch(&self, n: usize, sessions: usize) {
        self.batches.fetch_add(1, Relaxed);
        self.batch_items.fetch_add(n as u64, Relaxed);
        self.max_batch.fetch_max(n as u64, Relaxed);
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|&le| n as u64 <= le)
            .unwrap_or(BATCH_BUCKETS.len());
        self.batch_hist[bucket].fetch_add(1, Relaxed);
        if sessions > 1 {
            self.mixed_batches.fetch_add(1, Relaxed);
        }
    }
    pub(crate) fn record_skip(&self, what: Vec<String>) {
        self.skipped.fetch_add(what.len() as u64, Relaxed);
        let mut named = self.skipped_items.lock().unwrap_or_else(|e| e.into_inner());
        for w in what {
            if named.len() < NAMED_SKIPS {
                named.push(w);
            }
        }
    }
    pub fn total(&self) -> Option<u64> {
        match self.total.load(Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }
    pub fn snapshot(&self, id: &str, kind: &str, workers: usize) -> NodeReport {
        let ns = |c: &AtomicU64| Duration::from_nanos(c.load(Relaxed));
        NodeReport {
            id: id.to_string(),
            kind: kind.to_string(),
            workers,
            items_in: self.items_in.load(Relaxed),
            items_out: self.items_out.load(Relaxed),
            batches: self.batches.load(Relaxed),
            batch_items: self.batch_items.load(Relaxed),
            max_batch: self.max_batch.load(Relaxed),
            batch_sizes: self.batch_hist.iter().map(|c| c.load(Relaxed)).collect(),
            mixed_batches: self.mixed_batches.load(Relaxed),
            busy: ns(&self.busy_ns),
            wait_in: ns(&self.wait_in_ns),
            wait_out: ns(&self.wait_out_ns),
            retries: self.retries.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            skipped_items: self
                .skipped_items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            dropped: self.dropped.load(Relaxed),
            discarded: self.discarded.load(Relaxed),
            total: self.total(),
            port_totals: self
                .port_totals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            done: self.done.load(Relaxed),
            work: match self.work_total.load(Relaxed) {
                0 => None,
                total => Some((self.work_done.load(Relaxed).min(total), total)),
            },
        }
    }
}

/// What one node did in a run. Times are summed over replicas.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeReport {
    pub id: String,
    pub kind: String,
    pub workers: usize,
    pub items_in: u64,
    pub items_out: u64,
    pub batches: u64,
    pub batch_items: u64,
    pub max_batch: u64,
    /// Batches by size, per bucket of [`BATCH_BUCKETS`] and one for larger ones.
    #[serde(skip)]
    pub batch_sizes: Vec<u64>,
    /// Batches that held items of more than one session (serve graphs).
    #[serde(skip_serializing_if = "is_zero")]
    pub mixed_batches: u64,
    #[serde(serialize_with = "secs")]
    pub busy: Duration,
    #[serde(serialize_with = "secs")]
    pub wait_in: Duration,
    #[serde(serialize_with = "secs")]
    pub wait_out: Duration,
    pub retries: u64,
    pub skipped: u64,
    pub skipped_items: Vec<String>,
    pub dropped: u64,
    pub discarded: u64,
    pub total: Option<u64>,
    /// (output port, expected items) for the ports the node announced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub port_totals: Vec<(usize, u64)>,
    pub done: bool,
    /// (done, total) units of the call in progress, while a node reports one
    /// ([`Emitter::work`](super::Emitter::work)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work: Option<(u64, u64)>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e6)
}

impl NodeReport {
    pub fn mean_batch(&self) -> Option<f64> {
        (self.batches > 0).then(|| self.batch_items as f64 / self.batches as f64)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
