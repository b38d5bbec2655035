//! Statistics and progress: counters through a chain, ticks, and the work of a long call.

use crate::common::*;
use crossbeam_channel::unbounded;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vidflow_engine::Registry;
use vidflow_engine::exec::{self, NodeReport, ProgressSink, RunOptions, RunReport};

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
fn progress_ticks_while_the_run_goes_on_and_sees_it_end() {
    #[derive(Clone, Default)]
    struct Count(Arc<Mutex<(usize, usize, usize)>>);
    impl ProgressSink for Count {
        fn start(&mut self, _: &vidflow_engine::Plan) {
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
