//! The one place that decides which implementation of an operation runs, from its operands'
//! device and dtype and from whether the pass must backpropagate.

use candle_core::{DType, Tensor};

/// The implementation an operation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The toolkit's fused f32 kernels on the CPU (forward and backward passes, in-place updates).
    CpuF32,
    /// candle's own kernels: its fused softmax and layer norm (with a backward pass attached when
    /// training) and compositions of its operations for the rest; any device and dtype.
    Candle,
}

impl Backend {
    /// The backend for an operation on `operands`: the fused CPU kernels when every operand is f32
    /// on the CPU, candle's kernels otherwise.
    pub fn of(operands: &[&Tensor]) -> Self {
        if operands.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32) {
            Self::CpuF32
        } else {
            Self::Candle
        }
    }

    /// The backend for an in-place update of `operands`, which must also be contiguous for the
    /// fused kernels to rewrite them.
    pub fn in_place(operands: &[&Tensor]) -> Self {
        match Self::of(operands) {
            Self::CpuF32 if operands.iter().all(|t| t.is_contiguous()) => Self::CpuF32,
            _ => Self::Candle,
        }
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
