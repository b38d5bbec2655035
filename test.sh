#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install-deps.sh
cargo test --workspace --all-targets "$@"
