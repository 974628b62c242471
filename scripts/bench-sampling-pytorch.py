#!/usr/bin/env python3
"""Times a whole guided sampling run of the official PyTorch MaskDiT network, the work of
`maskdit bench --only sample` without the VAE decode (the GPU machines have no diffusers):
EDM's deterministic Heun sampler over 40 noise levels (sigma 0.002..80, rho 7, 79 network
evaluations), guidance 1.5 through the official `forward_with_cfg`, random weights.

  python3 bench-sampling-pytorch.py --reference DIR [--device cuda] [--model DiT-XL/2]
      [--batch 32] [--res 32] [--iters 1] [--amp none|bf16] [--tf32]

DIR holds maskdit-official/ (as ../shared/reference). Prints one JSON line: the median seconds
of --iters runs after a two-level warm-up run, images per second, and the peak device memory."""
import argparse
import json
import os
import time
import types

import torch


def load_official(reference):
    path = os.path.join(reference, "maskdit-official", "models", "maskdit.py")
    module = types.ModuleType("maskdit_official")
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), module.__dict__)
    return module


def edm_levels(levels, sigma_min=0.002, sigma_max=80.0, rho=7.0):
    steps = torch.arange(levels, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + steps / (levels - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def heun(net, noise, labels, levels, cfg_scale):
    sigmas = edm_levels(levels).to(noise.device)
    x = noise.to(torch.float64) * sigmas[0]

    def denoise(x, sigma):
        return net(x.to(torch.float32), sigma.to(torch.float32), labels, cfg_scale=cfg_scale)["x"].to(torch.float64)

    for i in range(levels):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        slope = (x - denoise(x, sigma)) / sigma
        x_next = x + (sigma_next - sigma) * slope
        if i < levels - 1:
            slope_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
            x_next = x + (sigma_next - sigma) * (0.5 * slope + 0.5 * slope_next)
        x = x_next
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="DiT-XL/2")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--levels", type=int, default=40)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--amp", default="none", choices=["none", "bf16"])
    ap.add_argument("--tf32", action="store_true")
    a = ap.parse_args()
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.manual_seed(0)
    official = load_official(a.reference)
    net = official.EDMPrecond(img_resolution=a.res, img_channels=4, num_classes=1000, model_type=a.model,
                              use_decoder=True, mae_loss_coef=0.1).to(device).eval()
    noise = torch.randn(a.batch, 4, a.res, a.res, device=device)
    labels = torch.eye(1000, device=device)[torch.arange(a.batch, device=device) * 37 % 1000]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=a.amp == "bf16")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    with torch.no_grad(), autocast:
        heun(net, noise, labels, 2, 1.5)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        runs = []
        for _ in range(a.iters):
            start = time.perf_counter()
            heun(net, noise, labels, a.levels, 1.5)
            sync()
            runs.append(time.perf_counter() - start)
    median = sorted(runs)[len(runs) // 2]
    row = {"what": "sample", "model": a.model, "batch": a.batch, "levels": a.levels, "device": a.device,
           "amp": a.amp, "tf32": a.tf32, "s": median, "runs": runs, "images_per_second": a.batch / median,
           "torch": torch.__version__}
    if cuda:
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
