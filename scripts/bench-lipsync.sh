#!/usr/bin/env bash
# Wav2Lip throughput (faces/s) at batch 1, 4 and 8 and the batch-8 / batch-1 ratio, on the CPU
# by default (VIDFLOW_DEVICE=gpu for the GPU). See nodes/benches/lipsync.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDFLOW_BENCH=1 VIDFLOW_DEVICE="${VIDFLOW_DEVICE:-cpu}" \
  cargo bench -p vidflow-nodes --features neural --bench lipsync -- --test --nocapture "$@"
