#!/usr/bin/env bash
# Runs the CUDA checks on a GPU machine that has no Rust toolchain, from the folder staged by
# `PACKAGE=1 scripts/check-cuda.sh` (dist/gpu: the maskdit binary, the parity test binaries,
# the golden cases). Carry that folder to the GPU machine and run, inside it:
#
#   bash run-on-gpu.sh            # writes everything it measures to ./results (or $OUT)
#
# The binaries were linked against CUDA 11.8 (Debian's toolkit). A machine with a newer CUDA
# (e.g. 13, also shipped inside PyTorch's nvidia-* wheels) lacks the CUDA 11 sonames, so this
# script first points every missing CUDA library the binaries ask for at the newest version of
# that library it finds on the machine (symlinks in ./cuda-compat, put on LD_LIBRARY_PATH).
# The driver runs the sm_80 PTX of candle's kernels on newer GPUs through its JIT.
set -uo pipefail
cd "$(dirname "$0")"
out="${OUT:-results}"
mkdir -p "$out" cuda-compat
nvidia-smi | tee "$out/nvidia-smi.txt"

# 1. Resolve the CUDA libraries.
search_dirs=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/lib64)
while IFS= read -r dir; do search_dirs+=("$dir"); done < <(python3 - <<'PY' 2>/dev/null
import glob, site, sys
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for d in glob.glob(base + "/nvidia/*/lib"):
        print(d)
PY
)
missing=$(LD_LIBRARY_PATH="$PWD/cuda-compat" ldd maskdit tests/* 2>/dev/null | awk '/not found/ {print $1}' | sort -u)
for soname in $missing; do
  stem="${soname%%.so*}"
  found=""
  for dir in "${search_dirs[@]}"; do
    candidate=$(ls -1 "$dir/$stem".so.* 2>/dev/null | sort -V | tail -n 1)
    [ -n "$candidate" ] && found="$candidate"
  done
  if [ -n "$found" ]; then
    ln -sf "$found" "cuda-compat/$soname"
    echo "using $found for $soname" | tee -a "$out/libraries.txt"
  else
    echo "NOT FOUND: $soname" | tee -a "$out/libraries.txt"
  fi
done
export LD_LIBRARY_PATH="$PWD/cuda-compat:${LD_LIBRARY_PATH:-}"
ldd maskdit | grep -E "cuda|cublas|curand|nvrtc" | tee -a "$out/libraries.txt"

# 2. The parity suite on the GPU (f32 budget there: 1e-4).
export MASKDIT_GOLDEN="$PWD/golden" MASKDIT_DEVICE=cuda
for t in tests/*; do
  echo "== $t" | tee -a "$out/parity.txt"
  "$t" --test-threads 1 --nocapture 2>&1 | tee -a "$out/parity.txt"
done

# 3. Benchmarks: DiT-XL/2 f32 and bf16 (and DiT-B/2 for comparison with the CPU figures).
for dtype in f32 bf16; do
  ./maskdit bench --model DiT-XL/2 --batch 32 --latent-size 32 --device cuda --dtype "$dtype" --iters 10 --json \
    | tee -a "$out/bench.jsonl"
done
./maskdit bench --model DiT-B/2 --batch 4 --latent-size 32 --device cuda --iters 10 --json | tee -a "$out/bench.jsonl"

# 4. A short fine-tune of the embedded MNIST recipe on the GPU, then sampling from it.
./maskdit finetune --preset mnist-finetune --from mnist.safetensors --data digits.safetensors \
  --out "$out/finetune" --steps 50 --device cuda 2>&1 | tail -n 5 | tee "$out/finetune.txt"
./maskdit generate --model "$out/finetune/checkpoints/0000050.safetensors" --class 3 --seeds 0-7 \
  --device cuda --out "$out/samples" 2>&1 | tail -n 2 | tee -a "$out/finetune.txt"
echo "done: see $out/"
