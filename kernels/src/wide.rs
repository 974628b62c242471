//! Wider vector code for the kernels' loops where the CPU allows it.

/// Set by tests to take the plain path even where the CPU has AVX2.
#[cfg(test)]
static PLAIN_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Runs `f` compiled for AVX2 when the CPU has it, so the loops inlined into `f` vectorise
/// eight lanes wide instead of SSE2's four; otherwise runs `f` as it is. Both builds compute
/// the same values (no FMA contraction either way).
#[inline(always)]
pub(crate) fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(test)]
    let plain_only = PLAIN_ONLY.load(std::sync::atomic::Ordering::SeqCst);
    #[cfg(not(test))]
    let plain_only = false;
    #[cfg(target_arch = "x86_64")]
    {
        if !plain_only && std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { with_avx2(f) };
        }
    }
    let _ = plain_only;
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use candle_core::{Tensor, Var};
    use maskdit_testkit::SeededTensors;

    use super::PLAIN_ONLY;
    use crate as kernels;

    /// Values and gradients of every kernel on one input, as bit patterns.
    fn kernel_bits(x: &Var, shift: &Tensor, weight: &Tensor) -> Vec<Vec<u32>> {
        let t = x.as_tensor();
        let outputs = [
            kernels::gelu_tanh(t).unwrap(),
            kernels::layer_norm(t, 1e-6, kernels::Pass::Training).unwrap(),
            kernels::modulate(t, shift, shift).unwrap(),
            kernels::gated_residual(t, t, shift).unwrap(),
            kernels::attention(&t.narrow(2, 0, 96).unwrap().contiguous().unwrap(), 4, kernels::Pass::Training).unwrap(),
            kernels::linear(&t.flatten_to(1).unwrap(), weight, None).unwrap(),
        ];
        let mut bits = Vec::new();
        for out in outputs {
            let grad = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            for tensor in [&out, grad.get(t).unwrap()] {
                let values = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                bits.push(values.into_iter().map(f32::to_bits).collect());
            }
        }
        bits
    }

    #[test]
    fn avx2_and_plain_paths_agree_bit_for_bit() {
        let mut draw = SeededTensors::new(1);
        // Large enough that the kernels also run on candle's worker pool.
        let x = Var::from_tensor(&draw.normal(0.0, 1.5, (4, 64, 192))).unwrap();
        let shift = draw.normal(0.0, 0.5, (4, 192));
        let weight = draw.normal(0.0, 0.1, (96, 192));
        let wide = kernel_bits(&x, &shift, &weight);
        PLAIN_ONLY.store(true, Ordering::SeqCst);
        let plain = kernel_bits(&x, &shift, &weight);
        PLAIN_ONLY.store(false, Ordering::SeqCst);
        for (index, (a, b)) in wide.iter().zip(&plain).enumerate() {
            assert!(a == b, "output {index} differs between the AVX2 and the plain path");
        }
    }
}
