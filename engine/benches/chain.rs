//! Engine overhead on a chain: source → 5 pass-through nodes → sink, run by the engine, against
//! the same work hand-written as 7 threads joined by crossbeam bounded channels of the same
//! size. Both move the same payload (a tiny frame whose pixels are an `Arc` shared by all).
//!
//! ```text
//! cargo bench -p vidflow-engine --bench chain
//! VIDFLOW_BENCH_ITEMS=500000 VIDFLOW_BENCH_QUEUE=8 VIDFLOW_BENCH_ROUNDS=9 cargo bench -p vidflow-engine --bench chain
//! ```
//!
//! Targets: engine/hand-written throughput ≥ 0.8, engine overhead < 2 µs per item per stage.

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst, fence};
use std::time::{Duration, Instant};
use vidflow_engine::Emitter;
use vidflow_engine::exec::{self, RunOptions};
use vidflow_engine::{
    CheckedGraph, Frame, Input, Mode, NodeError, NodeKind, ParamSpec, ParamType, Payload, PortType,
    Process, Rate, Registry, Runtime, Source, SourceFile,
};

const STAGES: usize = 5;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Frame `i`: 4×2 pixels, the pixel buffer shared (an `Arc` clone, no allocation per item).
fn frame(i: u64, data: &Arc<Vec<u8>>) -> Payload {
    Payload::Frame(Frame {
        index: i,
        pts: i as f64 / 25.0,
        rate: Rate::new(25, 1),
        width: 4,
        height: 2,
        data: data.clone(),
        format: vidflow_engine::PixelFormat::Rgb24,
        meta: None,
    })
}

/// What the sink checks: every item arrived, in order.
fn check(expected: &mut u64, p: &Payload) {
    let f = p.as_frame().expect("a frame");
    assert_eq!(f.index, *expected, "items out of order");
    *expected += 1;
}

// --- the engine ------------------------------------------------------------------------------

struct Src {
    count: u64,
    data: Arc<Vec<u8>>,
}
impl Source for Src {
    fn run(&mut self, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for i in 0..self.count {
            out.emit(0, frame(i, &self.data))?;
        }
        Ok(())
    }
}

struct Pass;
impl Process for Pass {
    fn process(&mut self, input: Input, out: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in input.items {
            out.emit(0, item)?;
        }
        Ok(())
    }
}

struct Sink {
    expected: u64,
    seen: Arc<AtomicU64>,
}
impl Process for Sink {
    fn process(&mut self, input: Input, _: &mut Emitter<'_>) -> Result<(), NodeError> {
        for item in &input.items {
            check(&mut self.expected, item);
        }
        Ok(())
    }
    fn finish(&mut self, _: &mut Emitter<'_>, _: vidflow_engine::End) -> Result<(), NodeError> {
        self.seen.store(self.expected, Relaxed);
        Ok(())
    }
}

fn engine_graph(items: usize, queue: usize, seen: Arc<AtomicU64>) -> CheckedGraph {
    let mut r = Registry::new();
    r.register(
        NodeKind::new("bsrc", "bench source", |ctx| {
            Ok(Runtime::Source(Box::new(Src {
                count: ctx.params.parse::<u64>("count")?,
                data: Arc::new(vec![7u8; Frame::byte_len(4, 2)]),
            })))
        })
        .output("out", PortType::FRAMES, "frames")
        .param(ParamSpec::required("count", ParamType::int(), "frames")),
    )
    .register(
        NodeKind::new("bpass", "pass-through", |_| {
            Ok(Runtime::Process(Box::new(Pass)))
        })
        .input("in", PortType::FRAMES, "frames")
        .output("out", PortType::FRAMES, "frames"),
    )
    .register(
        NodeKind::new("bsink", "counting sink", move |_| {
            Ok(Runtime::Process(Box::new(Sink {
                expected: 0,
                seen: seen.clone(),
            })))
        })
        .input("in", PortType::FRAMES, "frames"),
    );
    let mut yaml = format!(
        "name: chain\nnodes:\n  - id: src\n    kind: bsrc\n    params: {{ count: {items} }}\n"
    );
    let mut prev = "src".to_string();
    for s in 0..STAGES {
        yaml += &format!(
            "  - id: p{s}\n    kind: bpass\n    inputs: {{ in: {{ from: {prev}.out, queue: {queue} }} }}\n"
        );
        prev = format!("p{s}");
    }
    yaml += &format!(
        "  - id: sink\n    kind: bsink\n    inputs: {{ in: {{ from: {prev}.out, queue: {queue} }} }}\n"
    );
    vidflow_engine::check_source(SourceFile::new("chain.yaml", yaml), &r, &[], Mode::Run)
        .unwrap_or_else(|e| panic!("{}", e.render()))
}

