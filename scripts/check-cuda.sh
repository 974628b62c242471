#!/usr/bin/env bash
# Proves that the workspace builds for NVIDIA GPUs on a machine without a GPU: installs
# Debian's CUDA 11.8 toolkit (non-free component) and builds everything with the `cuda`
# feature for compute capability 8.0 (CUDA 11.8 cannot target compute_90a; sm_80 PTX runs on
# Hopper). The CUDA kernels of candle take about 9 minutes to build on 2 cores.
#
#   scripts/check-cuda.sh            # build check (cuda, nccl)
#   CHECK_ONLY=1 scripts/check-cuda.sh  # clippy on every crate and target with the features:
#                                       # no code generation or linking (what .ci/run does)
#   FEATURES=cuda,nccl,cudnn scripts/check-cuda.sh
#   PACKAGE=1 scripts/check-cuda.sh  # also stage dist/gpu/ for a GPU machine (see scripts/run-on-gpu.sh)
#   PACKAGE=1 CUDA_RUNTIME_VERSION=12080 scripts/check-cuda.sh  # for a machine with CUDA 12.8
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
# A target folder of its own: the CPU build in target/ stays as it is. Artifacts of the linked
# and the packaged build live side by side here (candle's kernels are built once for both).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/cuda}"
features="${FEATURES:-cuda,nccl}"
cli_features="maskdit-cli/${features//,/,maskdit-cli/}"
if [ "${CHECK_ONLY:-0}" = "1" ]; then
  # Type-checks and lints every crate and target with the CUDA features, the GPU parity suite
  # and the toolkit's kernels (compiled to PTX by nvcc in their build script) included.
  cargo clippy --workspace --all-targets --features "$cli_features,maskdit-tests/cuda" -- -D warnings
  echo "CUDA type check passed (features: $features, compute capability $CUDA_COMPUTE_CAP)"
  exit 0
fi
if [[ ",$features," == *",nccl,"* ]] && [ "${PACKAGE:-0}" != "1" ]; then
  # The linked build links libnccl.so, which Debian does not package: take it from NVIDIA's
  # wheel on PyPI (the packaged build opens it at run time instead and needs nothing here).
  nccl_dir="$PWD/$CARGO_TARGET_DIR/nccl"
  if [ ! -e "$nccl_dir/libnccl.so" ]; then
    mkdir -p "$nccl_dir"
    python3 - "$nccl_dir" <<'PY'
import io, json, sys, urllib.request, zipfile
target = sys.argv[1]
release = json.load(urllib.request.urlopen("https://pypi.org/pypi/nvidia-nccl-cu12/json"))
wheel = next(u for u in release["urls"] if u["filename"].endswith("x86_64.whl"))
data = urllib.request.urlopen(wheel["url"]).read()
with zipfile.ZipFile(io.BytesIO(data)) as z:
    name = next(n for n in z.namelist() if n.endswith("/libnccl.so.2"))
    open(f"{target}/libnccl.so.2", "wb").write(z.read(name))
print(f"libnccl.so.2 from {wheel['filename']}")
PY
    ln -sf libnccl.so.2 "$nccl_dir/libnccl.so"
  fi
  export LIBRARY_PATH="$nccl_dir${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$nccl_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ "${PACKAGE:-0}" != "1" ]; then
  # The packaged build below replaces this check (it builds the same code against a patched
  # cudarc), so a packaging run skips it: one full CUDA build on 2 cores instead of two.
  cargo build --release --workspace --features "$cli_features"
  cargo test --release --workspace --features "$cli_features" --no-run
fi

