//! Graph shapes: fan-out, two inputs, `finish` per replica at end of stream, a lone source.

use crate::common::*;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vidflow_engine::{
    End, Frame, NodeKind, ParamSpec, ParamType, Payload, PortType, Rate, Registry, Runtime,
};

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
            let count = ctx.params.parse::<u64>("count").unwrap();
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
