//! The linear layer's `x · Wᵀ + b` as one GEMM (the bias is the GEMM's initial destination),
//! with a backward pass that produces the weight gradient directly in the weight's `(out, in)`
//! layout (candle's generic path goes through a transposed view whose gradient is zero-filled
//! and added back strided) and the bias gradient as a column sum.

use super::product::{product, Operand, Threads};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::reduce::sum_leading;
use super::{contiguous_slice, output, Backend};

/// `x · weightᵀ (+ bias)` for `x` `(rows, in)`, `weight` `(out, in)` and `bias` `(out)`;
/// differentiable.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let operands: &[&Tensor] = match bias {
        Some(bias) => &[x, weight, bias],
        None => &[x, weight],
    };
    match (Backend::of(operands), bias) {
        (Backend::CpuF32 | Backend::Cuda, Some(bias)) => {
            x.contiguous()?.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LinearWithBias)
        }
        (Backend::CpuF32, None) => x.contiguous()?.apply_op2(&weight.contiguous()?, MatmulTransposed),
        (Backend::Candle, Some(bias)) => x.matmul(&weight.t()?)?.broadcast_add(bias),
        (Backend::Candle | Backend::Cuda, None) => x.matmul(&weight.t()?),
    }
}

/// `(rows, out)` of `x · weightᵀ` for `x` `(rows, in)` and `weight` `(out, in)`.
fn product_dims(name: &str, x: &Layout, weight: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (rows, inner) = x.shape().dims2()?;
    let (out, weight_inner) = weight.shape().dims2()?;
    if inner != weight_inner {
        bail!("{name}: input {:?} against weight {:?}", x.shape(), weight.shape());
    }
    Ok((rows, out, inner))
}

/// The gradients of `x · weightᵀ` with respect to `x` and `weight`.
fn product_grads(x: &Tensor, weight: &Tensor, grad: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    // Detached operands: gradients that recorded these products would hold the activations
    // and every earlier gradient alive until the optimiser step.
    let (x, weight, grad) = (x.detach(), weight.detach(), grad.detach());
    Ok((grad.matmul(&weight)?, grad.t()?.matmul(&x)?))
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
        let (rows, out, inner) = product_dims(self.name(), l1, l2)?;
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
        let (grad_x, grad_weight) = product_grads(x, weight, grad)?;
        Ok((Some(grad_x), Some(grad_weight)))
    }
}

struct LinearWithBias;

impl CustomOp3 for LinearWithBias {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, out, inner) = product_dims(self.name(), l1, l2)?;
        let x = contiguous_slice(s1, l1, self.name())?;
        let weight = contiguous_slice(s2, l2, self.name())?;
        let bias = contiguous_slice(s3, l3, self.name())?;
        if bias.len() != out {
            bail!("{}: bias {:?} for weight {:?}", self.name(), l3.shape(), l2.shape());
        }
        // Each row starts as the bias, laid out on the worker pool.
        let mut dst = output(rows * out, out, |_, row| row.copy_from_slice(bias));
        // SAFETY: dst is (rows, out) row-major, x (rows, inner) row-major, and weightᵀ is the
        // (inner, out) view of the row-major (out, inner) weight; all live across the call.
        unsafe {
            product(
                (rows, out, inner),
                Operand { ptr: dst.as_mut_ptr(), strides: (out, 1) },
                true,
                Operand { ptr: x.as_ptr(), strides: (inner, 1) },
                Operand { ptr: weight.as_ptr(), strides: (1, inner) },
                1.0,
                Threads::All,
            );
        }
        Ok((CpuStorage::F32(dst), Shape::from((rows, out))))
    }

    /// cuBLAS's product (through candle's storage), then one kernel adds the bias.
    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{elementwise, map, Module, Scalar};
        let (rows, out, inner) = product_dims(self.name(), l1, l2)?;
        if l3.shape().elem_count() != out {
            bail!("{}: bias {:?} for weight {:?}", self.name(), l3.shape(), l2.shape());
        }
        let product = s1.matmul(s2, (1, rows, out, inner), l1, &l2.transpose(0, 1)?)?;
        let shape = Shape::from((rows, out));
        let product_layout = Layout::contiguous(&shape);
        let total = rows * out;
        let inputs = [(&product, &product_layout), (s3, l3)];
        let y = map(
            Module::Bias,
            "add_bias",
            &inputs,
            total,
            elementwise(total),
            &[Scalar::size(total), Scalar::size(out)],
        )?;
        Ok((y, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (grad_x, grad_weight) = product_grads(x, weight, grad)?;
        Ok((Some(grad_x), Some(grad_weight), Some(sum_leading(grad)?)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Tensor, Var};
    use maskdit_testkit::{relative_l2, SeededTensors};

    #[test]
    fn with_bias_matches_candle_matmul_and_broadcast_add() {
        let mut draw = SeededTensors::new(1);
        let x = Var::from_tensor(&draw.normal(0.0, 1.0, (70, 48))).unwrap();
        let w = Var::from_tensor(&draw.normal(0.0, 1.0, (96, 48))).unwrap();
        let b = Var::from_tensor(&draw.normal(0.0, 1.0, 96)).unwrap();
        let probe = draw.normal(0.0, 1.0, (70, 96));
        let run = |y: Tensor| {
            let grads = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            [y, grads.get(&x).unwrap().clone(), grads.get(&w).unwrap().clone(), grads.get(&b).unwrap().clone()]
        };
        let fused = run(super::linear(&x, &w, Some(&b)).unwrap());
        let reference = run(x.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap());
        for (a, b) in fused.iter().zip(&reference) {
            assert!(relative_l2(a, b) < 1e-6);
        }
    }

    #[test]
    fn matches_candle_matmul() {
        let mut draw = SeededTensors::new(2);
        let x = Var::from_tensor(&draw.normal(0.0, 1.0, (70, 48))).unwrap();
        let w = Var::from_tensor(&draw.normal(0.0, 1.0, (96, 48))).unwrap();
        let probe = draw.normal(0.0, 1.0, (70, 96));
        let run = |y: Tensor| {
            let grads = (&y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            [y, grads.get(&x).unwrap().clone(), grads.get(&w).unwrap().clone()]
        };
        let fused = run(super::linear(&x, &w, None).unwrap());
        let reference = run(x.matmul(&w.t().unwrap()).unwrap());
        for (a, b) in fused.iter().zip(&reference) {
            assert!(relative_l2(a, b) < 1e-6);
        }
    }

    /// Gradients that recorded their own computation would keep every activation and every
    /// earlier gradient alive until they are dropped (5 GB at DiT-XL/2 batch 2).
    #[test]
    fn gradients_record_no_graph() {
        let mut draw = SeededTensors::new(3);
        let x = Var::from_tensor(&draw.normal(0.0, 1.0, (70, 48))).unwrap();
        let w = Var::from_tensor(&draw.normal(0.0, 1.0, (96, 48))).unwrap();
        let hidden = super::linear(&x, &w, None).unwrap().exp().unwrap();
        let grads = super::linear(&hidden, &w.t().unwrap().contiguous().unwrap(), None)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(!grads.get(&x).unwrap().track_op(), "∂x records a graph");
        assert!(!grads.get(&w).unwrap().track_op(), "∂w records a graph");
    }
}
