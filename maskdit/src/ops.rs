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
    const EPS: f64 = 1e-6;
    match kernels {
        Kernels::Fused => {
            let width = x.dim(D::Minus1)?;
            let ones = Tensor::ones(width, x.dtype(), x.device())?;
            let zeros = Tensor::zeros(width, x.dtype(), x.device())?;
            Ok(candle_nn::ops::layer_norm(x, &ones, &zeros, EPS as f32)?)
        }
        Kernels::Differentiable => {
            let work = if x.dtype() == DType::F32 { x.clone() } else { x.to_dtype(DType::F32)? };
            let centred = work.broadcast_sub(&work.mean_keepdim(D::Minus1)?)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            let out = centred.broadcast_div(&(var + EPS)?.sqrt()?)?;
            Ok(out.to_dtype(x.dtype())?)
        }
    }
}

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor, kernels: Kernels) -> Result<Tensor> {
    Ok(match kernels {
        Kernels::Fused => candle_nn::ops::softmax_last_dim(x)?,
        Kernels::Differentiable => candle_nn::ops::softmax(x, D::Minus1)?,
    })
}

/// `x · (1 + scale) + shift`, with `scale` and `shift` of shape `(N, width)` broadcast over tokens.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let scale = (scale.unsqueeze(1)? + 1.0)?;
    Ok(x.broadcast_mul(&scale)?.broadcast_add(&shift.unsqueeze(1)?)?)
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
            out = out.broadcast_add(bias)?;
        }
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = self.weight.dim(0)?;
        out.reshape(out_dims)
    }
}
