//! Executor tests: backpressure, queue policies, order with replicas, batching, error policies,
//! failure and stop handling, fan-out, multiple inputs and end of stream. Every graph is built
//! from test kinds registered here, so these tests need no media nodes.
//!
//! Waits are structural (a node signals, the test waits for it) with generous time limits that
//! only turn a deadlock into a failure; no assertion depends on the machine being fast.

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vidflow_engine::exec::{self, Emitter, NodeReport, ProgressSink, RunOptions, RunReport};
use vidflow_engine::{
    BuildCtx, CheckedGraph, End, Frame, Input, Mode, NodeError, NodeKind, ParamSpec, ParamType,
    Payload, PortType, Process, Rate, Registry, Runtime, Source, SourceFile,
};

/// Longest a run may take before the test calls it a deadlock.
const DEADLOCK: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Test kinds
// ---------------------------------------------------------------------------------------------

type SourceFn = Box<dyn FnMut(&mut Emitter<'_>) -> Result<(), NodeError> + Send>;
type ProcessFn = Box<dyn FnMut(Input, &mut Emitter<'_>) -> Result<(), NodeError> + Send>;
type FinishFn = Box<dyn FnMut(&mut Emitter<'_>, End) -> Result<(), NodeError> + Send>;

struct Src(SourceFn);
impl Source for Src {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        (self.0)(out)
    }
}

struct Proc {
    process: ProcessFn,
    finish: Option<FinishFn>,
}
impl Process for Proc {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        (self.process)(input, out)
    }
    fn finish(&mut self, out: &mut Emitter<'_>, end: End) -> Result<(), NodeError> {
        match &mut self.finish {
            Some(f) => f(out, end),
            None => Ok(()),
        }
    }
}

fn proc(
    process: impl FnMut(Input, &mut Emitter<'_>) -> Result<(), NodeError> + Send + 'static,
) -> Proc {
    Proc {
        process: Box::new(process),
        finish: None,
    }
}

/// A source kind with one output `out`; `make` builds its loop.
fn source_kind(
    name: &'static str,
    make: impl Fn(&BuildCtx<'_>) -> SourceFn + Send + Sync + 'static,
) -> NodeKind {
    NodeKind::new(name, "test source", move |ctx| {
        Ok(Runtime::Source(Box::new(Src(make(ctx)))))
    })
    .output("out", PortType::ANY, "items")
}

/// A kind with one input `in` and one output `out`.
fn process_kind(
    name: &'static str,
    make: impl Fn(&BuildCtx<'_>) -> Proc + Send + Sync + 'static,
) -> NodeKind {
    NodeKind::new(name, "test process", move |ctx| {
        Ok(Runtime::Process(Box::new(make(ctx))))
    })
    .input("in", PortType::ANY, "items")
    .output("out", PortType::ANY, "items")
}

fn rec(i: u64) -> Payload {
    Payload::record(json!({ "index": i }))
}

fn idx(p: &Payload) -> u64 {
    p.as_record().expect("a record")["index"]
        .as_u64()
        .expect("an index")
}

fn indices(items: &[Payload]) -> Vec<u64> {
    items.iter().map(idx).collect()
}

/// `src`: emits records 0..`count`; counts successful emits in `emitted`.
fn counting_source(emitted: Arc<AtomicU64>) -> NodeKind {
    source_kind("src", move |ctx| {
        let count = ctx.params.u64("count").expect("count");
        let emitted = emitted.clone();
        Box::new(move |out| {
            out.set_total(count);
            for i in 0..count {
                out.emit(0, rec(i))?;
                emitted.fetch_add(1, SeqCst);
            }
            Ok(())
        })
    })
    .param(ParamSpec::with_default(
        "count",
        ParamType::int(),
        10,
        "items to emit",
    ))
}

/// `pass`: forwards every item of a call, in order.
fn pass_kind() -> NodeKind {
    process_kind("pass", |_| {
        proc(|input, out| {
            for item in input.items {
                out.emit(0, item)?;
            }
            Ok(())
        })
    })
}

/// A sink that keeps what it receives and how each replica's stream ended.
#[derive(Clone, Default)]
struct Collector {
    items: Arc<Mutex<Vec<Payload>>>,
    ends: Arc<Mutex<Vec<(usize, End)>>>,
}

impl Collector {
    fn kind(&self, name: &'static str) -> NodeKind {
        let me = self.clone();
        NodeKind::new(name, "test sink", move |ctx| {
            let (items, ends, replica) = (me.items.clone(), me.ends.clone(), ctx.replica);
            Ok(Runtime::Process(Box::new(Proc {
                process: Box::new(move |input, _| {
                    items.lock().unwrap().extend(input.items);
                    Ok(())
                }),
                finish: Some(Box::new(move |_, end| {
                    ends.lock().unwrap().push((replica, end));
                    Ok(())
                })),
            })))
        })
        .input("in", PortType::ANY, "items")
    }
    fn items(&self) -> Vec<Payload> {
        self.items.lock().unwrap().clone()
    }
    fn indices(&self) -> Vec<u64> {
        indices(&self.items())
    }
    fn ends(&self) -> Vec<(usize, End)> {
        let mut e = self.ends.lock().unwrap().clone();
        e.sort_by_key(|(r, _)| *r);
        e
    }
}

/// Keeps the latest per-node counters the run reported while it went on.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<NodeReport>>>);
impl ProgressSink for Capture {
    fn tick(&mut self, nodes: &[NodeReport], _elapsed: Duration) {
        *self.0.lock().unwrap() = nodes.to_vec();
    }
}
impl Capture {
    fn node(&self, id: &str) -> Option<NodeReport> {
        self.0.lock().unwrap().iter().find(|n| n.id == id).cloned()
    }
}

fn graph(registry: &Registry, yaml: &str) -> CheckedGraph {
    match vidflow_engine::check_source(SourceFile::new("t.yaml", yaml), registry, &[], Mode::Run) {
        Ok(g) => g,
        Err(e) => panic!("test graph is invalid:\n{}", e.render()),
    }
}

/// Runs on another thread so that a deadlock fails the test instead of hanging it.
fn run_opts(graph: &CheckedGraph, opts: RunOptions) -> RunReport {
    let graph = graph.clone();
    let (tx, rx) = bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(exec::run(&graph, opts));
    });
    rx.recv_timeout(DEADLOCK)
        .expect("the run did not end: deadlock")
}

fn run(graph: &CheckedGraph) -> RunReport {
    run_opts(graph, RunOptions::default())
}

fn node<'a>(report: &'a RunReport, id: &str) -> &'a NodeReport {
    report
        .node(id)
        .unwrap_or_else(|| panic!("no node `{id}` in the report"))
}

/// Polls `cond` until it holds (or fails the test after `DEADLOCK`).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < DEADLOCK, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// After a failure the sink got `sent` items; those still queued when the run began stopping
/// were discarded, so it processed a prefix of them, in order.
fn assert_prefix(sink: &Collector, report: &RunReport, sent: u64) {
    let got = sink.indices();
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    let s = node(report, "sink");
    assert_eq!(s.items_in, sent);
    assert_eq!(s.discarded + got.len() as u64, sent);
}

