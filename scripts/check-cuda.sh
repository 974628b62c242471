#!/usr/bin/env bash
# Proves that the workspace builds for NVIDIA GPUs on a machine without a GPU: installs
# Debian's CUDA 11.8 toolkit (non-free component) and builds everything with the `cuda`
# feature for compute capability 8.0 (CUDA 11.8 cannot target compute_90a; sm_80 PTX runs on
# Hopper). The CUDA kernels of candle take about 9 minutes to build on 2 cores.
#
#   scripts/check-cuda.sh            # build check (cuda)
#   FEATURES=cuda,cudnn scripts/check-cuda.sh
#   PACKAGE=1 scripts/check-cuda.sh  # also stage dist/gpu/ for a GPU machine (see scripts/run-on-gpu.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvcc >/dev/null; then
  if ! grep -Rqs "non-free" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "enabling Debian's non-free component for nvidia-cuda-toolkit"
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
      sed -i 's/^Components: \(.*\)$/Components: \1 contrib non-free non-free-firmware/' /etc/apt/sources.list.d/debian.sources
    else
      sed -i 's/ main$/ main contrib non-free non-free-firmware/' /etc/apt/sources.list
    fi
  fi
  apt-get update -qq
  # No recommends: they pull in the driver and build its kernel module, which a build does not need.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nvidia-cuda-toolkit >/dev/null
fi
nvcc --version | tail -n 1

export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
features="${FEATURES:-cuda}"
cargo build --release --workspace --features "maskdit-cli/${features//,/,maskdit-cli/}"
cargo test --release --workspace --features "maskdit-cli/${features//,/,maskdit-cli/}" --no-run

if [ "${PACKAGE:-0}" = "1" ]; then
  dist=dist/gpu
  rm -rf "$dist" && mkdir -p "$dist/tests"
  cp target/release/maskdit "$dist/" && (strip "$dist/maskdit" 2>/dev/null || true)
  # Test binaries of the parity suites (their names carry a hash: pick the newest of each).
  for t in parity_model parity_sampler parity_train parity_vae; do
    bin=$(ls -t target/release/deps/${t}-* 2>/dev/null | grep -v '\.d$' | head -n 1)
    cp "$bin" "$dist/tests/$t"
    strip "$dist/tests/$t" 2>/dev/null || true
  done
  cp -r tests/golden "$dist/golden"
  cp cli/assets/mnist.safetensors data/mnist/digits.safetensors scripts/run-on-gpu.sh "$dist/"
  # The CUDA binaries are ~65 MB each stripped (embedded PTX) and compress about 4x.
  tar -C dist -cJf dist/gpu.tar.xz gpu
  echo "staged $dist and dist/gpu.tar.xz ($(du -h dist/gpu.tar.xz | cut -f1)): carry it to the GPU machine,"
  echo "unpack it (tar -xJf gpu.tar.xz) and run 'bash run-on-gpu.sh' inside gpu/"
fi
echo "CUDA build check passed (features: $features, compute capability $CUDA_COMPUTE_CAP)"
