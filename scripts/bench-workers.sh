#!/usr/bin/env bash
# Benchmark of jobs spread over workers through NATS JetStream, in one run:
#
# 1. Scaling: a latency-bound graph (an exec node that waits 50 ms per frame, as a remote model
#    call would) as a job of 20 chunks, run by 1, 2 and 4 local `vidflow worker` processes;
#    prints each wall time, the throughput against one worker and the scaling efficiency
#    (speed-up / workers; target >= 0.8 at 4 workers).
# 2. Overhead: the same graph without the wait, as a local job (one chunk at a time) and
#    through NATS with one worker; prints the difference per chunk (target <= 50 ms).
#
#   scripts/bench-workers.sh          REPS=3 scripts/bench-workers.sh
#
# Starts its own nats-server (scripts/install-deps.sh installs it) on a free loopback port.
# Uses a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-1}
WORK=${WORK:-${TMPDIR:-/tmp}/vidflow-bench-workers}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
bash scripts/install-deps.sh
NATS_BIN="${VIDFLOW_CACHE:-$HOME/.cache/vidflow}/nats-2.15.1/bin/nats-server"

echo "== building vidflow (release, media)"
cargo build --release --quiet -p vidflow --no-default-features --features media
VIDFLOW="$CARGO_TARGET_DIR/release/vidflow"

rm -rf "$WORK"; mkdir -p "$WORK/nats"
cd "$WORK"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=160x90:rate=25 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t 20 \
    -c:v libx264 -preset veryfast -g 25 -pix_fmt yuv420p -c:a aac in.mp4
cat > wait.py <<'EOF'
import sys, time
w, h, ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
n = w * h * 3
while True:
    f = sys.stdin.buffer.read(n)
    if len(f) < n:
        break
    time.sleep(ms / 1000.0)
    sys.stdout.buffer.write(f)
    sys.stdout.buffer.flush()
EOF
graph() { # ms → graph file
    cat > "g$1.yaml" <<EOF
name: wait$1
nodes:
  - id: dec
    kind: decode
    params: { path: in.mp4 }
  - id: wait
    kind: exec
    params: { command: [python3, wait.py, "160", "90", "$1"], format: rgb24 }
    inputs: { items: dec.frames }
  - id: enc
    kind: encode
    params: { path: out$1.mp4, preset: veryfast }
    inputs: { frames: wait.frames, audio_packets: dec.audio_packets }
EOF
    echo "g$1.yaml"
}
G50=$(graph 50); G0=$(graph 0)

"$NATS_BIN" -js -a 127.0.0.1 -p -1 -sd "$WORK/nats" --ports_file_dir "$WORK/nats" >/dev/null 2>&1 &
NATS_PID=$!
WORKERS=()
cleanup() { stop_workers; kill $NATS_PID 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do [ -s "$WORK/nats/nats-server_$NATS_PID.ports" ] && break; sleep 0.05; done
URL=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['nats'][0])" "$WORK/nats/nats-server_$NATS_PID.ports")

stop_workers() {
    if ((${#WORKERS[@]})); then
        kill "${WORKERS[@]}" 2>/dev/null || true
        wait "${WORKERS[@]}" 2>/dev/null || true
    fi
    WORKERS=()
}
workers() { # n → starts n workers
    stop_workers
    for i in $(seq "$1"); do
        "$VIDFLOW" worker --nats "$URL" --name "w$i" 2>/dev/null &
        WORKERS+=($!)
    done
    sleep 0.5
}
wall() { # cmd… → wall seconds
    local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
coordinate() { # graph dir
    rm -rf "$2"; "$VIDFLOW" run "$1" --progress none --job "$2" --chunk-seconds 1 --nats "$URL"
}

echo "== scaling: 20 chunks of 25 frames, 50 ms per frame; $REPS run(s) each ($(nproc) cores)"
declare -A T
for n in 1 2 4; do
    workers "$n"
    : > "t$n"
    for _ in $(seq "$REPS"); do wall coordinate "$G50" "job$n" >> "t$n"; done
    T[$n]=$(median < "t$n")
    printf '  %d worker(s): %6.2f s\n' "$n" "${T[$n]}"
done
for n in 2 4; do
    printf '  %d workers: speed-up %.2f, efficiency %.2f (target >= 0.8 at 4)\n' "$n" \
        "$(echo "${T[1]} / ${T[$n]}" | bc -l)" "$(echo "${T[1]} / ${T[$n]} / $n" | bc -l)"
done

echo "== per-chunk overhead of NATS against a local job (no wait, 20 chunks, one at a time)"
workers 1
: > tl; : > tn
for _ in $(seq "$REPS"); do
    rm -rf local; wall "$VIDFLOW" run "$G0" --progress none --job local --chunk-seconds 1 --parallel 1 >> tl
    wall coordinate "$G0" through-nats >> tn
done
L=$(median < tl); N=$(median < tn)
printf '  local job %.2f s, through NATS %.2f s: %.1f ms more per chunk (target <= 50)\n' \
    "$L" "$N" "$(echo "($N - $L) * 1000 / 20" | bc -l)"