/// A deterministic pseudo-random number for item `i` (splitmix64).
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A sink kind that takes one item, tells `took` and then waits for `release` before it
/// takes any more.
fn stalling_sink(
    seen: Arc<Mutex<Vec<Payload>>>,
    took: Sender<()>,
    release: Receiver<()>,
) -> NodeKind {
    NodeKind::new("stall", "takes one item, then waits", move |_| {
        let (seen, took, release) = (seen.clone(), took.clone(), release.clone());
        let mut first = true;
        Ok(Runtime::Process(Box::new(proc(move |input, _| {
            seen.lock().unwrap().extend(input.items);
            if first {
                first = false;
                took.send(()).unwrap();
                release.recv().unwrap();
            }
            Ok(())
        }))))
    })
    .input("in", PortType::ANY, "items")
}

// ---------------------------------------------------------------------------------------------
// Backpressure and queue policies
// ---------------------------------------------------------------------------------------------

#[test]
fn producer_blocks_after_exactly_queue_items_when_the_consumer_stalls() {
    let emitted = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(vec![]));
    let (took_tx, took_rx) = unbounded();
    let (release_tx, release_rx) = unbounded();
    let mut r = Registry::new();
    r.register(counting_source(emitted.clone()))
        .register(stalling_sink(seen.clone(), took_tx, release_rx));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
    params: { count: 100 }
  - id: sink
    kind: stall
    inputs:
      in: { from: src.out, queue: 3 }
",
    );
    let capture = Capture::default();
    let opts = RunOptions {
        progress: Box::new(capture.clone()),
        tick: Duration::from_millis(5),
        ..Default::default()
    };
    let handle = {
        let g = g.clone();
        std::thread::spawn(move || exec::run(&g, opts))
    };
    took_rx
        .recv_timeout(DEADLOCK)
        .expect("the sink took an item");
    // One item taken by the stalled consumer + exactly `queue` items queued.
    wait_until("the source has emitted 4 items", || {
        emitted.load(SeqCst) >= 4
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(emitted.load(SeqCst), 4, "the producer must block");
    wait_until("progress shows the blocked state", || {
        capture
            .node("src")
            .is_some_and(|n| n.items_out == 4 && !n.done)
    });
    std::thread::sleep(Duration::from_millis(100));
    let src = capture.node("src").unwrap();
    let sink = capture.node("sink").unwrap();
    assert_eq!((src.items_out, sink.items_in), (4, 1));
    assert_eq!(emitted.load(SeqCst), 4);

    release_tx.send(()).unwrap();
    let t = Instant::now();
    while !handle.is_finished() {
        assert!(t.elapsed() < DEADLOCK, "the run did not end after release");
        std::thread::sleep(Duration::from_millis(2));
    }
    let report = handle.join().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(emitted.load(SeqCst), 100);
    assert_eq!(indices(&seen.lock().unwrap()), (0..100).collect::<Vec<_>>());
    let (src, sink) = (node(&report, "src"), node(&report, "sink"));
    assert_eq!((src.items_out, sink.items_in), (100, 100));
    assert_eq!((sink.dropped, sink.discarded), (0, 0));
    assert!(src.done && sink.done);
    // The source spent time blocked on its output while the sink stalled.
    assert!(
        src.wait_out >= Duration::from_millis(300),
        "{:?}",
        src.wait_out
    );
}

#[test]
fn drop_oldest_drops_the_oldest_items_and_counts_them() {
    let seen = Arc::new(Mutex::new(vec![]));
    let (took_tx, took_rx) = unbounded();
    let (release_tx, release_rx) = unbounded::<()>();
    let (emitted_all_tx, emitted_all_rx) = unbounded::<()>();
    let mut r = Registry::new();
    r.register(source_kind("src", move |_| {
        let (took_rx, emitted_all_tx) = (took_rx.clone(), emitted_all_tx.clone());
        Box::new(move |out| {
            out.emit(0, rec(0))?;
            // Wait until the consumer holds item 0, so the queue state below is exact.
            took_rx.recv().unwrap();
            for i in 1..10 {
                out.emit(0, rec(i))?;
            }
            emitted_all_tx.send(()).unwrap();
            Ok(())
        })
    }))
    .register(stalling_sink(seen.clone(), took_tx, release_rx));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
  - id: sink
    kind: stall
    inputs:
      in: { from: src.out, queue: 3, when_full: drop_oldest }
",
    );
    let release = std::thread::spawn(move || {
        // A drop_oldest producer never blocks: it finishes while the consumer is stalled.
        emitted_all_rx
            .recv_timeout(DEADLOCK)
            .expect("the source emitted everything while the consumer stalled");
        release_tx.send(()).unwrap();
    });
    let report = run(&g);
    release.join().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    // Item 0 was taken before the stall; of 1..=9 only the newest 3 were still queued.
    assert_eq!(indices(&seen.lock().unwrap()), vec![0, 7, 8, 9]);
    let (src, sink) = (node(&report, "src"), node(&report, "sink"));
    assert_eq!(src.items_out, 10);
    assert_eq!(sink.items_in, 4);
    assert_eq!(sink.dropped, 6);
    assert_eq!(
        src.wait_out,
        Duration::ZERO,
        "a drop_oldest producer never waits"
    );
}

// ---------------------------------------------------------------------------------------------
// Replicas keep order
// ---------------------------------------------------------------------------------------------

/// `jitter`: forwards every item of a call after a pseudo-random delay of 0–3 ms.
fn jitter_kind(batched: bool) -> NodeKind {
    let k = process_kind("jitter", |_| {
        proc(|input, out| {
            let first = idx(&input.items[0]);
            std::thread::sleep(Duration::from_micros(mix(first) % 3000));
            for item in input.items {
                out.emit(0, item)?;
            }
            Ok(())
        })
    });
    if batched { k.batched("in", None) } else { k }
}

#[test]
fn replicas_keep_order_with_random_delays() {
    let sink = Collector::default();
    let mut r = Registry::new();
    r.register(counting_source(Arc::default()))
        .register(jitter_kind(false))
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
    params: { count: 300 }
  - id: work
    kind: jitter
    workers: 4
    inputs: { in: src.out }
  - id: sink
    kind: sink
    inputs: { in: work.out }
",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(sink.indices(), (0..300).collect::<Vec<_>>());
    let work = node(&report, "work");
    assert_eq!(work.workers, 4);
    assert_eq!((work.items_in, work.items_out), (300, 300));
    assert_eq!((work.batches, work.discarded), (0, 0));
    assert!(work.done);
    assert_eq!(node(&report, "sink").items_in, 300);
    assert_eq!(sink.ends(), vec![(0, End::Complete)]);
}