fn run_engine(graph: &CheckedGraph, items: usize, seen: &AtomicU64) -> Duration {
    seen.store(0, Relaxed);
    let t = Instant::now();
    let report = exec::run(graph, RunOptions::default());
    let elapsed = t.elapsed();
    assert!(report.ok(), "{:?}", report.failure);
    assert_eq!(seen.load(Relaxed), items as u64);
    elapsed
}

// --- by hand ---------------------------------------------------------------------------------

/// The hand-written chain; with `vec_per_item`, every stage also wraps each item in a `Vec` of
/// one and unwraps it, as the engine did while `Input.items` was a `Vec<Payload>` (it now holds
/// one item inline): this shows what that allocation alone costs.
fn run_hand(items: usize, queue: usize, vec_per_item: bool) -> Duration {
    let t = Instant::now();
    std::thread::scope(|s| {
        let (tx, mut rx) = bounded::<Payload>(queue);
        s.spawn(move || {
            let data = Arc::new(vec![7u8; Frame::byte_len(4, 2)]);
            for i in 0..items as u64 {
                tx.send(frame(i, &data)).expect("consumer alive");
            }
        });
        for _ in 0..STAGES {
            let (tx, next) = bounded::<Payload>(queue);
            let input = std::mem::replace(&mut rx, next);
            s.spawn(move || {
                for item in input {
                    if vec_per_item {
                        for item in std::hint::black_box(vec![item]) {
                            tx.send(item).expect("consumer alive");
                        }
                    } else {
                        tx.send(item).expect("consumer alive");
                    }
                }
            });
        }
        let sink = s.spawn(move || {
            let mut expected = 0;
            for item in rx {
                check(&mut expected, &item);
            }
            expected
        });
        assert_eq!(sink.join().unwrap(), items as u64);
    });
    t.elapsed()
}

/// The hand-written chain with edges that carry up to `k` items per channel message (the
/// source fills a message, each stage moves a message's items into a new one), in channels of
/// `queue / k` messages, so an edge holds as many items as the plain chain's: what carrying
/// several items per channel operation would gain the engine.
fn run_hand_packets(items: usize, queue: usize, k: usize) -> Duration {
    let t = Instant::now();
    let slots = (queue / k).max(1);
    std::thread::scope(|s| {
        let (tx, mut rx) = bounded::<Vec<Payload>>(slots);
        s.spawn(move || {
            let data = Arc::new(vec![7u8; Frame::byte_len(4, 2)]);
            let mut packet = Vec::with_capacity(k);
            for i in 0..items as u64 {
                packet.push(frame(i, &data));
                if packet.len() == k {
                    let full = std::mem::replace(&mut packet, Vec::with_capacity(k));
                    tx.send(full).expect("consumer alive");
                }
            }
            if !packet.is_empty() {
                tx.send(packet).expect("consumer alive");
            }
        });
        for _ in 0..STAGES {
            let (tx, next) = bounded::<Vec<Payload>>(slots);
            let input = std::mem::replace(&mut rx, next);
            s.spawn(move || {
                for packet in input {
                    let mut out = Vec::with_capacity(k);
                    for item in packet {
                        out.push(std::hint::black_box(item));
                    }
                    tx.send(out).expect("consumer alive");
                }
            });
        }
        let sink = s.spawn(move || {
            let mut expected = 0;
            for item in rx.iter().flatten() {
                check(&mut expected, &item);
            }
            expected
        });
        assert_eq!(sink.join().unwrap(), items as u64);
    });
    t.elapsed()
}

