#!/usr/bin/env bash
# Installs what WebGPU tests need in Node on Debian: Dawn (the `webgpu` npm package) needs a Vulkan
# loader (libvulkan1) and a Vulkan driver. Debian's lavapipe is rejected by Dawn; the SwiftShader driver
# shipped in Debian's `chromium` package works (slowly, ~0.6 GFLOP/s). The webgpu tests point
# VK_ICD_FILENAMES at it when it is unset.
#
# Idempotent: does nothing when the driver and the loader are already there. Without apt-get (not
# Debian) it says so and exits 0: the WebGPU tests then skip with their reason.
set -euo pipefail

ICD=/usr/lib/chromium/vk_swiftshader_icd.json

have_loader() { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; }

if [[ -f "$ICD" ]] && have_loader; then
  echo "webgpu-setup: SwiftShader Vulkan driver and loader present ($ICD)"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "webgpu-setup: no apt-get here; skipping (WebGPU tests will skip: no adapter)"
  exit 0
fi

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "webgpu-setup: not root and no sudo; skipping (WebGPU tests will skip: no adapter)"
    exit 0
  fi
fi

echo "webgpu-setup: installing chromium (for its SwiftShader Vulkan driver) and libvulkan1"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium libvulkan1 >/dev/null

if [[ -f "$ICD" ]] && have_loader; then
  echo "webgpu-setup: done ($ICD)"
else
  echo "webgpu-setup: installed, but $ICD or libvulkan.so.1 is missing; WebGPU tests will skip" >&2
fi
