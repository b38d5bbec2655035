#!/usr/bin/env bash
# Interpolation benchmark: vidflow (Burn, RIFE v4.25) vs onnxruntime on the same network and
# weights, 640x384, one new frame per pair (t = 0.5), same thread count, same run. Prints frame
# pairs/s and the ratio.
#
#   scripts/bench-rife.sh [--device auto|gpu|cpu] [--threads N] [--seconds S] [--onnx PATH] [--dev]
#
# --dev measures the dev-profile build instead of compiling everything again in release mode.
# Needs: python3 with onnxruntime and numpy and the ONNX export of the network (default
# ../shared/models/onnx/rife-v4.25-640x384.onnx). CARGO_TARGET_DIR is respected.
set -euo pipefail
cd "$(dirname "$0")/.."
device=cpu
threads=$(nproc)
seconds=10
onnx=../shared/models/onnx/rife-v4.25-640x384.onnx
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
  "${cargo_cmd[@]}" -p vidflow-nodes --features neural --bench interpolate -- --test --nocapture 2>/dev/null \
  | grep -v '^running\|^test \|^$\|test result' | tee -a "$out"
if [ -f "$onnx" ] && python3 -c 'import onnxruntime, numpy' 2>/dev/null; then
  echo "== onnxruntime (CPU, $threads threads)"
  OMP_NUM_THREADS=$threads python3 scripts/bench-rife-ort.py "$onnx" --threads "$threads" --seconds "$seconds" | tee -a "$out"
else
  echo "== onnxruntime: skipped (needs $onnx and python3 -m pip install onnxruntime numpy)"
fi
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l.split("BENCH ", 1)[1]) for l in open(sys.argv[1]) if l.startswith("BENCH ")]
pps = {r["engine"]: r["pps"] for r in rows}
v, o = pps.get("vidflow"), pps.get("onnxruntime")
if v and o:
    print(f"640x384: vidflow {v:.3f} pairs/s, onnxruntime {o:.3f} pairs/s, ratio vidflow/onnxruntime = {v / o:.2f}")
PY
