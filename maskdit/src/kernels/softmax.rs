//! Softmax over the last dimension.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, D};

use super::{fast_exp, fused_applies, last_dim, map_row_pairs, map_rows};

/// Softmax over the last dimension; differentiable, and fused for f32 on the CPU.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if fused_applies(x) {
        return x.contiguous()?.apply_op1(Softmax);
    }
    candle_nn::ops::softmax(x, D::Minus1)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_rows(storage, layout, self.name(), last_dim(layout), |src, out| {
            let max = src.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for (y, &v) in out.iter_mut().zip(src) {
                *y = fast_exp::exp(v - max);
            }
            let scale = 1.0 / out.iter().sum::<f32>();
            out.iter_mut().for_each(|y| *y *= scale);
        })
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(&grad_res.contiguous()?, &SoftmaxGrad)?))
    }
}

/// `(y, g)` → `y · (g − Σ g·y)`, row by row.
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        map_row_pairs((s1, l1), (s2, l2), self.name(), last_dim(l1), |probs, grad, out| {
            let dot = probs.iter().zip(grad).map(|(&p, &gv)| p * gv).sum::<f32>();
            for ((d, &p), &gv) in out.iter_mut().zip(probs).zip(grad) {
                *d = p * (gv - dot);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::check_against;

    #[test]
    fn matches_candle_softmax() {
        check_against(
            (5, 64, 77),
            |x| super::softmax_last_dim(x).unwrap(),
            |x| candle_nn::ops::softmax(x, candle_core::D::Minus1).unwrap(),
        );
    }
}
