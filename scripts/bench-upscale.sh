#!/usr/bin/env bash
# Upscale benchmark: vidflow (Burn) vs onnxruntime on realesr-animevideov3 x4,
# 320x180 -> 1280x720, batch 1 and 8, same thread count, same run. Prints frames/s and ratios.
#
#   scripts/bench-upscale.sh [--device auto|gpu|cpu] [--threads N] [--seconds S] [--onnx PATH] [--dev]
#
# --dev measures the dev-profile build (dependencies at opt-level 2, vidflow's crates at 0) instead
# of compiling everything again in release mode.
#
# Needs: python3 with onnxruntime and numpy (`pip install onnxruntime numpy`) and the ONNX export
# of the model (default ../shared/models/onnx/realesr-animevideov3-x4.onnx). Builds in release
# mode. CARGO_TARGET_DIR is respected.
set -euo pipefail
cd "$(dirname "$0")/.."
device=cpu
threads=$(nproc)
seconds=10
onnx=../shared/models/onnx/realesr-animevideov3-x4.onnx
cargo_cmd=(cargo bench -q)
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --onnx) onnx=$2; shift 2 ;;
    --dev) cargo_cmd=(cargo test -q); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "== vidflow (device $device, $threads threads)"
VIDFLOW_BENCH=1 VIDFLOW_DEVICE=$device VIDFLOW_BENCH_SECONDS=$seconds RAYON_NUM_THREADS=$threads \
  "${cargo_cmd[@]}" -p vidflow-nodes --features neural --bench upscale -- --test --nocapture 2>/dev/null \
  | grep -v '^running\|^test \|^$\|test result' | tee -a "$out"
if [ -f "$onnx" ] && python3 -c 'import onnxruntime, numpy' 2>/dev/null; then
  echo "== onnxruntime (CPU, $threads threads)"
  OMP_NUM_THREADS=$threads python3 scripts/bench-upscale-ort.py "$onnx" --threads "$threads" --seconds "$seconds" | tee -a "$out"
else
  echo "== onnxruntime: skipped (needs $onnx and python3 -m pip install onnxruntime numpy)"
fi
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l.split("BENCH ", 1)[1]) for l in open(sys.argv[1]) if l.startswith("BENCH ")]
fps = {(r["engine"], r["batch"]): r["fps"] for r in rows}
for b in sorted({r["batch"] for r in rows}):
    v, o = fps.get(("vidflow", b)), fps.get(("onnxruntime", b))
    if v and o:
        print(f"batch {b}: vidflow {v:.3f} fps, onnxruntime {o:.3f} fps, ratio vidflow/onnxruntime = {v / o:.2f}")
PY