#[test]
fn replicas_keep_order_with_batches() {
    let sink = Collector::default();
    let sizes = Arc::new(Mutex::new(vec![]));
    let mut r = Registry::new();
    let s = sizes.clone();
    r.register(counting_source(Arc::default()))
        .register(
            process_kind("jitter", move |_| {
                let sizes = s.clone();
                proc(move |input, out| {
                    sizes.lock().unwrap().push(input.items.len());
                    let first = idx(&input.items[0]);
                    std::thread::sleep(Duration::from_micros(mix(first) % 3000));
                    for item in input.items {
                        out.emit(0, item)?;
                    }
                    Ok(())
                })
            })
            .batched("in", None),
        )
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
    params: { count: 257 }
  - id: work
    kind: jitter
    workers: 3
    batch: { max: 5, wait_ms: 2 }
    inputs: { in: src.out }
  - id: sink
    kind: sink
    inputs: { in: work.out }
",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(sink.indices(), (0..257).collect::<Vec<_>>());
    let sizes = sizes.lock().unwrap().clone();
    assert!(sizes.iter().all(|&s| (1..=5).contains(&s)), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 257);
    let work = node(&report, "work");
    assert_eq!((work.items_in, work.items_out), (257, 257));
    assert_eq!(work.batches, sizes.len() as u64);
    assert_eq!(work.batch_items, 257);
    assert_eq!(work.max_batch, *sizes.iter().max().unwrap() as u64);
}

// ---------------------------------------------------------------------------------------------
// Batching
// ---------------------------------------------------------------------------------------------

/// `batcher`: records the size of every batch it gets and forwards the items.
fn batcher_kind(sizes: Arc<Mutex<Vec<usize>>>, got: Option<Sender<Instant>>) -> NodeKind {
    process_kind("batcher", move |_| {
        let (sizes, got) = (sizes.clone(), got.clone());
        proc(move |input, out| {
            sizes.lock().unwrap().push(input.items.len());
            if let Some(g) = &got {
                let _ = g.send(Instant::now());
            }
            for item in input.items {
                out.emit(0, item)?;
            }
            Ok(())
        })
    })
    .batched("in", None)
}

#[test]
fn batches_form_at_max_and_the_last_one_at_end_of_stream() {
    let sizes = Arc::new(Mutex::new(vec![]));
    let sink = Collector::default();
    let mut r = Registry::new();
    r.register(counting_source(Arc::default()))
        .register(batcher_kind(sizes.clone(), None))
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
    params: { count: 20 }
  - id: b
    kind: batcher
    batch: { max: 8, wait_ms: 60000 }
    inputs: { in: src.out }
  - id: sink
    kind: sink
    inputs: { in: b.out }
",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(*sizes.lock().unwrap(), vec![8, 8, 4]);
    assert_eq!(sink.indices(), (0..20).collect::<Vec<_>>());
    let b = node(&report, "b");
    assert_eq!((b.batches, b.batch_items, b.max_batch), (3, 20, 8));
    assert_eq!(b.mean_batch(), Some(20.0 / 3.0));
    assert_eq!((b.items_in, b.items_out), (20, 20));
    // The partial batch formed at end of stream, not after the 60 s wait.
    assert!(
        report.elapsed < Duration::from_secs(30),
        "{:?}",
        report.elapsed
    );
}

#[test]
fn a_batch_forms_by_timeout_before_it_is_full() {
    const WAIT: Duration = Duration::from_millis(300);
    let sizes = Arc::new(Mutex::new(vec![]));
    let (got_tx, got_rx) = unbounded::<Instant>();
    let waited: Arc<Mutex<Option<Duration>>> = Arc::default();
    let sink = Collector::default();
    let mut r = Registry::new();
    let w = waited.clone();
    r.register(source_kind("src", move |_| {
        let (got_rx, waited) = (got_rx.clone(), w.clone());
        Box::new(move |out| {
            let sent = Instant::now();
            out.emit(0, rec(0))?;
            // The stream goes on only after the first batch formed: it can only have formed
            // because `wait_ms` passed.
            let formed = got_rx.recv().unwrap();
            *waited.lock().unwrap() = Some(formed - sent);
            for i in 1..=8 {
                out.emit(0, rec(i))?;
            }
            Ok(())
        })
    }))
    .register(batcher_kind(sizes.clone(), Some(got_tx)))
    .register(sink.kind("sink"));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
  - id: b
    kind: batcher
    batch: { max: 8, wait_ms: 300 }
    inputs: { in: src.out }
  - id: sink
    kind: sink
    inputs: { in: b.out }
",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(*sizes.lock().unwrap(), vec![1, 8]);
    let waited = waited
        .lock()
        .unwrap()
        .expect("the source saw the first batch");
    assert!(waited >= WAIT, "the batch of 1 formed after {waited:?}");
    assert_eq!(sink.indices(), (0..=8).collect::<Vec<_>>());
    let b = node(&report, "b");
    assert_eq!((b.batches, b.batch_items, b.max_batch), (2, 9, 8));
    assert_eq!(b.mean_batch(), Some(4.5));
}

#[test]
fn wait_ms_zero_batches_what_is_already_queued() {
    let sizes = Arc::new(Mutex::new(vec![]));
    let (took_tx, took_rx) = unbounded::<()>();
    let (queued_tx, queued_rx) = unbounded::<()>();
    let mut r = Registry::new();
    r.register(source_kind("src", move |_| {
        let (took_rx, queued_tx) = (took_rx.clone(), queued_tx.clone());
        Box::new(move |out| {
            out.emit(0, rec(0))?;
            took_rx.recv().unwrap();
            for i in 1..=6 {
                out.emit(0, rec(i))?;
            }
            queued_tx.send(()).unwrap();
            Ok(())
        })
    }))
    .register({
        let sizes = sizes.clone();
        NodeKind::new("b", "stalls on its first batch", move |_| {
            let (sizes, took, queued) = (sizes.clone(), took_tx.clone(), queued_rx.clone());
            Ok(Runtime::Process(Box::new(proc(move |input, _| {
                sizes.lock().unwrap().push(input.items.len());
                if idx(&input.items[0]) == 0 {
                    took.send(()).unwrap();
                    queued.recv().unwrap();
                }
                Ok(())
            }))))
        })
        .input("in", PortType::ANY, "items")
        .batched("in", None)
    });
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
  - id: b
    kind: b
    batch: { max: 4, wait_ms: 0 }
    inputs: { in: src.out }
",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    // Six items were queued when the node asked for its second batch.
    assert_eq!(*sizes.lock().unwrap(), vec![1, 4, 2]);
    let b = node(&report, "b");
    assert_eq!((b.batches, b.batch_items, b.max_batch), (3, 7, 4));
}

// ---------------------------------------------------------------------------------------------
// on_error policies
// ---------------------------------------------------------------------------------------------

/// `flaky`: emits the item, then fails the first `fails` attempts for item 5.
fn flaky_kind(fails: u32) -> NodeKind {
    process_kind("flaky", move |_| {
        let mut attempts: HashMap<u64, u32> = HashMap::new();
        proc(move |input, out| {
            let i = idx(&input.items[0]);
            out.emit(0, input.items[0].clone())?;
            let a = attempts.entry(i).or_default();
            *a += 1;
            if i == 5 && *a <= fails {
                return Err(NodeError::runtime(format!("attempt {a} failed")));
            }
            Ok(())
        })
    })
}

