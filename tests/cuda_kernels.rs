//! The toolkit's CUDA kernels against the same operations composed of candle ops, on the GPU
//! (`MASKDIT_DEVICE=cuda`) with the kernels switched on (`MASKDIT_CUDA_KERNELS=1`): values and
//! gradients in f32 (budgets 1e-5 and 1e-4) and bf16 (1e-2 and 2e-2, against the composition
//! computed in f32 from the same bf16 inputs; bf16 attention, forward and backward, against
//! candle's f32 composition), and three AdamW steps and an EMA update against the fused CPU
//! updates (1e-5). Part of the `gpu_parity` binary.

use candle_core::{DType, Device, Tensor, Var, D};
use maskdit_kernels::{Backend, Pass};
use maskdit_testkit::{relative_l2, SeededTensors};

/// The GPU these tests run on, with the kernels switched on; panics with what to set otherwise.
fn gpu() -> Device {
    let device = maskdit_tests::device();
    assert!(device.is_cuda(), "the CUDA kernel tests run on a GPU: set MASKDIT_DEVICE=cuda");
    assert!(Backend::cuda_kernels_enabled(), "the CUDA kernel tests need MASKDIT_CUDA_KERNELS=1");
    device
}

/// (forward, gradient) budgets for a dtype.
fn budgets(dtype: DType) -> (f64, f64) {
    if dtype == DType::BF16 {
        (1e-2, 2e-2)
    } else {
        (1e-5, 1e-4)
    }
}

/// Values and input gradients of `sum(f(inputs) · w)` for the kernel (inputs in `dtype` on the
/// GPU) and for the reference composition (the same values in f32 on the GPU).
fn compare(
    name: &str,
    shapes: &[&[usize]],
    dtype: DType,
    kernel: impl Fn(&[Tensor]) -> Tensor,
    reference: impl Fn(&[Tensor]) -> Tensor,
) {
    let device = gpu();
    let mut draw = SeededTensors::new(shapes.iter().map(|s| s.iter().product::<usize>() as u64).sum());
    let host: Vec<Tensor> = shapes.iter().map(|s| draw.normal(0.0, 1.5, s.to_vec())).collect();
    // The reference reads exactly what the kernel reads: the inputs rounded to `dtype` first.
    let inputs: Vec<Var> = host
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(&device)?.to_dtype(dtype)?))
        .collect::<Result<_, _>>()
        .unwrap();
    let exact: Vec<Var> = inputs
        .iter()
        .map(|v| Var::from_tensor(&v.as_tensor().to_dtype(DType::F32)?))
        .collect::<Result<_, _>>()
        .unwrap();
    let as_tensors = |vars: &[Var]| vars.iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>();
    assert_eq!(
        Backend::of(&as_tensors(&inputs).iter().collect::<Vec<_>>()),
        Backend::Cuda,
        "{name}: not on the kernels"
    );

    let run = |f: &dyn Fn(&[Tensor]) -> Tensor, vars: &[Var]| {
        let out = f(&as_tensors(vars));
        let weights = draw_weights(out.dims(), &device).to_dtype(dtype).unwrap().to_dtype(out.dtype()).unwrap();
        let grads = (&out * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let grads: Vec<Tensor> =
            vars.iter().map(|v| grads.get(v.as_tensor()).expect("a gradient for every input").clone()).collect();
        (out, grads)
    };
    let (got, got_grads) = run(&kernel, &inputs);
    let (want, want_grads) = run(&reference, &exact);
    assert_eq!(got.dtype(), dtype, "{name}: output dtype");
    let (forward_budget, gradient_budget) = budgets(dtype);
    let error = relative_l2(&got, &want);
    assert!(error <= forward_budget, "{name} {dtype:?}: forward error {error:.2e} > {forward_budget:e}");
    for (index, (g, w)) in got_grads.iter().zip(&want_grads).enumerate() {
        let error = relative_l2(g, w);
        assert!(error <= gradient_budget, "{name} {dtype:?}: gradient {index} error {error:.2e} > {gradient_budget:e}");
    }
}

