#!/usr/bin/env python3
"""Runs every CUDA kernel of kernels/cuda/ on seeded random inputs and compares its output with
the operation it implements, without a Rust build.

    python3 scripts/cuda-kernels/check.py            # on the CPU: g++ with emulate.h
    python3 scripts/cuda-kernels/check.py --gpu      # on a GPU: CuPy compiles with nvcc
    python3 scripts/cuda-kernels/check.py --only layer_norm --only adamw

On the CPU each CUDA thread is an OS thread and blocks run one at a time (emulate.h), so the
inputs are small; this checks the arithmetic, the indexing and the synchronisation of the
kernels as written. With --gpu the same cases run on the device through CuPy (compiled for the
card's own architecture), and where PyTorch is installed its operations are a second reference
(F.layer_norm, F.gelu with autograd, torch.optim.AdamW).

References are float64 numpy on the inputs as the kernel reads them (bf16 inputs rounded
first). Budgets (relative L2 error): f32 1e-5 (forward) and 1e-4 (gradients), bf16 1e-2 and
2e-2 — the budgets of the GPU parity suite. Needs numpy (and cupy on a GPU); exits non-zero
on the first mismatch's report once all cases ran.
"""

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import threading

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = os.path.join(HERE, "..", "..", "kernels", "cuda")


# --- bf16 as uint16 bit patterns (numpy has no bfloat16) -------------------------------------


def to_bf16(values):
    """float32 → bf16 bit patterns, rounding to nearest even (as __float2bfloat16)."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16(bits):
    """bf16 bit patterns → float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


class I32(int):
    """A kernel argument passed as `int`."""


class F32(float):
    """A kernel argument passed as `float`."""


class U64(int):
    """A kernel argument passed as `size_t`."""


def kernel_arguments(args, kernel, array, types):
    """The arguments in the runner's own types: `array(a)` for arrays, `types[I32]` (and F32,
    U64) for scalars."""
    converted = []
    for arg in args:
        kind = next((k for k in (I32, F32, U64) if isinstance(arg, k)), None)
        if kind is not None:
            converted.append(types[kind](arg))
        elif hasattr(arg, "shape"):
            converted.append(array(arg))
        else:
            raise TypeError(f"{kernel}: argument {arg!r} has no kernel type")
    return converted


def three(dims):
    """A launch shape padded to three dimensions."""
    return tuple(dims) + (1,) * (3 - len(dims))


# --- where kernels run ------------------------------------------------------------------------


class Emulated:
    """The kernels compiled by g++ against emulate.h; arrays are numpy arrays."""

    name = "cpu (emulated)"

    def __init__(self):
        self.build = tempfile.mkdtemp(prefix="maskdit-cuda-emulated-")
        self.libraries = {}

    def module(self, source):
        if source not in self.libraries:
            library = os.path.join(self.build, source.replace(".cu", ".so"))
            command = [
                "g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-x", "c++",
                "-DMASKDIT_EMULATED", "-include", os.path.join(HERE, "emulate.h"),
                "-I", SOURCES, os.path.join(SOURCES, source), "-o", library,
            ]
            subprocess.run(command, check=True)
            self.libraries[source] = ctypes.CDLL(library)
        return self.libraries[source]

    def upload(self, array):
        return np.array(array, order="C", copy=True)

    def empty(self, shape, dtype):
        return np.full(shape, np.nan if dtype == np.float32 else 0xFFFF, dtype=dtype)

    def download(self, array):
        return np.array(array)

    def launch(self, source, kernel, grid, block, args):
        library = self.module(source)
        function = getattr(library, kernel)
        function.restype = None
        types = {I32: ctypes.c_int, F32: ctypes.c_float, U64: ctypes.c_size_t}
        converted = kernel_arguments(args, kernel, lambda a: ctypes.c_void_p(a.ctypes.data), types)
        grid, block = three(grid), three(block)
        library.emulated_launch(*(ctypes.c_uint(v) for v in grid + block))
        failures = []

        def thread(b, t):
            try:
                library.emulated_enter(*(ctypes.c_uint(v) for v in b + t))
                function(*converted)
            except Exception as error:  # noqa: BLE001 - reported below
                failures.append(error)

        for bz in range(grid[2]):
            for by in range(grid[1]):
                for bx in range(grid[0]):
                    threads = [
                        threading.Thread(target=thread, args=((bx, by, bz), (tx, ty, tz)))
                        for tz in range(block[2])
                        for ty in range(block[1])
                        for tx in range(block[0])
                    ]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
        if failures:
            raise failures[0]


