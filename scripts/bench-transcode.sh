#!/usr/bin/env bash
# Benchmark of graphs/transcode.yaml (decode → libx264 encode, audio copied) against the ffmpeg
# CLI doing the same decode and libx264 encode with the same preset and crf, in the same run.
#
#   scripts/bench-transcode.sh            # 1280x720 30 fps: a 30 s clip for time, 10 s and 60 s for memory
#   PRESET=veryfast CRF=23 REPS=5 scripts/bench-transcode.sh
#
# Prints the wall and CPU (user + system) time of each run, the medians of each tool and their
# ratios (target for wall time ≤ 1.10; the CPU ratio is the steadier number on a busy machine),
# and the peak memory (max RSS from /usr/bin/time -v) of vidflow on the 10 s and the 60 s clip
# (target: the 60 s run uses at most 15 % more). Uses a release build. Runs alternate between
# the two tools so that a busy machine slows both alike.
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET=${PRESET:-medium}
CRF=${CRF:-23}
REPS=${REPS:-3}
WORK=${WORK:-${TMPDIR:-/tmp}/vidflow-bench-transcode}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

for tool in ffmpeg ffprobe /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "bench-transcode: \`$tool\` is needed" >&2; exit 1; }
done

echo "== building vidflow (release, media)"
cargo build --release --quiet -p vidflow --no-default-features --features media
VIDFLOW="$CARGO_TARGET_DIR/release/vidflow"

mkdir -p "$WORK"
clip() { # seconds → path of a 1280x720 30 fps clip with AAC audio
    local f="$WORK/in-$1s.mp4"
    if [ ! -s "$f" ]; then
        echo "== making a $1 s 1280x720 clip" >&2
        ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
            -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$1" \
            -c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p -c:a aac -ac 2 "$f"
    fi
    echo "$f"
}

timed() { # file cmd… → appends "wall cpu" (seconds) to file, prints them
    local f=$1; shift
    /usr/bin/time -f "%e %U %S" -o "$WORK/time.tmp" bash -c '"$@"' _ "$@"
    awk '{printf "%.3f %.3f\n", $1, $2 + $3}' "$WORK/time.tmp" | tee -a "$f"
}
run_ffmpeg() { # in out
    ffmpeg -hide_banner -loglevel error -y -i "$1" -map 0:v:0 -map 0:a:0? \
        -c:v libx264 -preset "$PRESET" -crf "$CRF" -pix_fmt yuv420p -c:a copy "$2"
}
run_vidflow() { # in out
    "$VIDFLOW" run graphs/transcode.yaml --progress none \
        --set "input=$1" --set "output=$2" --set "crf=$CRF" --set "preset=$PRESET"
}
export -f run_ffmpeg run_vidflow
export PRESET CRF VIDFLOW
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

IN30=$(clip 30)
echo "== decode + libx264 (preset $PRESET, crf $CRF, audio copied) of a 30 s 1280x720 clip, $REPS runs each"
echo "   ($(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))"
: > "$WORK/t-ffmpeg"; : > "$WORK/t-vidflow"
for i in $(seq "$REPS"); do
    printf '  run %d  ffmpeg  wall/cpu s: ' "$i"; timed "$WORK/t-ffmpeg" run_ffmpeg "$IN30" "$WORK/out-ffmpeg.mp4"
    printf '  run %d  vidflow wall/cpu s: ' "$i"; timed "$WORK/t-vidflow" run_vidflow "$IN30" "$WORK/out-vidflow.mp4"
done
FW=$(cut -d' ' -f1 "$WORK/t-ffmpeg" | median); VW=$(cut -d' ' -f1 "$WORK/t-vidflow" | median)
FC=$(cut -d' ' -f2 "$WORK/t-ffmpeg" | median); VC=$(cut -d' ' -f2 "$WORK/t-vidflow" | median)
frames() { ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets -of csv=p=0 "$1"; }
echo "  frames: input $(frames "$IN30"), ffmpeg $(frames "$WORK/out-ffmpeg.mp4"), vidflow $(frames "$WORK/out-vidflow.mp4")"
printf '  median wall: ffmpeg %.2f s, vidflow %.2f s, ratio vidflow/ffmpeg = %.3f (target <= 1.10)\n' "$FW" "$VW" "$(echo "$VW / $FW" | bc -l)"
printf '  median cpu:  ffmpeg %.2f s, vidflow %.2f s, ratio vidflow/ffmpeg = %.3f\n' "$FC" "$VC" "$(echo "$VC / $FC" | bc -l)"

echo "== peak memory (max RSS) of vidflow"
rss() { # in → KiB
    /usr/bin/time -v "$VIDFLOW" run graphs/transcode.yaml --progress none \
        --set "input=$1" --set "output=$WORK/out-mem.mp4" --set "crf=$CRF" --set "preset=$PRESET" \
        2>&1 >/dev/null | awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}'
}
R10=$(rss "$(clip 10)"); R60=$(rss "$(clip 60)")
printf '  10 s clip: %d MiB\n  60 s clip: %d MiB\n  ratio 60 s / 10 s = %.3f (target <= 1.15)\n' \
    $((R10 / 1024)) $((R60 / 1024)) "$(echo "$R60 / $R10" | bc -l)"
