#!/usr/bin/env python3
"""Times pytorch-fid's FID Inception-v3 on the work `maskdit fid-stats` does, so the two can be
compared side by side on one machine. The real weights cannot be fetched everywhere, so both
use the hashed weights of tests/golden-eval/fid_inception (its README gives the formula; speed
does not depend on the values).

  python3 bench-inception-pytorch.py --case tests/golden-eval/fid_inception --weights-out W.safetensors \
      --images-out IMAGES.npz [--count 1000] [--side 256] [--batch 200] [--device cuda]

Writes the weights (for `maskdit fid-stats --inception W.safetensors`) and random images in
ADM's layout (arr_0, N×H×W×3 uint8), then prints one JSON line: pytorch-fid's images per
second over the same images (resize to 299, network, pool features), after one warm-up batch.
Needs torch, numpy, safetensors and pytorch-fid (`pip install pytorch-fid`)."""
import argparse
import json
import time

import numpy as np
import torch
from safetensors.torch import save_file


def hashed(salt, name, offset, scale, shape):
    key = np.uint64(0xCBF29CE484222325)
    with np.errstate(over="ignore"):
        for byte in f"{salt}:{name}".encode():
            key = np.uint64((key ^ np.uint64(byte)) * np.uint64(0x100000001B3))
        count = int(np.prod(shape)) if shape else 1
        z = key + (np.arange(count, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    v = (z % np.uint64(7)).astype(np.int64) - 3
    values = np.float32(offset) + v.astype(np.float32) * np.float32(scale)
    return torch.from_numpy(values.reshape(shape))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--weights-out", required=True)
    ap.add_argument("--images-out", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    config = json.load(open(f"{a.case}/config.json"))
    state = {name: hashed(config["salt"], name, spec["offset"], spec["scale"], spec["shape"])
             for name, spec in config["tensors"].items()}
    save_file(state, a.weights_out)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (a.count, a.side, a.side, 3), dtype=np.uint8)
    np.savez(a.images_out, arr_0=images)

    from pytorch_fid.inception import fid_inception_v3, InceptionV3
    import pytorch_fid.inception as pf
    pf.fid_inception_v3 = lambda: _with_state(fid_inception_v3, state)
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(a.device).eval()

    def run(batch):
        x = torch.from_numpy(batch).to(a.device).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            return model(x)[0]

    run(images[: a.batch])
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, a.count, a.batch):
        run(images[i:i + a.batch])
    if a.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({"what": "inception", "images": a.count, "side": a.side, "batch": a.batch,
                      "seconds": seconds, "images_per_second": a.count / seconds,
                      "torch": torch.__version__}), flush=True)


def _with_state(build, state):
    """pytorch-fid's network, loaded with `state` instead of the downloaded weights."""
    import pytorch_fid.inception as pf
    original = pf.load_state_dict_from_url
    pf.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        return build()
    finally:
        pf.load_state_dict_from_url = original


if __name__ == "__main__":
    main()
