//! `face-detect` throughput: MTCNN (the built-in weights) on 640x360 frames, frames per second
//! at batch 1 and 8 (the node's default batch). A speed measurement, not a test: without
//! `VIDFLOW_BENCH=1` it only says how to run it. `scripts/bench-face-detect.sh` runs it next to
//! facenet-pytorch's MTCNN on the same frames and prints the ratio:
//!
//! ```text
//! VIDFLOW_BENCH=1 cargo bench -p vidflow-nodes --features neural --bench face_detect -- --test --nocapture
//! ```
//!
//! The frames are `tests/fixtures/mtcnn/astronaut_640x360.png` (one face). `VIDFLOW_DEVICE`
//! (auto, gpu, cpu; default cpu here) picks the device, `VIDFLOW_BENCH_SECONDS` the time per
//! batch size (default 5), `RAYON_NUM_THREADS` the threads. Each result is also printed as
//! `BENCH {json}`.
#![cfg(feature = "neural")]

mod common;

use std::time::{Duration, Instant};
use vidflow_nodes::gpu::device::Compute;
use vidflow_nodes::kinds::face_detect::builtin_detector;
use vidflow_nodes::models::mtcnn::{DetectParams, Rgb};

#[test]
fn face_detect_throughput() {
    let Some(secs) = common::enabled("face-detect", "see scripts/bench-face-detect.sh", 5.0) else {
        return;
    };
    let pref = common::device("cpu");
    let compute = Compute::open(pref).expect("device");
    let det = builtin_detector(&compute.device).expect("built-in weights");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mtcnn/astronaut_640x360.png");
    let img = image::open(&path).expect("fixture").to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data = img.into_raw();
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let p = DetectParams::default();
    for batch in [1usize, 8] {
        let frames: Vec<Rgb<'_>> = (0..batch)
            .map(|_| Rgb {
                data: &data,
                width: w,
                height: h,
            })
            .collect();
        let faces = det.detect(&frames, &p); // warm-up
        assert!(faces.iter().all(|f| f.len() == 1), "{faces:?}");
        let t = Instant::now();
        let mut n = 0usize;
        let mut calls = 0usize;
        while t.elapsed() < Duration::from_secs_f64(secs) || calls < 2 {
            det.detect(&frames, &p);
            n += batch;
            calls += 1;
        }
        let el = t.elapsed().as_secs_f64();
        let fps = n as f64 / el;
        println!(
            "vidflow face-detect {w}x{h} batch {batch}: {fps:.1} frames/s, {:.1} ms per frame ({}, {threads} threads)",
            1000.0 * el / n as f64,
            compute.name
        );
        println!(
            "BENCH {}",
            serde_json::json!({"engine": "vidflow", "batch": batch, "fps": fps, "threads": threads, "device": compute.name})
        );
    }
}
