#!/usr/bin/env bash
# Benchmark of `vidflow serve` with live lip sync (graphs/serve-lipsync.yaml on the fixture
# Wav2Lip checkpoint: seeded random weights, the speed does not depend on their values), in one
# run, driven by `vidflow serve-bench`:
#
# 1. Saturation: K sessions asking for more frames than the CPU makes, against the same server
#    with cross-session batching (`batch: { max: 8 }`) and without (`max: 1`), alternating;
#    prints total frames per second of each and their ratio (target >= 1.5).
# 2. Capacity: at F fps per session, the largest K whose slowest session gets >= 0.95 F with a
#    latency p99 <= 250 ms (K = 1, 2, 3… until it fails).
#
#   scripts/bench-serve.sh            REPS=3 SAT_K=4 SAT_FPS=25 F=5 SECONDS_EACH=20 scripts/bench-serve.sh
#
# Uses a release build; the server runs on the CPU with every core.
set -euo pipefail
cd "$(dirname "$0")/.."

REPS=${REPS:-2}
SAT_K=${SAT_K:-4}
SAT_FPS=${SAT_FPS:-25}
F=${F:-5}
SECS=${SECONDS_EACH:-15}
WORK=${WORK:-${TMPDIR:-/tmp}/vidflow-bench-serve}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
WEIGHTS=$PWD/nodes/tests/fixtures/wav2lip-random-seed0.fp16.pth

echo "== building vidflow (release)"
cargo build --release --quiet -p vidflow
VIDFLOW="$CARGO_TARGET_DIR/release/vidflow"

rm -rf "$WORK"; mkdir -p "$WORK"
sed 's/batch: { max: 8, wait_ms: 20 }/batch: { max: 8, wait_ms: 40 }/' graphs/serve-lipsync.yaml > "$WORK/batched.yaml"
sed 's/batch: { max: 8, wait_ms: 20 }/batch: { max: 1 }/' graphs/serve-lipsync.yaml > "$WORK/single.yaml"
grep -q 'max: 1 }' "$WORK/single.yaml" || { echo "cannot make the max: 1 graph"; exit 1; }

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SERVER=
stop_server() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true; SERVER=; }
trap stop_server EXIT
start_server() { # graph → sets GRPC, METRICS, SERVER once ready
    GRPC=127.0.0.1:$(port); METRICS=127.0.0.1:$(port)
    "$VIDFLOW" serve "$1" --set "weights=$WEIGHTS" --device cpu --listen "$GRPC" \
        --metrics "$METRICS" 2>"$WORK/server.log" &
    SERVER=$!
    for _ in $(seq 300); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$METRICS/ready" || true)" = 200 ]; then return; fi
        sleep 0.2
    done
    echo "the server never got ready:"; cat "$WORK/server.log"; exit 1
}
bench() { # sessions fps → one JSON line
    "$VIDFLOW" serve-bench --target "$GRPC" --metrics "$METRICS" --sessions "$1" --fps "$2" \
        --seconds "$SECS" --json
}
field() { python3 -c "import json,sys; v=json.loads(sys.argv[1]); print($2)" "$1"; }

echo "== 1. saturation: $SAT_K sessions at $SAT_FPS fps for $SECS s, batched (max 8) vs max 1, $REPS rounds"
ratios=()
for r in $(seq "$REPS"); do
    for g in batched single; do
        start_server "$WORK/$g.yaml"
        out=$(bench "$SAT_K" "$SAT_FPS")
        stop_server
        fps=$(field "$out" 'round(v["total_fps"], 3)')
        mean=$(field "$out" '", ".join("%s %.2f" % (b["node"], b["mean"]) for b in v["batches"])')
        echo "round $r $g: total $fps fps (mean batch: $mean)"
        eval "${g}_fps=$fps"
    done
    ratio=$(python3 -c "print(round($batched_fps / $single_fps, 3))")
    ratios+=("$ratio")
    echo "round $r: batched / max 1 = $ratio"
done
echo "ratios: ${ratios[*]} (median $(python3 -c "import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))" "${ratios[@]}"); target >= 1.5)"

echo "== 2. capacity at $F fps per session (>= 0.95 F for the slowest session, p99 <= 250 ms)"
start_server "$WORK/batched.yaml"
best=0
for k in 1 2 3 4 5 6 7 8; do
    out=$(bench "$k" "$F")
    slow=$(field "$out" 'round(v["min_session_fps"], 2)')
    p99=$(field "$out" 'round(v["latency_ms"]["p99"])')
    late=$(field "$out" 'v["late"]')
    echo "K=$k: slowest session $slow fps, p99 $p99 ms, $late late"
    if python3 -c "import sys; sys.exit(0 if $slow >= 0.95 * $F and $p99 <= 250 else 1)"; then
        best=$k
    else
        break
    fi
done
stop_server
echo "largest K at $F fps: $best"
