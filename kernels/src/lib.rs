//! MaskDiT's operations, each with every implementation it has side by side: tanh-GELU, layer
//! norm, adaLN modulation, gated residuals, the linear layer, multi-head attention, and
//! the optimiser's and EMA's updates ([`updates`]).
//!
//! [`Backend::of`] alone decides which implementation runs. For f32 on the CPU each operation is
//! a candle custom op whose forward pass is one sweep over the data, spread over candle's CPU
//! worker pool, and whose backward pass is another fused op. On CUDA, with the toolkit's kernels
//! switched on ([`CUDA_KERNELS_VARIABLE`]), the same custom ops run the kernels of
//! `kernels/cuda/` for f32 and bf16. Otherwise layer norm and attention's softmax use candle's
//! fused kernels (with a backward pass attached when a [`Pass::Training`] needs one), the rest
//! compositions of candle ops. [`memory_pool`] keeps the CUDA device's memory between steps.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod attached;
mod attention;
mod backend;
#[cfg(feature = "cuda")]
mod cuda;
mod fast_exp;
mod gelu;
mod layer_norm;
mod linear;
pub mod memory_pool;
mod modulation;
mod product;
mod reduce;
pub mod updates;
mod wide;

pub use attention::{attention, CUDA_MAX_HEAD_DIM};
pub use backend::{Backend, Pass, CUDA_KERNELS_VARIABLE};
pub use gelu::gelu_tanh;
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use modulation::{gated_residual, modulate};

use candle_core::{bail, CpuStorage, Layout};

use wide::wide;

/// Below this many elements a kernel runs on the calling thread only.
const PARALLEL_MIN_ELEMENTS: usize = 32 * 1024;

/// The f32 elements of a contiguous CPU tensor.
pub(crate) fn contiguous_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{op} expects a contiguous tensor"),
    }
}

/// Fills `out` chunk by chunk (`chunk_len` elements each, the last one possibly shorter) with
/// `fill(chunk_index, chunk)`, on candle's CPU worker pool when `out` is large.
pub(crate) fn fill_chunks<T: Send>(out: &mut [T], chunk_len: usize, fill: impl Fn(usize, &mut [T]) + Sync) {
    let chunk_len = chunk_len.max(1);
    let total = out.len();
    let base = SharedMut(out.as_mut_ptr());
    // The one place `fill` is called, so that it is inlined into the vectorised loop.
    let fill_range = |range: std::ops::Range<usize>| {
        let start = range.start * chunk_len;
        let end = (range.end * chunk_len).min(total);
        // SAFETY: callers pass disjoint ranges of chunk indices (all of them, or those
        // `execute_chunked` hands out), so `start..end` is in bounds of `out`, touched by no
        // other task, and `out` outlives the call.
        let part = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
        wide(|| {
            for (offset, chunk) in part.chunks_mut(chunk_len).enumerate() {
                fill(range.start + offset, chunk);
            }
        });
    };
    let chunks = total.div_ceil(chunk_len);
    if total < PARALLEL_MIN_ELEMENTS {
        fill_range(0..chunks);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(chunks, fill_range);
    }
}

/// A raw pointer that worker threads may share, each writing a disjoint part of its memory.
pub(crate) struct SharedMut<T = f32>(pub(crate) *mut T);

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedMut<T> {}

// SAFETY: a `SharedMut` is only created over a buffer that outlives the parallel section it is
// used in, and every user writes through it to parts no other task touches.
unsafe impl<T: Send> Send for SharedMut<T> {}
// SAFETY: as for `Send`: no two tasks access the same elements.
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer (a method, so that closures capture the whole `Sync` wrapper).
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

/// Refuses two operands of different shapes.
fn same_shape(op: &str, l1: &Layout, l2: &Layout) -> candle_core::Result<()> {
    if l1.shape() != l2.shape() {
        bail!("{op}: shapes {:?} and {:?} differ", l1.shape(), l2.shape());
    }
    Ok(())
}

/// Width of the last dimension of `layout`'s shape (1 for a scalar).
fn last_dim(layout: &Layout) -> usize {
    layout.shape().dims().last().copied().unwrap_or(1)
}

/// A new tensor of the input's shape whose every `row_len`-element row (the last one possibly
/// shorter) is `f(input_row, output_row)`; the input must be contiguous f32.
fn map_rows(
    storage: &CpuStorage,
    layout: &Layout,
    op: &str,
    row_len: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) -> candle_core::Result<(CpuStorage, candle_core::Shape)> {
    let x = contiguous_slice(storage, layout, op)?;
    let out = output(x.len(), row_len, |row, out| f(&x[row * row_len..row * row_len + out.len()], out));
    Ok((CpuStorage::F32(out), layout.shape().clone()))
}

/// As [`map_rows`] for two contiguous f32 tensors of one shape: `f(a_row, b_row, output_row)`.
fn map_row_pairs(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    op: &str,
    row_len: usize,
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) -> candle_core::Result<(CpuStorage, candle_core::Shape)> {
    same_shape(op, l1, l2)?;
    let (a, b) = (contiguous_slice(s1, l1, op)?, contiguous_slice(s2, l2, op)?);
    let out = output(a.len(), row_len, |row, out| {
        let range = row * row_len..row * row_len + out.len();
        f(&a[range.clone()], &b[range], out)
    });
    Ok((CpuStorage::F32(out), l1.shape().clone()))
}

/// Output buffer of `len` f32 elements, filled by `fill(chunk_index, chunk)` as in
/// [`fill_chunks`]; each chunk is zeroed just before, by the thread that fills it.
fn output(len: usize, chunk_len: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill_chunks(&mut out.spare_capacity_mut()[..len], chunk_len, |index, chunk| {
        chunk.fill(std::mem::MaybeUninit::new(0.0));
        // SAFETY: every element of `chunk` was initialised just above.
        let chunk = unsafe { std::slice::from_raw_parts_mut(chunk.as_mut_ptr().cast::<f32>(), chunk.len()) };
        fill(index, chunk);
    });
    // SAFETY: the chunks cover `0..len`, and each was initialised.
    unsafe { out.set_len(len) };
    out
}

#[cfg(test)]
mod tests {
    use candle_core::{Tensor, Var};
    use maskdit_testkit::{relative_l2, SeededTensors};

    /// Compares a fused op with a reference composition: values and gradients of
    /// `sum(op(x) * weights)`.
    pub(super) fn check_against(
        shape: (usize, usize, usize),
        fused: impl Fn(&Tensor) -> Tensor,
        reference: impl Fn(&Tensor) -> Tensor,
    ) {
        let mut draw = SeededTensors::new(shape.0 as u64 * 1_000_003 + shape.1 as u64 * 1_009 + shape.2 as u64);
        let x = Var::from_tensor(&draw.normal(0.0, 2.0, shape)).unwrap();
        let weights = draw.normal(0.0, 1.0, shape);
        let grad_of = |f: &dyn Fn(&Tensor) -> Tensor| {
            let y = f(x.as_tensor());
            let loss = (&y * &weights).unwrap().sum_all().unwrap();
            (y, loss.backward().unwrap().get(x.as_tensor()).unwrap().clone())
        };
        let (y_fused, g_fused) = grad_of(&fused);
        let (y_ref, g_ref) = grad_of(&reference);
        let (forward, gradient) = (relative_l2(&y_fused, &y_ref), relative_l2(&g_fused, &g_ref));
        assert!(forward < 1e-6, "forward {forward:e}");
        assert!(gradient < 1e-5, "gradient {gradient:e}");
    }
}