class Gpu:
    """The kernels compiled by CuPy (nvcc, the card's architecture); arrays are CuPy arrays."""

    def __init__(self):
        import cupy

        self.cupy = cupy
        self.modules = {}
        device = cupy.cuda.Device()
        self.name = f"{cupy.cuda.runtime.getDeviceProperties(device.id)['name'].decode()} (CuPy {cupy.__version__})"

    def module(self, source):
        if source not in self.modules:
            with open(os.path.join(SOURCES, source)) as f:
                code = f.read()
            self.modules[source] = self.cupy.RawModule(
                code=code, backend="nvcc", options=("-I" + os.path.abspath(SOURCES), "-std=c++17")
            )
        return self.modules[source]

    def upload(self, array):
        return self.cupy.asarray(np.ascontiguousarray(array))

    def empty(self, shape, dtype):
        return self.cupy.full(shape, np.nan if dtype == np.float32 else 0xFFFF, dtype=dtype)

    def download(self, array):
        return self.cupy.asnumpy(array)

    def launch(self, source, kernel, grid, block, args):
        function = self.module(source).get_function(kernel)
        types = {I32: np.int32, F32: np.float32, U64: np.uint64}
        converted = kernel_arguments(args, kernel, lambda a: a, types)
        function(three(grid), three(block), tuple(converted))
        self.cupy.cuda.Device().synchronize()


# --- the cases ---------------------------------------------------------------------------------

BUDGETS = {("f32", "forward"): 1e-5, ("f32", "backward"): 1e-4, ("bf16", "forward"): 1e-2, ("bf16", "backward"): 2e-2}


def relative_l2(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))


class Case:
    """One kernel on one dtype: inputs as the kernel stores them, and what they read as."""

    def __init__(self, runner, dtype, seed):
        self.runner = runner
        self.dtype = dtype
        self.rng = np.random.default_rng(seed)

    def normal(self, shape, scale=1.0, shift=0.0):
        """A stored input and its float64 reading."""
        values = (self.rng.standard_normal(shape) * scale + shift).astype(np.float32)
        if self.dtype == "bf16":
            stored = to_bf16(values)
            return self.runner.upload(stored), from_bf16(stored).astype(np.float64)
        return self.runner.upload(values), values.astype(np.float64)

    def output(self, shape):
        return self.runner.empty(shape, np.uint16 if self.dtype == "bf16" else np.float32)

    def read(self, array):
        data = self.runner.download(array)
        return from_bf16(data).astype(np.float64) if self.dtype == "bf16" else data.astype(np.float64)


def layer_norm_reference(x, eps):
    mean = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    return (x - mean) * rstd, rstd


def check_layer_norm(runner, dtype, report, torch):
    eps = 1e-6
    for rows, cols, block in ((5, 300, 128), (3, 1152, 256), (4, 40, 32)):
        case = Case(runner, dtype, rows * cols)
        x, x64 = case.normal((rows, cols), scale=2.0, shift=0.5)
        g, g64 = case.normal((rows, cols))
        y = case.output((rows, cols))
        runner.launch("layer_norm.cu", f"layer_norm_forward_{dtype}", (rows,), (block,), [x, y, I32(cols), F32(eps)])
        normed, rstd = layer_norm_reference(x64, eps)
        report(f"layer_norm forward {rows}x{cols}", dtype, "forward", case.read(y), normed)
        dx = case.output((rows, cols))
        runner.launch(
            "layer_norm.cu", f"layer_norm_backward_{dtype}", (rows,), (block,), [x, g, dx, I32(cols), F32(eps)]
        )
        want = rstd * (g64 - g64.mean(-1, keepdims=True) - normed * (g64 * normed).mean(-1, keepdims=True))
        report(f"layer_norm backward {rows}x{cols}", dtype, "backward", case.read(dx), want)
        if torch is not None:
            tx = torch.tensor(x64, dtype=torch.float64, requires_grad=True)
            ty = torch.nn.functional.layer_norm(tx, (cols,), eps=eps)
            ty.backward(torch.tensor(g64))
            report(f"layer_norm forward {rows}x{cols} vs torch", dtype, "forward", case.read(y), ty.detach().numpy())
            report(f"layer_norm backward {rows}x{cols} vs torch", dtype, "backward", case.read(dx), tx.grad.numpy())


