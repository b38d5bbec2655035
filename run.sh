#!/usr/bin/env bash
# The main job on its built-in default: installs what is missing, builds vidflow (release) and
# runs graphs/demo.yaml, which needs no downloads. Extra arguments go to `vidflow run`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install-deps.sh
cargo build --release --quiet
mkdir -p out
exec ./target/release/vidflow run graphs/demo.yaml "$@"
