"""Writes tests/fixtures/eval/: reference values for sFID, precision/recall and ADM's input
resize, from the reference implementations and numpy versions of the definitions.

Needs numpy, scipy, torch, torchvision, pytorch-fid 0.3.0 and tensorflow (CPU) in the running
Python. Run from the repository root: `python scripts/make-eval-fixtures.py`. Everything is
seeded; the files are small (about 200 KB together).

- spatial.safetensors: pytorch-fid's FID Inception with the hashed weights of
  tests/golden-eval/fid_inception (as its README makes them) on a few seeded images: `pixels`
  (N, 3, H, W) u8 -> `spatial` (N, 2023): the first 7 channels of Mixed_6d.branch1x1's output,
  channel-last, as ADM's evaluator takes `mixed_6/conv`; `pool` (N, 2048) for locating a
  mismatch.
- sfid_set0.npz, sfid_set1.npz: ADM-layout statistics of two sets (mu, sigma, mu_s, sigma_s;
  the spatial ones from fewer samples than dimensions, with constant dimensions, as real spatial
  features have); sfid_expected.npz: `fid`, `sfid`, ADM's `frechet_distance` (scipy's sqrtm) of
  each pair.
- precision_recall.safetensors: for each case, `NAME.samples`, `NAME.reference` (f32 features)
  and `NAME.expected` = [precision, recall] (f64), by ADM's definition computed in float64.
- adm_resize.safetensors: `pixels` (N, H, W, 3) u8 -> `resized` (N, 299, 299, 3) f32, TF1's
  legacy bilinear resize (`tf.compat.v1.image.resize_bilinear`, align_corners=False,
  half_pixel_centers=False), the op inside the 2015 Inception graph ADM runs.
"""

import json
import os

import numpy as np
import scipy.linalg
from safetensors.numpy import save_file

OUT = os.path.join("tests", "fixtures", "eval")
GOLDEN = os.path.join("tests", "golden-eval", "fid_inception")
MASK64 = (1 << 64) - 1


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & MASK64
    return h


def hashed_tensor(salt, name, offset, scale, shape):
    """The golden-eval README's hash, vectorised (u64 wrapping arithmetic)."""
    count = int(np.prod(shape))
    key = np.uint64(fnv1a64(f"{salt}:{name}"))
    with np.errstate(over="ignore"):
        i = np.arange(1, count + 1, dtype=np.uint64)
        z = key + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    v = (z % np.uint64(7)).astype(np.int64) - 3
    values = np.float32(offset) + v.astype(np.float32) * np.float32(scale)
    return values.astype(np.float32).reshape(shape)


def fid_network():
    import torch
    from pytorch_fid import inception as pf

    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    with open(os.path.join(GOLDEN, "config.json")) as f:
        config = json.load(f)
    state = {
        name: torch.from_numpy(hashed_tensor(config["salt"], name, spec["offset"], spec["scale"], spec["shape"]))
        for name, spec in config["tensors"].items()
    }
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return net.eval()


def network_features(net, pixels):
    """pool and spatial features of u8 (N, 3, H, W) images, as pytorch-fid feeds them."""
    import torch
    import torch.nn.functional as F

    captured = {}
    hook = net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: captured.setdefault("b", o))
    with torch.no_grad():
        x = torch.from_numpy(pixels).float() / 255.0
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for name in ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool"]:
            x = getattr(net, name)(x)
    hook.remove()
    pool = x.flatten(1).numpy()
    spatial = captured["b"][:, :7].permute(0, 2, 3, 1).reshape(len(pixels), -1).numpy()
    return pool, spatial


def make_spatial():
    from safetensors.numpy import load_file

    net = fid_network()
    golden = load_file(os.path.join(GOLDEN, "io.safetensors"))
    pool, _ = network_features(net, golden["pixels"])
    err = np.linalg.norm(pool - golden["pool"]) / np.linalg.norm(golden["pool"])
    assert err < 1e-4, f"the hashed network does not reproduce the golden pool features ({err})"
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(3, 3, 48, 40), dtype=np.uint8)
    pool, spatial = network_features(net, pixels)
    assert spatial.shape == (3, 2023)
    save_file({"pixels": pixels, "pool": pool.astype(np.float32), "spatial": spatial.astype(np.float32)},
              os.path.join(OUT, "spatial.safetensors"))


