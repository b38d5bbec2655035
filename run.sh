#!/usr/bin/env bash
# The main job on its built-in default: installs what is missing, builds vidflow (release) and
# runs graphs/travel.yaml on the keyframes shipped in graphs/travel-keyframes/ (no downloads):
# a batch plan, guide frames and masks, generated frames, split, stitch, and an H.264 video in
# out/travel.mp4. Extra arguments go to `vidflow run` (e.g. --set max_frames=65).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install-deps.sh
cargo build --release --quiet
mkdir -p out
exec ./target/release/vidflow run graphs/travel.yaml "$@"
