#!/usr/bin/env bash
# Benchmark of jobs (`vidflow run --job`): the overhead of running graphs/transcode.yaml as a
# job against the plain run of the same graph, on a 60 s clip, in the same run; and the time
# to resume a job that is already finished (no chunk runs: every record is checked against its
# output's size and SHA-256, and the outputs are joined again), with the hashing part alone.
#
#   scripts/bench-jobs.sh                     # 640x360 25 fps, 60 s, keyframe every 2 s
#   REPS=5 PRESET=veryfast CHUNK=10 scripts/bench-jobs.sh
#
# Prints each run's wall time, the medians and the ratio job / plain (target <= 1.05), then
# the resume time of a finished job (target < 1 s plus hashing) and the time `sha256sum`
# takes over the same files. Runs alternate between plain and job so that a busy machine
# slows both alike. Uses a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET=${PRESET:-veryfast}
REPS=${REPS:-3}
CHUNK=${CHUNK:-10}
WORK=${WORK:-${TMPDIR:-/tmp}/vidflow-bench-jobs}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

for tool in ffmpeg bc sha256sum; do
    command -v "$tool" >/dev/null || { echo "bench-jobs: \`$tool\` is needed" >&2; exit 1; }
done

echo "== building vidflow (release, media)"
cargo build --release --quiet -p vidflow --no-default-features --features media
VIDFLOW="$CARGO_TARGET_DIR/release/vidflow"

mkdir -p "$WORK"
IN="$WORK/in-60s.mp4"
if [ ! -s "$IN" ]; then
    echo "== making a 60 s 640x360 clip (keyframe every 2 s, AAC audio)"
    ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=25 \
        -f lavfi -i sine=frequency=440:sample_rate=48000 -t 60 \
        -c:v libx264 -preset veryfast -crf 18 -g 50 -pix_fmt yuv420p -c:a aac -ac 2 "$IN"
fi

wall() { # cmd… (a function too) → prints wall seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>"$WORK/err.tmp" || { cat "$WORK/err.tmp" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
plain() {
    "$VIDFLOW" run graphs/transcode.yaml --progress none --set "input=$IN" \
        --set "output=$WORK/plain.mp4" --set "preset=$PRESET"
}
job() { # dir
    rm -rf "$1"
    "$VIDFLOW" run graphs/transcode.yaml --progress none --set "input=$IN" \
        --set "output=$WORK/job.mp4" --set "preset=$PRESET" --job "$1" --chunk-seconds "$CHUNK"
}
resume() {
    "$VIDFLOW" run graphs/transcode.yaml --progress none --set "input=$IN" \
        --set "output=$WORK/job.mp4" --set "preset=$PRESET" --job "$WORK/job" --chunk-seconds "$CHUNK"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "== transcode (libx264 $PRESET) of a 60 s clip: plain run vs --job (chunks of $CHUNK s), $REPS runs each"
echo "   ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
: > "$WORK/t-plain"; : > "$WORK/t-job"
for i in $(seq "$REPS"); do
    p=$(wall plain); j=$(wall job "$WORK/job")
    echo "$p" >> "$WORK/t-plain"; echo "$j" >> "$WORK/t-job"
    printf '  run %d  plain %6.2f s   job %6.2f s\n' "$i" "$p" "$j"
done
P=$(median < "$WORK/t-plain"); J=$(median < "$WORK/t-job")
CHUNKS=$(ls "$WORK/job/chunks" | grep -c '^[0-9]*\.json$')
printf '  median wall: plain %.2f s, job %.2f s (%d chunks), ratio job/plain = %.3f (target <= 1.05)\n' \
    "$P" "$J" "$CHUNKS" "$(echo "$J / $P" | bc -l)"

echo "== resuming the finished job, $REPS runs"
: > "$WORK/t-resume"; : > "$WORK/t-hash"
for i in $(seq "$REPS"); do
    r=$(wall resume)
    h=$(wall sha256sum "$IN" "$WORK"/job/chunks/*/*.mp4)
    echo "$r" >> "$WORK/t-resume"; echo "$h" >> "$WORK/t-hash"
    printf '  run %d  resume %5.2f s   (sha256sum of the input and chunk outputs: %5.2f s)\n' "$i" "$r" "$h"
done
R=$(median < "$WORK/t-resume"); H=$(median < "$WORK/t-hash")
printf '  median resume of a finished job: %.2f s, of which hashing (sha256sum alone) %.2f s: %.2f s besides hashing (target < 1 s)\n' \
    "$R" "$H" "$(echo "$R - $H" | bc -l)"
