//! The pipelined executor. One named thread per node replica, one bounded crossbeam channel per
//! edge, end of stream by closing channels. A replicated node (`workers: N`) gets a dispatcher
//! thread that forms batches and numbers them, N replica threads, and a merger thread that puts
//! results back in sequence order. A failure (through a flag of the run's own) or the caller's
//! stop flag (Ctrl-C) stops the run: sources stop, every other node discards what is still
//! queued (counted), and `finish` runs everywhere so sinks can close their files.
//!
//! Sessions (serve graphs, see [`crate::node::session`]): every edge carries [`Msg`]s, an item
//! with its session id or a session's start or end. A node acts on a session's start when it
//! first arrives (opens its per-session state) and on its end when it has arrived on every
//! connected input (calls `end_session`, drops the state); both are then passed on to every
//! consumer, in order with the node's outputs. The outputs of a call belong to its input's
//! session, or, on a batch of several sessions, to the session of the input item in the same
//! position. With [`RunOptions::session_faults`] set, a call that fails on items of sessions
//! fails those sessions only (a batch of several sessions is retried session by session to
//! find which), and the run goes on.

mod edge;
mod gather;
pub mod stats;

pub use stats::{NodeReport, NodeStats};

use crate::config::{OnError, WhenFull};
use crate::node::emit::Outbox;
use crate::node::session::{Msg, SessionGate, SessionId};
use crate::node::{BuildCtx, Emitter, End, Input, NodeError, Process, Runtime, Shared};
use crate::payload::Payload;
use crate::plan::{Plan, PlanNode, ToPlan};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded};
use edge::{EdgeTx, NodeIo, Outputs};
use gather::{Gather, Next};
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
        // Node messages start with "node `x`: " to stand alone; here the node is named already.
        let error = self.error.to_string();
        let prefix = format!("node `{}`: ", self.node);
        write!(f, ": {}", error.strip_prefix(&prefix).unwrap_or(&error))
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
    fn start(&mut self, _plan: &Plan) {}
    /// Called about ten times a second with every node's current counters.
    fn tick(&mut self, _nodes: &[NodeReport], _elapsed: Duration) {}
    fn finish(&mut self, _report: &RunReport) {}
}

/// No progress output.
pub struct NoProgress;
impl ProgressSink for NoProgress {}

/// Told when a call fails on the items of a session (in a serve graph): the session and the
/// error, as a message that names the node and the item.
pub type SessionFaults = Arc<dyn Fn(SessionId, &str) + Send + Sync>;

pub struct RunOptions {
    pub stop: StopFlag,
    pub progress: Box<dyn ProgressSink>,
    pub shared: Arc<Shared>,
    pub tick: Duration,
    /// `Some` (a server): a node error on a session's items fails that session only, told
    /// here, instead of the run. `None`: every node error stops the run.
    pub session_faults: Option<SessionFaults>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            stop: StopFlag::new(),
            progress: Box::new(NoProgress),
            shared: Arc::new(Shared::default()),
            tick: Duration::from_millis(100),
            session_faults: None,
        }
    }
}

/// State shared by all threads of one run.
pub(crate) struct RunState {
    /// The caller's flag: only the caller sets it (Ctrl-C, a job or worker told to stop), so
    /// after the run it still tells a stopped run from a failed one.
    stop: StopFlag,
    /// Set by the first failure, to stop the other nodes of this run only.
    failed: AtomicBool,
    failure: Mutex<Option<Failure>>,
    /// Sources wait until every node has been built, so a node that fails to load its weights
    /// stops the run before any work is done.
    pending_setups: Mutex<usize>,
    setups_done: Condvar,
    faults: Option<SessionFaults>,
}

impl RunState {
    pub(crate) fn stopping(&self) -> bool {
        self.failed.load(Relaxed) || self.stop.is_set()
    }
    fn fail(&self, f: Failure) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(f);
        }
        self.failed.store(true, Relaxed);
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

/// Runs a plan (or a checked graph) to completion (or failure, or stop) and reports what every
/// node did.
pub fn run<G: ToPlan + ?Sized>(graph: &G, opts: RunOptions) -> RunReport {
    run_plan(&graph.to_plan(), opts)
}

