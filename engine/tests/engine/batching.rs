//! Batching: batches form at `max`, by `wait_ms`, at end of stream, and with `wait_ms: 0`.

use crate::common::*;
use crossbeam_channel::{Sender, unbounded};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vidflow_engine::{NodeKind, PortType, Registry, Runtime};

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
