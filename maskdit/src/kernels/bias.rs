//! Adding a bias vector to every row.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::reduce::sum_leading;
use super::{contiguous_slice, fused_applies, output};

/// `x + bias` for `x` `(.., D)` and `bias` `(D)`; differentiable, fused for f32 on the CPU
/// (where the bias gradient is a column sum instead of candle's strided reduction).
pub fn add_bias(x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    if fused_applies(x) && fused_applies(bias) {
        return x.contiguous()?.apply_op2(&bias.contiguous()?, AddBias);
    }
    x.broadcast_add(bias)
}

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_slice(s1, l1, self.name())?;
        let bias = contiguous_slice(s2, l2, self.name())?;
        let width = bias.len();
        if l1.shape().dims().last() != Some(&width) {
            candle_core::bail!("{}: bias of {width} for input {:?}", self.name(), l1.shape());
        }
        let out = output(x.len(), width, |row, out| {
            for ((y, &v), &b) in out.iter_mut().zip(&x[row * width..(row + 1) * width]).zip(bias) {
                *y = v + b;
            }
        });
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.clone()), Some(sum_leading(grad)?)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    #[test]
    fn matches_broadcast_add() {
        let device = Device::Cpu;
        let x = Var::randn(0f32, 1.0, (4, 33, 70), &device).unwrap();
        let b = Var::randn(0f32, 1.0, 70, &device).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 33, 70), &device).unwrap();
        let run = |y: Tensor| {
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            (y, grads.get(&x).unwrap().clone(), grads.get(&b).unwrap().clone())
        };
        let fused = run(super::add_bias(&x, &b).unwrap());
        let reference = run(x.broadcast_add(&b).unwrap());
        let err = super::super::tests::relative_error;
        assert!(err(&fused.0, &reference.0) < 1e-6);
        assert!(err(&fused.1, &reference.1) < 1e-6);
        assert!(err(&fused.2, &reference.2) < 1e-6);
    }
}