fn flaky_graph(retry: u32, sink: &Collector) -> CheckedGraph {
    let mut r = Registry::new();
    r.register(counting_source(Arc::default()))
        .register(flaky_kind(2))
        .register(sink.kind("sink"));
    graph(
        &r,
        &format!(
            "nodes:
  - id: src
    kind: src
    params: {{ count: 10 }}
  - id: flaky
    kind: flaky
    on_error: {{ retry: {retry} }}
    inputs: {{ in: src.out }}
  - id: sink
    kind: sink
    inputs: {{ in: flaky.out }}
"
        ),
    )
}

#[test]
fn retry_recovers_an_item_without_duplicating_outputs() {
    let sink = Collector::default();
    let report = run(&flaky_graph(2, &sink));
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(sink.indices(), (0..10).collect::<Vec<_>>());
    let f = node(&report, "flaky");
    assert_eq!(f.retries, 2);
    assert_eq!((f.items_in, f.items_out, f.skipped), (10, 10, 0));
    assert_eq!(sink.ends(), vec![(0, End::Complete)]);
}

#[test]
fn retry_fails_the_run_when_attempts_run_out() {
    let sink = Collector::default();
    let report = run(&flaky_graph(1, &sink));
    let failure = report.failure.as_ref().expect("the run fails");
    assert_eq!(failure.node, "flaky");
    assert_eq!(failure.item.as_deref(), Some("record 5"));
    assert_eq!(failure.error.to_string(), "attempt 2 failed");
    assert!(!failure.panicked);
    assert!(!report.interrupted);
    let f = node(&report, "flaky");
    assert_eq!((f.retries, f.items_out), (1, 5));
    assert_eq!(f.items_in, f.items_out + 1 + f.discarded);
    // Nothing from the failed item's attempts reached the sink, and nothing after it.
    assert_prefix(&sink, &report, 5);
    assert_eq!(sink.ends(), vec![(0, End::Stopped)]);
}

#[test]
fn skip_counts_and_names_skipped_items() {
    let sink = Collector::default();
    let mut r = Registry::new();
    r.register(counting_source(Arc::default()))
        .register(process_kind("picky", |_| {
            proc(|input, out| {
                let i = idx(&input.items[0]);
                if i == 3 || i == 7 {
                    return Err(NodeError::input(format!("bad item {i}")));
                }
                out.emit(0, input.items[0].clone())
            })
        }))
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
    params: { count: 10 }
  - id: picky
    kind: picky
    on_error: skip
    inputs: { in: src.out }
  - id: sink
    kind: sink
    inputs: { in: picky.out }
",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(sink.indices(), vec![0, 1, 2, 4, 5, 6, 8, 9]);
    let p = node(&report, "picky");
    assert_eq!(p.skipped, 2);
    assert_eq!(
        p.skipped_items,
        vec!["record 3: bad item 3", "record 7: bad item 7"]
    );
    assert_eq!((p.items_in, p.items_out, p.retries), (10, 8, 0));
    assert_eq!(sink.ends(), vec![(0, End::Complete)]);
    let summary = vidflow_engine::progress::summary(&report);
    assert!(summary.contains("picky: skipped 2 items:"), "{summary}");
    assert!(summary.contains("  - record 7: bad item 7"), "{summary}");
}

// ---------------------------------------------------------------------------------------------
// Failures and stops
// ---------------------------------------------------------------------------------------------

const LONG: u64 = 10_000_000;

#[test]
fn a_panicking_node_stops_the_run() {
    let emitted = Arc::new(AtomicU64::new(0));
    let sink = Collector::default();
    let mut r = Registry::new();
    r.register(counting_source(emitted.clone()))
        .register(process_kind("boom", |_| {
            proc(|input, out| {
                let i = idx(&input.items[0]);
                if i == 10 {
                    panic!("boom at {i}");
                }
                out.emit(0, input.items[0].clone())
            })
        }))
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        &format!(
            "nodes:
  - id: src
    kind: src
    params: {{ count: {LONG} }}
  - id: boom
    kind: boom
    inputs: {{ in: src.out }}
  - id: sink
    kind: sink
    inputs: {{ in: boom.out }}
"
        ),
    );
    let report = run(&g);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!(f.node, "boom");
    assert!(f.panicked);
    assert_eq!(f.item.as_deref(), Some("record 10"));
    assert_eq!(f.error.to_string(), "boom at 10");
    assert_eq!(
        f.to_string(),
        "node `boom` panicked on record 10: boom at 10"
    );
    assert!(!report.interrupted && !report.ok());
    let src = node(&report, "src");
    assert!(src.items_out < LONG, "the source stopped early");
    assert_eq!(src.items_out, emitted.load(SeqCst));
    assert_prefix(&sink, &report, 10);
    assert_eq!(sink.ends(), vec![(0, End::Stopped)]);
    let boom = node(&report, "boom");
    // Everything the failed node received is accounted for.
    assert_eq!(boom.items_in, src.items_out);
    assert_eq!(boom.items_out, 10);
    assert_eq!(boom.discarded, boom.items_in - 11);
    assert!(report.nodes.iter().all(|n| n.done));
}

#[test]
fn a_failing_node_names_its_error_and_item() {
    let sink = Collector::default();
    let mut r = Registry::new();
    r.register(counting_source(Arc::default()))
        .register(process_kind("bad", |_| {
            proc(|input, out| {
                if idx(&input.items[0]) == 4 {
                    return Err(NodeError::input("cannot read thing.mp4: no such file"));
                }
                out.emit(0, input.items[0].clone())
            })
        }))
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        &format!(
            "nodes:
  - id: src
    kind: src
    params: {{ count: {LONG} }}
  - id: bad
    kind: bad
    inputs: {{ in: src.out }}
  - id: sink
    kind: sink
    inputs: {{ in: bad.out }}
"
        ),
    );
    let report = run(&g);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!(f.node, "bad");
    assert_eq!(f.item.as_deref(), Some("record 4"));
    assert!(matches!(&f.error, NodeError::Input(m) if m == "cannot read thing.mp4: no such file"));
    assert!(!f.panicked);
    assert_eq!(
        f.to_string(),
        "node `bad` failed on record 4: cannot read thing.mp4: no such file"
    );
    assert!(node(&report, "src").items_out < LONG);
    assert_prefix(&sink, &report, 4);
    assert_eq!(sink.ends(), vec![(0, End::Stopped)]);
}

