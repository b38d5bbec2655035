#!/usr/bin/env bash
# Installs what vidflow needs on Debian/Ubuntu, skipping whatever is already there:
# the Rust toolchain check, FFmpeg's libraries and CLI, clang for bindgen, Mesa's Vulkan driver.
set -euo pipefail

need=()
for pkg in pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
           libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev ffmpeg \
           mesa-vulkan-drivers libvulkan1 python3; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "vidflow: installing ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "vidflow: cargo not found; install Rust from https://rustup.rs" >&2; exit 1; }