fn run_plan(graph: &Plan, mut opts: RunOptions) -> RunReport {
    let started = Instant::now();
    let n = graph.nodes.len();
    let stats: Vec<Arc<NodeStats>> = (0..n).map(|_| Arc::new(NodeStats::default())).collect();
    let state = RunState {
        stop: opts.stop.clone(),
        failed: AtomicBool::new(false),
        failure: Mutex::new(None),
        pending_setups: Mutex::new(graph.nodes.iter().map(|n| n.workers).sum()),
        setups_done: Condvar::new(),
        faults: opts.session_faults.clone(),
    };

    // One channel per edge.
    let mut ports: Vec<Vec<Vec<EdgeTx>>> = graph
        .nodes
        .iter()
        .map(|node| node.kind.outputs.iter().map(|_| vec![]).collect())
        .collect();
    let mut inputs: Vec<Vec<(usize, Receiver<Msg>)>> = vec![vec![]; n];
    for e in &graph.edges {
        let (tx, rx) = bounded(e.queue);
        let evict = (e.when_full == WhenFull::DropOldest).then(|| rx.clone());
        ports[e.from.0][e.from.1].push(EdgeTx {
            tx,
            evict,
            consumer: stats[e.to.0].clone(),
            alive: AtomicBool::new(true),
        });
        inputs[e.to.0].push((e.to.1, rx));
    }
    let outputs: Vec<Outputs> = ports
        .into_iter()
        .zip(&stats)
        .map(|(p, s)| Outputs::new(p, s.clone()))
        .collect();

    opts.progress.start(graph);
    // Every thread of the run holds a clone of `alive`; the progress loop below ends when the
    // last one is dropped, even if a thread unwinds.
    let (alive, all_ended) = bounded::<()>(0);
    std::thread::scope(|scope| {
        let state = &state;
        let shared = &*opts.shared;
        for (i, (out, ins)) in outputs.into_iter().zip(inputs).enumerate() {
            let node = &graph.nodes[i];
            if node.workers > 1 {
                spawn_replicated(scope, node, out, ins, state, shared, &alive);
            } else {
                let alive = alive.clone();
                std::thread::Builder::new()
                    .name(node.id.clone())
                    .spawn_scoped(scope, move || {
                        let stats = out.stats.clone();
                        guarded(node, state, &stats, || {
                            run_single(node, out, ins, state, shared)
                        });
                        drop(alive);
                    })
                    .expect("spawn node thread");
            }
        }
        drop(alive);
        // This thread reports progress until every node thread has finished.
        let tick = opts.tick.max(Duration::from_millis(1));
        let mut next = Instant::now() + tick;
        loop {
            match all_ended.recv_deadline(next) {
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    opts.progress
                        .tick(&snapshot(graph, &stats), started.elapsed());
                    next = Instant::now() + tick;
                }
                Ok(()) => {}
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

fn snapshot(graph: &Plan, stats: &[Arc<NodeStats>]) -> Vec<NodeReport> {
    graph
        .nodes
        .iter()
        .zip(stats)
        .map(|(n, s)| s.snapshot(&n.id, n.kind.name, n.workers))
        .collect()
}

/// Runs a node thread's body: a panic that escapes the node calls (a `Drop`, a payload's
/// `describe`) fails the run instead of unwinding out of the thread.
fn catch_failure(node: &PlanNode, state: &RunState, body: impl FnOnce()) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(body)) {
        state.fail(Failure {
            node: node.id.clone(),
            item: None,
            error: NodeError::runtime(panic_message(&p)),
            panicked: true,
        });
    }
}

/// [`catch_failure`], then marks the node done.
fn guarded(node: &PlanNode, state: &RunState, stats: &NodeStats, body: impl FnOnce()) {
    catch_failure(node, state, body);
    stats.done.store(true, Relaxed);
}

fn build(
    node: &PlanNode,
    ins: &[(usize, Receiver<Msg>)],
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
        output_formats: node.output_formats.clone(),
        replica,
        batch: node.batch.map(|(_, b)| b),
        workers: node.workers,
        shared,
    };
    let Some(factory) = &node.kind.factory else {
        return Err(Failure {
            node: node.id.clone(),
            item: None,
            error: node.kind.not_built(&node.id),
            panicked: false,
        });
    };
    match catch_unwind(AssertUnwindSafe(|| factory(&ctx))) {
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

/// A node with one worker: build, (sources: wait for every setup, then run), else gather,
/// process and emit until the inputs end, then finish.
fn run_single(
    node: &PlanNode,
    out: Outputs,
    mut ins: Vec<(usize, Receiver<Msg>)>,
    state: &RunState,
    shared: &Shared,
) {
    let consumers = out.ports.iter().map(Vec::len).collect();
    let built = build(node, &ins, consumers, 0, shared);
    // A failed setup marks the run as failing *before* it counts as done, so no source that
    // wakes up when the last setup is done can start emitting.
    if let Err(f) = &built {
        state.fail(f.clone());
    }
    state.setup_done();
    let Ok(rt) = built else {
        drain(ins, &out.stats);
        return;
    };
    match rt {
        Runtime::Source(mut src) => {
            state.wait_setups();
            if state.stopping() {
                return;
            }
            let r = direct_busy(&out.stats, || {
                let io = NodeIo {
                    outputs: Some(&out),
                    state,
                    stats: &out.stats,
                };
                catch_unwind(AssertUnwindSafe(|| {
                    src.run(&mut Emitter::direct(&io, out.ports.len(), &node.id))
                }))
            });
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
            let stats = &*out.stats;
            let mut caller = Caller::new(node, stats, state, out.ports.len(), false);
            let inputs = ins.len();
            // Busy = the loop's time less the time blocked on inputs and outputs. The inputs
            // are dropped when their loop ends, before `finish`.
            direct_busy(stats, || match (node.batch, ins.len()) {
                // The common case, one unbatched input: no `Select`, no `Gather`, and a loop
                // of its own (`serve` is inlined into each arm: no dispatch per item).
                (None, 1) => {
                    let (port, rx) = ins.pop().expect("one input");
                    let mut gate = SessionGate::new(1);
                    // The item goes straight into the call's input: no `Next` around it
                    // (moving the larger enum cost the chain benchmark about 8 %).
                    while let Some(msg) = gather::recv_counted(&rx, stats) {
                        match msg {
                            Msg::Item(item, session) => {
                                if state.stopping() {
                                    stats.discarded.fetch_add(1, Relaxed);
                                    continue;
                                }
                                match caller.call_one(proc.as_mut(), port, item, session) {
                                    Ok(()) => caller.deliver(&out),
                                    Err(f) => state.fail(*f),
                                }
                            }
                            control => {
                                on_control(control, &mut gate, &mut caller, proc.as_mut(), &out)
                            }
                        }
                    }
                }
                (batch, _) => {
                    let mut gather = Gather::new(ins, batch, out.stats.clone());
                    serve(
                        || gather.next(),
                        &mut caller,
                        proc.as_mut(),
                        &out,
                        state,
                        inputs,
                    );
                }
            });
            finish(proc.as_mut(), node, &out, state);
        }
    }
}

/// A single-threaded node's loop: process and deliver each input until the inputs end; once
/// the run is stopping, only count what still arrives.
#[inline(always)]
fn serve(
    mut next: impl FnMut() -> Option<Next>,
    caller: &mut Caller<'_>,
    proc: &mut dyn Process,
    out: &Outputs,
    state: &RunState,
    inputs: usize,
) {
    let mut gate = SessionGate::new(inputs);
    while let Some(next) = next() {
        match next {
            Next::Input(input) => step(input, caller, proc, out, state),
            Next::Control(msg) => on_control(msg, &mut gate, caller, proc, out),
        }
    }
}

/// One input through the node: called and its outputs sent, or, once the run is stopping,
/// only counted.
#[inline(always)]
fn step(
    input: Input,
    caller: &mut Caller<'_>,
    proc: &mut dyn Process,
    out: &Outputs,
    state: &RunState,
) {
    if state.stopping() {
        caller
            .stats
            .discarded
            .fetch_add(input.items.len() as u64, Relaxed);
        return;
    }
    match caller.call(proc, input) {
        Ok(()) => caller.deliver(out),
        Err(f) => state.fail(*f),
    }
}

/// A session's start or end: acted on once it has arrived on every input (see
/// [`SessionGate`]).
#[cold]
fn on_control(
    msg: Msg,
    gate: &mut SessionGate,
    caller: &mut Caller<'_>,
    proc: &mut dyn Process,
    out: &Outputs,
) {
    if let Some(msg) = gate.on(msg) {
        caller.control(proc, msg);
        caller.deliver(out);
    }
}

fn finish(proc: &mut dyn Process, node: &PlanNode, out: &Outputs, state: &RunState) {
    let end = if state.stopping() {
        End::Stopped
    } else {
        End::Complete
    };
    let r = direct_busy(&out.stats, || {
        let io = NodeIo {
            outputs: Some(out),
            state,
            stats: &out.stats,
        };
        catch_unwind(AssertUnwindSafe(|| {
            proc.finish(&mut Emitter::direct(&io, out.ports.len(), &node.id), end)
        }))
    });
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

/// Runs `f` on a node's only thread (a source, a node's loop, a `finish`) and counts its time
/// as busy, except the time it spent blocked on empty inputs and full outputs (counted as
/// `wait_in` and `wait_out`).
fn direct_busy<T>(stats: &NodeStats, f: impl FnOnce() -> T) -> T {
    let waited = || stats.wait_in_ns.load(Relaxed) + stats.wait_out_ns.load(Relaxed);
    let before = waited();
    let t = Instant::now();
    let r = f();
    let elapsed = t.elapsed().as_nanos() as u64;
    let blocked = waited().saturating_sub(before);
    stats
        .busy_ns
        .fetch_add(elapsed.saturating_sub(blocked), Relaxed);
    r
}

/// Reads inputs to their end without processing, so producers never block on a dead node.
fn drain(ins: Vec<(usize, Receiver<Msg>)>, stats: &Arc<NodeStats>) {
    let mut g = Gather::new(ins, None, stats.clone());
    while let Some(next) = g.next() {
        if let Next::Input(input) = next {
            stats.discarded.fetch_add(input.items.len() as u64, Relaxed);
        }
    }
}

/// Enough of an item to name it in an error, taken without touching shared buffers: frames
/// and audio keep their position only (cloning them would bump the reference count of pixel
/// or sample data that other threads use too); other payloads are `Arc` clones.
enum Tag {
    Frame(u64, f64),
    Audio(f64),
    Other(Payload),
}

impl Tag {
    fn of(p: &Payload) -> Tag {
        match p {
            Payload::Frame(f) => Tag::Frame(f.index, f.pts),
            Payload::Audio(a) => Tag::Audio(a.pts),
            other => Tag::Other(other.clone()),
        }
    }
    /// As [`Payload::describe`] words it (an empty stand-in with the same position).
    fn describe(&self) -> String {
        match self {
            Tag::Frame(index, pts) => Payload::Frame(crate::payload::Frame {
                index: *index,
                pts: *pts,
                rate: crate::payload::Rate::new(1, 1),
                width: 0,
                height: 0,
                data: Arc::default(),
                format: crate::payload::PixelFormat::Rgb24,
                meta: None,
            })
            .describe(),
            Tag::Audio(pts) => Payload::Audio(crate::payload::AudioChunk {
                pts: *pts,
                sample_rate: 1,
                channels: 1,
                samples: Arc::default(),
            })
            .describe(),
            Tag::Other(p) => p.describe(),
        }
    }
}

/// How an input is named in a failure: by its first and last item's [`Tag`] and its size.
fn describe_tags(first: Option<&Tag>, last: Option<&Tag>, count: usize) -> String {
    match (first, last) {
        (Some(one), _) if count == 1 => one.describe(),
        (Some(first), Some(last)) => format!(
            "a batch of {count} ({} … {})",
            first.describe(),
            last.describe()
        ),
        _ => "no items".into(),
    }
}

/// Makes a node's `process` calls under its `on_error` policy. Outputs of a call are
/// buffered and delivered only when it succeeds, so a retried call never duplicates output.
struct Caller<'a> {
    node: &'a PlanNode,
    stats: &'a NodeStats,
    state: &'a RunState,
    n_out: usize,
    /// Add each call's time to `busy` (replicas). A node on one thread measures its busy time
    /// as a whole instead (see [`direct_busy`]), which saves two clock reads per item.
    timed: bool,
    /// The outputs of the last successful call (reused: no allocation per call).
    buf: Outbox,
}

impl<'a> Caller<'a> {
    fn new(
        node: &'a PlanNode,
        stats: &'a NodeStats,
        state: &'a RunState,
        n_out: usize,
        timed: bool,
    ) -> Caller<'a> {
        Caller {
            node,
            stats,
            state,
            n_out,
            timed,
            buf: Outbox::default(),
        }
    }

    /// One `process` call. On success its outputs are in `buf` (none for a skipped item); the
    /// error is the failure that must stop the run.
    #[inline(always)]
    fn call(&mut self, proc: &mut dyn Process, input: Input) -> Result<(), Box<Failure>> {
        debug_assert!(self.buf.is_empty());
        // A batch of several sessions, and any call in a serve graph (whose failures end only
        // the failing sessions), take the slower path that keeps the items.
        let session = input.single_session().unwrap_or(SessionId::POSITIONAL);
        if self.node.on_error != OnError::Fail
            || session == SessionId::POSITIONAL
            || (self.state.faults.is_some() && !session.is_none())
        {
            return self.call_with_policy(proc, input);
        }
        // `on_error: fail`, the hot path: one attempt, and only tags kept to name the input.
        let count = input.items.len();
        let first = input.items.first().map(Tag::of);
        let last = (count > 1).then(|| Tag::of(&input.items[count - 1]));
        let r = self.invoke(proc, session, || input);
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => self.failed(error, false, count, || {
                describe_tags(first.as_ref(), last.as_ref(), count)
            }),
            Err(p) => self.failed(NodeError::runtime(panic_message(&p)), true, count, || {
                describe_tags(first.as_ref(), last.as_ref(), count)
            }),
        }
    }

    /// [`Caller::call`] on one item, the input built only inside [`Caller::invoke`].
    #[inline(always)]
    fn call_one(
        &mut self,
        proc: &mut dyn Process,
        port: usize,
        item: Payload,
        session: SessionId,
    ) -> Result<(), Box<Failure>> {
        if self.node.on_error != OnError::Fail
            || (self.state.faults.is_some() && !session.is_none())
        {
            return self.call_with_policy(proc, Input::one_of(port, item, session));
        }
        debug_assert!(self.buf.is_empty());
        let tag = Tag::of(&item);
        let r = self.invoke(proc, session, || Input::one_of(port, item, session));
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => self.failed(error, false, 1, || describe_tags(Some(&tag), None, 1)),
            Err(p) => self.failed(NodeError::runtime(panic_message(&p)), true, 1, || {
                describe_tags(Some(&tag), None, 1)
            }),
        }
    }

    /// `process` on the input `input` builds, its outputs buffered in `buf` as `session`'s,
    /// a panic caught, the time added to the node's busy time when calls are timed. The input
    /// is built inside, where `process` takes it: built by the caller and moved in, its small
    /// fields written one by one and read back as one wide copy stalled the CPU on every item
    /// of the chain benchmark.
    #[inline(always)]
    fn invoke(
        &mut self,
        proc: &mut dyn Process,
        session: SessionId,
        input: impl FnOnce() -> Input,
    ) -> std::thread::Result<Result<(), NodeError>> {
        let t = self.timed.then(Instant::now);
        let r = catch_unwind(AssertUnwindSafe(|| {
            proc.process(
                input(),
                &mut Emitter::buffer(
                    &mut self.buf,
                    &NodeIo {
                        outputs: None,
                        state: self.state,
                        stats: self.stats,
                    },
                    self.n_out,
                    &self.node.id,
                )
                .in_session(session),
            )
        }));
        if let Some(t) = t {
            stats::add(&self.stats.busy_ns, t.elapsed());
        }
        r
    }

    /// A failed call: `Stopped` (the node gave up because the run is stopping) only counts
    /// its input as not processed; anything else is the failure.
    #[cold]
    fn failed(
        &mut self,
        error: NodeError,
        panicked: bool,
        count: usize,
        item: impl FnOnce() -> String,
    ) -> Result<(), Box<Failure>> {
        self.buf.clear();
        if let (NodeError::Stopped, false) = (&error, panicked) {
            self.stats.discarded.fetch_add(count as u64, Relaxed);
            return Ok(());
        }
        Err(Box::new(Failure {
            node: self.node.id.clone(),
            item: Some(item()),
            error,
            panicked,
        }))
    }

    /// [`Caller::call`] for `on_error: skip` and `retry: N`: the items are kept (`Arc` clones)
    /// to retry the call or to name each skipped item.
    #[inline(never)]
    fn call_with_policy(
        &mut self,
        proc: &mut dyn Process,
        input: Input,
    ) -> Result<(), Box<Failure>> {
        let attempts = match self.node.on_error {
            OnError::Retry(n) => n as usize + 1,
            _ => 1,
        };
        let port = input.port;
        let kept = input.items;
        let sessions = input.sessions;
        let session = match sessions.first() {
            Some(first) if sessions.iter().all(|s| s == first) => *first,
            Some(_) => SessionId::POSITIONAL,
            None => SessionId::NONE,
        };
        let mut last_error = None;
        for attempt in 0..attempts {
            self.buf.clear();
            let r = self.invoke(proc, session, || Input {
                port,
                items: kept.clone(),
                sessions: sessions.clone(),
            });
            let r = match r {
                Ok(Ok(())) if session == SessionId::POSITIONAL => Ok(self.positional(&sessions)),
                r => r,
            };
            match r {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(NodeError::Stopped)) => {
                    self.buf.clear();
                    self.stats.discarded.fetch_add(kept.len() as u64, Relaxed);
                    return Ok(());
                }
                Ok(Err(e)) => {
                    last_error = Some(e);
                    if attempt + 1 < attempts {
                        self.stats.retries.fetch_add(1, Relaxed);
                    }
                }
                Err(p) => {
                    let error = NodeError::runtime(panic_message(&p));
                    return self.failed(error, true, kept.len(), || describe(&kept));
                }
            }
        }
        self.buf.clear();
        let error = last_error.expect("at least one attempt failed");
        if let Some(faults) = &self.state.faults
            && self.node.on_error != OnError::Skip
            && !sessions.iter().any(|s| s.is_none())
        {
            if session == SessionId::POSITIONAL {
                // Which session's items failed? Each session's part on its own.
                return self.per_session(proc, port, kept, &sessions);
            }
            let failure = Failure {
                node: self.node.id.clone(),
                item: Some(describe(&kept)),
                error,
                panicked: false,
            };
            self.stats
                .record_skip(vec![format!("{session}: {failure}")]);
            faults(session, &failure.to_string());
            return Ok(());
        }
        if self.node.on_error == OnError::Skip {
            self.stats.record_skip(
                kept.iter()
                    .map(|i| format!("{}: {error}", i.describe()))
                    .collect(),
            );
            return Ok(());
        }
        self.failed(error, false, kept.len(), || describe(&kept))
    }

    /// Sends the last call's outputs on.
    #[inline(always)]
    fn deliver(&mut self, out: &Outputs) {
        edge::deliver(&mut self.buf, out);
    }

    /// Gives the plain outputs of a call on a batch of several sessions their sessions by
    /// position (see [`Outbox::assign_positional`]).
    #[cold]
    fn positional(&mut self, sessions: &[SessionId]) -> Result<(), NodeError> {
        self.buf.assign_positional(sessions).map_err(|(port, got)| {
            let name = self.node.kind.outputs.get(port).map_or("?", |p| p.name);
            NodeError::runtime(format!(
                "node `{}`: a batch of {} items from several sessions gave {got} outputs on `{name}`; a kind batched across sessions emits one output per input item, in order, or names each output's session with `Emitter::emit_for`",
                self.node.id,
                sessions.len()
            ))
        })
    }

    /// A failed batch of several sessions, called again one session's items at a time, so
    /// only the sessions whose items fail are failed; the outputs of the others are kept.
    #[cold]
    fn per_session(
        &mut self,
        proc: &mut dyn Process,
        port: usize,
        items: crate::node::Items,
        sessions: &[SessionId],
    ) -> Result<(), Box<Failure>> {
        let mut order: Vec<SessionId> = vec![];
        for s in sessions {
            if !order.contains(s) {
                order.push(*s);
            }
        }
        let mut all = Outbox::default();
        for s in order {
            let part: Vec<Payload> = items
                .iter()
                .zip(sessions)
                .filter(|(_, t)| **t == s)
                .map(|(i, _)| i.clone())
                .collect();
            let n = part.len();
            self.call_with_policy(proc, Input::batch_of(port, part, vec![s; n]))?;
            all.append(&mut self.buf);
        }
        std::mem::swap(&mut self.buf, &mut all);
        Ok(())
    }

    /// Acts on a session's start or end (see the module doc); what it emits is in `buf`, then
    /// the control itself, for every consumer.
    #[cold]
    fn control(&mut self, proc: &mut dyn Process, msg: Msg) {
        match msg {
            Msg::Open(s) => {
                if let Some(store) = proc.session_state() {
                    store.open(s);
                }
            }
            Msg::Close(s) => {
                if !self.state.stopping() {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        proc.end_session(
                            s,
                            &mut Emitter::buffer(
                                &mut self.buf,
                                &NodeIo {
                                    outputs: None,
                                    state: self.state,
                                    stats: self.stats,
                                },
                                self.n_out,
                                &self.node.id,
                            )
                            .in_session(s),
                        )
                    }));
                    let error = match r {
                        Ok(Ok(())) | Ok(Err(NodeError::Stopped)) => None,
                        Ok(Err(e)) => Some((e, false)),
                        Err(p) => Some((NodeError::runtime(panic_message(&p)), true)),
                    };
                    if let Some((error, panicked)) = error {
                        self.buf.clear();
                        let failure = Failure {
                            node: self.node.id.clone(),
                            item: Some(format!("the end of {s}")),
                            error,
                            panicked,
                        };
                        match &self.state.faults {
                            Some(faults) if !panicked => faults(s, &failure.to_string()),
                            _ => self.state.fail(failure),
                        }
                    }
                }
                if let Some(store) = proc.session_state() {
                    store.close(s);
                }
            }
            Msg::Item(..) => return,
        }
        self.buf.push(Outbox::EVERY_PORT, msg);
    }
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
type Work = (u64, Next);
/// A replica's result: outputs for sequence number `seq` (`None`: a replica's `finish`).
type Done = (Option<u64>, Outbox);

