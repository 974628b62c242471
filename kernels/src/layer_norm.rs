//! Layer norm over the last dimension without affine parameters.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{last_dim, map_row_pairs, map_rows, Backend, Pass};

/// Layer norm over the last dimension, `(x − mean) / √(var + eps)`: fused for f32 on the CPU and
/// with the CUDA kernels, elsewhere candle's kernel (with a backward pass attached for
/// [`Pass::Training`]).
pub fn layer_norm(x: &Tensor, eps: f32, pass: Pass) -> candle_core::Result<Tensor> {
    match (Backend::of(&[x]), pass) {
        (Backend::CpuF32 | Backend::Cuda, _) => x.contiguous()?.apply_op1(LayerNorm { eps }),
        (Backend::Candle, Pass::Training) => super::attached::layer_norm(x, eps),
        (Backend::Candle, Pass::Inference) => {
            let width = last_dim(x.layout());
            let ones = Tensor::ones(width, x.dtype(), x.device())?;
            let zeros = Tensor::zeros(width, x.dtype(), x.device())?;
            candle_nn::ops::layer_norm(x, &ones, &zeros, eps)
        }
    }
}

/// Mean and reciprocal standard deviation of one row.
#[inline]
fn statistics(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_rows(storage, layout, self.name(), last_dim(layout), |src, out| {
            let (mean, rstd) = statistics(src, self.eps);
            for (y, &v) in out.iter_mut().zip(src) {
                *y = (v - mean) * rstd;
            }
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{map, per_row, Module, Scalar};
        let (cols, total) = (last_dim(layout), layout.shape().elem_count());
        let config = per_row(total / cols.max(1), cols)?;
        let scalars = [Scalar::count(cols)?, Scalar::F32(self.eps)];
        let out = map(Module::LayerNorm, "layer_norm_forward", &[(storage, layout)], total, config, &scalars)?;
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad_res.contiguous()?, &LayerNormGrad { eps: self.eps })?))
    }
}

/// `(x, g)` → `rstd · (g − mean(g) − x̂ · mean(g · x̂))`, row by row.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp2 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        map_row_pairs((s1, l1), (s2, l2), self.name(), last_dim(l1), |src, grad, out| {
            let (mean, rstd) = statistics(src, self.eps);
            let n = src.len() as f32;
            let grad_mean = grad.iter().sum::<f32>() / n;
            let dot_mean = src.iter().zip(grad).map(|(&v, &gv)| (v - mean) * rstd * gv).sum::<f32>() / n;
            for ((d, &v), &gv) in out.iter_mut().zip(src).zip(grad) {
                *d = rstd * (gv - grad_mean - (v - mean) * rstd * dot_mean);
            }
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{map, per_row, Module, Scalar};
        crate::same_shape(self.name(), l1, l2)?;
        let (cols, total) = (last_dim(l1), l1.shape().elem_count());
        let config = per_row(total / cols.max(1), cols)?;
        let scalars = [Scalar::count(cols)?, Scalar::F32(self.eps)];
        let out = map(Module::LayerNorm, "layer_norm_backward", &[(s1, l1), (s2, l2)], total, config, &scalars)?;
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_against;
    use candle_core::D;

    #[test]
    fn matches_composition() {
        let reference = |x: &candle_core::Tensor| {
            let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1).unwrap()).unwrap();
            let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            centred.broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap()).unwrap()
        };
        check_against((4, 300, 96), |x| super::layer_norm(x, 1e-6, crate::Pass::Training).unwrap(), reference);
    }
}
