//! The two kernel families a forward pass can use: candle's fused inference kernels, or
//! differentiable compositions that backpropagate (candle's fused `softmax_last_dim` and
//! `layer_norm` have no backward pass and would silently stop gradients).

use candle_core::{DType, Module, Tensor, D};

use crate::Result;

/// Which implementation of layer norm, softmax and matrix products a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Inference: fused kernels, and on the CPU one matrix product per sample so that a
    /// sample's result never depends on the batch around it (GEMM summation order varies with
    /// the number of rows).
    Fused,
    /// Training: plain tensor ops that support backpropagation; batches folded into one
    /// matrix product.
    Differentiable,
}

/// Layer norm over the last dimension without affine parameters (eps 1e-6).
pub fn layer_norm(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    const EPS: f32 = 1e-6;
    if kernels == Kernels::Fused && !(x.device().is_cpu() && x.dtype() == DType::F32) {
        let width = x.dim(D::Minus1)?;
        let ones = Tensor::ones(width, x.dtype(), x.device())?;
        let zeros = Tensor::zeros(width, x.dtype(), x.device())?;
        return Ok(candle_nn::ops::layer_norm(x, &ones, &zeros, EPS)?);
    }
    Ok(crate::kernels::layer_norm(x, EPS)?)
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    if kernels == Kernels::Fused && !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return Ok(candle_nn::ops::softmax_last_dim(x)?);
    }
    Ok(crate::kernels::softmax_last_dim(x)?)
}

/// Tanh-approximated GELU (fused and differentiable for f32 on the CPU).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(crate::kernels::gelu_tanh(x)?)
}

/// `x · (1 + scale) + shift`, with `scale` and `shift` of shape `(N, width)` broadcast over tokens.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    Ok(crate::kernels::modulate(x, shift, scale)?)
}

/// `x + h · gate`, with `gate` of shape `(N, width)` broadcast over tokens.
pub fn gated_residual(x: &Tensor, h: &Tensor, gate: &Tensor) -> Result<Tensor> {
    Ok(crate::kernels::gated_residual(x, h, gate)?)
}

/// A linear layer that folds leading dimensions into one matrix product.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Reads `weight` (out, in) and, if `bias`, `bias` (out) from the var builder.
    pub fn new(
        vb: &candle_nn::VarBuilder,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        init: candle_nn::Init,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", init)?;
        let bias = if bias { Some(vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.0))?) } else { None };
        Ok(Self { weight, bias })
    }

    /// Wraps an existing `(out, in)` weight and optional bias.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The weight matrix, (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Linear {
    /// Applies the layer to `(..., in)`. With [`Kernels::Fused`] on the CPU, each sample
    /// (index of the first dimension) gets its own matrix product of a batch-independent shape.
    pub fn apply(&self, x: &Tensor, kernels: Kernels) -> Result<Tensor> {
        if kernels == Kernels::Differentiable || !x.device().is_cpu() || x.dim(0)? == 1 {
            return Ok(self.forward(x)?);
        }
        let rows =
            (0..x.dim(0)?).map(|i| self.forward(&x.narrow(0, i, 1)?)).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&rows, 0)?)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let flat = x.reshape((rows, in_dim))?;
        let mut out = flat.matmul(&self.weight.t()?)?;
        if let Some(bias) = &self.bias {
            out = crate::kernels::add_bias(&out, bias)?;
        }
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = self.weight.dim(0)?;
        out.reshape(out_dims)
    }
}
