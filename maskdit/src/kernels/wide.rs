//! Wider vector code for the kernels' loops where the CPU allows it.

/// Runs `f` compiled for AVX2 when the CPU has it, so the loops inlined into `f` vectorise
/// eight lanes wide instead of SSE2's four; otherwise runs `f` as it is. Both builds compute
/// the same values (no FMA contraction either way).
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
