//! The two kernel families a forward pass can use: candle's fused inference kernels, or
//! differentiable compositions that backpropagate (candle's fused `softmax_last_dim` and
//! `layer_norm` have no backward pass and would silently stop gradients).

use candle_core::{DType, Module, Tensor, D};

use crate::Result;

/// Which implementation of layer norm and softmax a forward pass uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Fused kernels: fastest, inference only.
    Fused,
    /// Plain tensor ops that support backpropagation: training.
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
            let work = if x.dtype() == DType::F32 {
                x.clone()
            } else {
                x.to_dtype(DType::F32)?
            };
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
    Ok(x.broadcast_mul(&scale)?
        .broadcast_add(&shift.unsqueeze(1)?)?)
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
        let bias = if bias {
            Some(vb.get_with_hints(out_dim, "bias", candle_nn::Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// The weight matrix, (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
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
