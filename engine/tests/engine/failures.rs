//! Failures and panics stop the run cleanly, naming the node and the item.

use crate::common::*;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vidflow_engine::Emitter;
use vidflow_engine::{End, Input, NodeError, NodeKind, PortType, Process, Registry, Runtime};

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
