#!/usr/bin/env bash
# Runs the CUDA checks on a GPU machine that has no Rust toolchain, from the folder staged by
# `PACKAGE=1 scripts/check-cuda.sh` (dist/gpu: the maskdit binary, the parity suites in one test
# binary, the golden cases, the official PyTorch code for side-by-side timings). Carry that
# folder to the GPU machine and run, inside it:
#
#   bash run-on-gpu.sh            # writes everything it measures to ./results (or $OUT)
#   DEADLINE=540 bash run-on-gpu.sh  # inside a 600-s device call: the kernels, the bf16
#                                    # benchmarks and both per-kernel tables fit
#
# The steps run in priority order, each under a time limit, and a step that would not finish
# before DEADLINE seconds (default 450) is skipped, so a short lease still returns the most
# important figures: smoke test, the toolkit's CUDA kernels (a CuPy harness, then the parity
# suites with MASKDIT_CUDA_KERNELS=1), DiT-XL/2 benchmarks against PyTorch on the same card (bf16
# with candle's kernels and with ours), per-kernel tables of both (ncu, kernel-families.py), a
# bf16 fine-tune at batch 64 with the kernels, the parity suites with candle's kernels, TF32,
# whole sampling runs, a bf16 training run on random latents, the same as NCCL ranks, twice
# the batch in bf16, plain f32. Every
# command's wall time, exit status and peak device memory (nvidia-smi, polled every 100 ms: the
# process's whole footprint, framework caches included) go to summary.tsv.
#
# The binaries link no CUDA library but the CUDA runtime packaged in lib/: they open the driver
# (libcuda.so.1), cuBLAS, cuBLASLt and cuRAND at run time (cudarc's dynamic loading, bindings for
# the CUDA major version they were packaged for, 13 by default), so this script only puts the
# folders that hold those libraries on LD_LIBRARY_PATH: the system's CUDA, or the copies inside
# PyTorch's nvidia-* wheels (and NCCL, linked as libnccl.so). The driver runs the sm_80 PTX of candle's kernels on newer GPUs
# through its JIT. Variables: MASKDIT_GOLDEN (default golden:golden-uncond here),
# MASKDIT_GOLDEN_EVAL (default golden-eval here), PYTHON
# (default python3, with torch, timm and cupy), BATCH (default 32), DEADLINE (default 480), SKIP (step names to
# leave out, separated by spaces), FINETUNE_BATCH (default 64).
set -uo pipefail
cd "$(dirname "$0")"
here=$PWD
out="${OUT:-results}"
mkdir -p "$out"
started=$(date +%s)
deadline=$((started + ${DEADLINE:-480}))
python="${PYTHON:-python3}"
batch="${BATCH:-32}"
summary="$out/summary.tsv"
printf 'step\tseconds\texit\tpeak_device_mib\n' >"$summary"

# Runs "$@" as step NAME if LIMIT seconds remain before the deadline: stdout and stderr to
# $out/log.txt (and the terminal), wall time, exit status and peak device memory to summary.tsv.
step() {
  local name=$1 limit=$2
  shift 2
  local now
  now=$(date +%s)
  if [[ " ${SKIP:-} " == *" $name "* ]] || ((now + limit > deadline)); then
    printf '%s\tskipped\t-\t-\n' "$name" | tee -a "$summary"
    return 0
  fi
  echo "== $name: $*" | tee -a "$out/log.txt"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"/tmp/memory-$name.txt" 2>/dev/null &
  local poller=$!
  local begin status
  begin=$(date +%s%N)
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee -a "$out/log.txt"
  status=${PIPESTATUS[0]}
  local seconds
  seconds=$(awk -v b="$begin" -v e="$(date +%s%N)" 'BEGIN { print (e - b) / 1e9 }')
  kill "$poller" 2>/dev/null
  wait "$poller" 2>/dev/null
  local peak
  peak=$(sort -n "/tmp/memory-$name.txt" | tail -n 1)
  printf '%s\t%.1f\t%s\t%s\n' "$name" "$seconds" "$status" "${peak:--}" | tee -a "$summary"
  return "$status"
}

nvidia-smi >"$out/log.txt" 2>&1

# 1. Find the CUDA libraries and check that CUDA starts.
search_dirs=(/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu /usr/lib64)
while IFS= read -r dir; do search_dirs+=("$dir"); done < <("$python" - <<'PY' 2>/dev/null
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
      echo "$lib: $found" | tee -a "$out/log.txt"
      case ":$library_path:" in *":$dir:"*) ;; *) library_path="$library_path:$dir" ;; esac
      break
    fi
  done
