//! The pipelined executor. One named thread per node replica, one bounded crossbeam channel per
//! edge, end of stream by closing channels. A replicated node (`workers: N`) gets a dispatcher
//! thread that forms batches and numbers them, N replica threads, and a merger thread that puts
//! results back in sequence order. A failure or Ctrl-C sets the stop flag: sources stop, every
//! other node discards what is still queued (counted), and `finish` runs everywhere so sinks
//! can close their files.

mod edge;
mod gather;
pub mod stats;

pub use edge::Emitter;
pub use stats::{NodeReport, NodeStats};

use crate::check::{CheckedGraph, CheckedNode};
use crate::node::{BuildCtx, End, Input, NodeError, Process, Runtime, Shared};
use crate::payload::Payload;
use crate::spec::{OnError, WhenFull};
use crossbeam_channel::{Receiver, Sender, bounded};
use edge::{EdgeTx, Outputs};
use gather::Gather;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A flag that stops a run when set (Ctrl-C handlers set it).
#[derive(Clone, Default, Debug)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> StopFlag {
        StopFlag::default()
    }
    pub fn stop(&self) {
        self.0.store(true, Relaxed);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// Why a run failed: the first node error that stopped it.
#[derive(Clone, Debug)]
pub struct Failure {
    pub node: String,
    /// The item being processed, when the error was about one.
    pub item: Option<String>,
    pub error: NodeError,
    pub panicked: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.panicked { "panicked" } else { "failed" };
        write!(f, "node `{}` {what}", self.node)?;
        if let Some(item) = &self.item {
            write!(f, " on {item}")?;
        }
        write!(f, ": {}", self.error)
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub graph: String,
    pub nodes: Vec<NodeReport>,
    pub elapsed: Duration,
    pub failure: Option<Failure>,
    /// Stopped from outside (Ctrl-C) without a node failure.
    pub interrupted: bool,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.failure.is_none() && !self.interrupted
    }
    pub fn node(&self, id: &str) -> Option<&NodeReport> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// Receives progress while a run goes on (see `progress` for the bars, lines and JSON events).
pub trait ProgressSink: Send {
    fn start(&mut self, _graph: &CheckedGraph) {}
    /// Called about ten times a second with every node's current counters.
    fn tick(&mut self, _nodes: &[NodeReport], _elapsed: Duration) {}
    fn finish(&mut self, _report: &RunReport) {}
}

/// No progress output.
pub struct NoProgress;
impl ProgressSink for NoProgress {}

pub struct RunOptions {
    pub stop: StopFlag,
    pub progress: Box<dyn ProgressSink>,
    pub shared: Arc<Shared>,
    pub tick: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            stop: StopFlag::new(),
            progress: Box::new(NoProgress),
            shared: Arc::new(Shared::default()),
            tick: Duration::from_millis(100),
        }
    }
}

/// State shared by all threads of one run.
pub(crate) struct RunState {
    stop: StopFlag,
    failure: Mutex<Option<Failure>>,
    /// Sources wait until every node has been built, so a node that fails to load its weights
    /// stops the run before any work is done.
    pending_setups: Mutex<usize>,
    setups_done: Condvar,
}

