//! Sums over the middle axis of `(outer, middle, inner)` data — the reductions behind the
//! gradients of broadcast adds and products (candle reduces over a non-last axis element by
//! element, with an index division each).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{contiguous_slice, output};

/// Columns per work unit when there is a single outer index.
const COLUMN_BLOCK: usize = 64;

/// `out[o, i] = Σ_m a[o, m, i] · b[o, m, i]` (or `Σ_m a[o, m, i]` without `b`), into a
/// buffer of `outer · inner`.
fn sum_middle(a: &[f32], b: Option<&[f32]>, outer: usize, middle: usize, inner: usize) -> CpuStorage {
    let chunk = if outer > 1 { inner } else { COLUMN_BLOCK.min(inner.max(1)) };
    let sums = output(outer * inner, chunk, |index, acc| {
        let first = index * chunk;
        let (o, i0) = (first / inner, first % inner);
        for m in 0..middle {
            let start = (o * middle + m) * inner + i0;
            let row_a = &a[start..start + acc.len()];
            match b {
                Some(b) => {
                    let row_b = &b[start..start + acc.len()];
                    for ((s, &x), &y) in acc.iter_mut().zip(row_a).zip(row_b) {
                        *s += x * y;
                    }
                }
                None => {
                    for (s, &x) in acc.iter_mut().zip(row_a) {
                        *s += x;
                    }
                }
            }
        }
    });
    CpuStorage::F32(sums)
}

/// Splits a shape into `(outer, middle, inner)` around axis `axis`.
fn split(shape: &Shape, axis: usize) -> (usize, usize, usize) {
    let dims = shape.dims();
    (dims[..axis].iter().product(), dims[axis], dims[axis + 1..].iter().product())
}

/// Sums `a` over axis 1 of a rank-3 tensor, `(N, L, D)` → `(N, D)`; or over every leading
/// axis of any tensor into its last one, `(.., D)` → `(D)`.
pub(crate) struct SumMiddle {
    /// Keep `N` (rank-3 input, sum over axis 1) instead of summing every leading axis.
    pub per_sample: bool,
}

impl SumMiddle {
    fn shapes(&self, shape: &Shape) -> ((usize, usize, usize), Shape) {
        let dims = shape.dims();
        let last = *dims.last().unwrap_or(&1);
        if self.per_sample {
            (split(shape, 1), Shape::from((dims[0], last)))
        } else {
            ((1, shape.elem_count() / last.max(1), last), Shape::from(last))
        }
    }
}

impl CustomOp1 for SumMiddle {
    fn name(&self) -> &'static str {
        "sum-middle"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let a = contiguous_slice(storage, layout, self.name())?;
        let ((outer, middle, inner), shape) = self.shapes(layout.shape());
        Ok((sum_middle(a, None, outer, middle, inner), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{map, over_middle, Module, Scalar};
        let ((outer, middle, inner), shape) = self.shapes(layout.shape());
        let config = over_middle(outer, inner)?;
        let scalars = [Scalar::count(middle)?, Scalar::count(inner)?];
        let out = map(Module::Tokens, "sum_middle", &[(storage, layout)], outer * inner, config, &scalars)?;
        Ok((out, shape))
    }
}

/// `Σ_L a·b` per sample: `(N, L, D)`, `(N, L, D)` → `(N, D)`.
pub(crate) struct DotOverTokens;

impl CustomOp2 for DotOverTokens {
    fn name(&self) -> &'static str {
        "dot-over-tokens"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        crate::same_shape(self.name(), l1, l2)?;
        let a = contiguous_slice(s1, l1, self.name())?;
        let b = contiguous_slice(s2, l2, self.name())?;
        let (outer, middle, inner) = split(l1.shape(), 1);
        Ok((sum_middle(a, Some(b), outer, middle, inner), Shape::from((outer, inner))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        use crate::cuda::{map, over_middle, Module, Scalar};
        crate::same_shape(self.name(), l1, l2)?;
        let (outer, middle, inner) = split(l1.shape(), 1);
        let config = over_middle(outer, inner)?;
        let scalars = [Scalar::count(middle)?, Scalar::count(inner)?];
        let out = map(Module::Tokens, "dot_middle", &[(s1, l1), (s2, l2)], outer * inner, config, &scalars)?;
        Ok((out, Shape::from((outer, inner))))
    }
}

/// `(N, L, D)` → `(N, D)`, summing over tokens.
pub(crate) fn sum_tokens(a: &Tensor) -> candle_core::Result<Tensor> {
    a.contiguous()?.apply_op1_no_bwd(&SumMiddle { per_sample: true })
}

/// `(.., D)` → `(D)`, summing over every leading axis.
pub(crate) fn sum_leading(a: &Tensor) -> candle_core::Result<Tensor> {
    a.contiguous()?.apply_op1_no_bwd(&SumMiddle { per_sample: false })
}

/// `(N, L, D)`, `(N, L, D)` → `(N, D)`: `Σ_L a·b`.
pub(crate) fn dot_tokens(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &DotOverTokens)
}

#[cfg(test)]
mod tests {
    use candle_core::Tensor;
    use maskdit_testkit::{relative_l2, SeededTensors};

    #[test]
    fn sums_match_candle() {
        let mut draw = SeededTensors::new(1);
        let a = draw.normal(0.0, 1.0, (3, 50, 130));
        let b = draw.normal(0.0, 1.0, (3, 50, 130));
        let err = |x: Tensor, y: Tensor| relative_l2(&x, &y);
        assert!(err(super::sum_tokens(&a).unwrap(), a.sum(1).unwrap()) < 1e-6);
        assert!(err(super::sum_leading(&a).unwrap(), a.sum((0, 1)).unwrap()) < 1e-6);
        assert!(err(super::dot_tokens(&a, &b).unwrap(), (&a * &b).unwrap().sum(1).unwrap()) < 1e-6);
    }
}
