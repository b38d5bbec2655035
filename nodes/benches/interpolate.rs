//! Interpolation throughput: frame pairs per second at 640x384 (one new frame per pair, t = 0.5,
//! u8 RGB in and out) with the built-in RIFE v4.25. Run it through `scripts/bench-rife.sh`,
//! which also runs PyTorch (the reference implementation) and onnxruntime on the same network
//! with the same thread count and prints the ratios:
//!
//! ```text
//! VIDFLOW_BENCH=1 cargo bench -p vidflow-nodes --features neural --bench interpolate -- --test --nocapture
//! ```
//!
//! `VIDFLOW_DEVICE` (auto, gpu, cpu) picks the device, `VIDFLOW_BENCH_SECONDS` the time
//! (default 10). `VIDFLOW_BENCH_FRAMES` names a raw rgb24 file of 640x384 frames (for example
//! ffmpeg's testsrc2, as `scripts/bench-rife.sh` makes it); without it the frames are a
//! synthetic texture and the same texture 4 px to the right. Real frames matter: random
//! texture drives RIFE into denormal floats, which no real clip does.
//!
//! Two measurements: `pair` runs each pair on its own; `stream` runs the consecutive pairs of
//! the clip one call after the other, as the `interpolate` node does when it raises a clip's
//! frame rate (a frame seen by the call before is not encoded again). Without
//! `VIDFLOW_BENCH=1` it only says how to run it: a speed target belongs here, not in the test
//! suite. The results are also printed as JSON (`BENCH {...}`).
#![cfg(feature = "neural")]

mod common;

use std::time::{Duration, Instant};
use vidflow_nodes::gpu::device::Compute;
use vidflow_nodes::kinds::interpolate::{Rife, load_checkpoint};

/// The benchmark's frames: those of `VIDFLOW_BENCH_FRAMES`, else a synthetic pair.
fn frames(w: usize, h: usize) -> Vec<Vec<u8>> {
    if let Ok(path) = std::env::var("VIDFLOW_BENCH_FRAMES") {
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            raw.len() >= 2 * w * h * 3 && raw.len() % (w * h * 3) == 0,
            "{path}: not raw rgb24 frames of {w}x{h}"
        );
        return raw.chunks_exact(w * h * 3).map(<[u8]>::to_vec).collect();
    }
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
    vec![f0, f1]
}

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
    let frames = frames(w, h);
    let pairs = frames.len() - 1;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string()
    });
    println!(
        "vidflow interpolate (RIFE v4.25) on {}, {threads} threads, {} frames",
        compute.name,
        frames.len()
    );
    let once = |k: usize| {
        let out = rife.interpolate_rgb(&[(&frames[k], &frames[k + 1])], w, h, &[(0, 0.5)]);
        assert_eq!(out[0].len(), w * h * 3);
    };
    // `pair`: a different pair each call, never the frames of the call before (with two frames,
    // the same pair, whose frames the call before did see).
    let step = if pairs > 2 { 2 } else { 1 };
    // `stream`: the next pair each call.
    for (mode, step) in [("pair", step), ("stream", 1)] {
        once(0); // warm-up
        let (mut calls, start) = (0usize, Instant::now());
        while calls < 3 || start.elapsed() < Duration::from_secs_f64(secs) {
            once((1 + calls * step) % pairs);
            calls += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        let pps = calls as f64 / secs;
        println!("  {w}x{h} t=0.5 {mode}: {pps:.3} pairs/s ({calls} pairs in {secs:.1} s)");
        println!("BENCH {{\"engine\": \"vidflow\", \"mode\": \"{mode}\", \"pps\": {pps:.4}}}");
    }
}
