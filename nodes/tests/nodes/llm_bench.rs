//! Benchmark of batching: 30 frames against the fault-free test server with a fixed 300 ms
//! latency, `multi_image` with batches of 3 against one request per frame (`per_frame`), at
//! the same concurrency. Prints requests and wall time of each and their ratios; fails if
//! batching does not need 3x fewer requests or takes longer.
//!
//! `scripts/bench-llm.sh` runs it in release mode with the table shown.

use crate::common::{assert_ok, load, read_records, temp_dir};
use crate::llm_fake::{FakeServer, Options, graph};
use std::time::Duration;
use vidflow_engine::exec::{self, RunOptions};

const FRAMES: u64 = 30;
const CONCURRENCY: usize = 5;
const LATENCY: Duration = Duration::from_millis(300);

/// Runs the graph once; returns (requests, wall seconds of the run).
fn measure(mode: &str) -> (usize, f64) {
    let server = FakeServer::start(Options {
        latency: LATENCY,
        ..Options::default()
    });
    let dir = temp_dir("llm-bench");
    let out = dir.join("out.jsonl");
    let params = format!("cache: false, mode: {mode}, concurrency: {CONCURRENCY}");
    let yaml = graph(
        &server.base_url,
        FRAMES,
        &params,
        Some("{ max: 3, wait_ms: 1000 }"),
        &out,
    );
    let registry = vidflow_nodes::registry();
    let g = load("bench.yaml", &yaml, &[], &registry);
    let report = exec::run(&g, RunOptions::default());
    assert_ok(&report);
    let records = read_records(&out);
    assert_eq!(records.len() as u64, FRAMES);
    assert!(records.iter().all(|r| r["error"].is_null()));
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    let _ = std::fs::remove_dir_all(&dir);
    (server.count(), report.elapsed.as_secs_f64())
}

#[test]
fn multi_image_needs_a_third_of_the_requests_and_no_more_time() {
    let (multi_req, multi_s) = measure("multi_image");
    let (single_req, single_s) = measure("per_frame");
    println!(
        "\nllm-analyze: {FRAMES} frames (320x180), test server with {} ms latency, concurrency {CONCURRENCY}",
        LATENCY.as_millis()
    );
    println!("{:<24}{:>10}{:>12}", "mode", "requests", "wall (s)");
    println!(
        "{:<24}{:>10}{:>12.2}",
        "multi_image, batch 3", multi_req, multi_s
    );
    println!("{:<24}{:>10}{:>12.2}", "per_frame", single_req, single_s);
    println!(
        "{:<24}{:>9.1}x{:>11.1}x",
        "per_frame / multi_image",
        single_req as f64 / multi_req as f64,
        single_s / multi_s
    );
    assert_eq!(multi_req, 10);
    assert_eq!(single_req, 30);
    assert!(
        multi_s <= single_s,
        "batching took longer: {multi_s:.2} s vs {single_s:.2} s"
    );
}
