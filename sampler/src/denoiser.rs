//! The denoiser interface the samplers drive.

use candle_core::Tensor;

use crate::{Error, Result};

/// A denoiser D(x; σ, y) ≈ E[x₀ | x]: the network of an EDM-preconditioned diffusion model.
pub trait Denoiser {
    /// Denoises `x` `(N, C, H, W)` (f32) at per-sample noise levels `sigma` `(N,)` (f32) for one-hot
    /// `labels` `(N, classes)` (`None` or all-zero rows: unconditional). Returns f32 `(N, C, H, W)`.
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor>;
}

impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        (**self).denoise(x, sigma, labels)
    }
}

/// `sigma` (a scalar, `(1,)` or `(N,)`) as one f32 noise level per sample, `(N,)`.
pub fn per_sample_sigma(sigma: &Tensor, batch: usize) -> Result<Tensor> {
    let sigma = sigma.to_dtype(candle_core::DType::F32)?.flatten_all()?;
    match sigma.elem_count() {
        1 => Ok(sigma.broadcast_as(batch)?.contiguous()?),
        n if n == batch => Ok(sigma),
        n => Err(Error::Option(format!("{n} noise levels for a batch of {batch}"))),
    }
}