impl RunState {
    pub(crate) fn stopping(&self) -> bool {
        self.stop.is_set()
    }
    fn fail(&self, f: Failure) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(f);
        }
        self.stop.stop();
    }
    fn setup_done(&self) {
        let mut n = self
            .pending_setups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            self.setups_done.notify_all();
        }
    }
    fn wait_setups(&self) {
        let mut n = self
            .pending_setups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = self.setups_done.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Runs a checked graph to completion (or failure, or stop) and reports what every node did.
pub fn run(graph: &CheckedGraph, mut opts: RunOptions) -> RunReport {
    let started = Instant::now();
    let n = graph.nodes.len();
    let stats: Vec<Arc<NodeStats>> = (0..n).map(|_| Arc::new(NodeStats::default())).collect();
    let state = RunState {
        stop: opts.stop.clone(),
        failure: Mutex::new(None),
        pending_setups: Mutex::new(graph.nodes.iter().map(|n| n.workers).sum()),
        setups_done: Condvar::new(),
    };

    // One channel per edge.
    let mut outputs: Vec<Outputs> = graph
        .nodes
        .iter()
        .zip(&stats)
        .map(|(node, s)| Outputs {
            ports: node.kind.outputs.iter().map(|_| vec![]).collect(),
            stats: s.clone(),
        })
        .collect();
    let mut inputs: Vec<Vec<(usize, Receiver<Payload>)>> = vec![vec![]; n];
    for e in &graph.edges {
        let (tx, rx) = bounded(e.queue);
        let evict = (e.when_full == WhenFull::DropOldest).then(|| rx.clone());
        outputs[e.from.0].ports[e.from.1].push(EdgeTx {
            tx,
            evict,
            consumer: stats[e.to.0].clone(),
            alive: AtomicBool::new(true),
        });
        inputs[e.to.0].push((e.to.1, rx));
    }

    opts.progress.start(graph);
    std::thread::scope(|scope| {
        let state = &state;
        let shared = &*opts.shared;
        for (i, (out, ins)) in outputs.into_iter().zip(inputs).enumerate() {
            let node = &graph.nodes[i];
            let node_stats = stats[i].clone();
            if node.workers > 1 {
                spawn_replicated(scope, node, out, ins, state, shared);
            } else {
                std::thread::Builder::new()
                    .name(node.id.clone())
                    .spawn_scoped(scope, move || {
                        run_single(node, out, ins, state, shared);
                        node_stats.done.store(true, Relaxed);
                    })
                    .expect("spawn node thread");
            }
        }
        // This thread reports progress until every node thread has finished.
        let mut last = Instant::now();
        while !stats.iter().all(|s| s.done.load(Relaxed)) {
            std::thread::sleep(Duration::from_millis(2).min(opts.tick));
            if last.elapsed() >= opts.tick {
                last = Instant::now();
                opts.progress
                    .tick(&snapshot(graph, &stats), started.elapsed());
            }
        }
    });

    let failure = state
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let report = RunReport {
        graph: graph.name.clone(),
        nodes: snapshot(graph, &stats),
        elapsed: started.elapsed(),
        interrupted: failure.is_none() && opts.stop.is_set(),
        failure,
    };
    opts.progress.finish(&report);
    report
}

fn snapshot(graph: &CheckedGraph, stats: &[Arc<NodeStats>]) -> Vec<NodeReport> {
    graph
        .nodes
        .iter()
        .zip(stats)
        .map(|(n, s)| s.snapshot(&n.id, n.kind.name, n.workers))
        .collect()
}

fn build(
    node: &CheckedNode,
    ins: &[(usize, Receiver<Payload>)],
    out_consumers: Vec<usize>,
    replica: usize,
    shared: &Shared,
) -> Result<Runtime, Failure> {
    let mut connected = vec![false; node.kind.inputs.len()];
    for (p, _) in ins {
        connected[*p] = true;
    }
    let ctx = BuildCtx {
        node_id: &node.id,
        params: &node.params,
        connected_inputs: connected,
        output_consumers: out_consumers,
        replica,
        workers: node.workers,
        shared,
    };
    match catch_unwind(AssertUnwindSafe(|| (node.kind.factory)(&ctx))) {
        Ok(Ok(rt)) => Ok(rt),
        Ok(Err(error)) => Err(Failure {
            node: node.id.clone(),
            item: None,
            error,
            panicked: false,
        }),
        Err(panic) => Err(Failure {
            node: node.id.clone(),
            item: None,
            error: NodeError::runtime(panic_message(&panic)),
            panicked: true,
        }),
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".into())
}

fn batch_of(node: &CheckedNode) -> Option<(usize, crate::node::BatchConfig)> {
    node.kind.batch_port.zip(node.batch)
}

/// A node with one worker: build, (sources: wait for every setup, then run), else gather,
/// process and emit until the inputs end, then finish.
fn run_single(
    node: &CheckedNode,
    out: Outputs,
    ins: Vec<(usize, Receiver<Payload>)>,
    state: &RunState,
    shared: &Shared,
) {
    let consumers = out.ports.iter().map(Vec::len).collect();
    let built = build(node, &ins, consumers, 0, shared);
    state.setup_done();
    let rt = match built {
        Ok(rt) => rt,
        Err(f) => {
            state.fail(f);
            drain(ins, &out.stats);
            return;
        }
    };
    match rt {
        Runtime::Source(mut src) => {
            state.wait_setups();
            if state.stopping() {
                return;
            }
            let t = Instant::now();
            let r = catch_unwind(AssertUnwindSafe(|| {
                src.run(&mut Emitter::direct(&out, state, &node.id))
            }));
            stats::add(&out.stats.busy_ns, t.elapsed());
            match r {
                Ok(Ok(())) | Ok(Err(NodeError::Stopped)) => {}
                Ok(Err(error)) => state.fail(Failure {
                    node: node.id.clone(),
                    item: None,
                    error,
                    panicked: false,
                }),
                Err(p) => state.fail(Failure {
                    node: node.id.clone(),
                    item: None,
                    error: NodeError::runtime(panic_message(&p)),
                    panicked: true,
                }),
            }
        }
        Runtime::Process(mut proc) => {
            let mut gather = Gather::new(ins, batch_of(node), out.stats.clone());
            let n_out = out.ports.len();
            let mut healthy = true;
            while let Some(input) = gather.next() {
                if state.stopping() || !healthy {
                    out.stats
                        .discarded
                        .fetch_add(input.items.len() as u64, Relaxed);
                    continue;
                }
                match call(proc.as_mut(), input, node, n_out, &out.stats, state) {
                    Ok(buf) => {
                        for (port, item) in buf {
                            out.send(port, item);
                        }
                    }
                    Err(f) => {
                        healthy = false;
                        state.fail(f);
                    }
                }
            }
            finish(proc.as_mut(), node, &out, state);
        }
    }
}

fn finish(proc: &mut dyn Process, node: &CheckedNode, out: &Outputs, state: &RunState) {
    let end = if state.stopping() {
        End::Stopped
    } else {
        End::Complete
    };
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| {
        proc.finish(&mut Emitter::direct(out, state, &node.id), end)
    }));
    stats::add(&out.stats.busy_ns, t.elapsed());
    match r {
        Ok(Ok(())) | Ok(Err(NodeError::Stopped)) => {}
        Ok(Err(error)) => state.fail(Failure {
            node: node.id.clone(),
            item: Some("end of stream".into()),
            error,
            panicked: false,
        }),
        Err(p) => state.fail(Failure {
            node: node.id.clone(),
            item: None,
            error: NodeError::runtime(panic_message(&p)),
            panicked: true,
        }),
    }
}