def check_tokens(runner, dtype, report, torch):
    n, tokens, width = 3, 7, 40
    total = n * tokens * width
    case = Case(runner, dtype, 7)
    x, x64 = case.normal((n, tokens, width))
    h, h64 = case.normal((n, tokens, width))
    a, a64 = case.normal((n, width))
    b, b64 = case.normal((n, width))
    # A small grid, so that the grid-stride loops go round.
    grid, block = (3,), (64,)
    sizes = [U64(total), U64(tokens), U64(width)]
    y = case.output((n, tokens, width))
    runner.launch("tokens.cu", f"modulate_{dtype}", grid, block, [x, a, b, y] + sizes)
    report("modulate", dtype, "forward", case.read(y), x64 * (1.0 + b64[:, None, :]) + a64[:, None, :])
    y = case.output((n, tokens, width))
    runner.launch("tokens.cu", f"gated_residual_{dtype}", grid, block, [x, h, a, y] + sizes)
    report("gated_residual", dtype, "forward", case.read(y), x64 + h64 * a64[:, None, :])
    y = case.output((n, tokens, width))
    runner.launch("tokens.cu", f"scale_tokens_{dtype}", grid, block, [x, a, y, F32(1.0)] + sizes)
    report("scale_tokens", dtype, "backward", case.read(y), x64 * (a64[:, None, :] + 1.0))
    for outer, middle, inner in ((3, 37, 70), (1, 300, 33)):
        case = Case(runner, dtype, outer * middle * inner)
        p, p64 = case.normal((outer, middle, inner))
        q, q64 = case.normal((outer, middle, inner))
        grid = ((inner + 31) // 32, outer)
        out = case.output((outer, inner))
        runner.launch("tokens.cu", f"sum_middle_{dtype}", grid, (32, 8), [p, out, I32(middle), I32(inner)])
        report(f"sum_middle {outer}x{middle}x{inner}", dtype, "backward", case.read(out), p64.sum(1))
        out = case.output((outer, inner))
        runner.launch("tokens.cu", f"dot_middle_{dtype}", grid, (32, 8), [p, q, out, I32(middle), I32(inner)])
        report(f"dot_middle {outer}x{middle}x{inner}", dtype, "backward", case.read(out), (p64 * q64).sum(1))


def check_gelu(runner, dtype, report, torch):
    total = 1000
    case = Case(runner, dtype, 3)
    x, x64 = case.normal((total,), scale=3.0)
    g, g64 = case.normal((total,))
    y = case.output((total,))
    runner.launch("gelu.cu", f"gelu_tanh_forward_{dtype}", (2,), (128,), [x, y, U64(total)])
    inner = np.sqrt(2.0 / np.pi) * (x64 + 0.044715 * x64**3)
    t = np.tanh(inner)
    report("gelu_tanh forward", dtype, "forward", case.read(y), 0.5 * x64 * (1.0 + t))
    dx = case.output((total,))
    runner.launch("gelu.cu", f"gelu_tanh_backward_{dtype}", (2,), (128,), [x, g, dx, U64(total)])
    slope = 0.5 * (1.0 + t) + 0.5 * x64 * (1.0 - t * t) * np.sqrt(2.0 / np.pi) * (1.0 + 3.0 * 0.044715 * x64**2)
    report("gelu_tanh backward", dtype, "backward", case.read(dx), g64 * slope)
    if torch is not None:
        tx = torch.tensor(x64, requires_grad=True)
        ty = torch.nn.functional.gelu(tx, approximate="tanh")
        ty.backward(torch.tensor(g64))
        report("gelu_tanh forward vs torch", dtype, "forward", case.read(y), ty.detach().numpy())
        report("gelu_tanh backward vs torch", dtype, "backward", case.read(dx), tx.grad.numpy())


def check_updates(runner, dtype, report, torch):
    if dtype != "f32":
        return
    total = 777
    lr, beta1, beta2, eps, weight_decay = 1e-3, 0.9, 0.999, 1e-8, 0.01
    case = Case(runner, "f32", 11)
    p0 = case.rng.standard_normal(total).astype(np.float32)
    grads = [case.rng.standard_normal(total).astype(np.float32) for _ in range(3)]
    p, m, v = runner.upload(p0), runner.upload(np.zeros(total, np.float32)), runner.upload(np.zeros(total, np.float32))
    want_p, want_m, want_v = p0.astype(np.float64), np.zeros(total), np.zeros(total)
    for step, g in enumerate(grads, start=1):
        c1, c2 = 1.0 - beta1**step, 1.0 - beta2**step
        args = [
            p, m, v, runner.upload(g), U64(total),
            F32(1.0 - beta1), F32(beta2), F32(1.0 - beta2), F32(1.0 - lr * weight_decay), I32(1),
            F32(lr / c1), F32(np.sqrt(c2)), F32(eps),
        ]
        runner.launch("updates.cu", "adamw_f32", (2,), (128,), args)
        g64 = g.astype(np.float64)
        want_m = beta1 * want_m + (1 - beta1) * g64
        want_v = beta2 * want_v + (1 - beta2) * g64 * g64
        want_p = want_p * (1 - lr * weight_decay) - lr / c1 * want_m / (np.sqrt(want_v) / np.sqrt(c2) + eps)
    report("adamw x3 parameter", "f32", "forward", case.read(p), want_p)
    report("adamw x3 first moment", "f32", "forward", case.read(m), want_m)
    report("adamw x3 second moment", "f32", "forward", case.read(v), want_v)
    if torch is not None:
        tp = torch.nn.Parameter(torch.tensor(p0.astype(np.float64)))
        optimiser = torch.optim.AdamW([tp], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, foreach=False)
        for g in grads:
            tp.grad = torch.tensor(g.astype(np.float64))
            optimiser.step()
        report("adamw x3 parameter vs torch", "f32", "forward", case.read(p), tp.detach().numpy())
    decay = 0.9999
    average0 = case.rng.standard_normal(total).astype(np.float32)
    value = case.rng.standard_normal(total).astype(np.float32)
    a64, value64 = average0.astype(np.float64), value.astype(np.float64)
    wants = {0: decay * a64 + (1 - decay) * value64, 1: decay * a64 + (1 - decay) * value64**2, 2: a64 + (1 - decay) * (value64 - a64)}
    for kind, want in wants.items():
        average = runner.upload(average0)
        args = [average, runner.upload(value), U64(total), F32(decay), F32(1 - decay), I32(kind)]
        runner.launch("updates.cu", "running_average_f32", (2,), (128,), args)
        report(f"running_average kind {kind}", "f32", "forward", case.read(average), want)


def check_bias(runner, dtype, report, torch):
    rows, cols = 37, 96
    case = Case(runner, dtype, 13)
    product, product64 = case.normal((rows, cols))
    bias, bias64 = case.normal((cols,))
    y = case.output((rows, cols))
    total = rows * cols
    runner.launch("bias.cu", f"add_bias_{dtype}", (3,), (64,), [product, bias, y, U64(total), U64(cols)])
    report("add_bias", dtype, "forward", case.read(y), product64 + bias64[None, :])


def check_attention(runner, dtype, report, torch):
    if dtype != "bf16":
        return
    # XL/2's heads with tokens off the tiles, B/2's on them, the decoder's, a single token, and
    # every padded width in use.
    cases = ((2, 70, 3, 72, 80), (1, 64, 2, 64, 64), (2, 33, 2, 32, 32), (1, 1, 1, 8, 32), (1, 129, 1, 80, 80), (1, 40, 2, 48, 64))
    for n, tokens, heads, head_dim, pad in cases:
        case = Case(runner, "bf16", tokens * head_dim)
        width = heads * head_dim
        qkv, qkv64 = case.normal((n, tokens, 3 * width))
        out = case.output((n, tokens, width))
        scale = head_dim**-0.5
        grid = ((tokens + 31) // 32, heads, n)
        args = [qkv, out, I32(tokens), I32(heads), I32(head_dim), F32(scale)]
        runner.launch("attention.cu", f"attention_forward_d{pad}_bf16", grid, (64,), args)
        split = qkv64.reshape(n, tokens, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
        q, k, v = split[0], split[1], split[2]
        scores = q @ k.transpose(0, 1, 3, 2) * scale
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        want = (weights @ v).transpose(0, 2, 1, 3).reshape(n, tokens, width)
        report(f"attention forward {n}x{tokens} {heads}x{head_dim}", "bf16", "forward", case.read(out), want)
        # The backward pass from the forward's own output, as the op runs it.
        grad, grad64 = case.normal((n, tokens, width))
        log_sum_exp = runner.empty((n, heads, tokens), np.float32)
        delta = runner.empty((n, heads, tokens), np.float32)
        sizes = [I32(tokens), I32(heads), I32(head_dim), F32(scale)]
        runner.launch("attention.cu", f"attention_statistics_d{pad}_bf16", grid, (64,), [qkv, out, grad, log_sum_exp, delta] + sizes)
        grad_qkv = case.output((n, tokens, 3 * width))
        for kernel in ("backward_kv", "backward_q"):
            args = [qkv, grad, log_sum_exp, delta, grad_qkv] + sizes
            runner.launch("attention.cu", f"attention_{kernel}_d{pad}_bf16", grid, (64,), args)
        grad_o = grad64.reshape(n, tokens, heads, head_dim).transpose(0, 2, 1, 3)
        grad_v = weights.transpose(0, 1, 3, 2) @ grad_o
        grad_weights = grad_o @ v.transpose(0, 1, 3, 2)
        grad_scores = weights * (grad_weights - (grad_weights * weights).sum(-1, keepdims=True))
        grad_q = grad_scores @ k * scale
        grad_k = grad_scores.transpose(0, 1, 3, 2) @ q * scale
        want = np.stack([grad_q, grad_k, grad_v]).transpose(1, 3, 0, 2, 4).reshape(n, tokens, 3 * width)
        report(f"attention backward {n}x{tokens} {heads}x{head_dim}", "bf16", "backward", case.read(grad_qkv), want)
        want_lse = np.log(np.exp(scores).sum(-1))
        report(f"attention log-sum-exp {n}x{tokens}", "f32", "forward", runner.download(log_sum_exp), want_lse)
        if torch is not None:
            t = torch.tensor(split)
            sdpa = torch.nn.functional.scaled_dot_product_attention(t[0], t[1], t[2])
            report(f"attention forward {n}x{tokens} vs torch", "bf16", "forward", case.read(out),
                   sdpa.transpose(1, 2).reshape(n, tokens, width).numpy())


CHECKS = {"attention": check_attention, "bias": check_bias, "layer_norm": check_layer_norm, "tokens": check_tokens, "gelu": check_gelu, "updates": check_updates}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="run on the GPU through CuPy instead of emulating")
    parser.add_argument("--only", action="append", choices=sorted(CHECKS), help="run only these groups")
    args = parser.parse_args()
    runner = Gpu() if args.gpu else Emulated()
    torch = None
    if args.gpu:
        try:
            import torch  # noqa: F811
        except ImportError:
            print("PyTorch is not installed: numpy references only")
    print(f"CUDA kernels on {runner.name}")
    failures = []

    def report(name, dtype, kind, got, want):
        error = relative_l2(got, want)
        budget = BUDGETS[(dtype, kind)]
        verdict = "ok" if error <= budget else "FAILED"
        print(f"{verdict:6} {name:42} {dtype:4} {error:.2e} (budget {budget:.0e})", flush=True)
        if error > budget:
            failures.append(name)

    for group in args.only or sorted(CHECKS):
        for dtype in ("f32", "bf16"):
            CHECKS[group](runner, dtype, report, torch)
    if failures:
        print(f"{len(failures)} mismatches: {', '.join(failures)}")
        sys.exit(1)
    print("every kernel matches its reference")


if __name__ == "__main__":
    main()
