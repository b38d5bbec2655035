#!/usr/bin/env bash
# The main job on its built-in default: installs what is missing, builds vidflow (release) and
# runs graphs/upscale.yaml on the clip shipped in graphs/clips/sample.mp4 (1 s, 320x180, with a
# tone) with the built-in Real-ESRGAN realesr-animevideov3 x4 weights (no downloads): decode →
# upscale (batched, on the GPU if there is one, else the CPU) → encode with the source audio,
# into out/upscaled.mp4 (1280x720). Extra arguments go to `vidflow run`
# (e.g. --set input=my.mp4 --set output=out/big.mp4, or --device cpu).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install-deps.sh
cargo build --release --quiet
mkdir -p out
exec ./target/release/vidflow run graphs/upscale.yaml "$@"
