//! Stops from outside (the flag Ctrl-C sets): mid-run on an endless source, and before start.

use crate::common::*;
use crossbeam_channel::bounded;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use vidflow_engine::exec::RunOptions;
use vidflow_engine::{End, NodeKind, PortType, Registry, Runtime};

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
