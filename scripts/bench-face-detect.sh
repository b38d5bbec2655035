#!/usr/bin/env bash
# face-detect benchmark: vidflow's MTCNN (Burn, built-in weights) vs facenet-pytorch 2.6.0's
# MTCNN on the same 640x360 frames (nodes/tests/fixtures/mtcnn/astronaut_640x360.png), batch 1
# and 8, on the CPU, same thread count, same run. Prints frames/s and the ratio.
#
#   scripts/bench-face-detect.sh [--threads N] [--seconds S] [--dev]
#
# --dev measures the dev-profile build (dependencies at opt-level 2, vidflow's crates at 0)
# instead of compiling everything again in release mode.
#
# The peer runs in a venv under ~/.cache/vidflow/mtcnn-venv, made on first use from PyPI:
# torch, torchvision, pillow, numpy, requests, tqdm and facenet-pytorch 2.6.0 (installed without
# its pins, which ask for an old torch). CARGO_TARGET_DIR is respected.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=2
seconds=10
cargo_cmd=(cargo bench -q)
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --dev) cargo_cmd=(cargo test -q); shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
venv="$HOME/.cache/vidflow/mtcnn-venv"
if ! "$venv/bin/python" -c 'import torch, torchvision, facenet_pytorch' 2>/dev/null; then
  echo "== setting up $venv (torch and facenet-pytorch from PyPI)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch torchvision pillow numpy requests tqdm
  "$venv/bin/pip" install -q --no-deps facenet-pytorch==2.6.0
fi
frame=nodes/tests/fixtures/mtcnn/astronaut_640x360.png
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "== vidflow (CPU, $threads threads)"
VIDFLOW_BENCH=1 VIDFLOW_DEVICE=cpu VIDFLOW_BENCH_SECONDS=$seconds RAYON_NUM_THREADS=$threads \
  "${cargo_cmd[@]}" -p vidflow-nodes --features neural --bench face_detect -- --test --nocapture 2>/dev/null \
  | grep -v '^running\|^test \|^$\|test result' | tee -a "$out"
echo "== facenet-pytorch (CPU, $threads threads)"
OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
  "$venv/bin/python" scripts/bench-face-detect.py "$frame" --threads "$threads" --seconds "$seconds" | tee -a "$out"
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l.split("BENCH ", 1)[1]) for l in open(sys.argv[1]) if l.startswith("BENCH ")]
fps = {(r["engine"], r["batch"]): r["fps"] for r in rows}
for b in sorted({r["batch"] for r in rows}):
    v, o = fps.get(("vidflow", b)), fps.get(("facenet-pytorch", b))
    if v and o:
        print(f"batch {b}: vidflow {v:.2f} fps, facenet-pytorch {o:.2f} fps, ratio vidflow/facenet-pytorch = {v / o:.2f}")
PY