done
# NCCL: cudarc opens `libnccl.so`, PyTorch's nvidia-nccl wheel ships only `libnccl.so.2`.
nccl_links=/tmp/maskdit-nccl
for dir in "${search_dirs[@]}"; do
  found=$(ls -1 "$dir"/libnccl.so.2* 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$found" ]; then
    mkdir -p "$nccl_links" && ln -sf "$found" "$nccl_links/libnccl.so"
    echo "libnccl.so: $found" | tee -a "$out/log.txt"
    library_path="$library_path:$nccl_links"
    break
  fi
done
# lib/ holds the CUDA runtime the binaries link (for candle's MoE kernels), packaged with them.
export LD_LIBRARY_PATH="${library_path#:}:${LD_LIBRARY_PATH:-}:$here/lib"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" | tee -a "$out/log.txt"
if ! step smoke 120 ./maskdit generate --class 3 --seeds 0-3 --device cuda --out /tmp/maskdit-smoke; then
  echo "CUDA did not start: see $out/log.txt" >&2
  exit 1
fi

# 2. The toolkit's CUDA kernels (kernels/cuda, carried as sources): first compiled by CuPy
# for this card and compared with numpy and PyTorch (no Rust build), then inside the binaries
# with MASKDIT_CUDA_KERNELS=1 against candle's compositions (every parity suite follows in 3c).
step kernels-harness 90 "$python" scripts/cuda-kernels/check.py --gpu
default_golden="$here/golden"
[ -d "$here/golden-uncond" ] && default_golden="$default_golden:$here/golden-uncond"
export MASKDIT_GOLDEN="${MASKDIT_GOLDEN:-$default_golden}"
export MASKDIT_GOLDEN_EVAL="${MASKDIT_GOLDEN_EVAL:-$here/golden-eval}"
export MASKDIT_DEVICE=cuda
MASKDIT_CUDA_KERNELS=1 step kernel-tests 90 ./gpu_parity --test-threads 4 cuda_kernels \
  | grep -E '^test |test result|panicked|FAILED|error' >"$out/kernel-tests.txt"

# 3. DiT-XL/2 at batch $batch against the official PyTorch code, same card, same work: ours
# with the kernels switched on, PyTorch, then (after the per-kernel tables) ours with candle's.
bench_ours() {
  local name=$1
  shift
  step "$name" 90 ./maskdit bench --model DiT-XL/2 --batch "$batch" --latent-size 32 --device cuda --iters 3 --json \
    --only forward --only forward_cfg --only train_step "$@" | grep '^{' >>"$out/bench.jsonl"
}
bench_torch() {
  local name=$1
  shift
  step "$name" 120 "$python" reference/bench_pytorch.py --device cuda --model DiT-XL/2 --batch "$batch" --iters 3 "$@" \
    | grep '^{' >>"$out/bench.jsonl"
}
MASKDIT_CUDA_KERNELS=1 bench_ours ours-bf16-kernels --dtype bf16
bench_torch torch-bf16 --amp bf16 --tf32

# 3a. Per-kernel device times of the same work (one warm-up and one timed call of each
# measurement, both sides), grouped into families by kernel-families.py: ours with the kernels
# switched on and PyTorch's, then ours with candle's kernels (after their timings).
command -v ncu >/dev/null || PATH="$PATH:/usr/local/cuda/bin"
profile() {
  local name=$1
  shift
  step "$name" 120 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel --csv \
    --log-file "$out/$name.csv" "$@" >/dev/null
}
bench_work=(--model DiT-XL/2 --batch "$batch" --latent-size 32 --device cuda --dtype bf16 --iters 1
  --only forward --only forward_cfg --only train_step)
profile kernels-ours env MASKDIT_CUDA_KERNELS=1 ./maskdit bench "${bench_work[@]}"
profile kernels-torch "$python" reference/bench_pytorch.py --device cuda --model DiT-XL/2 --batch "$batch" --iters 1 \
  --amp bf16 --tf32
"$python" kernel-families.py "$out/kernels-ours.csv" "$out/kernels-torch.csv" >"$out/families.tsv" 2>&1
bench_ours ours-bf16 --dtype bf16
profile kernels-ours-candle ./maskdit bench "${bench_work[@]}"
"$python" kernel-families.py "$out/kernels-ours-candle.csv" "$out/kernels-torch.csv" >"$out/families-candle.tsv" 2>&1

# 3b. The fine-tune recipe at the official 64 per GPU in bf16 with the kernels (30 steps).
"$python" - <<'PY'
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
save_file({"moments": rng.standard_normal((256, 8, 32, 32), dtype=np.float32),
           "labels": rng.integers(0, 1000, 256).astype(np.int64)}, "/tmp/random-latents.safetensors")
PY
MASKDIT_CUDA_KERNELS=1 step finetune-kernels 150 ./maskdit train --preset imagenet256-finetune \
  --data /tmp/random-latents.safetensors --out /tmp/finetune-kernels --steps 30 --batch "${FINETUNE_BATCH:-64}" \
  --checkpoint-every 1000 --precision bf16 --device cuda
cp /tmp/finetune-kernels/log.jsonl "$out/finetune-kernels.jsonl" 2>/dev/null

# 3c. The parity suites with the kernels, then with candle's (f32 budget on the GPU: 1e-4).
MASKDIT_CUDA_KERNELS=1 step parity-kernels 150 ./gpu_parity --test-threads 4 --skip cuda_kernels \
  | grep -E '^test |test result|panicked|FAILED|error' >"$out/parity-kernels.txt"
step parity 120 ./gpu_parity --test-threads 4 --skip cuda_kernels \
  | grep -E '^test |test result|panicked|FAILED' >"$out/parity.txt"
bench_ours ours-tf32 --tf32
bench_torch torch-tf32 --tf32

# 4. Whole sampling runs: 40 Heun levels, guidance 1.5 (PyTorch without the VAE decode).
step sample-ours 120 ./maskdit bench --model DiT-XL/2 --batch "$batch" --device cuda --dtype bf16 --only sample --iters 1 --json \
  | grep '^{' >>"$out/bench.jsonl"
step sample-torch 120 "$python" bench-sampling-pytorch.py --reference reference --batch "$batch" --amp bf16 --tf32 \
  | grep '^{' >>"$out/bench.jsonl"

# 5. bf16 training of DiT-XL/2 (the fine-tune recipe, batch 64 as per GPU in the official
# recipe) on random latents, with candle's kernels.
step finetune 150 ./maskdit train --preset imagenet256-finetune --data /tmp/random-latents.safetensors \
  --out /tmp/finetune --steps 100 --batch "${FINETUNE_BATCH:-64}" --checkpoint-every 1000 --precision bf16 --device cuda
cp /tmp/finetune/log.jsonl "$out/finetune.jsonl" 2>/dev/null

# 5a. The same fine-tune as one NCCL rank (set-up, bucketed all-reduce of every gradient,
# broadcast of the weights), and over every GPU where there are several: steps/s in the logs.
WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29611 \
  step finetune-nccl-1 150 ./maskdit train --preset imagenet256-finetune --data /tmp/random-latents.safetensors \
  --out /tmp/finetune-nccl-1 --steps 30 --batch 32 --checkpoint-every 1000 --precision bf16 --device cuda
cp /tmp/finetune-nccl-1/log.jsonl "$out/finetune-nccl-1.jsonl" 2>/dev/null
gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l)
if ((gpus >= 2)); then
  step "finetune-nccl-$gpus" 150 ./maskdit train --preset imagenet256-finetune --data /tmp/random-latents.safetensors \
    --out "/tmp/finetune-nccl-$gpus" --steps 30 --batch $((32 * gpus)) --checkpoint-every 1000 --precision bf16 \
    --device cuda --nproc "$gpus"
  cp "/tmp/finetune-nccl-$gpus/log.jsonl" "$out/finetune-nccl-$gpus.jsonl" 2>/dev/null
