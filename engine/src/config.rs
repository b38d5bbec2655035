//! Graph-level settings that a graph file gives per node or per edge: dynamic batching, the
//! error policy, queue sizes and what a full queue does. A leaf module: the loader fills these
//! in, the checker and planner pass them on, the executor obeys them, and node kinds declare
//! their default batching with them.

/// Dynamic batching of one input: up to `max` items, or whatever arrived within `wait_ms` of
/// the first one (the Triton dynamic batcher's contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    pub max: usize,
    pub wait_ms: u64,
}

/// What a producer does when an edge's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// The producer waits for space (backpressure).
    #[default]
    Block,
    /// The oldest queued item is dropped to make room; drops are counted and reported.
    DropOldest,
}

/// What a node does when processing an item fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// The first failure stops the run.
    #[default]
    Fail,
    /// A failed item is skipped; skipped items are counted and named in the summary.
    Skip,
    /// An item is tried up to N more times, then the run fails.
    Retry(u32),
}

/// A serve graph's `serve:` section: how many sessions `vidflow serve` admits at once, and
/// after how many seconds without a message from its client a session is ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    pub max_sessions: usize,
    /// 0: never.
    pub idle_timeout_s: u64,
    /// The side of the mid-gray square frame sent through the graph before the server says
    /// it is ready.
    pub warmup_size: u32,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            max_sessions: DEFAULT_MAX_SESSIONS,
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
            warmup_size: DEFAULT_WARMUP_SIZE,
        }
    }
}

pub const DEFAULT_MAX_SESSIONS: usize = 8;
pub const MAX_SESSIONS: i64 = 10_000;
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 30;
pub const MAX_IDLE_TIMEOUT_S: i64 = 86_400;
pub const DEFAULT_WARMUP_SIZE: u32 = 64;
pub const MIN_WARMUP_SIZE: i64 = 16;
pub const MAX_WARMUP_SIZE: i64 = 4096;

/// Items an edge holds when the graph gives no `queue:`.
pub const DEFAULT_QUEUE: usize = 8;
pub const MAX_QUEUE: i64 = 65_536;
pub const MAX_WORKERS: i64 = 256;
