//! Per-sample conditioning broadcast over tokens: adaLN modulation and gated residuals.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::reduce::{dot_tokens, sum_tokens};
use super::{contiguous_slice, output, Backend};

/// `x · (1 + scale) + shift` with `x` `(N, L, D)` and `shift`, `scale` `(N, D)`.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> candle_core::Result<Tensor> {
    match Backend::of(&[x, shift, scale]) {
        Backend::CpuF32 | Backend::Cuda => {
            x.contiguous()?.apply_op3(&shift.contiguous()?, &scale.contiguous()?, Modulate)
        }
        Backend::Candle => {
            let scale = (scale.unsqueeze(1)? + 1.0)?;
            x.broadcast_mul(&scale)?.broadcast_add(&shift.unsqueeze(1)?)
        }
    }
}

/// `x + h · gate` with `x`, `h` `(N, L, D)` and `gate` `(N, D)`.
pub fn gated_residual(x: &Tensor, h: &Tensor, gate: &Tensor) -> candle_core::Result<Tensor> {
    match Backend::of(&[x, h, gate]) {
        Backend::CpuF32 | Backend::Cuda => {
            x.contiguous()?.apply_op3(&h.contiguous()?, &gate.contiguous()?, GatedResidual)
        }
        Backend::Candle => x + h.broadcast_mul(&gate.unsqueeze(1)?)?,
    }
}

/// Checks `(N, L, D)` against `(N, D)` and returns `(N, L, D)`.
fn dims(name: &str, tokens: &Layout, per_sample: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (n, l, d) = tokens.shape().dims3()?;
    if per_sample.shape().dims() != [n, d] {
        candle_core::bail!("{name}: {:?} does not condition {:?}", per_sample.shape(), tokens.shape());
    }
    Ok((n, l, d))
}

struct Modulate;