fi

# 5b. FID Inception throughput: ours (bench, and fid-stats over an ADM .npz end to end) against
# pytorch-fid (carried as a wheel where missing), hashed weights, random 256-px images.
if [ -d "$MASKDIT_GOLDEN_EVAL/fid_inception" ]; then
  step inception-torch 120 "$python" bench-inception-pytorch.py --case "$MASKDIT_GOLDEN_EVAL/fid_inception" \
    --weights-out /tmp/inception.safetensors --images-out /tmp/inception-images.npz --count 2000 --batch 200 \
    | grep '^{' >>"$out/bench.jsonl"
  step inception-ours 120 ./maskdit bench --only inception --inception /tmp/inception.safetensors --device cuda \
    --batch 200 --iters 5 --json | grep '^{' >>"$out/bench.jsonl"
  step fid-stats 120 ./maskdit fid-stats /tmp/inception-images.npz --out /tmp/inception-stats.npz \
    --inception /tmp/inception.safetensors --device cuda --batch 200
fi

# 6. Twice the batch, bf16 (then back).
batch=$((2 * batch))
bench_ours ours-bf16-2x --dtype bf16
bench_torch torch-bf16-2x --amp bf16 --tf32

# 7. Plain f32 (no TF32), batch $BATCH.
batch=$((batch / 2))
bench_ours ours-f32
bench_torch torch-f32
echo "done in $(($(date +%s) - started)) s: see $out/"