#[test]
fn a_failing_batch_is_named_by_its_first_and_last_item() {
    let mut r = Registry::new();
    r.register(counting_source(Arc::default())).register(
        process_kind("bad", |_| {
            proc(|input, _| {
                if input.items.iter().any(|p| idx(p) == 9) {
                    return Err(NodeError::runtime("model error"));
                }
                Ok(())
            })
        })
        .batched("in", None),
    );
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
    params: { count: 20 }
  - id: bad
    kind: bad
    batch: { max: 4, wait_ms: 60000 }
    inputs: { in: src.out }
",
    );
    let report = run(&g);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!(f.node, "bad");
    assert_eq!(
        f.item.as_deref(),
        Some("a batch of 4 (record 8 … record 11)")
    );
    assert_eq!(f.error.to_string(), "model error");
}

#[test]
fn a_factory_error_stops_the_run_before_any_source_emits() {
    for workers in [1, 2] {
        // Repeated: a race between "setups done" and "the run is failing" shows up rarely.
        for _ in 0..20 {
            let emitted = Arc::new(AtomicU64::new(0));
            let sink = Collector::default();
            let mut r = Registry::new();
            r.register(counting_source(emitted.clone()))
                .register(pass_kind())
                .register(
                    NodeKind::new("broken", "cannot load", |ctx| {
                        if ctx.replica + 1 == ctx.workers {
                            Err(NodeError::input("weights.pth: no such file"))
                        } else {
                            Ok(Runtime::Process(Box::new(proc(|_, _| Ok(())))))
                        }
                    })
                    .input("in", PortType::ANY, "items")
                    .output("out", PortType::ANY, "items"),
                )
                .register(sink.kind("sink"));
            let g = graph(
                &r,
                &format!(
                    "nodes:
  - id: src
    kind: src
    params: {{ count: 1000 }}
  - id: a
    kind: pass
    inputs: {{ in: src.out }}
  - id: broken
    kind: broken
    workers: {workers}
    inputs: {{ in: a.out }}
  - id: sink
    kind: sink
    inputs: {{ in: broken.out }}
"
                ),
            );
            let report = run(&g);
            let f = report.failure.as_ref().expect("the run fails");
            assert_eq!(f.node, "broken");
            assert_eq!(f.item, None);
            assert_eq!(f.error.to_string(), "weights.pth: no such file");
            assert!(!f.panicked);
            assert_eq!(emitted.load(SeqCst), 0, "no source may emit");
            for n in &report.nodes {
                assert_eq!((n.items_in, n.items_out), (0, 0), "{}", n.id);
                assert!(n.done, "{}", n.id);
            }
            assert_eq!(sink.ends(), vec![(0, End::Stopped)]);
        }
    }
}

#[test]
fn a_factory_panic_is_a_failure() {
    let mut r = Registry::new();
    r.register(counting_source(Arc::default())).register(
        NodeKind::new("broken", "panics while building", |_| {
            panic!("bad weights layout")
        })
        .input("in", PortType::ANY, "items"),
    );
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
  - id: broken
    kind: broken
    inputs: { in: src.out }
",
    );
    let report = run(&g);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!((f.node.as_str(), f.panicked), ("broken", true));
    assert_eq!(f.error.to_string(), "bad weights layout");
    assert_eq!(node(&report, "src").items_out, 0);
}

/// A node whose `Drop` panics: the thread that owns it must still end the run cleanly.
struct PanicOnDrop;
impl Process for PanicOnDrop {
    fn process(&mut self, _: Input, _: &mut Emitter<'_>) -> Result<(), NodeError> {
        Ok(())
    }
}
impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("dropped badly");
    }
}

#[test]
fn a_panic_outside_the_node_calls_still_ends_the_run() {
    for workers in [1, 2] {
        let sink = Collector::default();
        let mut r = Registry::new();
        r.register(counting_source(Arc::default()))
            .register(pass_kind())
            .register(
                NodeKind::new("sloppy", "panics in Drop", |_| {
                    Ok(Runtime::Process(Box::new(PanicOnDrop)))
                })
                .input("in", PortType::ANY, "items"),
            )
            .register(sink.kind("sink"));
        let g = graph(
            &r,
            &format!(
                "nodes:
  - id: src
    kind: src
    params: {{ count: 30 }}
  - id: a
    kind: pass
    inputs: {{ in: src.out }}
  - id: sloppy
    kind: sloppy
    workers: {workers}
    inputs: {{ in: a.out }}
  - id: sink
    kind: sink
    inputs: {{ in: a.out }}
"
            ),
        );
        let report = run(&g);
        let f = report.failure.as_ref().expect("the run fails");
        assert_eq!((f.node.as_str(), f.panicked), ("sloppy", true));
        assert_eq!(f.error.to_string(), "dropped badly");
        assert_eq!(node(&report, "sloppy").items_in, 30);
        assert_prefix(&sink, &report, 30);
        assert!(report.nodes.iter().all(|n| n.done));
    }
}

#[test]
fn a_failure_mid_chain_while_upstream_is_blocked_stops_cleanly() {
    let emitted = Arc::new(AtomicU64::new(0));
    let a_calls = Arc::new(AtomicU64::new(0));
    let sink = Collector::default();
    let mut r = Registry::new();
    let (e, calls) = (emitted.clone(), a_calls.clone());
    r.register(counting_source(emitted.clone()))
        .register(process_kind("pass", move |_| {
            let calls = calls.clone();
            proc(move |input, out| {
                out.emit(0, input.items[0].clone())?;
                calls.fetch_add(1, SeqCst);
                Ok(())
            })
        }))
        .register(process_kind("fail", move |_| {
            let (e, calls) = (e.clone(), a_calls.clone());
            proc(move |input, out| {
                // Hold item 0 until every queue upstream is full and both upstream nodes are
                // blocked sending, then fail.
                wait_until("upstream is blocked", || {
                    e.load(SeqCst) == 4 && calls.load(SeqCst) == 3
                });
                std::thread::sleep(Duration::from_millis(100));
                let _ = (input, out);
                Err(NodeError::runtime("gpu lost"))
            })
        }))
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        &format!(
            "nodes:
  - id: src
    kind: src
    params: {{ count: {LONG} }}
  - id: a
    kind: pass
    inputs: {{ in: {{ from: src.out, queue: 1 }} }}
  - id: b
    kind: fail
    inputs: {{ in: {{ from: a.out, queue: 1 }} }}
  - id: sink
    kind: sink
    inputs: {{ in: {{ from: b.out, queue: 1 }} }}
"
        ),
    );
    let report = run(&g);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!(f.node, "b");
    assert_eq!(f.item.as_deref(), Some("record 0"));
    let (src, a, b, s) = (
        node(&report, "src"),
        node(&report, "a"),
        node(&report, "b"),
        node(&report, "sink"),
    );
    // b held 0; a's queue held 1, a was blocked sending 2; src's queue held 3 and src was
    // blocked sending 4 (practically always; 4 if it had not yet called emit).
    assert!(matches!(src.items_out, 4 | 5), "{}", src.items_out);
    assert_eq!(a.items_in, src.items_out);
    assert_eq!((a.items_out, a.discarded), (3, src.items_out - 3));
    assert_eq!((b.items_in, b.items_out, b.discarded), (3, 0, 2));
    assert_eq!((s.items_in, s.items_out), (0, 0));
    assert!(sink.items().is_empty());
    assert_eq!(sink.ends(), vec![(0, End::Stopped)]);
    assert!(report.nodes.iter().all(|n| n.done));
}

