#!/usr/bin/env bash
# Benchmark of llm-analyze's batching against the test server (fixed 300 ms latency, no
# faults): 30 frames as multi_image batches of 3 vs one request per frame, same concurrency.
# Prints requests and wall time of each and their ratios (nodes/tests/nodes/llm_bench.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release -p vidflow-nodes --features llm --test nodes -- llm_bench:: --nocapture --test-threads=1 "$@"