/// One edge of [`run_hand_lazy`], its receiving side: the consumer sleeps (parks) until
/// `threshold` items wait or its producer would wait or ends, instead of spinning and yielding
/// as crossbeam's blocking calls do.
struct LazyEdge {
    rx: Receiver<Payload>,
    sleeping: AtomicBool,
    consumer: std::sync::OnceLock<std::thread::Thread>,
    threshold: usize,
}

impl LazyEdge {
    fn wake(&self) {
        if self.sleeping.load(SeqCst)
            && let Some(t) = self.consumer.get()
        {
            t.unpark();
        }
    }
    fn send(&self, tx: &Sender<Payload>, item: Payload) {
        if let Err(TrySendError::Full(item)) = tx.try_send(item) {
            fence(SeqCst);
            self.wake();
            tx.send(item).expect("consumer alive");
        }
        fence(SeqCst);
        if tx.len() >= self.threshold {
            self.wake();
        }
    }
    /// The next item, or `None` at the end; `before_wait` runs before the thread sleeps.
    fn recv(&self, before_wait: impl Fn()) -> Option<Payload> {
        loop {
            match self.rx.try_recv() {
                Ok(p) => return Some(p),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            before_wait();
            self.sleeping.store(true, SeqCst);
            fence(SeqCst);
            // Looked at again once it says it sleeps: an item sent just before was not woken for.
            let again = self.rx.try_recv();
            if !matches!(again, Err(TryRecvError::Empty)) {
                self.sleeping.store(false, SeqCst);
                return again.ok();
            }
            std::thread::park();
            self.sleeping.store(false, SeqCst);
        }
    }
}

/// The hand-written chain on [`LazyEdge`]s woken at half a queue: whether fewer wake-ups
/// than crossbeam's make a chain faster.
fn run_hand_lazy(items: usize, queue: usize) -> Duration {
    let t = Instant::now();
    let (senders, edges): (Vec<Sender<Payload>>, Vec<LazyEdge>) = (0..=STAGES)
        .map(|_| {
            let (tx, rx) = bounded(queue);
            let edge = LazyEdge {
                rx,
                sleeping: AtomicBool::new(false),
                consumer: Default::default(),
                threshold: (queue / 2).max(1),
            };
            (tx, edge)
        })
        .unzip();
    let edges = &edges;
    std::thread::scope(|s| {
        let mut senders = senders.into_iter();
        let tx = senders.next().expect("edge 0");
        s.spawn(move || {
            let data = Arc::new(vec![7u8; Frame::byte_len(4, 2)]);
            for i in 0..items as u64 {
                edges[0].send(&tx, frame(i, &data));
            }
            // Dropping the sender ends the edge; the consumer must be awake to see it.
            drop(tx);
            edges[0].wake();
        });
        for k in 0..STAGES {
            let tx = senders.next().expect("one edge a stage");
            s.spawn(move || {
                let (input, output) = (&edges[k], &edges[k + 1]);
                input
                    .consumer
                    .set(std::thread::current())
                    .expect("one consumer");
                while let Some(item) = input.recv(|| output.wake()) {
                    output.send(&tx, item);
                }
                drop(tx);
                output.wake();
            });
        }
        let sink = s.spawn(move || {
            let input = &edges[STAGES];
            input
                .consumer
                .set(std::thread::current())
                .expect("one consumer");
            let mut expected = 0;
            while let Some(item) = input.recv(|| {}) {
                check(&mut expected, &item);
            }
            expected
        });
        assert_eq!(sink.join().unwrap(), items as u64);
    });
    t.elapsed()
}

// --- report ----------------------------------------------------------------------------------

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is ignored too.
    let items = env("VIDFLOW_BENCH_ITEMS", 200_000);
    let queue = env("VIDFLOW_BENCH_QUEUE", 64);
    let rounds = env("VIDFLOW_BENCH_ROUNDS", 7).max(1);
    let seen = Arc::new(AtomicU64::new(0));
    let graph = engine_graph(items, queue, seen.clone());

