//! GELU with the tanh approximation, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{contiguous_slice, fused_applies, output};

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const KAPPA: f32 = 0.044_715;
/// Elements per work unit.
const CHUNK: usize = 4096;

/// tanh through one exponential: within a few 1e-7 of it, and ±1 at the extremes.
#[inline(always)]
fn tanh(u: f32) -> f32 {
    1.0 - 2.0 / (super::fast_exp::exp(2.0 * u) + 1.0)
}

#[inline]
fn inner(x: f32) -> f32 {
    SQRT_2_OVER_PI * (x + KAPPA * x * x * x)
}

/// Tanh-approximated GELU; differentiable, and fused for f32 on the CPU.
pub fn gelu_tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    if fused_applies(x) {
        x.contiguous()?.apply_op1(GeluTanh)
    } else {
        x.gelu()
    }
}

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_slice(storage, layout, self.name())?;
        let out = output(x.len(), CHUNK, |index, chunk| {
            let src = &x[index * CHUNK..index * CHUNK + chunk.len()];
            for (y, &v) in chunk.iter_mut().zip(src) {
                *y = 0.5 * v * (1.0 + tanh(inner(v)));
            }
        });
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad_res.contiguous()?, &GeluTanhGrad)?))
    }
}

/// `(x, g)` → `g · gelu'(x)`.
struct GeluTanhGrad;

impl CustomOp2 for GeluTanhGrad {
    fn name(&self) -> &'static str {
        "gelu-tanh-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_slice(s1, l1, self.name())?;
        let g = contiguous_slice(s2, l2, self.name())?;
        let out = output(x.len(), CHUNK, |index, chunk| {
            let range = index * CHUNK..index * CHUNK + chunk.len();
            for ((d, &v), &gv) in chunk.iter_mut().zip(&x[range.clone()]).zip(&g[range]) {
                let t = tanh(inner(v));
                let slope = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * KAPPA * v * v);
                *d = gv * slope;
            }
        });
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_against;

    #[test]
    fn matches_candle_gelu() {
        check_against((3, 70, 130), |x| super::gelu_tanh(x).unwrap(), |x| x.gelu().unwrap());
    }
}