impl CustomOp3 for Modulate {
    fn name(&self) -> &'static str {
        "modulate"
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
        let (_, l, d) = dims(self.name(), l1, l2)?;
        dims(self.name(), l1, l3)?;
        let x = contiguous_slice(s1, l1, self.name())?;
        let shift = contiguous_slice(s2, l2, self.name())?;
        let scale = contiguous_slice(s3, l3, self.name())?;
        let out = output(x.len(), d, |row, out| {
            let n = row / l;
            let (shift, scale) = (&shift[n * d..(n + 1) * d], &scale[n * d..(n + 1) * d]);
            let src = &x[row * d..(row + 1) * d];
            for (((y, &v), &a), &b) in out.iter_mut().zip(src).zip(scale).zip(shift) {
                *y = v * (1.0 + a) + b;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

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
        let (_, l, d) = dims(self.name(), l1, l2)?;
        dims(self.name(), l1, l3)?;
        let total = l1.shape().elem_count();
        let scalars = [Scalar::size(total), Scalar::size(l), Scalar::size(d)];
        let inputs = [(s1, l1), (s2, l2), (s3, l3)];
        let out = map(Module::Tokens, "modulate", &inputs, total, elementwise(total), &scalars)?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _shift: &Tensor,
        scale: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_x = scale_tokens(grad, scale, 1.0)?;
        Ok((Some(grad_x), Some(sum_tokens(grad)?), Some(dot_tokens(grad, x)?)))
    }
}

struct GatedResidual;

impl CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "gated-residual"
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
        crate::same_shape(self.name(), l1, l2)?;
        let (_, l, d) = dims(self.name(), l1, l3)?;
        let x = contiguous_slice(s1, l1, self.name())?;
        let h = contiguous_slice(s2, l2, self.name())?;
        let gate = contiguous_slice(s3, l3, self.name())?;
        let out = output(x.len(), d, |row, out| {
            let n = row / l;
            let gate = &gate[n * d..(n + 1) * d];
            let range = row * d..(row + 1) * d;
            for (((y, &v), &u), &g) in out.iter_mut().zip(&x[range.clone()]).zip(&h[range]).zip(gate) {
                *y = v + u * g;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

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
        crate::same_shape(self.name(), l1, l2)?;
        let (_, l, d) = dims(self.name(), l1, l3)?;
        let total = l1.shape().elem_count();
        let scalars = [Scalar::size(total), Scalar::size(l), Scalar::size(d)];
        let inputs = [(s1, l1), (s2, l2), (s3, l3)];
        let out = map(Module::Tokens, "gated_residual", &inputs, total, elementwise(total), &scalars)?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        h: &Tensor,
        gate: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad_h = scale_tokens(grad, gate, 0.0)?;
        Ok((Some(grad.clone()), Some(grad_h), Some(dot_tokens(grad, h)?)))
    }
}

/// `x · (s + offset)` with `x` `(N, L, D)` and `s` `(N, D)` broadcast over tokens; forms
/// gradients only, so it has no backward pass itself.
fn scale_tokens(x: &Tensor, s: &Tensor, offset: f32) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op2_no_bwd(&s.contiguous()?, &ScaleTokens { offset })
}

struct ScaleTokens {
    offset: f32,
}

impl CustomOp2 for ScaleTokens {
    fn name(&self) -> &'static str {
        "scale-tokens"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, l, d) = dims(self.name(), l1, l2)?;
        let x = contiguous_slice(s1, l1, self.name())?;
        let factors = contiguous_slice(s2, l2, self.name())?;
        let out = output(x.len(), d, |row, out| {
            let n = row / l;
            let factors = &factors[n * d..(n + 1) * d];
            for ((y, &v), &f) in out.iter_mut().zip(&x[row * d..(row + 1) * d]).zip(factors) {
                *y = v * (f + self.offset);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{elementwise, map, Module, Scalar};
        let (_, l, d) = dims(self.name(), l1, l2)?;
        let total = l1.shape().elem_count();
        let scalars = [Scalar::F32(self.offset), Scalar::size(total), Scalar::size(l), Scalar::size(d)];
        let out = map(Module::Tokens, "scale_tokens", &[(s1, l1), (s2, l2)], total, elementwise(total), &scalars)?;
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Tensor, Var};
    use maskdit_testkit::{relative_l2, SeededTensors};

    /// Values and gradients of `sum(f(a, b, c) · w)` for the fused op and the composition.
    fn check(
        fused: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
        reference: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
        second_per_token: bool,
    ) {
        let mut draw = SeededTensors::new(if second_per_token { 2 } else { 1 });
        let a = Var::from_tensor(&draw.normal(0.0, 1.0, (3, 41, 96))).unwrap();
        let b = if second_per_token { draw.normal(0.0, 1.0, (3, 41, 96)) } else { draw.normal(0.0, 1.0, (3, 96)) };
        let b = Var::from_tensor(&b).unwrap();
        let c = Var::from_tensor(&draw.normal(0.0, 1.0, (3, 96))).unwrap();
        let w = draw.normal(0.0, 1.0, (3, 41, 96));
        let run = |y: Tensor| {
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            [y, grads.get(&a).unwrap().clone(), grads.get(&b).unwrap().clone(), grads.get(&c).unwrap().clone()]
        };
        let got = run(fused(&a, &b, &c));
        let want = run(reference(&a, &b, &c));
        for (g, w) in got.iter().zip(&want) {
            assert!(relative_l2(g, w) < 1e-6);
        }
    }

    #[test]
    fn modulate_matches_composition() {
        check(
            |x, shift, scale| super::modulate(x, shift, scale).unwrap(),
            |x, shift, scale| {
                let scale = (scale.unsqueeze(1).unwrap() + 1.0).unwrap();
                x.broadcast_mul(&scale).unwrap().broadcast_add(&shift.unsqueeze(1).unwrap()).unwrap()
            },
            false,
        );
    }

    #[test]
    fn gated_residual_matches_composition() {
        check(
            |x, h, gate| super::gated_residual(x, h, gate).unwrap(),
            |x, h, gate| (x + h.broadcast_mul(&gate.unsqueeze(1).unwrap()).unwrap()).unwrap(),
            true,
        );
    }
}