#[test]
fn a_stop_from_outside_interrupts_an_endless_source() {
    let emitted = Arc::new(AtomicU64::new(0));
    let sink = Collector::default();
    let (got50_tx, got50_rx) = bounded::<()>(1);
    let mut r = Registry::new();
    let items = sink.items.clone();
    r.register(source_kind("forever", {
        let emitted = emitted.clone();
        move |_| {
            let emitted = emitted.clone();
            Box::new(move |out| {
                for i in 0.. {
                    out.emit(0, rec(i))?;
                    emitted.fetch_add(1, SeqCst);
                }
                Ok(())
            })
        }
    }))
    .register(pass_kind())
    .register(sink.kind("sink"))
    .register(
        NodeKind::new("watch", "signals after 50 items", move |_| {
            let (tx, items) = (got50_tx.clone(), items.clone());
            Ok(Runtime::Process(Box::new(proc(move |_, _| {
                if items.lock().unwrap().len() >= 50 {
                    let _ = tx.try_send(());
                }
                Ok(())
            }))))
        })
        .input("in", PortType::ANY, "items"),
    );
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: forever
  - id: a
    kind: pass
    inputs: { in: src.out }
  - id: sink
    kind: sink
    inputs: { in: a.out }
  - id: watch
    kind: watch
    inputs: { in: a.out }
",
    );
    let opts = RunOptions::default();
    let stop = opts.stop.clone();
    let ctrl_c = std::thread::spawn(move || {
        got50_rx.recv_timeout(DEADLOCK).expect("50 items arrived");
        stop.stop();
    });
    let report = run_opts(&g, opts);
    ctrl_c.join().unwrap();
    assert!(report.interrupted);
    assert!(report.failure.is_none());
    assert!(!report.ok());
    let got = sink.indices();
    assert!(got.len() >= 50);
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    assert_eq!(sink.ends(), vec![(0, End::Stopped)]);
    let src = node(&report, "src");
    assert_eq!(src.items_out, emitted.load(SeqCst));
    let a = node(&report, "a");
    assert_eq!(a.items_in, src.items_out);
    assert_eq!(a.items_in, a.items_out + a.discarded);
    let s = node(&report, "sink");
    assert_eq!(s.items_in, s.discarded + got.len() as u64);
    assert!(report.nodes.iter().all(|n| n.done));
}

#[test]
fn a_stop_before_the_run_starts_emits_nothing() {
    let emitted = Arc::new(AtomicU64::new(0));
    let sink = Collector::default();
    let mut r = Registry::new();
    r.register(counting_source(emitted.clone()))
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
  - id: sink
    kind: sink
    inputs: { in: src.out }
",
    );
    let opts = RunOptions::default();
    opts.stop.stop();
    let report = run_opts(&g, opts);
    assert!(report.interrupted);
    assert_eq!(emitted.load(SeqCst), 0);
    assert_eq!(sink.ends(), vec![(0, End::Stopped)]);
}

// ---------------------------------------------------------------------------------------------
// Fan-out, several inputs, end of stream
// ---------------------------------------------------------------------------------------------

