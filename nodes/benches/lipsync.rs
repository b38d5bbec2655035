//! Wav2Lip throughput on the compute device: faces per second at batch 1, 4 and 8, and the
//! batch-8 / batch-1 ratio. A speed measurement, not a test: without `VIDFLOW_BENCH=1` it only
//! says how to run it. Run it through `scripts/bench-lipsync.sh`:
//!
//! ```text
//! VIDFLOW_BENCH=1 cargo bench -p vidflow-nodes --features neural --bench lipsync -- --test --nocapture
//! ```
//!
//! `VIDFLOW_DEVICE` (auto, gpu, cpu; default cpu here) picks the device, `VIDFLOW_BENCH_SECONDS`
//! the time per batch size (default 5). Each result is also printed as `BENCH {json}`.
#![cfg(feature = "neural")]

mod common;

use std::time::{Duration, Instant};
use vidflow_nodes::gpu::device::Compute;
use vidflow_nodes::models::wav2lip::Wav2Lip;
use vidflow_nodes::weights;

#[test]
fn wav2lip_throughput() {
    let Some(secs) = common::enabled("lipsync", "see scripts/bench-lipsync.sh", 5.0) else {
        return;
    };
    let pref = common::device("cpu");
    let compute = Compute::open(pref).expect("device");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/wav2lip-random-seed0.fp16.pth");
    let model = Wav2Lip::load(&weights::load(&path).unwrap(), &compute.device).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rates = vec![];
    for batch in [1usize, 4, 8] {
        let mel: Vec<f32> = (0..batch * 80 * 16)
            .map(|i| ((i % 97) as f32 / 12.0) - 4.0)
            .collect();
        let face: Vec<f32> = (0..batch * 6 * 96 * 96)
            .map(|i| (i % 251) as f32 / 250.0)
            .collect();
        model.run(batch, &mel, &face).unwrap(); // warm-up
        let t = Instant::now();
        let mut faces = 0usize;
        let mut calls = 0usize;
        while t.elapsed() < Duration::from_secs_f64(secs) || calls < 2 {
            model.run(batch, &mel, &face).unwrap();
            faces += batch;
            calls += 1;
        }
        let el = t.elapsed().as_secs_f64();
        let fps = faces as f64 / el;
        let latency_ms = 1000.0 * el / calls as f64;
        println!(
            "wav2lip batch {batch}: {fps:.1} faces/s, {latency_ms:.1} ms per batch ({}, {threads} threads)",
            compute.name
        );
        println!(
            "BENCH {{\"batch\": {batch}, \"faces_per_s\": {fps:.3}, \"latency_ms\": {latency_ms:.3}, \"device\": \"{}\"}}",
            compute.name
        );
        rates.push(fps);
    }
    println!(
        "batch 8 / batch 1 throughput ratio: {:.2}",
        rates[2] / rates[0]
    );
}
