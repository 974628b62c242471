#!/usr/bin/env bash
# Peak resident memory (/usr/bin/time -v) of DiT-XL/2 training at batch 2, side by side:
#   train (masked pretraining recipe, 2 steps, writes a training checkpoint)
#   finetune --from that checkpoint (2 steps), and train of the same recipe from a fresh init
#   finetune --resume (1 more step)
#   maskdit bench, and the official PyTorch code on the same work (if PYTHON has torch and timm)
# Usage: scripts/measure-memory.sh [WORK_DIR]   (needs ~40 GB of disk there; about 15 minutes)
# Environment: MASKDIT (default target/release/maskdit), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/maskdit-memory}
maskdit=${MASKDIT:-target/release/maskdit}
python=${PYTHON:-python3}
mkdir -p "$work"

# Two random latent distributions (moments, 8x32x32) with labels: enough for batch-2 steps.
"$python" - "$work/latents.safetensors" <<'EOF'
import json, random, struct, sys
random.seed(0)
n, c, s = 4, 8, 32
moments = struct.pack(f"<{n * c * s * s}f", *(random.gauss(0, 1) for _ in range(n * c * s * s)))
labels = struct.pack(f"<{n}q", *range(n))
header = {"moments": {"dtype": "F32", "shape": [n, c, s, s], "data_offsets": [0, len(moments)]},
          "labels": {"dtype": "I64", "shape": [n], "data_offsets": [len(moments), len(moments) + len(labels)]}}
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + moments + labels)
EOF

peak() { # label, command...
  local label=$1; shift
  /usr/bin/time -v "$@" > "$work/$label.out" 2> "$work/$label.err" || { tail -5 "$work/$label.err"; exit 1; }
  local kb
  kb=$(grep "Maximum resident set size" "$work/$label.err" | awk '{print $NF}')
  printf "%-34s %8.2f GB\n" "$label" "$(echo "$kb / 1048576" | bc -l)"
}

common=(--data "$work/latents.safetensors" --batch 2 --checkpoint-every 1000)
rm -rf "$work"/run-*
peak "train pretrain (mask 0.5)" "$maskdit" train --preset imagenet256-pretrain "${common[@]}" --steps 2 --out "$work/run-pretrain"
ckpt="$work/run-pretrain/checkpoints/0000002.safetensors"
peak "train finetune recipe, fresh" "$maskdit" train --preset imagenet256-finetune "${common[@]}" --steps 2 --out "$work/run-fresh"
rm -rf "$work/run-fresh"
peak "finetune --from (mask 0)" "$maskdit" finetune --preset imagenet256-finetune --from "$ckpt" "${common[@]}" --steps 2 --out "$work/run-finetune"
rm -rf "$work/run-pretrain"
peak "finetune --resume (mask 0)" "$maskdit" finetune --preset imagenet256-finetune --from "$ckpt" "${common[@]}" --steps 3 --resume --out "$work/run-finetune"
rm -rf "$work/run-finetune"
peak "maskdit bench" "$maskdit" bench --model DiT-XL/2 --batch 2 --iters 1 --only forward --only forward_cfg --only train_step
if "$python" -c "import torch, timm" 2>/dev/null; then
  peak "PyTorch bench (official code)" "$python" ../shared/reference/bench_pytorch.py --model DiT-XL/2 --batch 2 --iters 1
else
  echo "PyTorch bench: skipped ($python lacks torch or timm)"
fi
