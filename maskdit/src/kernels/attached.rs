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
    use candle_core::{Device, Var};

    use super::*;

    /// Gradients of `Σ w·f(x)` through the attached op and through candle's composition.
    fn gradients(
        attached: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        composed: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        dtype: DType,
    ) -> (f32, f32) {
        let device = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 2.0, (3, 5, 16), &device).unwrap())).unwrap();
        let w = Tensor::randn(0f32, 1.0, (3, 5, 16), &device).unwrap();
        let run = |f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
            let xd = x.as_tensor().to_dtype(dtype).unwrap();
            let y = f(&xd).unwrap().to_dtype(DType::F32).unwrap();
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            (y, grads.get(x.as_tensor()).unwrap().clone())
        };
        let (ya, ga) = run(&attached);
        let (yc, gc) = run(&composed);
        let rel = |a: &Tensor, b: &Tensor| {
            let diff = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
            diff / b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().sqrt()
        };
        (rel(&ya, &yc), rel(&ga, &gc))
    }

    #[test]
    fn softmax_backpropagates_like_the_composition() {
        let (forward, backward) = gradients(softmax_last_dim, |x| candle_nn::ops::softmax(x, D::Minus1), DType::F32);
        assert!(forward < 1e-6 && backward < 1e-5, "forward {forward:e}, backward {backward:e}");
        let (forward, backward) = gradients(softmax_last_dim, |x| candle_nn::ops::softmax(x, D::Minus1), DType::BF16);
        assert!(forward < 1e-2 && backward < 2e-2, "bf16: forward {forward:e}, backward {backward:e}");
    }

    #[test]
    fn layer_norm_backpropagates_like_the_composition() {
        let composed = |x: &Tensor| {
            let work = x.to_dtype(DType::F32)?;
            let centred = work.broadcast_sub(&work.mean_keepdim(D::Minus1)?)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            centred.broadcast_div(&(var + 1e-6)?.sqrt()?)?.to_dtype(x.dtype())
        };
        let (forward, backward) = gradients(|x| layer_norm(x, 1e-6), composed, DType::F32);
        assert!(forward < 1e-6 && backward < 1e-5, "forward {forward:e}, backward {backward:e}");
        let (forward, backward) = gradients(|x| layer_norm(x, 1e-6), composed, DType::BF16);
        assert!(forward < 1e-2 && backward < 2e-2, "bf16: forward {forward:e}, backward {backward:e}");
    }

    #[test]
    fn strided_inputs_are_handled() {
        let x = Tensor::randn(0f32, 1.0, (4, 6), &Device::Cpu).unwrap();
        let strided = x.t().unwrap();
        let want = candle_nn::ops::softmax(&strided, D::Minus1).unwrap();
        let got = softmax_last_dim(&strided).unwrap();
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-6);
        let narrowed = x.narrow(0, 1, 2).unwrap();
        assert_eq!(layer_norm(&narrowed, 1e-6).unwrap().dims(), [2, 6]);
    }
}
