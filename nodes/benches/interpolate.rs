//! Interpolation throughput: frame pairs per second at 640x384 (one new frame per pair, t = 0.5,
//! u8 RGB in and out) with the built-in RIFE v4.25. Run it through `scripts/bench-rife.sh`,
//! which also runs onnxruntime on the same network with the same thread count and prints the
//! ratio:
//!
//! ```text
//! VIDFLOW_BENCH=1 cargo bench -p vidflow-nodes --features neural --bench interpolate -- --test --nocapture
//! ```
//!
//! `VIDFLOW_DEVICE` (auto, gpu, cpu) picks the device, `VIDFLOW_BENCH_SECONDS` the time
//! (default 10). Without `VIDFLOW_BENCH=1` it only says how to run it: a speed target belongs
//! here, not in the test suite. The result is also printed as JSON (`BENCH {...}`).
#![cfg(feature = "neural")]

mod common;

use std::time::{Duration, Instant};
use vidflow_nodes::gpu::device::Compute;
use vidflow_nodes::kinds::interpolate::{Rife, load_checkpoint};

#[test]
fn interpolate_throughput() {
    let Some(secs) = common::enabled("interpolate", "see scripts/bench-rife.sh", 10.0) else {
        return;
    };
    let device = common::device("auto");
    let compute = Compute::open(device).unwrap_or_else(|e| panic!("{e}"));
    let ck = load_checkpoint(None).expect("built-in weights");
    let rife = Rife::new(&ck, &compute.device, 1.0).expect("v4.25");
    let (w, h) = (640usize, 384usize);
    // A deterministic textured frame and the same frame 4 px to the right.
    let f0: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i as u64).wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let mut f1 = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let sx = x.saturating_sub(4);
            f1[(y * w + x) * 3..(y * w + x) * 3 + 3]
                .copy_from_slice(&f0[(y * w + sx) * 3..(y * w + sx) * 3 + 3]);
        }
    }
    let once = || {
        let out = rife.interpolate_rgb(&[(&f0, &f1)], w, h, &[(0, 0.5)]);
        assert_eq!(out[0].len(), w * h * 3);
    };
    once(); // warm-up
    let (mut calls, start) = (0usize, Instant::now());
    while calls < 3 || start.elapsed() < Duration::from_secs_f64(secs) {
        once();
        calls += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let pps = calls as f64 / secs;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string()
    });
    println!(
        "vidflow interpolate (RIFE v4.25) on {}, {threads} threads",
        compute.name
    );
    println!("  {w}x{h} t=0.5: {pps:.3} pairs/s ({calls} pairs in {secs:.1} s)");
    println!("BENCH {{\"engine\": \"vidflow\", \"pps\": {pps:.4}}}");
}
