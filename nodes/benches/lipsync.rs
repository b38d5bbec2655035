//! Wav2Lip throughput on the compute device: faces per second at batch 1, 4 and 8, and the
//! batch-8 / batch-1 ratio. A speed measurement, not a test: without `VIDFLOW_BENCH=1` it only
//! says how to run it. Run it through `scripts/bench-lipsync.sh`:
//!
//! ```text
//! VIDFLOW_BENCH=1 cargo bench -p vidflow-nodes --features neural --bench lipsync -- --test --nocapture
//! ```
//!
//! `VIDFLOW_DEVICE` (auto, gpu, cpu; default cpu here) picks the device, `VIDFLOW_BENCH_SECONDS`
//! the time per batch size (default 5). Each result is also printed as `BENCH {json}`, with the
//! process's CPU time per face, which other load on the machine disturbs less than the wall
//! time (the ratio of the CPU times is the ratio the batches would have on idle cores).
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
        let cpu = cpu_seconds();
        let t = Instant::now();
        let mut faces = 0usize;
        let mut calls = 0usize;
        while t.elapsed() < Duration::from_secs_f64(secs) || calls < 2 {
            model.run(batch, &mel, &face).unwrap();
            faces += batch;
            calls += 1;
        }
        let el = t.elapsed().as_secs_f64();
        let cpu_ms = 1000.0 * (cpu_seconds() - cpu) / faces as f64;
        let fps = faces as f64 / el;
        let latency_ms = 1000.0 * el / calls as f64;
        println!(
            "wav2lip batch {batch}: {fps:.1} faces/s, {latency_ms:.1} ms per batch, {cpu_ms:.1} CPU ms per face ({}, {threads} threads)",
            compute.name
        );
        println!(
            "BENCH {{\"batch\": {batch}, \"faces_per_s\": {fps:.3}, \"latency_ms\": {latency_ms:.3}, \"cpu_ms_per_face\": {cpu_ms:.3}, \"device\": \"{}\"}}",
            compute.name
        );
        rates.push((fps, cpu_ms));
    }
    println!(
        "batch 8 / batch 1 throughput ratio: {:.2} (CPU time per face: {:.2})",
        rates[2].0 / rates[0].0,
        rates[0].1 / rates[2].1
    );
}

/// The CPU time of this process (all its threads, user and system) so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}
