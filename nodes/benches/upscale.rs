//! Upscale throughput: 320x180 → 1280x720 with the built-in realesr-animevideov3 x4 at batch 1
//! and 8. Run it through `scripts/bench-upscale.sh`, which also runs onnxruntime on the same
//! model with the same thread count and prints the ratio:
//!
//! ```text
//! VIDFLOW_BENCH=1 cargo bench -p vidflow-nodes --features neural --bench upscale -- --test --nocapture
//! ```
//!
//! `VIDFLOW_DEVICE` (auto, gpu, cpu) picks the device, `VIDFLOW_BENCH_SECONDS` the time per
//! batch size (default 10). Without `VIDFLOW_BENCH=1` (as when `cargo test --all-targets`
//! builds benches in test mode) it only says how to run it: a speed target belongs here, not
//! in the test suite. Each result line is also printed as JSON (`BENCH {...}`) for the script.
#![cfg(feature = "neural")]

mod common;

use std::time::Duration;
use vidflow_nodes::kinds::upscale::bench::{BenchSpec, bench_upscale};

#[test]
fn upscale_throughput() {
    let Some(secs) = common::enabled("upscale", "see scripts/bench-upscale.sh", 10.0) else {
        return;
    };
    let device = common::device("auto");
    let spec = BenchSpec {
        device,
        min_time: Duration::from_secs_f64(secs),
        ..Default::default()
    };
    let (name, results) = bench_upscale(&spec).unwrap_or_else(|e| panic!("{e}"));
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .to_string()
    });
    println!("vidflow upscale on {name}, {threads} threads");
    for r in &results {
        println!(
            "  {}x{} -> {}x{} batch {}: {:.3} frames/s ({} frames in {:.1} s)",
            spec.width,
            spec.height,
            spec.width * 4,
            spec.height * 4,
            r.batch,
            r.fps,
            r.frames,
            r.seconds
        );
        println!(
            "BENCH {{\"engine\": \"vidflow\", \"batch\": {}, \"fps\": {:.4}}}",
            r.batch, r.fps
        );
    }
}
