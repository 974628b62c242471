//! The optimiser's and the EMA's updates of one tensor. For f32 on the CPU each is a
//! single in-place sweep that rewrites the tensor's storage; with the CUDA kernels one launch
//! rewrites a parameter and both its moments (and one more the EMA); elsewhere a chain of
//! candle operations builds the new tensor.

use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor, Var};

use crate::{contiguous_slice, fill_chunks, Backend};

/// Elements per work unit.
const CHUNK: usize = 16 * 1024;

/// One AdamW step's hyper-parameters (PyTorch's semantics: decoupled weight decay,
/// bias-corrected moments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// The step's number, counting from 1 (for the bias corrections).
    pub step: u64,
}

/// One AdamW step of `param` from `grad`, with its moments `first` and `second` (which it
/// updates): `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`,
/// `p ← p·(1 − lr·wd) − (lr / c₁) · m / (√v / √c₂ + eps)` with `cᵢ = 1 − βᵢᵗ`.
pub fn adamw(
    param: &Var,
    grad: &Tensor,
    first: &mut Tensor,
    second: &mut Tensor,
    hyper: &AdamWStep,
) -> candle_core::Result<()> {
    let grad = &grad.contiguous()?;
    let t = i32::try_from(hyper.step).unwrap_or(i32::MAX);
    let correction1 = 1.0 - hyper.beta1.powi(t);
    let correction2 = 1.0 - hyper.beta2.powi(t);
    match Backend::in_place(&[param.as_tensor(), grad, first, second]) {
        Backend::CpuF32 => {
            first.inplace_op2(grad, &Average::Lerp { decay: hyper.beta1 })?;
            second.inplace_op2(grad, &Average::Squares { decay: hyper.beta2 })?;
            let update = AdamWUpdate {
                lr: hyper.lr,
                weight_decay: hyper.weight_decay,
                eps: hyper.eps,
                correction1,
                correction2,
            };
            param.as_tensor().inplace_op3(first, second, &update)
        }
        Backend::Cuda => {
            let update = FusedAdamW {
                grad: grad.clone(),
                first_weight: (1.0 - hyper.beta1) as f32,
                second_keep: hyper.beta2 as f32,
                second_weight: (1.0 - hyper.beta2) as f32,
                decay: (1.0 - hyper.lr * hyper.weight_decay) as f32,
                decays: hyper.weight_decay > 0.0,
                step_size: (hyper.lr / correction1) as f32,
                correction2_sqrt: correction2.sqrt() as f32,
                eps: hyper.eps as f32,
            };
            param.as_tensor().inplace_op3(first, second, &update)
        }
        Backend::Candle => {
            let m = ((&*first * hyper.beta1)? + (grad * (1.0 - hyper.beta1))?)?;
            let v = ((&*second * hyper.beta2)? + (grad.sqr()? * (1.0 - hyper.beta2))?)?;
            let denom = ((&v / correction2)?.sqrt()? + hyper.eps)?;
            let update = ((&m / correction1)? / denom)?;
            let decayed = if hyper.weight_decay > 0.0 {
                (param.as_tensor() * (1.0 - hyper.lr * hyper.weight_decay))?
            } else {
                param.as_tensor().clone()
            };
            param.set(&(decayed - (update * hyper.lr)?)?)?;
            *first = m;
            *second = v;
            Ok(())
        }
    }
}

/// `average ← decay·average + (1 − decay)·value`, detached from any gradient graph.
pub fn ema(average: &mut Tensor, value: &Tensor, decay: f64) -> candle_core::Result<()> {
    match Backend::in_place(&[average, value]) {
        Backend::CpuF32 | Backend::Cuda => average.inplace_op2(value, &Average::Values { decay }),
        Backend::Candle => {
            *average = ((&*average * decay)? + (value.detach() * (1.0 - decay))?)?.detach();
            Ok(())
        }
    }
}

/// The writable, contiguous f32 elements of a storage.
fn slice_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout, op: &str) -> candle_core::Result<&'a mut [f32]> {
    let (start, end) = match layout.contiguous_offsets() {
        Some(range) => range,
        None => bail!("{op} expects a contiguous tensor"),
    };
    match storage {
        CpuStorage::F32(data) => Ok(&mut data[start..end]),
        _ => bail!("{op} expects f32"),
    }
}

/// A running average of `src` kept in `dst`.
#[derive(Debug, Clone, Copy)]
enum Average {
    /// `dst ← dst + (1 − decay)·(src − dst)` (PyTorch's `lerp_`, Adam's first moment).
    Lerp {
        /// Weight kept of the old average.
        decay: f64,
    },
    /// `dst ← decay·dst + (1 − decay)·src²` (Adam's second moment).
    Squares {
        /// Weight kept of the old average.
        decay: f64,
    },
    /// `dst ← decay·dst + (1 − decay)·src` (the EMA of the weights).
    Values {
        /// Weight kept of the old average.
        decay: f64,
    },
}

