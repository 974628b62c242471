//! One entry to the `gemm` crate (the library candle's CPU backend uses) for the kernels that
//! run matrix products on strided views.

use gemm::Parallelism;

/// A matrix operand: its first element and `(row stride, column stride)` in elements.
pub(crate) struct Operand<P> {
    pub ptr: P,
    pub strides: (usize, usize),
}

/// How a product runs: on the calling thread only (inside a task of a worker pool), or on
/// candle's thread count.
#[derive(Clone, Copy)]
pub(crate) enum Threads {
    Calling,
    All,
}

/// `dst (m×n) = [dst +] beta · lhs (m×k) · rhs (k×n)`, adding to `dst`'s contents when
/// `accumulate`.
///
/// # Safety
/// Every pointer must address a matrix of its shape and strides that stays valid for the call;
/// `dst` must not overlap the operands or memory another thread writes.
pub(crate) unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: Operand<*mut f32>,
    accumulate: bool,
    lhs: Operand<*const f32>,
    rhs: Operand<*const f32>,
    beta: f32,
    threads: Threads,
) {
    let parallelism = match threads {
        Threads::All => match candle_core::utils::get_num_threads() {
            count if count > 1 => Parallelism::Rayon(count),
            _ => Parallelism::None,
        },
        Threads::Calling => Parallelism::None,
    };
    let alpha = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the caller guarantees the matrices' extents, validity and exclusivity.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.strides.1 as isize,
            dst.strides.0 as isize,
            accumulate,
            lhs.ptr,
            lhs.strides.1 as isize,
            lhs.strides.0 as isize,
            rhs.ptr,
            rhs.strides.1 as isize,
            rhs.strides.0 as isize,
            alpha,
            beta,
            false,
            false,
            false,
            parallelism,
        )
    }
}