/// Fixed pseudo-random weights for the loss `sum(out · w)` (the same for both sides).
fn draw_weights(dims: &[usize], device: &Device) -> Tensor {
    SeededTensors::new(dims.iter().product::<usize>() as u64 + 17)
        .normal(0.0, 1.0, dims.to_vec())
        .to_device(device)
        .unwrap()
}

fn layer_norm_composed(x: &Tensor) -> Tensor {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap()).unwrap();
    let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    centred.broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap()).unwrap()
}

#[test]
fn layer_norm_matches_composition() {
    for dtype in [DType::F32, DType::BF16] {
        for shape in [[2, 64, 1152], [3, 17, 96], [2, 5, 40]] {
            compare(
                "layer_norm",
                &[&shape],
                dtype,
                |t| maskdit_kernels::layer_norm(&t[0], 1e-6, Pass::Training).unwrap(),
                |t| layer_norm_composed(&t[0]),
            );
        }
    }
}

#[test]
fn gelu_tanh_matches_candle() {
    for dtype in [DType::F32, DType::BF16] {
        compare(
            "gelu_tanh",
            &[&[4, 33, 4608]],
            dtype,
            |t| maskdit_kernels::gelu_tanh(&t[0]).unwrap(),
            |t| t[0].gelu().unwrap(),
        );
    }
}

#[test]
fn modulate_matches_composition() {
    for dtype in [DType::F32, DType::BF16] {
        compare(
            "modulate",
            &[&[3, 41, 1152], &[3, 1152], &[3, 1152]],
            dtype,
            |t| maskdit_kernels::modulate(&t[0], &t[1], &t[2]).unwrap(),
            |t| {
                let scale = (t[2].unsqueeze(1).unwrap() + 1.0).unwrap();
                t[0].broadcast_mul(&scale).unwrap().broadcast_add(&t[1].unsqueeze(1).unwrap()).unwrap()
            },
        );
    }
}

#[test]
fn gated_residual_matches_composition() {
    for dtype in [DType::F32, DType::BF16] {
        compare(
            "gated_residual",
            &[&[3, 41, 1152], &[3, 41, 1152], &[3, 1152]],
            dtype,
            |t| maskdit_kernels::gated_residual(&t[0], &t[1], &t[2]).unwrap(),
            |t| (&t[0] + t[1].broadcast_mul(&t[2].unsqueeze(1).unwrap()).unwrap()).unwrap(),
        );
    }
}

#[test]
fn linear_with_bias_matches_composition() {
    for dtype in [DType::F32, DType::BF16] {
        compare(
            "linear",
            &[&[300, 1152], &[4608, 1152], &[4608]],
            dtype,
            |t| maskdit_kernels::linear(&t[0], &t[1], Some(&t[2])).unwrap(),
            |t| t[0].matmul(&t[1].t().unwrap()).unwrap().broadcast_add(&t[2]).unwrap(),
        );
    }
}

#[test]
fn inference_attention_matches_composition() {
    let device = gpu();
    // (batch, tokens, heads, head dim): XL/2, B/2 and the decoder's heads, tokens off the tiles.
    for (batch, tokens, heads, head_dim) in [(2, 256, 16, 72), (2, 100, 2, 64), (3, 77, 3, 32)] {
        let mut draw = SeededTensors::new((tokens * head_dim) as u64);
        let qkv = draw.normal(0.0, 1.5, (batch, tokens, 3 * heads * head_dim)).to_device(&device).unwrap();
        let qkv = qkv.to_dtype(DType::BF16).unwrap();
        let got = maskdit_kernels::attention(&qkv, heads, Pass::Inference).unwrap();
        // f32 takes candle's composition (matrix products around its softmax).
        let want = maskdit_kernels::attention(&qkv.to_dtype(DType::F32).unwrap(), heads, Pass::Inference).unwrap();
        assert_eq!(got.dtype(), DType::BF16);
        let error = relative_l2(&got, &want);
        assert!(error <= 1e-2, "attention {batch}x{tokens}, {heads} heads of {head_dim}: error {error:.2e}");
    }
}