fn spawn_replicated<'s, 'e: 's>(
    scope: &'s std::thread::Scope<'s, 'e>,
    node: &'e PlanNode,
    out: Outputs,
    ins: Vec<(usize, Receiver<Msg>)>,
    state: &'e RunState,
    shared: &'e Shared,
    alive: &Sender<()>,
) {
    let workers = node.workers;
    let (work_tx, work_rx) = bounded::<Work>(workers * 2);
    let (done_tx, done_rx) = bounded::<Done>(workers * 2);
    let stats = out.stats.clone();

    let (gather_stats, token) = (stats.clone(), alive.clone());
    std::thread::Builder::new()
        .name(format!("{}:batch", node.id))
        .spawn_scoped(scope, move || {
            catch_failure(node, state, || {
                let inputs = ins.len();
                let mut gather = Gather::new(ins, node.batch, gather_stats.clone());
                let mut gate = SessionGate::new(inputs);
                let mut seq = 0u64;
                while let Some(next) = gather.next() {
                    let next = match next {
                        Next::Input(input) if state.stopping() => {
                            gather_stats
                                .discarded
                                .fetch_add(input.items.len() as u64, Relaxed);
                            continue;
                        }
                        Next::Input(input) => Next::Input(input),
                        Next::Control(msg) => match gate.on(msg) {
                            Some(msg) => Next::Control(msg),
                            None => continue,
                        },
                    };
                    if work_tx.send((seq, next)).is_err() {
                        break;
                    }
                    seq += 1;
                }
            });
            drop(token);
        })
        .expect("spawn dispatcher");

    let n_out = out.ports.len();
    let consumers: Vec<usize> = out.ports.iter().map(Vec::len).collect();
    for r in 0..workers {
        let (work_rx, done_tx, stats, consumers, token) = (
            work_rx.clone(),
            done_tx.clone(),
            stats.clone(),
            consumers.clone(),
            alive.clone(),
        );
        std::thread::Builder::new()
            .name(format!("{}#{r}", node.id))
            .spawn_scoped(scope, move || {
                catch_failure(node, state, || {
                    replica(
                        node, r, consumers, n_out, work_rx, done_tx, &stats, state, shared,
                    )
                });
                drop(token);
            })
            .expect("spawn replica");
    }
    drop((work_rx, done_tx));

    let token = alive.clone();
    std::thread::Builder::new()
        .name(format!("{}:merge", node.id))
        .spawn_scoped(scope, move || {
            let stats = out.stats.clone();
            // The node is done when its merger has delivered the last result: by then every
            // replica and the dispatcher have ended.
            guarded(node, state, &stats, || merge(done_rx, &out));
            drop(token);
        })
        .expect("spawn merger");
}

