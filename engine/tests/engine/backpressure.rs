//! Backpressure: a stalled consumer blocks its producer; `drop_oldest` drops and counts.

use crate::common::*;
use crossbeam_channel::{Receiver, Sender, unbounded};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vidflow_engine::exec::{self, RunOptions};
use vidflow_engine::{NodeKind, Payload, PortType, Registry, Runtime};

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
