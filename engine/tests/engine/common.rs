//! Test node kinds, a collecting sink, a progress capture and run helpers shared by every file.

use crossbeam_channel::bounded;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vidflow_engine::Emitter;
use vidflow_engine::exec::{self, NodeReport, ProgressSink, RunOptions, RunReport};
use vidflow_engine::{
    BuildCtx, CheckedGraph, End, Input, Mode, NodeError, NodeKind, ParamSpec, ParamType, Payload,
    PortType, Process, Registry, Runtime, Source, SourceFile,
};

/// Longest a run may take before the test calls it a deadlock.
pub const DEADLOCK: Duration = Duration::from_secs(60);

pub type SourceFn = Box<dyn FnMut(&mut Emitter<'_>) -> Result<(), NodeError> + Send>;
pub type ProcessFn = Box<dyn FnMut(Input, &mut Emitter<'_>) -> Result<(), NodeError> + Send>;
pub type FinishFn = Box<dyn FnMut(&mut Emitter<'_>, End) -> Result<(), NodeError> + Send>;

struct Src(SourceFn);
impl Source for Src {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        (self.0)(out)
    }
}

pub struct Proc {
    pub process: ProcessFn,
    pub finish: Option<FinishFn>,
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

pub fn proc(
    process: impl FnMut(Input, &mut Emitter<'_>) -> Result<(), NodeError> + Send + 'static,
) -> Proc {
    Proc {
        process: Box::new(process),
        finish: None,
    }
}

/// A source kind with one output `out`; `make` builds its loop.
pub fn source_kind(
    name: &'static str,
    make: impl Fn(&BuildCtx<'_>) -> SourceFn + Send + Sync + 'static,
) -> NodeKind {
    NodeKind::new(name, "test source", move |ctx| {
        Ok(Runtime::Source(Box::new(Src(make(ctx)))))
    })
    .output("out", PortType::ANY, "items")
}

/// A kind with one input `in` and one output `out`.
pub fn process_kind(
    name: &'static str,
    make: impl Fn(&BuildCtx<'_>) -> Proc + Send + Sync + 'static,
) -> NodeKind {
    NodeKind::new(name, "test process", move |ctx| {
        Ok(Runtime::Process(Box::new(make(ctx))))
    })
    .input("in", PortType::ANY, "items")
    .output("out", PortType::ANY, "items")
}

pub fn rec(i: u64) -> Payload {
    Payload::record(json!({ "index": i }))
}

pub fn idx(p: &Payload) -> u64 {
    p.as_record().expect("a record")["index"]
        .as_u64()
        .expect("an index")
}

pub fn indices(items: &[Payload]) -> Vec<u64> {
    items.iter().map(idx).collect()
}

/// `src`: emits records 0..`count`; counts successful emits in `emitted`.
pub fn counting_source(emitted: Arc<AtomicU64>) -> NodeKind {
    source_kind("src", move |ctx| {
        let count = ctx.params.parse::<u64>("count").expect("count");
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
pub fn pass_kind() -> NodeKind {
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
pub struct Collector {
    pub items: Arc<Mutex<Vec<Payload>>>,
    pub ends: Arc<Mutex<Vec<(usize, End)>>>,
}

impl Collector {
    pub fn kind(&self, name: &'static str) -> NodeKind {
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
    pub fn items(&self) -> Vec<Payload> {
        self.items.lock().unwrap().clone()
    }
    pub fn indices(&self) -> Vec<u64> {
        indices(&self.items())
    }
    pub fn ends(&self) -> Vec<(usize, End)> {
        let mut e = self.ends.lock().unwrap().clone();
        e.sort_by_key(|(r, _)| *r);
        e
    }
}

/// Keeps the latest per-node counters the run reported while it went on.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<NodeReport>>>);
impl ProgressSink for Capture {
    fn tick(&mut self, nodes: &[NodeReport], _elapsed: Duration) {
        *self.0.lock().unwrap() = nodes.to_vec();
    }
}
impl Capture {
    pub fn node(&self, id: &str) -> Option<NodeReport> {
        self.0.lock().unwrap().iter().find(|n| n.id == id).cloned()
    }
}

pub fn graph(registry: &Registry, yaml: &str) -> CheckedGraph {
    match vidflow_engine::check_source(SourceFile::new("t.yaml", yaml), registry, &[], Mode::Run) {
        Ok(g) => g,
        Err(e) => panic!("test graph is invalid:\n{}", e.render()),
    }
}

/// Runs on another thread so that a deadlock fails the test instead of hanging it.
pub fn run_opts(graph: &CheckedGraph, opts: RunOptions) -> RunReport {
    let graph = graph.clone();
    let (tx, rx) = bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(exec::run(&graph, opts));
    });
    rx.recv_timeout(DEADLOCK)
        .expect("the run did not end: deadlock")
}

pub fn run(graph: &CheckedGraph) -> RunReport {
    run_opts(graph, RunOptions::default())
}

pub fn node<'a>(report: &'a RunReport, id: &str) -> &'a NodeReport {
    report
        .node(id)
        .unwrap_or_else(|| panic!("no node `{id}` in the report"))
}

/// Polls `cond` until it holds (or fails the test after `DEADLOCK`).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < DEADLOCK, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// After a failure the sink got `sent` items; those still queued when the run began stopping
/// were discarded, so it processed a prefix of them, in order.
pub fn assert_prefix(sink: &Collector, report: &RunReport, sent: u64) {
    let got = sink.indices();
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    let s = node(report, "sink");
    assert_eq!(s.items_in, sent);
    assert_eq!(s.discarded + got.len() as u64, sent);
}

/// A deterministic pseudo-random number for item `i` (splitmix64).
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
