#!/usr/bin/env python3
"""Groups per-kernel GPU times into families, ours beside PyTorch's, from Nsight Compute CSV.

    ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel --csv \\
        --log-file ours.csv ./maskdit bench ... --iters 1
    ncu ... --log-file torch.csv python3 reference/bench_pytorch.py ... --iters 1
    python3 scripts/kernel-families.py ours.csv torch.csv > families.tsv

Both commands must run the same work (the same measurements, warm-up and iterations): the
figures are summed kernel times over the whole profiled process, in milliseconds. Families:
GEMM, attention (softmax included), norm/modulation, optimizer, reductions, memset, and
elementwise/cast/copy (everything else). After the family table come the largest kernels of
each side. Reads `--print-summary per-kernel` output (Average × Invocations) or plain
per-launch output (one row per launch).
"""

import csv
import re
import sys
from collections import defaultdict

FAMILIES = [
    ("optimizer", r"adam|multi_tensor|running_average|foreach|optimizer|\bema\b"),
    ("attention", r"flash|fmha|attention|sdpa|softmax|attn"),
    ("gemm", r"gemm|cutlass|xmma|cublas|nvjet|gemv|splitk|sm\d\d_|ampere_|hopper_|matmul|dot_kernel"),
    ("norm/modulation", r"layer_?norm|layernorm|rms_?norm|modulate|gated_residual|\bnorm"),
    ("memset", r"memset|fill|zero"),
    ("reductions", r"reduce|sum_middle|dot_middle|fast_sum|\bsum|\bmean|\bmax|argmax|\bmin"),
]

UNITS = {"nsecond": 1e-6, "ns": 1e-6, "usecond": 1e-3, "us": 1e-3, "msecond": 1.0, "ms": 1.0, "second": 1e3, "s": 1e3}


def family(name):
    lowered = name.lower()
    for label, pattern in FAMILIES:
        if re.search(pattern, lowered):
            return label
    return "elementwise/cast/copy"


def read(path):
    """{kernel name: (milliseconds, launches)} from an ncu CSV log."""
    with open(path, newline="", errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"') and "Name" in line), None)
    if start is None:
        sys.exit(f"{path}: no ncu CSV header (a line starting with a quoted column list)")
    rows = list(csv.DictReader(lines[start:]))
    if not rows:
        sys.exit(f"{path}: no kernel rows")

    def column(*names):
        for name in names:
            for key in rows[0]:
                if key and key.strip().lower() == name.lower():
                    return key
        return None

    name_key = column("Kernel Name", "Function Name", "Name")
    metric_key = column("Metric Name")
    unit_key = column("Metric Unit")
    summary_value = column("Average")
    value_key = summary_value or column("Metric Value")
    calls_key = column("Invocations", "# of Calls")
    if name_key is None or value_key is None:
        sys.exit(f"{path}: expected a kernel name and a metric value column, found {list(rows[0])}")
    kernels = defaultdict(lambda: [0.0, 0])
    for row in rows:
        if metric_key and row.get(metric_key) and "gpu__time_duration" not in row[metric_key]:
            continue
        try:
            value = float(row[value_key].replace(",", ""))
        except (TypeError, ValueError):
            continue
        scale = UNITS.get((row.get(unit_key) or "nsecond").strip(), 1e-6)
        calls = int(float(row[calls_key].replace(",", ""))) if calls_key and row.get(calls_key) else 1
        entry = kernels[row[name_key]]
        entry[0] += value * scale * (calls if summary_value else 1)
        entry[1] += calls
    return kernels


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    ours, torch = read(sys.argv[1]), read(sys.argv[2])
    totals = {}
    for side, kernels in (("ours", ours), ("torch", torch)):
        for name, (ms, calls) in kernels.items():
            entry = totals.setdefault(family(name), {"ours": [0.0, 0], "torch": [0.0, 0]})[side]
            entry[0] += ms
            entry[1] += calls
    print("family\tours_ms\tours_launches\ttorch_ms\ttorch_launches\tratio")
    order = sorted(totals, key=lambda f: -totals[f]["ours"][0])
    for label in order + ["total"]:
        if label == "total":
            o = [sum(totals[f]["ours"][0] for f in totals), sum(totals[f]["ours"][1] for f in totals)]
            t = [sum(totals[f]["torch"][0] for f in totals), sum(totals[f]["torch"][1] for f in totals)]
        else:
            o, t = totals[label]["ours"], totals[label]["torch"]
        ratio = f"{o[0] / t[0]:.2f}" if t[0] > 0 else "-"
        print(f"{label}\t{o[0]:.2f}\t{o[1]}\t{t[0]:.2f}\t{t[1]}\t{ratio}")
    for side, kernels in (("ours", ours), ("torch", torch)):
        print(f"\nlargest kernels, {side}\tms\tlaunches\tfamily")
        for name, (ms, calls) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:25]:
            print(f"{name[:110]}\t{ms:.2f}\t{calls}\t{family(name)}")


if __name__ == "__main__":
    main()