/// Reads inputs to their end without processing, so producers never block on a dead node.
fn drain(ins: Vec<(usize, Receiver<Payload>)>, stats: &Arc<NodeStats>) {
    let mut g = Gather::new(ins, None, stats.clone());
    while let Some(input) = g.next() {
        stats.discarded.fetch_add(input.items.len() as u64, Relaxed);
    }
}

/// One `process` call under the node's `on_error` policy. Returns the outputs to deliver
/// (empty for a skipped item), or the failure that must stop the run.
fn call(
    proc: &mut dyn Process,
    input: Input,
    node: &CheckedNode,
    n_out: usize,
    stats: &NodeStats,
    state: &RunState,
) -> Result<Vec<(usize, Payload)>, Failure> {
    let attempts = match node.on_error {
        OnError::Retry(n) => n as usize + 1,
        _ => 1,
    };
    let port = input.port;
    let mut items = Some(input.items);
    let mut last_error = None;
    for attempt in 0..attempts {
        // The items are kept (Arc clones) for a retry or to name them in an error.
        let batch = items.clone().expect("items kept");
        let mut buf = vec![];
        let t = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| {
            proc.process(
                Input { port, items: batch },
                &mut Emitter::buffer(&mut buf, n_out, stats, state, &node.id),
            )
        }));
        stats::add(&stats.busy_ns, t.elapsed());
        match r {
            Ok(Ok(())) => return Ok(buf),
            Ok(Err(NodeError::Stopped)) => return Ok(vec![]),
            Ok(Err(e)) => {
                last_error = Some(e);
                if attempt + 1 < attempts {
                    stats.retries.fetch_add(1, Relaxed);
                }
            }
            Err(p) => {
                let items = items.take().unwrap_or_default();
                return Err(Failure {
                    node: node.id.clone(),
                    item: Some(describe(&items)),
                    error: NodeError::runtime(panic_message(&p)),
                    panicked: true,
                });
            }
        }
    }
    let items = items.take().unwrap_or_default();
    let error = last_error.expect("at least one attempt failed");
    if node.on_error == OnError::Skip {
        stats.record_skip(
            items
                .iter()
                .map(|i| format!("{}: {error}", i.describe()))
                .collect(),
        );
        return Ok(vec![]);
    }
    Err(Failure {
        node: node.id.clone(),
        item: Some(describe(&items)),
        error,
        panicked: false,
    })
}

fn describe(items: &[Payload]) -> String {
    match items {
        [one] => one.describe(),
        [first, .., last] => format!(
            "a batch of {} ({} … {})",
            items.len(),
            first.describe(),
            last.describe()
        ),
        [] => "no items".into(),
    }
}

/// Work for a replica: a sequence number and its input.
type Work = (u64, Input);
/// A replica's result: outputs for sequence number `seq` (`None`: a replica's `finish`).
type Done = (Option<u64>, Vec<(usize, Payload)>);