if [ "${PACKAGE:-0}" = "1" ]; then
  # The GPU machine has a newer CUDA (13) than the 11.8 toolkit here, and NVIDIA's libraries
  # version their symbols (libcublas.so.11 symbols do not resolve against libcublas.so.13), so
  # the carried binaries must not link CUDA at all: cudarc's dynamic loading opens the driver,
  # cuBLAS and cuRAND at run time, with bindings for CUDA $CUDA_RUNTIME_VERSION. candle-core
  # turns on cudarc's `dynamic-linking`, so a copy of cudarc whose build script maps that
  # feature to dynamic loading is patched in for this build only (Cargo.lock is restored).
  runtime="${CUDA_RUNTIME_VERSION:-13000}"
  cudarc_version=$(grep -A1 '^name = "cudarc"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
  cargo fetch --locked >/dev/null
  cudarc_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$cudarc_version" | head -n 1)
  patched="$CARGO_TARGET_DIR/cudarc-dynamic-loading"
  case "$patched" in /*) ;; *) patched="$PWD/$patched" ;; esac
  mkdir -p "$CARGO_TARGET_DIR"
  rm -rf "$patched" && cp -r "$cudarc_src" "$patched" && chmod -R u+w "$patched"
  perl -0pi -e 's/#\[cfg\(feature = "dynamic-linking"\)\]\s*dynamic_linking\(major, minor\);/println!("cargo:rustc-cfg=feature=\\"dynamic-loading\\"");/' "$patched/build.rs"
  grep -q 'rustc-cfg=feature=\\"dynamic-loading\\"");$' "$patched/build.rs" \
    || { echo "could not patch cudarc $cudarc_version's build script for dynamic loading" >&2; exit 1; }
  cp Cargo.lock "$CARGO_TARGET_DIR/Cargo.lock.orig"
  trap 'cp "$CARGO_TARGET_DIR/Cargo.lock.orig" Cargo.lock' EXIT
  patch_config="patch.crates-io.cudarc.path=\"$patched\""
  CUDARC_CUDA_VERSION="$runtime" cargo build --release -p maskdit-cli --features "$cli_features" --config "$patch_config"
  CUDARC_CUDA_VERSION="$runtime" cargo test --release -p maskdit-tests --features cuda --test gpu_parity \
    --config "$patch_config" --no-run
  # candle-kernels links its MoE kernels against the CUDA runtime (libcudart.so.11.0 here), so
  # that one library travels with the binaries (NVIDIA's newer drivers run older runtimes);
  # every other CUDA library must be opened at run time.
  if ldd "$CARGO_TARGET_DIR/release/maskdit" | grep -v libcudart | grep -Eq 'libcuda|cublas|curand|nvrtc|nccl'; then
    echo "the packaged maskdit still links CUDA libraries; dynamic loading did not take" >&2
    exit 1
  fi
  cudart=$(ldd "$CARGO_TARGET_DIR/release/maskdit" | awk '/libcudart/ {print $3}')

  dist=dist/gpu
  rm -rf "$dist" && mkdir -p "$dist/lib"
  [ -n "$cudart" ] && cp -L "$cudart" "$dist/lib/"
  cp "$CARGO_TARGET_DIR/release/maskdit" "$dist/"
  # The test binary's name carries a hash: take the newest.
  bin=$(ls -t "$CARGO_TARGET_DIR"/release/deps/gpu_parity-* | grep -v '\.d$' | head -n 1)
  cp "$bin" "$dist/gpu_parity"
  strip "$dist/maskdit" "$dist/gpu_parity"
  cp -r tests/golden "$dist/golden"
  cp -r tests/golden-uncond "$dist/golden-uncond"
  cp -r tests/golden-eval "$dist/golden-eval"
  # The official PyTorch code, to time it on the same card in the same call.
  reference="${MASKDIT_REFERENCE:-../shared/reference}"
  if [ -d "$reference" ]; then
    cp -r "$reference" "$dist/reference"
  fi
  cp scripts/bench-sampling-pytorch.py scripts/bench-inception-pytorch.py scripts/kernel-families.py "$dist/"
  # The CUDA kernels' sources and their harness, in the layout check.py expects.
  mkdir -p "$dist/kernels" "$dist/scripts"
  cp -r kernels/cuda "$dist/kernels/cuda"
  cp -r scripts/cuda-kernels "$dist/scripts/cuda-kernels"
  cp registry/assets/mnist.safetensors data/mnist/digits.safetensors scripts/run-on-gpu.sh "$dist/"
  # The CUDA binaries are ~65 MB each stripped (embedded PTX) and compress about 4x.
  tar -C dist -cJf dist/gpu.tar.xz gpu
  echo "staged $dist and dist/gpu.tar.xz ($(du -h dist/gpu.tar.xz | cut -f1), CUDA $runtime bindings):"
  echo "carry it to the GPU machine, unpack it (tar -xJf gpu.tar.xz) and run 'bash run-on-gpu.sh' in gpu/"
fi
echo "CUDA build check passed (features: $features, compute capability $CUDA_COMPUTE_CAP)"