#[test]
fn fan_out_gives_every_item_to_every_consumer_sharing_the_data() {
    let made: Arc<Mutex<Vec<usize>>> = Arc::default();
    let (left, right) = (Collector::default(), Collector::default());
    let mut r = Registry::new();
    let m = made.clone();
    r.register(source_kind("frames", move |_| {
        let made = m.clone();
        Box::new(move |out| {
            for i in 0..40u64 {
                let f = Frame::new(
                    i,
                    i as f64 / 25.0,
                    Rate::new(25, 1),
                    4,
                    2,
                    vec![i as u8; 24],
                );
                made.lock().unwrap().push(Arc::as_ptr(&f.data) as usize);
                out.emit(0, Payload::Frame(f))?;
            }
            Ok(())
        })
    }))
    .register(left.kind("left"))
    .register(right.kind("right"));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: frames
  - id: l
    kind: left
    inputs: { in: { from: src.out, queue: 2 } }
  - id: r
    kind: right
    inputs: { in: src.out }
",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    let made = made.lock().unwrap().clone();
    for sink in [&left, &right] {
        let items = sink.items();
        let frames: Vec<&Frame> = items.iter().map(|p| p.as_frame().unwrap()).collect();
        assert_eq!(
            frames.iter().map(|f| f.index).collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
        let ptrs: Vec<usize> = frames
            .iter()
            .map(|f| Arc::as_ptr(&f.data) as usize)
            .collect();
        assert_eq!(ptrs, made, "frame data is shared, not copied");
    }
    let (l, r) = (left.items.lock().unwrap(), right.items.lock().unwrap());
    for (a, b) in l.iter().zip(r.iter()) {
        let (a, b) = (a.as_frame().unwrap(), b.as_frame().unwrap());
        assert!(Arc::ptr_eq(&a.data, &b.data));
        // Held by exactly the two sinks: the engine kept no copy.
        assert_eq!(Arc::strong_count(&a.data), 2);
    }
    // Counted once per item emitted, whatever the number of consumers.
    assert_eq!(node(&report, "src").items_out, 40);
    assert_eq!(node(&report, "l").items_in, 40);
    assert_eq!(node(&report, "r").items_in, 40);
}

/// `zip`: two inputs `a` and `b`; forwards `{port, index}` for every item, optionally batching
/// port `a`.
fn two_input_kind(batch_a: bool) -> NodeKind {
    let k = NodeKind::new("two", "two inputs", |_| {
        Ok(Runtime::Process(Box::new(proc(|input, out| {
            for item in input.items {
                out.emit(
                    0,
                    Payload::record(json!({"port": input.port, "index": idx(&item)})),
                )?;
            }
            Ok(())
        }))))
    })
    .input("a", PortType::ANY, "first stream")
    .input("b", PortType::ANY, "second stream")
    .output("out", PortType::ANY, "both");
    if batch_a { k.batched("a", None) } else { k }
}

fn two_sources() -> [NodeKind; 2] {
    let mk = |name: &'static str| {
        source_kind(name, |ctx| {
            let count = ctx.params.u64("count").unwrap();
            Box::new(move |out| {
                for i in 0..count {
                    if mix(i).is_multiple_of(8) {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    out.emit(0, rec(i))?;
                }
                Ok(())
            })
        })
        .param(ParamSpec::required("count", ParamType::int(), "items"))
    };
    [mk("sa"), mk("sb")]
}

fn check_two_inputs(batch: &str, batch_a: bool) {
    let sink = Collector::default();
    let mut r = Registry::new();
    let [sa, sb] = two_sources();
    r.register(sa)
        .register(sb)
        .register(two_input_kind(batch_a))
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        &format!(
            "nodes:
  - id: sa
    kind: sa
    params: {{ count: 150 }}
  - id: sb
    kind: sb
    params: {{ count: 230 }}
  - id: z
    kind: two
    {batch}
    inputs:
      a: {{ from: sa.out, queue: 2 }}
      b: sb.out
  - id: sink
    kind: sink
    inputs: {{ in: z.out }}
"
        ),
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    let got: Vec<(u64, u64)> = sink
        .items()
        .iter()
        .map(|p| {
            let r = p.as_record().unwrap();
            (r["port"].as_u64().unwrap(), r["index"].as_u64().unwrap())
        })
        .collect();
    let of = |port| -> Vec<u64> {
        got.iter()
            .filter(|(p, _)| *p == port)
            .map(|(_, i)| *i)
            .collect()
    };
    assert_eq!(of(0), (0..150).collect::<Vec<_>>());
    assert_eq!(of(1), (0..230).collect::<Vec<_>>());
    let z = node(&report, "z");
    assert_eq!((z.items_in, z.items_out), (380, 380));
    if batch_a {
        assert_eq!(z.batch_items, 150);
        // At most 4 per batch: at least ceil(150 / 4) = 38 batches.
        assert!(z.batches >= 38 && z.max_batch <= 4, "{z:?}");
    } else {
        assert_eq!(z.batches, 0);
    }
    assert_eq!(sink.ends(), vec![(0, End::Complete)]);
}

#[test]
fn a_node_with_two_inputs_receives_both_streams_completely() {
    check_two_inputs("", false);
}

#[test]
fn a_batched_port_beside_an_unbatched_one_receives_both_streams_completely() {
    check_two_inputs("batch: { max: 4, wait_ms: 1 }", true);
    check_two_inputs("batch: { max: 4, wait_ms: 0 }", true);
    check_two_inputs("batch: { max: 4, wait_ms: 60000 }", true);
}

/// `flush`: forwards items; `finish` records the end and emits one `{flush: replica}` record.
fn flushing_kind(ends: Arc<Mutex<Vec<(usize, End)>>>) -> NodeKind {
    process_kind("flush", move |ctx| {
        let (ends, replica) = (ends.clone(), ctx.replica);
        Proc {
            process: Box::new(|input, out| {
                for item in input.items {
                    out.emit(0, item)?;
                }
                Ok(())
            }),
            finish: Some(Box::new(move |out, end| {
                ends.lock().unwrap().push((replica, end));
                out.emit(0, Payload::record(json!({ "flush": replica })))
            })),
        }
    })
}

#[test]
fn end_of_stream_calls_finish_once_per_replica() {
    for workers in [1usize, 3] {
        let ends: Arc<Mutex<Vec<(usize, End)>>> = Arc::default();
        let sink = Collector::default();
        let mut r = Registry::new();
        r.register(counting_source(Arc::default()))
            .register(flushing_kind(ends.clone()))
            .register(sink.kind("sink"));
        let g = graph(
            &r,
            &format!(
                "nodes:
  - id: src
    kind: src
    params: {{ count: 50 }}
  - id: f
    kind: flush
    workers: {workers}
    inputs: {{ in: src.out }}
  - id: sink
    kind: sink
    inputs: {{ in: f.out }}
"
            ),
        );
        let report = run(&g);
        assert!(report.ok(), "{:?}", report.failure);
        let mut ends = ends.lock().unwrap().clone();
        ends.sort_by_key(|(r, _)| *r);
        assert_eq!(
            ends,
            (0..workers).map(|r| (r, End::Complete)).collect::<Vec<_>>()
        );
        assert_eq!(sink.ends(), vec![(0, End::Complete)]);
        // Items in order, then what the replicas flushed in `finish`.
        let items = sink.items();
        assert_eq!(indices(&items[..50]), (0..50).collect::<Vec<_>>());
        let mut flushed: Vec<u64> = items[50..]
            .iter()
            .map(|p| p.as_record().unwrap()["flush"].as_u64().unwrap())
            .collect();
        flushed.sort();
        assert_eq!(flushed, (0..workers as u64).collect::<Vec<_>>());
        let f = node(&report, "f");
        assert_eq!((f.items_in, f.items_out), (50, 50 + workers as u64));
        assert_eq!(node(&report, "sink").items_in, 50 + workers as u64);
    }
}

#[test]
fn stats_count_every_item_once_through_a_chain() {
    let sink = Collector::default();
    let mut r = Registry::new();
    r.register(counting_source(Arc::default()))
        .register(pass_kind())
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
    params: { count: 1000 }
  - id: a
    kind: pass
    inputs: { in: { from: src.out, queue: 1 } }
  - id: b
    kind: pass
    workers: 2
    inputs: { in: a.out }
  - id: c
    kind: pass
    inputs: { in: { from: b.out, queue: 64 } }
  - id: sink
    kind: sink
    inputs: { in: c.out }
",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(sink.indices(), (0..1000).collect::<Vec<_>>());
    let src = node(&report, "src");
    assert_eq!(
        (src.items_in, src.items_out, src.total),
        (0, 1000, Some(1000))
    );
    for id in ["a", "b", "c"] {
        let n = node(&report, id);
        assert_eq!((n.items_in, n.items_out), (1000, 1000), "{id}");
        assert_eq!((n.dropped, n.discarded, n.skipped, n.retries), (0, 0, 0, 0));
        assert!(n.done);
    }
    assert_eq!(node(&report, "sink").items_in, 1000);
    assert_eq!(node(&report, "sink").items_out, 0);
}

#[test]
fn a_graph_of_only_a_source_runs_to_completion() {
    let emitted = Arc::new(AtomicU64::new(0));
    let mut r = Registry::new();
    r.register(counting_source(emitted.clone()));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
    params: { count: 5 }
",
    );
    let report = run(&g);
    assert!(report.ok(), "{:?}", report.failure);
    // Nobody consumes the output; emitting to no consumer is not an error.
    assert_eq!(emitted.load(SeqCst), 5);
    assert_eq!(node(&report, "src").items_out, 5);
}

#[test]
fn a_failing_replica_stops_the_run_and_nothing_after_its_item_is_processed() {
    let ends: Arc<Mutex<Vec<(usize, End)>>> = Arc::default();
    let sink = Collector::default();
    let mut r = Registry::new();
    let e = ends.clone();
    r.register(counting_source(Arc::default()))
        .register(process_kind("work", move |ctx| {
            let (ends, replica) = (e.clone(), ctx.replica);
            Proc {
                process: Box::new(|input, out| {
                    let i = idx(&input.items[0]);
                    std::thread::sleep(Duration::from_micros(mix(i) % 500));
                    if i == 20 {
                        return Err(NodeError::runtime("out of memory"));
                    }
                    out.emit(0, input.items[0].clone())
                }),
                finish: Some(Box::new(move |_, end| {
                    ends.lock().unwrap().push((replica, end));
                    Ok(())
                })),
            }
        }))
        .register(sink.kind("sink"));
    let g = graph(
        &r,
        &format!(
            "nodes:
  - id: src
    kind: src
    params: {{ count: {LONG} }}
  - id: work
    kind: work
    workers: 3
    inputs: {{ in: src.out }}
  - id: sink
    kind: sink
    inputs: {{ in: work.out }}
"
        ),
    );
    let report = run(&g);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!(f.node, "work");
    assert_eq!(f.item.as_deref(), Some("record 20"));
    assert_eq!(f.error.to_string(), "out of memory");
    // The sink processed items in order and none after the failed one.
    let got = sink.indices();
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    assert!(got.len() <= 20, "{got:?}");
    let s = node(&report, "sink");
    assert_eq!(s.items_in, s.discarded + got.len() as u64);
    let mut ends = ends.lock().unwrap().clone();
    ends.sort_by_key(|(r, _)| *r);
    assert_eq!(
        ends,
        vec![(0, End::Stopped), (1, End::Stopped), (2, End::Stopped)]
    );
    assert_eq!(sink.ends(), vec![(0, End::Stopped)]);
    let w = node(&report, "work");
    assert!(w.done);
    assert!(node(&report, "src").items_out < LONG);
}