impl InplaceOp2 for Average {
    fn name(&self) -> &'static str {
        "average-in-place"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let src = contiguous_slice(s2, l2, self.name())?;
        let dst = slice_mut(s1, l1, self.name())?;
        if dst.len() != src.len() {
            bail!("{}: {} and {} elements", self.name(), dst.len(), src.len());
        }
        let kind = *self;
        fill_chunks(dst, CHUNK, |index, chunk| {
            let src = &src[index * CHUNK..index * CHUNK + chunk.len()];
            match kind {
                Self::Lerp { decay } => {
                    let weight = (1.0 - decay) as f32;
                    chunk.iter_mut().zip(src).for_each(|(d, &g)| *d += weight * (g - *d));
                }
                Self::Squares { decay } => {
                    let (keep, take) = (decay as f32, (1.0 - decay) as f32);
                    chunk.iter_mut().zip(src).for_each(|(d, &g)| *d = *d * keep + take * g * g);
                }
                Self::Values { decay } => {
                    let (keep, take) = (decay as f32, (1.0 - decay) as f32);
                    chunk.iter_mut().zip(src).for_each(|(d, &g)| *d = *d * keep + take * g);
                }
            }
        });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        use crate::cuda::{update, Module, Scalar};
        // The kernel's `kind`: 0 values, 1 squares, 2 lerp, with the CPU's f32 weights.
        let (keep, take, kind) = match *self {
            Self::Values { decay } => (decay as f32, (1.0 - decay) as f32, 0),
            Self::Squares { decay } => (decay as f32, (1.0 - decay) as f32, 1),
            Self::Lerp { decay } => (decay as f32, (1.0 - decay) as f32, 2),
        };
        let scalars = [Scalar::F32(keep), Scalar::F32(take), Scalar::I32(kind)];
        update(Module::Updates, "running_average_f32", (s1, l1), &[(s2, l2)], &scalars)
    }
}

/// The AdamW parameter update from already-updated moments `(m, v)`, in PyTorch's order:
/// `p ← p·(1 − lr·wd) − (lr / c₁) · m / (√v / √c₂ + eps)`.
struct AdamWUpdate {
    /// Learning rate.
    lr: f64,
    /// Decoupled weight decay.
    weight_decay: f64,
    /// Denominator epsilon.
    eps: f64,
    /// `1 − β₁ᵗ`.
    correction1: f64,
    /// `1 − β₂ᵗ`.
    correction2: f64,
}

impl InplaceOp3 for AdamWUpdate {
    fn name(&self) -> &'static str {
        "adamw-in-place"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let m = contiguous_slice(s2, l2, self.name())?;
        let v = contiguous_slice(s3, l3, self.name())?;
        let p = slice_mut(s1, l1, self.name())?;
        if p.len() != m.len() || p.len() != v.len() {
            bail!("{}: {}, {} and {} elements", self.name(), p.len(), m.len(), v.len());
        }
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let decays = self.weight_decay > 0.0;
        let step_size = (self.lr / self.correction1) as f32;
        let correction2_sqrt = self.correction2.sqrt() as f32;
        let eps = self.eps as f32;
        fill_chunks(p, CHUNK, |index, chunk| {
            let range = index * CHUNK..index * CHUNK + chunk.len();
            for ((w, &m), &v) in chunk.iter_mut().zip(&m[range.clone()]).zip(&v[range]) {
                let base = if decays { *w * decay } else { *w };
                *w = base - step_size * (m / (v.sqrt() / correction2_sqrt + eps));
            }
        });
        Ok(())
    }
}

/// One whole AdamW step on CUDA: the parameter (the in-place target) and both moments (the two
/// operands, rewritten by the same launch) from the gradient, with the CPU update's arithmetic.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct FusedAdamW {
    /// The gradient, read by the kernel.
    grad: Tensor,
    /// `1 − β₁`.
    first_weight: f32,
    /// `β₂`.
    second_keep: f32,
    /// `1 − β₂`.
    second_weight: f32,
    /// `1 − lr·wd`.
    decay: f32,
    /// Whether weight decay applies.
    decays: bool,
    /// `lr / c₁`.
    step_size: f32,
    /// `√c₂`.
    correction2_sqrt: f32,
    /// Denominator epsilon.
    eps: f32,
}

impl InplaceOp3 for FusedAdamW {
    fn name(&self) -> &'static str {
        "adamw-fused-in-place"
    }

    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<()> {
        bail!("{} runs on CUDA only (the CPU updates the moments first, then AdamWUpdate)", self.name())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        use crate::cuda::{update, Module, Scalar};
        let (grad_storage, grad_layout) = self.grad.storage_and_layout();
        let candle_core::Storage::Cuda(grad) = &*grad_storage else {
            bail!("{}: the gradient is not on the GPU", self.name())
        };
        let scalars = [
            Scalar::F32(self.first_weight),
            Scalar::F32(self.second_keep),
            Scalar::F32(self.second_weight),
            Scalar::F32(self.decay),
            Scalar::I32(i32::from(self.decays)),
            Scalar::F32(self.step_size),
            Scalar::F32(self.correction2_sqrt),
            Scalar::F32(self.eps),
        ];
        update(Module::Updates, "adamw_f32", (s1, l1), &[(s2, l2), (s3, l3), (grad, grad_layout)], &scalars)
    }
}
