#!/usr/bin/env bash
# Runs the CUDA checks on a GPU machine that has no Rust toolchain, from the folder staged by
# `PACKAGE=1 scripts/check-cuda.sh` (dist/gpu: the maskdit binary, the parity suites in one test
# binary, the golden cases). Carry that folder to the GPU machine and run, inside it:
#
#   bash run-on-gpu.sh            # writes everything it measures to ./results (or $OUT)
#
# The binaries link no CUDA library but the CUDA runtime packaged in lib/: they open the driver
# (libcuda.so.1), cuBLAS, cuBLASLt and cuRAND at run time (cudarc's dynamic loading, bindings for the CUDA major version they were
# packaged for, 13 by default), so this script only puts the folders that hold those libraries
# on LD_LIBRARY_PATH: the system's CUDA, or the copies inside PyTorch's nvidia-* wheels. A
# smoke test (one MNIST image on the GPU) runs first and stops everything if CUDA cannot start.
# The driver runs the sm_80 PTX of candle's kernels on newer GPUs through its JIT.
set -uo pipefail
cd "$(dirname "$0")"
out="${OUT:-results}"
mkdir -p "$out"
nvidia-smi | tee "$out/nvidia-smi.txt"

# 1. Find the CUDA libraries and check that CUDA starts.
search_dirs=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/lib64)
while IFS= read -r dir; do search_dirs+=("$dir"); done < <(python3 - <<'PY' 2>/dev/null
import glob, site
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for d in sorted(glob.glob(base + "/nvidia/*/lib")):
        print(d)
PY
)
library_path=""
for lib in libcuda.so libcublas.so libcublasLt.so libcudart.so libcurand.so; do
  for dir in "${search_dirs[@]}"; do
    found=$(ls -1 "$dir/$lib".* 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$found" ]; then
      echo "$lib: $found" | tee -a "$out/libraries.txt"
      case ":$library_path:" in *":$dir:"*) ;; *) library_path="$library_path:$dir" ;; esac
      break
    fi
  done
done
# lib/ holds the CUDA runtime the binaries link (for candle's MoE kernels), packaged with them.
export LD_LIBRARY_PATH="${library_path#:}:${LD_LIBRARY_PATH:-}:$PWD/lib"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$out/libraries.txt"
if ! ./maskdit generate --class 3 --seeds 0 --device cuda --out "$out/smoke" 2>&1 | tee "$out/smoke.txt"; then
  echo "CUDA did not start: see $out/smoke.txt and $out/libraries.txt" >&2
  exit 1
fi

# 2. The parity suite on the GPU (f32 budget there: 1e-4).
export MASKDIT_GOLDEN="$PWD/golden" MASKDIT_DEVICE=cuda
./gpu_parity --test-threads 1 2>&1 | tee "$out/parity.txt"

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
