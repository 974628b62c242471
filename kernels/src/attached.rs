//! Softmax and layer norm that backpropagate on every device and dtype: candle's fused forward
//! kernels (which have no backward pass of their own) run inside a custom op that carries the
//! backward pass. A training graph then keeps one tensor per operation instead of the five or
//! so intermediates of the differentiable compositions, which on a GPU is the difference
//! between fitting the official batch and running out of memory.

use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Storage, Tensor, D};

/// Runs `forward` (tensor operations, no gradient tracking) on a custom op's input and returns
/// the result as storage. The input is copied into a tensor of its own and the result copied
/// out: two copies, cheap next to the operation on a GPU.
fn run_on_storage(
    storage: Storage,
    layout: &Layout,
    forward: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Storage, Shape)> {
    if !layout.is_contiguous() || layout.start_offset() != 0 {
        candle_core::bail!("the input must be contiguous from its first element");
    }
    let input = Tensor::from_storage(storage, layout.shape().clone(), BackpropOp::none(), false);
    let output = forward(&input)?.contiguous()?;
    let (storage, out_layout) = output.storage_and_layout();
    Ok((storage.try_clone(out_layout)?, output.shape().clone()))
}

/// `x` contiguous from its first element, as [`run_on_storage`] needs.
fn packed(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.is_contiguous() && x.layout().start_offset() == 0 {
        Ok(x.clone())
    } else {
        x.force_contiguous()
    }
}

/// A forward function of the ops below.
trait Forward {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>;
}

/// Implements the device hooks of a [`CustomOp1`] through [`Forward`].
macro_rules! device_hooks {
    () => {
        fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            match run_on_storage(Storage::Cpu(storage.clone()), layout, |x| self.forward(x))? {
                (Storage::Cpu(out), shape) => Ok((out, shape)),
                _ => candle_core::bail!("{}: the result left the CPU", self.name()),
            }
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            storage: &candle_core::CudaStorage,
            layout: &Layout,
        ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
            use candle_core::backend::BackendStorage;
            let input = Storage::Cuda(storage.try_clone(layout)?);
            match run_on_storage(input, layout, |x| self.forward(x))? {
                (Storage::Cuda(out), shape) => Ok((out, shape)),
                _ => candle_core::bail!("{}: the result left the GPU", self.name()),
            }
        }
    };
}

/// Softmax over the last dimension.
struct Softmax;

impl Forward for Softmax {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::softmax_last_dim(x)
    }
}

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax-attached"
    }

    device_hooks!();

    /// `∂x = y · (g − Σ g·y)`, in f32.
    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (y32, g32) = (y.to_dtype(DType::F32)?, grad.to_dtype(DType::F32)?);
        let dot = (&g32 * &y32)?.sum_keepdim(D::Minus1)?;
        Ok(Some(y32.mul(&g32.broadcast_sub(&dot)?)?.to_dtype(grad.dtype())?))
    }
}

/// Layer norm over the last dimension without affine parameters.
struct LayerNorm {
    eps: f32,
}

impl Forward for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let width = x.dim(D::Minus1)?;
        let ones = Tensor::ones(width, x.dtype(), x.device())?;
        let zeros = Tensor::zeros(width, x.dtype(), x.device())?;
        candle_nn::ops::layer_norm(x, &ones, &zeros, self.eps)
    }
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm-attached"
    }

    device_hooks!();

    /// `∂x = r · (g − mean g − y · mean(g·y))` with `r = 1/√(var x + eps)` recomputed from x,
    /// in f32.
    fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let x32 = x.to_dtype(DType::F32)?;
        let centred = x32.broadcast_sub(&x32.mean_keepdim(D::Minus1)?)?;
        let rstd = (centred.sqr()?.mean_keepdim(D::Minus1)? + self.eps as f64)?.sqrt()?.recip()?;
        drop(centred);
        let (y32, g32) = (y.to_dtype(DType::F32)?, grad.to_dtype(DType::F32)?);
        let mean_g = g32.mean_keepdim(D::Minus1)?;
        let mean_gy = (&g32 * &y32)?.mean_keepdim(D::Minus1)?;
        let inner = g32.broadcast_sub(&mean_g)?.sub(&y32.broadcast_mul(&mean_gy)?)?;
        Ok(Some(inner.broadcast_mul(&rstd)?.to_dtype(grad.dtype())?))
    }
}

/// Softmax over the last dimension: candle's fused kernel, differentiable.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    packed(x)?.apply_op1(Softmax)
}

/// Layer norm over the last dimension without affine parameters: candle's fused kernel,
/// differentiable.
pub fn layer_norm(x: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    packed(x)?.apply_op1(LayerNorm { eps })
}

#[cfg(test)]
mod tests {
    use candle_core::Var;
    use maskdit_testkit::{relative_l2, worst_and_quantile, SeededTensors};

    use super::*;

    type Op = fn(&Tensor) -> candle_core::Result<Tensor>;