#[allow(clippy::too_many_arguments)]
fn replica(
    node: &PlanNode,
    r: usize,
    consumers: Vec<usize>,
    n_out: usize,
    work: Receiver<Work>,
    done: Sender<Done>,
    stats: &NodeStats,
    state: &RunState,
    shared: &Shared,
) {
    let built = match build(node, &[], consumers, r, shared) {
        Ok(Runtime::Process(p)) => Ok(p),
        Ok(Runtime::Source(_)) => Err(Failure {
            node: node.id.clone(),
            item: None,
            error: NodeError::runtime("a source cannot run replicated"),
            panicked: false,
        }),
        Err(f) => Err(f),
    };
    // As in `run_single`: fail first, then count the setup as done.
    if let Err(f) = &built {
        state.fail(f.clone());
    }
    state.setup_done();
    let Ok(mut proc) = built else {
        return drain_work(work, done, stats);
    };
    let mut caller = Caller::new(node, stats, state, n_out, true);
    while let Ok((seq, next)) = work.recv() {
        match next {
            // The checker keeps nodes with per-session state off replicas, so a session's
            // start or end only passes through.
            Next::Control(msg) => caller.buf.push(Outbox::EVERY_PORT, msg),
            Next::Input(input) if state.stopping() => {
                stats.discarded.fetch_add(input.items.len() as u64, Relaxed);
            }
            Next::Input(input) => {
                if let Err(f) = caller.call(proc.as_mut(), input) {
                    state.fail(*f);
                }
            }
        }
        if done
            .send((Some(seq), std::mem::take(&mut caller.buf)))
            .is_err()
        {
            break;
        }
    }
    let end = if state.stopping() {
        End::Stopped
    } else {
        End::Complete
    };
    let mut buf = Outbox::default();
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| {
        proc.finish(
            &mut Emitter::buffer(
                &mut buf,
                &NodeIo {
                    outputs: None,
                    state,
                    stats,
                },
                n_out,
                &node.id,
            ),
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
    while let Ok((seq, next)) = work.recv() {
        if let Next::Input(input) = next {
            stats.discarded.fetch_add(input.items.len() as u64, Relaxed);
        }
        let _ = done.send((Some(seq), Outbox::default()));
    }
}

/// Delivers replica results in sequence order; `finish` outputs come after all of them.
fn merge(done: Receiver<Done>, out: &Outputs) {
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Outbox> = BTreeMap::new();
    let mut finals = vec![];
    for (seq, outputs) in done {
        match seq {
            None => finals.push(outputs),
            Some(s) => {
                waiting.insert(s, outputs);
                while let Some(mut ready) = waiting.remove(&next) {
                    edge::deliver(&mut ready, out);
                    next += 1;
                }
            }
        }
    }
    // Results after a gap (a replica thread that died: the run is failing) still go out in
    // order, so downstream counts them.
    for mut outputs in waiting.into_values().chain(finals) {
        edge::deliver(&mut outputs, out);
    }
}
