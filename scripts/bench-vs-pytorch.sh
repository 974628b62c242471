#!/usr/bin/env bash
# Times `maskdit bench` and the official PyTorch code (../shared/reference/bench_pytorch.py, or
# $MASKDIT_REFERENCE) on the same work, side by side in one run on this machine, and prints
# each figure's ratio ours / PyTorch (below 1: we are faster). f32 on the CPU by default.
#
#   scripts/bench-vs-pytorch.sh                  # DiT-B/2 batch 4 and DiT-XL/2 batch 2
#   SIZES="DiT-S/2:8" ITERS=5 scripts/bench-vs-pytorch.sh
#
# The first run makes a virtual environment ($VENV, default target/bench-venv) with PyTorch's
# CPU wheel (from download.pytorch.org: PyPI's default wheel pulls several GB of CUDA), timm and
# numpy. Both sides use $THREADS threads (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-target/bench-venv}"
reference="${MASKDIT_REFERENCE:-../shared/reference}"
threads="${THREADS:-$(nproc)}"
iters="${ITERS:-3}"
sizes="${SIZES:-DiT-B/2:4 DiT-XL/2:2}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --index-url https://download.pytorch.org/whl/cpu torch
  "$venv/bin/pip" install -q timm numpy
fi
cargo build -q --release -p maskdit-cli
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for size in $sizes; do
  model=${size%:*}
  batch=${size#*:}
  echo "timing $model batch $batch ($threads threads, median of $iters)" >&2
  RAYON_NUM_THREADS="$threads" target/release/maskdit bench --model "$model" --batch "$batch" --latent-size 32 \
    --iters "$iters" --json --only forward --only forward_cfg --only train_step \
    | grep '^{' | sed "s|^{|{\"side\":\"ours\",\"model\":\"$model\",\"batch\":$batch,|" >>"$results"
  "$venv/bin/python" "$reference/bench_pytorch.py" --device cpu --model "$model" --batch "$batch" \
    --iters "$iters" --threads "$threads" | grep '^{' | sed 's|^{|{"side":"torch",|' >>"$results"
done
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
def key(r):
    return (r["model"], r["batch"], r["what"], r.get("mask_ratio"))
ours = {key(r): r["seconds"] for r in rows if r["side"] == "ours"}
torch = {key(r): r["s"] for r in rows if r["side"] == "torch"}
print(f"{'model':<10} {'batch':>5} {'figure':<24} {'ours s':>9} {'PyTorch s':>10} {'ratio':>7}")
worst = 0.0
for k in sorted(ours, key=lambda k: (k[0], k[1], k[2], -(k[3] or 0))):
    if k not in torch:
        continue
    model, batch, what, mask = k
    name = what if mask is None else f"{what} mask {mask:g}"
    ratio = ours[k] / torch[k]
    worst = max(worst, ratio)
    print(f"{model:<10} {batch:>5} {name:<24} {ours[k]:>9.3f} {torch[k]:>10.3f} {ratio:>7.2f}")
print(f"worst ratio {worst:.2f} (goal: every ratio <= 0.8)")
PY
