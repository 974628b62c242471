//! The network's building operations, computed by [`maskdit_kernels`], which picks each one's
//! implementation for the device, the dtype and the [`Pass`].

use candle_core::{Module, Tensor};

pub use maskdit_kernels::Pass;

use crate::Result;

/// Layer norm over the last dimension without affine parameters (eps 1e-6).
pub fn layer_norm(x: &Tensor, pass: Pass) -> Result<Tensor> {
    Ok(maskdit_kernels::layer_norm(x, 1e-6, pass)?)
}

/// Multi-head self-attention on the packed `(N, L, 3·width)` qkv projection (`[q | k | v]`,
/// heads side by side in each) → `(N, L, width)`, `softmax(q·kᵀ/√d)·v` per head.
pub fn attention(qkv: &Tensor, heads: usize, pass: Pass) -> Result<Tensor> {
    Ok(maskdit_kernels::attention(qkv, heads, pass)?)
}

/// Tanh-approximated GELU (fused and differentiable for f32 on the CPU).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(maskdit_kernels::gelu_tanh(x)?)
}

/// `x · (1 + scale) + shift`, with `scale` and `shift` of shape `(N, width)` broadcast over tokens.
pub fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    Ok(maskdit_kernels::modulate(x, shift, scale)?)
}

/// `x + h · gate`, with `gate` of shape `(N, width)` broadcast over tokens.
pub fn gated_residual(x: &Tensor, h: &Tensor, gate: &Tensor) -> Result<Tensor> {
    Ok(maskdit_kernels::gated_residual(x, h, gate)?)
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

/// Fewest rows per sample for which one batched GEMM gives every row exactly what a GEMM of
/// that sample alone gives (gemm's summation order is the same for all row counts from 16 on;
/// measured on shapes 128..3072 wide; a single row takes a different, matrix-vector path).
const BATCH_INVARIANT_ROWS: usize = 16;

impl Linear {
    /// Applies the layer to `(..., in)`. For [`Pass::Inference`] on the CPU, a sample's result
    /// never depends on the batch around it: token-level inputs `(N, L ≥ 16, in)` run as one
    /// GEMM (bitwise the same rows as per-sample GEMMs), anything smaller one GEMM per sample.
    /// Training folds every batch into one GEMM.
    pub fn apply(&self, x: &Tensor, pass: Pass) -> Result<Tensor> {
        let per_sample_rows: usize = x.dims()[1..x.rank().saturating_sub(1)].iter().product();
        if pass == Pass::Training
            || !x.device().is_cpu()
            || x.dim(0)? == 1
            || (x.rank() >= 3 && per_sample_rows >= BATCH_INVARIANT_ROWS)
        {
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
        let out = maskdit_kernels::linear(&flat, &self.weight, self.bias.as_ref())?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = self.weight.dim(0)?;
        out.reshape(out_dims)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Tensor;
    use maskdit_testkit::SeededTensors;

    use super::{Linear, Pass};

    /// The batch-invariance premise of [`Linear::apply`]: a sample's rows are bitwise the same
    /// whether it is projected alone or within a batch.
    #[test]
    fn batched_projection_rows_equal_per_sample_rows() {
        let mut draw = SeededTensors::new(1);
        for (tokens, width_in, width_out) in [(16, 64, 48), (49, 128, 384), (256, 384, 1152), (1, 96, 576)] {
            let weight = draw.normal(0.0, 1.0, (width_out, width_in));
            let bias = draw.normal(0.0, 1.0, width_out);
            let linear = Linear::from_parts(weight, Some(bias));
            let shape: Vec<usize> = if tokens == 1 { vec![5, width_in] } else { vec![5, tokens, width_in] };
            let x = draw.normal(0.0, 1.0, shape);
            let batched = linear.apply(&x, Pass::Inference).unwrap();
            for i in [0, 3] {
                let alone = linear.apply(&x.narrow(0, i, 1).unwrap(), Pass::Inference).unwrap();
                let bits = |t: &Tensor| {
                    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect::<Vec<_>>()
                };
                assert_eq!(bits(&batched.narrow(0, i, 1).unwrap()), bits(&alone), "{tokens} tokens, sample {i}");
            }
        }
    }
}