fn spawn_replicated<'s, 'e: 's>(
    scope: &'s std::thread::Scope<'s, 'e>,
    node: &'e CheckedNode,
    out: Outputs,
    ins: Vec<(usize, Receiver<Payload>)>,
    state: &'e RunState,
    shared: &'e Shared,
) {
    let workers = node.workers;
    let (work_tx, work_rx) = bounded::<Work>(workers * 2);
    let (done_tx, done_rx) = bounded::<Done>(workers * 2);
    let stats = out.stats.clone();
    let replicas_left = Arc::new(std::sync::atomic::AtomicUsize::new(workers));

    let gather_stats = stats.clone();
    std::thread::Builder::new()
        .name(format!("{}:batch", node.id))
        .spawn_scoped(scope, move || {
            let mut gather = Gather::new(ins, batch_of(node), gather_stats.clone());
            let mut seq = 0u64;
            while let Some(input) = gather.next() {
                if state.stopping() {
                    gather_stats
                        .discarded
                        .fetch_add(input.items.len() as u64, Relaxed);
                    continue;
                }
                if work_tx.send((seq, input)).is_err() {
                    break;
                }
                seq += 1;
            }
        })
        .expect("spawn dispatcher");

    let n_out = out.ports.len();
    let consumers: Vec<usize> = out.ports.iter().map(Vec::len).collect();
    for r in 0..workers {
        let (work_rx, done_tx, stats, left, consumers) = (
            work_rx.clone(),
            done_tx.clone(),
            stats.clone(),
            replicas_left.clone(),
            consumers.clone(),
        );
        std::thread::Builder::new()
            .name(format!("{}#{r}", node.id))
            .spawn_scoped(scope, move || {
                replica(
                    node, r, consumers, n_out, work_rx, done_tx, &stats, state, shared,
                );
                left.fetch_sub(1, Relaxed);
            })
            .expect("spawn replica");
    }
    drop((work_rx, done_tx));

    std::thread::Builder::new()
        .name(format!("{}:merge", node.id))
        .spawn_scoped(scope, move || {
            merge(done_rx, &out);
            out.stats.done.store(true, Relaxed);
        })
        .expect("spawn merger");
}

#[allow(clippy::too_many_arguments)]
fn replica(
    node: &CheckedNode,
    r: usize,
    consumers: Vec<usize>,
    n_out: usize,
    work: Receiver<Work>,
    done: Sender<Done>,
    stats: &NodeStats,
    state: &RunState,
    shared: &Shared,
) {
    let built = build(node, &[], consumers, r, shared);
    state.setup_done();
    let mut proc = match built {
        Ok(Runtime::Process(p)) => p,
        Ok(Runtime::Source(_)) => {
            state.fail(Failure {
                node: node.id.clone(),
                item: None,
                error: NodeError::runtime("a source cannot run replicated"),
                panicked: false,
            });
            return drain_work(work, done, stats);
        }
        Err(f) => {
            state.fail(f);
            return drain_work(work, done, stats);
        }
    };
    while let Ok((seq, input)) = work.recv() {
        if state.stopping() {
            stats.discarded.fetch_add(input.items.len() as u64, Relaxed);
            let _ = done.send((Some(seq), vec![]));
            continue;
        }
        let outputs = match call(proc.as_mut(), input, node, n_out, stats, state) {
            Ok(buf) => buf,
            Err(f) => {
                state.fail(f);
                vec![]
            }
        };
        if done.send((Some(seq), outputs)).is_err() {
            break;
        }
    }
    let end = if state.stopping() {
        End::Stopped
    } else {
        End::Complete
    };
    let mut buf = vec![];
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| {
        proc.finish(
            &mut Emitter::buffer(&mut buf, n_out, stats, state, &node.id),
            end,
        )
    }));
    stats::add(&stats.busy_ns, t.elapsed());
    match r {
        Ok(Ok(())) | Ok(Err(NodeError::Stopped)) => {}
        Ok(Err(error)) => state.fail(Failure {
            node: node.id.clone(),
            item: Some("end of stream".into()),
            error,
            panicked: false,
        }),
        Err(p) => state.fail(Failure {
            node: node.id.clone(),
            item: None,
            error: NodeError::runtime(panic_message(&p)),
            panicked: true,
        }),
    }
    let _ = done.send((None, buf));
}

fn drain_work(work: Receiver<Work>, done: Sender<Done>, stats: &NodeStats) {
    while let Ok((seq, input)) = work.recv() {
        stats.discarded.fetch_add(input.items.len() as u64, Relaxed);
        let _ = done.send((Some(seq), vec![]));
    }
}

/// Delivers replica results in sequence order; `finish` outputs come after all of them.
fn merge(done: Receiver<Done>, out: &Outputs) {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Vec<(usize, Payload)>> = BTreeMap::new();
    let mut finals = vec![];
    for (seq, outputs) in done {
        match seq {
            None => finals.push(outputs),
            Some(s) => {
                waiting.insert(s, outputs);
                while let Some(ready) = waiting.remove(&next) {
                    for (port, item) in ready {
                        out.send(port, item);
                    }
                    next += 1;
                }
            }
        }
    }
    for (port, item) in finals.into_iter().flatten() {
        out.send(port, item);
    }
}
