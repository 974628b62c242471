//! The matrix product of a linear layer, `x · Wᵀ`, with a backward pass that produces the
//! weight gradient directly in the weight's `(out, in)` layout (candle's generic path goes
//! through a transposed view whose gradient is zero-filled and added back strided).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::fused_applies;

/// `x · weightᵀ` for `x` `(rows, in)` and `weight` `(out, in)`; differentiable.
pub fn matmul_transposed(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    if fused_applies(x) && fused_applies(weight) {
        return x.contiguous()?.apply_op2(&weight.contiguous()?, MatmulTransposed);
    }
    x.matmul(&weight.t()?)
}

struct MatmulTransposed;

impl CustomOp2 for MatmulTransposed {
    fn name(&self) -> &'static str {
        "matmul-transposed"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, inner) = l1.shape().dims2()?;
        let (out, weight_inner) = l2.shape().dims2()?;
        if inner != weight_inner {
            candle_core::bail!("{}: input {:?} against weight {:?}", self.name(), l1.shape(), l2.shape());
        }
        let product = s1.matmul(s2, (1, rows, out, inner), l1, &l2.transpose(0, 1)?)?;
        Ok((product, Shape::from((rows, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_x = grad.matmul(weight)?;
        let grad_weight = grad.t()?.matmul(x)?;
        Ok((Some(grad_x), Some(grad_weight)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    #[test]
    fn matches_candle_matmul() {
        let device = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (70, 48), &device).unwrap();
        let w = Var::randn(0f32, 1.0, (96, 48), &device).unwrap();
        let probe = Tensor::randn(0f32, 1.0, (70, 96), &device).unwrap();
        let run = |y: Tensor| {
            let grads = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            [y, grads.get(&x).unwrap().clone(), grads.get(&w).unwrap().clone()]
        };
        let fused = run(super::matmul_transposed(&x, &w).unwrap());
        let reference = run(x.matmul(&w.t().unwrap()).unwrap());
        for (a, b) in fused.iter().zip(&reference) {
            assert!(super::super::tests::relative_error(a, b) < 1e-6);
        }
    }
}
