#!/usr/bin/env python3
"""pytorch-fid's FID between two image folders, with the hashed weights of a golden
`fid_inception` case instead of the downloaded ones (the real file cannot be fetched
everywhere), so `maskdit fid` can be checked end to end against it on the same images:

  python3 scripts/fid-pytorch.py --case tests/golden-eval/fid_inception A/ B/ [--batch 50]
  maskdit fid A/ B/ --inception W.safetensors   # W from bench-inception-pytorch.py --weights-out

Prints one JSON line with pytorch-fid's FID. Needs torch, numpy, scipy, pillow, torchvision
and pytorch-fid (`pip install pytorch-fid`)."""
import argparse
import importlib.util
import json
import os

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("first")
    ap.add_argument("second")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("bench_inception", os.path.join(here, "bench-inception-pytorch.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = json.load(open(os.path.join(a.case, "config.json")))
    state = {name: bench.hashed(config["salt"], name, s["offset"], s["scale"], s["shape"])
             for name, s in config["tensors"].items()}
    import pytorch_fid.inception as inception
    import pytorch_fid.fid_score as fid_score
    inception.load_state_dict_from_url = lambda *args, **kwargs: state
    torch.set_num_threads(os.cpu_count())
    fid = fid_score.calculate_fid_given_paths([a.first, a.second], a.batch, "cpu", 2048, num_workers=0)
    print(json.dumps({"fid": float(fid), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