def adm_frechet(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """ADM evaluator's frechet_distance (scipy's sqrtm, the same fallback)."""
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = np.real(covmean)
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def make_sfid():
    rng = np.random.default_rng(11)
    arrays = {}
    stats = []
    for side in range(2):
        pool = rng.normal(side * 0.2, 1.0 + 0.1 * side, size=(120, 40))
        spatial = np.maximum(rng.normal(0.1 * side, 1.0, size=(30, 60)), 0.0)
        spatial[:, :12] = 0.0  # positions a ReLU never opens: constant, as in real spatial features
        stats.append((pool.mean(0), np.cov(pool, rowvar=False), spatial.mean(0), np.cov(spatial, rowvar=False)))
    for side, (mu, sigma, mu_s, sigma_s) in enumerate(stats):
        arrays.update({f"mu{side}": mu, f"sigma{side}": sigma, f"mu_s{side}": mu_s, f"sigma_s{side}": sigma_s})
    (a, b) = stats
    arrays["fid"] = np.array([adm_frechet(a[0], a[1], b[0], b[1])])
    arrays["sfid"] = np.array([adm_frechet(a[2], a[3], b[2], b[3])])
    # One ADM-layout file per set, plus the expected values.
    for side, (mu, sigma, mu_s, sigma_s) in enumerate(stats):
        np.savez(os.path.join(OUT, f"sfid_set{side}.npz"), mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s)
    np.savez(os.path.join(OUT, "sfid_expected.npz"), fid=arrays["fid"], sfid=arrays["sfid"])


def squared_distances(u, v):
    u = u.astype(np.float64)
    v = v.astype(np.float64)
    return np.maximum((u * u).sum(1)[:, None] - 2 * u @ v.T + (v * v).sum(1)[None, :], 0.0)


def radii(features, k=3):
    d = squared_distances(features, features)
    np.fill_diagonal(d, np.inf)  # the feature itself is no neighbour
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def precision_recall(samples, reference):
    r_samples, r_reference = radii(samples), radii(reference)
    d = squared_distances(reference, samples)  # (reference, samples)
    precision = (d <= r_reference[:, None]).any(axis=0).mean()
    recall = (d <= r_samples[None, :]).any(axis=1).mean()
    return np.array([precision, recall], dtype=np.float64)


def make_precision_recall():
    rng = np.random.default_rng(5)
    cases = {}
    # Random sets that overlap in part, more samples than one block of the Rust code's columns
    # would need to be exercised only with large sets; shapes differ on purpose.
    cases["random"] = (rng.normal(0.0, 1.0, (300, 24)), rng.normal(0.4, 1.2, (250, 24)))
    # Identical sets: every point lies in its own ball.
    same = rng.normal(0.0, 1.0, (40, 8))
    cases["identical"] = (same, same.copy())
    # Disjoint clusters: nothing of either set lies in the other's manifold.
    cases["disjoint"] = (rng.normal(0.0, 0.1, (50, 8)), rng.normal(10.0, 0.1, (60, 8)))
    # A mode the samples miss: the reference has two clusters, the samples only the first.
    reference = np.concatenate([rng.normal(0.0, 0.5, (50, 6)), rng.normal(8.0, 0.5, (50, 6))])
    cases["dropped_mode"] = (rng.normal(0.0, 0.5, (80, 6)), reference)
    out = {}
    for name, (samples, reference) in cases.items():
        samples = samples.astype(np.float32)
        reference = reference.astype(np.float32)
        out[f"{name}.samples"] = samples
        out[f"{name}.reference"] = reference
        out[f"{name}.expected"] = precision_recall(samples, reference)
    expected = {k[: -len(".expected")]: v.tolist() for k, v in out.items() if k.endswith(".expected")}
    assert expected["identical"] == [1.0, 1.0] and expected["disjoint"] == [0.0, 0.0], expected
    # The missed mode is half the reference: recall cannot exceed one half.
    assert expected["dropped_mode"][1] <= 0.5 < expected["dropped_mode"][0], expected
    save_file(out, os.path.join(OUT, "precision_recall.safetensors"))


def make_adm_resize():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    out = {}
    for name, (h, w) in {"square": (256, 256), "odd": (45, 61)}.items():
        pixels = rng.integers(0, 256, size=(1, h, w, 3), dtype=np.uint8)
        resized = tf.compat.v1.image.resize_bilinear(
            pixels.astype(np.float32), [299, 299], align_corners=False, half_pixel_centers=False
        ).numpy()
        out[f"{name}.pixels"] = pixels
        out[f"{name}.resized"] = resized.astype(np.float32)
    save_file(out, os.path.join(OUT, "adm_resize.safetensors"))


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    make_spatial()
    make_sfid()
    make_precision_recall()
    make_adm_resize()
    print("wrote", sorted(os.listdir(OUT)))