    /// The fixed seeds the comparisons run on.
    const SEEDS: std::ops::Range<u64> = 0..8;

    /// Relative errors (values, gradients) of `Σ w·f(x)` through the attached op against
    /// candle's composition, both run in `dtype`, on inputs drawn from `seed`.
    fn errors(attached: Op, composed: Op, dtype: DType, seed: u64) -> (f64, f64) {
        let mut draw = SeededTensors::new(seed);
        let x = Var::from_tensor(&draw.normal(0.0, 2.0, (3, 5, 16))).unwrap();
        let w = draw.normal(0.0, 1.0, (3, 5, 16));
        let run = |f: Op| {
            let xd = x.as_tensor().to_dtype(dtype).unwrap();
            let y = f(&xd).unwrap().to_dtype(DType::F32).unwrap();
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            (y, grads.get(x.as_tensor()).unwrap().clone())
        };
        let (ya, ga) = run(attached);
        let (yc, gc) = run(composed);
        (relative_l2(&ya, &yc), relative_l2(&ga, &gc))
    }

    fn composed_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::softmax(x, D::Minus1)
    }

    fn attached_layer_norm(x: &Tensor) -> candle_core::Result<Tensor> {
        layer_norm(x, 1e-6)
    }

    fn composed_layer_norm(x: &Tensor) -> candle_core::Result<Tensor> {
        let work = x.to_dtype(DType::F32)?;
        let centred = work.broadcast_sub(&work.mean_keepdim(D::Minus1)?)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred.broadcast_div(&(var + 1e-6)?.sqrt()?)?.to_dtype(x.dtype())
    }

    /// Asserts the f32 budgets (1e-6 values, 1e-5 gradients) and the bf16 budgets on every
    /// seed of [`SEEDS`].
    fn check(attached: Op, composed: Op, bf16_budget: (f64, f64)) {
        for seed in SEEDS {
            let (forward, backward) = errors(attached, composed, DType::F32, seed);
            assert!(forward < 1e-6 && backward < 1e-5, "seed {seed}: forward {forward:e}, backward {backward:e}");
            let (forward, backward) = errors(attached, composed, DType::BF16, seed);
            assert!(
                forward < bf16_budget.0 && backward < bf16_budget.1,
                "seed {seed}, bf16: forward {forward:e}, backward {backward:e}"
            );
        }
    }

    // The bf16 budgets (values, gradients): 1.5× the worst of 10,000 seeds, rounded up
    // (`bf16_spread_over_seeds`, measured 2026-11-30).
    // softmax:    values worst 0 (both sides run candle's bf16 softmax; budget f32's 1e-6),
    //             gradients worst 4.45e-2, 99.9th 3.14e-2.
    // layer norm: values worst 1.01e-3, 99.9th 2.52e-4; gradients worst 2.50e-3, 99.9th 2.36e-3.
    const SOFTMAX_BF16: (f64, f64) = (1e-6, 7e-2);
    const LAYER_NORM_BF16: (f64, f64) = (1.6e-3, 3.8e-3);

    #[test]
    fn softmax_backpropagates_like_the_composition() {
        check(softmax_last_dim, composed_softmax, SOFTMAX_BF16);
    }

    #[test]
    fn layer_norm_backpropagates_like_the_composition() {
        check(attached_layer_norm, composed_layer_norm, LAYER_NORM_BF16);
    }

    /// The spread the bf16 budgets come from, over seeds 0..10000 ([`SEEDS`] among them):
    /// `cargo test -p maskdit --lib -- --ignored --nocapture bf16_spread`.
    #[test]
    #[ignore = "a measurement that sets the bf16 budgets; prints, asserts nothing"]
    fn bf16_spread_over_seeds() {
        for (name, attached, composed) in [
            ("softmax", softmax_last_dim as Op, composed_softmax as Op),
            ("layer norm", attached_layer_norm, composed_layer_norm),
        ] {
            let (forward, backward): (Vec<f64>, Vec<f64>) =
                (0..10_000).map(|seed| errors(attached, composed, DType::BF16, seed)).unzip();
            let (fw, fq) = worst_and_quantile(&forward, 0.999);
            let (bw, bq) = worst_and_quantile(&backward, 0.999);
            println!("{name}: values worst {fw:.2e}, 99.9th {fq:.2e}; gradients worst {bw:.2e}, 99.9th {bq:.2e}");
        }
    }

    #[test]
    fn strided_inputs_are_handled() {
        let x = SeededTensors::new(1).normal(0.0, 1.0, (4, 6));
        let strided = x.t().unwrap();
        let want = candle_nn::ops::softmax(&strided, D::Minus1).unwrap();
        let got = softmax_last_dim(&strided).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6);
        let narrowed = x.narrow(0, 1, 2).unwrap();
        assert_eq!(layer_norm(&narrowed, 1e-6).unwrap().dims(), [2, 6]);
    }
}