#[test]
fn training_attention_matches_composition() {
    for (batch, tokens, heads, head_dim) in [(2, 256, 16, 72), (2, 100, 2, 64), (3, 77, 3, 32)] {
        compare(
            "attention",
            &[&[batch, tokens, 3 * heads * head_dim]],
            DType::BF16,
            |t| maskdit_kernels::attention(&t[0], heads, Pass::Training).unwrap(),
            // f32 takes candle's composition, with its softmax's backward pass attached.
            |t| maskdit_kernels::attention(&t[0], heads, Pass::Training).unwrap(),
        );
    }
}

#[test]
fn updates_match_the_cpu() {
    use maskdit_kernels::updates::{adamw, ema, AdamWStep};
    let device = gpu();
    let mut draw = SeededTensors::new(5);
    let shape = (1152, 37);
    let start = draw.normal(0.0, 1.0, shape);
    let grads: Vec<Tensor> = (0..3).map(|_| draw.normal(0.0, 1.0, shape)).collect();
    let run = |device: &Device| {
        let param = Var::from_tensor(&start.to_device(device).unwrap()).unwrap();
        let mut first = param.zeros_like().unwrap();
        let mut second = param.zeros_like().unwrap();
        let mut average = start.to_device(device).unwrap();
        for (step, grad) in grads.iter().enumerate() {
            let hyper =
                AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, step: step as u64 + 1 };
            adamw(&param, &grad.to_device(device).unwrap(), &mut first, &mut second, &hyper).unwrap();
            ema(&mut average, param.as_tensor(), 0.9999).unwrap();
        }
        [param.as_tensor().clone(), first, second, average]
    };
    let on_gpu = run(&device);
    assert_eq!(Backend::in_place(&[&on_gpu[0], &on_gpu[1]]), Backend::Cuda, "updates: not on the kernels");
    let on_cpu = run(&Device::Cpu);
    for (name, (got, want)) in
        ["parameter", "first moment", "second moment", "EMA"].iter().zip(on_gpu.iter().zip(&on_cpu))
    {
        let error = relative_l2(got, want);
        assert!(error <= 1e-5, "AdamW/EMA after 3 steps: {name} error {error:.2e}");
    }
}

#[test]
fn per_sample_sums_match_candle() {
    let device = gpu();
    let mut draw = SeededTensors::new(9);
    for dtype in [DType::F32, DType::BF16] {
        let x = Var::from_tensor(
            &draw.normal(0.0, 1.0, (4, 256, 1152)).to_device(&device).unwrap().to_dtype(dtype).unwrap(),
        )
        .unwrap();
        let shift = draw.normal(0.0, 1.0, (4, 1152)).to_device(&device).unwrap().to_dtype(dtype).unwrap();
        let scale = Var::from_tensor(&shift.affine(0.5, 0.1).unwrap()).unwrap();
        // The gradient of `scale` in `modulate` is Σ over tokens of g·x: the token-sum kernels.
        let out = maskdit_kernels::modulate(x.as_tensor(), &shift, scale.as_tensor()).unwrap();
        let grads = out.sum_all().unwrap().backward().unwrap();
        let got = grads.get(scale.as_tensor()).unwrap().to_dtype(DType::F32).unwrap();
        let want = x.as_tensor().to_dtype(DType::F32).unwrap().sum(1).unwrap();
        let error = relative_l2(&got, &want);
        assert!(error <= budgets(dtype).1, "Σ over tokens {dtype:?}: error {error:.2e}");
    }
}

#[test]
fn empty_inputs_give_empty_outputs() {
    let device = gpu();
    for dtype in [DType::F32, DType::BF16] {
        let x = Tensor::zeros((0, 5, 96), dtype, &device).unwrap();
        let per_sample = Tensor::zeros((0, 96), dtype, &device).unwrap();
        assert_eq!(maskdit_kernels::layer_norm(&x, 1e-6, Pass::Inference).unwrap().dims(), [0, 5, 96]);
        assert_eq!(maskdit_kernels::modulate(&x, &per_sample, &per_sample).unwrap().dims(), [0, 5, 96]);
        assert_eq!(maskdit_kernels::gelu_tanh(&x).unwrap().dims(), [0, 5, 96]);
    }
    let qkv = Tensor::zeros((0, 7, 3 * 2 * 72), DType::BF16, &device).unwrap();
    assert_eq!(maskdit_kernels::attention(&qkv, 2, Pass::Inference).unwrap().dims(), [0, 7, 144]);
}