#[test]
fn a_failing_source_names_itself_and_stops_the_run() {
    let sink = Collector::default();
    let mut r = Registry::new();
    r.register(source_kind("src", |_| {
        Box::new(|out| {
            for i in 0..5 {
                out.emit(0, rec(i))?;
            }
            Err(NodeError::input("video.mp4: invalid data found"))
        })
    }))
    .register(sink.kind("sink"));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
  - id: sink
    kind: sink
    inputs: { in: src.out }
",
    );
    let report = run(&g);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!((f.node.as_str(), f.item.as_deref()), ("src", None));
    assert_eq!(
        f.to_string(),
        "node `src` failed: video.mp4: invalid data found"
    );
    assert_eq!(node(&report, "src").items_out, 5);
    assert_prefix(&sink, &report, 5);
    assert_eq!(sink.ends(), vec![(0, End::Stopped)]);
}

#[test]
fn an_error_in_finish_fails_the_run_at_end_of_stream() {
    let mut r = Registry::new();
    r.register(counting_source(Arc::default())).register(
        NodeKind::new("closer", "fails to close", |_| {
            Ok(Runtime::Process(Box::new(Proc {
                process: Box::new(|_, _| Ok(())),
                finish: Some(Box::new(|_, end| {
                    assert_eq!(end, End::Complete);
                    Err(NodeError::runtime("disk full"))
                })),
            })))
        })
        .input("in", PortType::ANY, "items"),
    );
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
  - id: out
    kind: closer
    inputs: { in: src.out }
",
    );
    let report = run(&g);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!(f.node, "out");
    assert_eq!(f.item.as_deref(), Some("end of stream"));
    assert_eq!(f.error.to_string(), "disk full");
    assert_eq!(node(&report, "out").items_in, 10);
}

#[test]
fn emitting_on_an_undeclared_output_is_an_error() {
    let mut r = Registry::new();
    r.register(counting_source(Arc::default()))
        .register(process_kind("wrong", |_| {
            proc(|input, out| out.emit(1, input.items[0].clone()))
        }));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
  - id: w
    kind: wrong
    inputs: { in: src.out }
",
    );
    let report = run(&g);
    let f = report.failure.as_ref().expect("the run fails");
    assert_eq!(f.node, "w");
    assert_eq!(f.item.as_deref(), Some("record 0"));
    assert_eq!(
        f.error.to_string(),
        "node `w` emitted on output #1, which it does not declare"
    );
}

#[test]
fn progress_ticks_while_the_run_goes_on_and_sees_it_end() {
    #[derive(Clone, Default)]
    struct Count(Arc<Mutex<(usize, usize, usize)>>);
    impl ProgressSink for Count {
        fn start(&mut self, _: &CheckedGraph) {
            self.0.lock().unwrap().0 += 1;
        }
        fn tick(&mut self, _: &[NodeReport], _: Duration) {
            self.0.lock().unwrap().1 += 1;
        }
        fn finish(&mut self, report: &RunReport) {
            assert!(report.nodes.iter().all(|n| n.done));
            self.0.lock().unwrap().2 += 1;
        }
    }
    let mut r = Registry::new();
    r.register(source_kind("slow", |_| {
        Box::new(|out| {
            for i in 0..5 {
                std::thread::sleep(Duration::from_millis(20));
                out.emit(0, rec(i))?;
            }
            Ok(())
        })
    }))
    .register(pass_kind());
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: slow
  - id: p
    kind: pass
    inputs: { in: src.out }
",
    );
    let count = Count::default();
    let report = run_opts(
        &g,
        RunOptions {
            progress: Box::new(count.clone()),
            tick: Duration::from_millis(5),
            ..Default::default()
        },
    );
    assert!(report.ok());
    let (starts, ticks, finishes) = *count.0.lock().unwrap();
    assert_eq!((starts, finishes), (1, 1));
    // The run took at least 100 ms; a 5 ms tick fires more than once in that time.
    assert!(ticks >= 2, "{ticks} ticks");
}

// ---------------------------------------------------------------------------------------------
// Progress inside a long call
// ---------------------------------------------------------------------------------------------

#[test]
fn progress_shows_the_work_of_a_long_call_until_it_ends() {
    let (step_tx, step_rx) = unbounded::<()>();
    let step_rx = Arc::new(Mutex::new(step_rx));
    let mut r = Registry::new();
    let sink = Collector::default();
    r.register(counting_source(Arc::new(AtomicU64::new(0))))
        .register(sink.kind("sink"))
        .register(process_kind("slow", move |_| {
            let step_rx = step_rx.clone();
            proc(move |input, out| {
                // Three units of work, each released by the test once progress showed the
                // one before; the outputs are delivered only when the call returns.
                let work = out.work();
                for done in 0..3 {
                    work.set(done, 3);
                    step_rx
                        .lock()
                        .unwrap()
                        .recv()
                        .expect("the test steps the work");
                }
                drop(work);
                for item in input.items {
                    out.emit(0, item)?;
                }
                Ok(())
            })
        }));
    let g = graph(
        &r,
        "nodes:
  - id: src
    kind: src
    params: { count: 1 }
  - id: slow
    kind: slow
    inputs: { in: src.out }
  - id: sink
    kind: sink
    inputs: { in: slow.out }
",
    );
    let capture = Capture::default();
    let opts = RunOptions {
        progress: Box::new(capture.clone()),
        tick: Duration::from_millis(5),
        ..Default::default()
    };
    let handle = {
        let g = g.clone();
        std::thread::spawn(move || exec::run(&g, opts))
    };
    for done in 0..3 {
        wait_until(&format!("progress shows {done}/3"), || {
            capture
                .node("slow")
                .is_some_and(|n| n.work == Some((done, 3)) && n.items_out == 0)
        });
        step_tx.send(()).unwrap();
    }
    let report = handle.join().unwrap();
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(
        node(&report, "slow").work,
        None,
        "no work shown once the call ended"
    );
    assert_eq!(sink.indices(), vec![0]);
}
