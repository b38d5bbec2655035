#!/usr/bin/env bash
# Starts a NATS server with JetStream on loopback for trying `vidflow worker` (and stops it on
# Ctrl-C): its store in a temporary folder, the port printed.
#
#   scripts/nats.sh                 # nats://127.0.0.1:4222
#   PORT=4333 TOKEN=s3cret scripts/nats.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
NATS_VERSION=2.15.1
BIN="${VIDFLOW_CACHE:-$HOME/.cache/vidflow}/nats-$NATS_VERSION/bin/nats-server"
STORE=$(mktemp -d "${TMPDIR:-/tmp}/vidflow-nats.XXXXXX")
trap 'rm -rf "$STORE"' EXIT
args=(-js -a 127.0.0.1 -p "${PORT:-4222}" -sd "$STORE")
[ -n "${TOKEN:-}" ] && args+=(--auth "$TOKEN")
echo "nats-server $NATS_VERSION with JetStream on nats://127.0.0.1:${PORT:-4222} (store $STORE); Ctrl-C stops it" >&2
"$BIN" "${args[@]}"
