//! `on_error` policies: `retry` (recovering or running out) and `skip`.

use crate::common::*;
use std::collections::HashMap;
use std::sync::Arc;
use vidflow_engine::{CheckedGraph, End, NodeError, NodeKind, Registry};

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
