//! The one place that decides which implementation of an operation runs, from its operands'
//! device and dtype, from whether the pass must backpropagate, and from the switch of the CUDA
//! kernels.

use std::sync::OnceLock;

use candle_core::{DType, Tensor};

/// The environment variable that switches the toolkit's CUDA kernels on (`1`). They are off by
/// default until the GPU parity suite has passed them on a GPU; builds without the `cuda`
/// feature ignore it.
pub const CUDA_KERNELS_VARIABLE: &str = "MASKDIT_CUDA_KERNELS";

/// The implementation an operation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The toolkit's fused f32 kernels on the CPU (forward and backward passes, in-place updates).
    CpuF32,
    /// The toolkit's CUDA kernels (`kernels/cuda/`) for f32 and bf16 tensors on one CUDA device:
    /// layer norm, modulation, gated residuals, tanh-GELU and the linear layer's bias (after
    /// cuBLAS's product) with their backward passes, the optimiser's and EMA's in-place updates
    /// of f32 tensors, and attention's forward pass for bf16 inference (training attention takes
    /// candle's kernels).
    Cuda,
    /// candle's own kernels: its fused softmax and layer norm (with a backward pass attached when
    /// training) and compositions of its operations for the rest; any device and dtype.
    Candle,
}

impl Backend {
    /// The backend for an operation on `operands`: the fused CPU kernels when every operand is f32
    /// on the CPU, the CUDA kernels when they are switched on ([`Backend::cuda_kernels_enabled`])
    /// and every operand is f32, or every one bf16, on a CUDA device, candle's kernels otherwise.
    pub fn of(operands: &[&Tensor]) -> Self {
        if operands.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32) {
            return Self::CpuF32;
        }
        let Some(first) = operands.first() else { return Self::Candle };
        let dtype = first.dtype();
        let on_cuda = operands.iter().all(|t| t.device().is_cuda() && t.dtype() == dtype);
        if Self::cuda_kernels_enabled() && on_cuda && matches!(dtype, DType::F32 | DType::BF16) {
            Self::Cuda
        } else {
            Self::Candle
        }
    }

    /// The backend for an in-place update of `operands`, which must also be contiguous (and, on
    /// CUDA, f32) for the fused kernels to rewrite them.
    pub fn in_place(operands: &[&Tensor]) -> Self {
        let contiguous = operands.iter().all(|t| t.is_contiguous());
        match Self::of(operands) {
            Self::CpuF32 if contiguous => Self::CpuF32,
            Self::Cuda if contiguous && operands.iter().all(|t| t.dtype() == DType::F32) => Self::Cuda,
            _ => Self::Candle,
        }
    }

    /// Whether the CUDA kernels run: built with the `cuda` feature and switched on by
    /// `MASKDIT_CUDA_KERNELS=1` (read once, at the first call).
    pub fn cuda_kernels_enabled() -> bool {
        static ENABLED: OnceLock<bool> = OnceLock::new();
        cfg!(feature = "cuda")
            && *ENABLED.get_or_init(|| std::env::var(CUDA_KERNELS_VARIABLE).is_ok_and(|value| value.trim() == "1"))
    }
}

/// What a forward pass is for, which decides whether its operations must backpropagate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// No gradients: candle's fused softmax and layer norm run as they are.
    Inference,
    /// Every operation backpropagates.
    Training,
}

#[cfg(test)]
mod tests {
    use super::Backend;
    use candle_core::{DType, Device, Tensor};

    #[test]
    fn f32_on_the_cpu_takes_the_fused_kernels_and_anything_else_candle() {
        let f32 = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let bf16 = f32.to_dtype(DType::BF16).unwrap();
        assert_eq!(Backend::of(&[&f32, &f32]), Backend::CpuF32);
        assert_eq!(Backend::of(&[&bf16]), Backend::Candle);
        assert_eq!(Backend::of(&[&f32, &bf16]), Backend::Candle);
        assert_eq!(Backend::in_place(&[&f32, &f32.t().unwrap()]), Backend::Candle, "a strided target");
        if !cfg!(feature = "cuda") {
            assert!(!Backend::cuda_kernels_enabled(), "a build without the cuda feature has no CUDA kernels");
        }
    }
}
