//! Replicas (`workers: N`) keep item order, with random delays and with batches.

use crate::common::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vidflow_engine::{End, NodeKind, Registry};

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
