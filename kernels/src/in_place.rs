//! In-place, single-sweep CPU updates for the optimiser and the EMA (f32): each rewrites a
//! tensor's storage instead of building it anew from a chain of whole-tensor operations.

use candle_core::{bail, CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor};

use crate::{contiguous_slice, fill_chunks};

/// Elements per work unit.
const CHUNK: usize = 16 * 1024;

/// Whether the in-place updates handle these tensors (f32, on the CPU, contiguous).
pub fn applies(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous())
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
pub enum Average {
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
}

/// The AdamW parameter update from already-updated moments `(m, v)`, in PyTorch's order:
/// `p ← p·(1 − lr·wd) − (lr / c₁) · m / (√v / √c₂ + eps)`.
pub struct AdamWUpdate {
    /// Learning rate.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// `1 − β₁ᵗ`.
    pub correction1: f64,
    /// `1 − β₂ᵗ`.
    pub correction2: f64,
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