    println!(
        "chain: source → {STAGES} pass-through → sink, {items} items, queue {queue}, {rounds} rounds, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Warm-up (page faults, thread stacks, lazy statics).
    run_hand(items / 10, queue, false);
    run_engine(
        &engine_graph(items / 10, queue, seen.clone()),
        items / 10,
        &seen,
    );

    // For profiling one side alone: VIDFLOW_BENCH_ONLY=engine|hand|hand-vec, or an edge design
    // tried on the hand-written chain: hand-packets (8 items a channel message), hand-lazy
    // (consumers woken at half a queue).
    let only = std::env::var("VIDFLOW_BENCH_ONLY").unwrap_or_default();
    if !only.is_empty() {
        for _ in 0..rounds {
            let t = match only.as_str() {
                "engine" => run_engine(&graph, items, &seen),
                "hand-vec" => run_hand(items, queue, true),
                "hand-packets" => run_hand_packets(items, queue, 8),
                "hand-lazy" => run_hand_lazy(items, queue),
                _ => run_hand(items, queue, false),
            };
            println!("  {only}: {:.1} ms", t.as_secs_f64() * 1e3);
        }
        return;
    }

    let (mut hand, mut engine, mut hand_vec) = (vec![], vec![], vec![]);
    for round in 0..rounds {
        // Alternate the order, so drift in machine load hits all alike.
        if round % 2 == 0 {
            hand.push(run_hand(items, queue, false));
            engine.push(run_engine(&graph, items, &seen));
            hand_vec.push(run_hand(items, queue, true));
        } else {
            hand_vec.push(run_hand(items, queue, true));
            engine.push(run_engine(&graph, items, &seen));
            hand.push(run_hand(items, queue, false));
        }
        println!(
            "  round {round}: hand {:>8.1} ms, engine {:>8.1} ms (ratio {:.3}), hand + Vec per item {:>8.1} ms",
            hand[round].as_secs_f64() * 1e3,
            engine[round].as_secs_f64() * 1e3,
            hand[round].as_secs_f64() / engine[round].as_secs_f64(),
            hand_vec[round].as_secs_f64() * 1e3
        );
    }
    // Runs of one round share the machine's load of the moment: the median of the per-round
    // ratios is the steadiest figure on a busy machine.
    let mut ratios: Vec<f64> = hand
        .iter()
        .zip(&engine)
        .map(|(h, e)| h.as_secs_f64() / e.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "per-round ratio engine/hand-written: median {:.3} (min {:.3}, max {:.3})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );

    let n = items as f64;
    let per_stage = |d: Duration| d.as_secs_f64() * 1e6 / n / STAGES as f64;
    for (what, h, e, hv) in [
        (
            "best",
            *hand.iter().min().unwrap(),
            *engine.iter().min().unwrap(),
            *hand_vec.iter().min().unwrap(),
        ),
        ("median", median(&hand), median(&engine), median(&hand_vec)),
    ] {
        let (hs, es) = (n / h.as_secs_f64(), n / e.as_secs_f64());
        let hvs = n / hv.as_secs_f64();
        println!("{what}:");
        println!("  hand-written  {hs:>12.0} items/s");
        println!("  engine        {es:>12.0} items/s");
        println!(
            "  (hand-written + one Vec per item per stage {hvs:>12.0} items/s, {:.3} of hand-written)",
            hvs / hs
        );
        println!(
            "  ratio engine/hand-written  {:.3}   (target >= 0.8)",
            es / hs
        );
        println!(
            "  engine overhead per item per stage  {:+.3} µs   (target < 2 µs)",
            per_stage(e) - per_stage(h)
        );
        println!(
            "  engine time per item per stage      {:.3} µs (hand-written {:.3} µs)",
            per_stage(e),
            per_stage(h)
        );
    }
}
