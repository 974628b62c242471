//! The denoiser interface the samplers drive.

use candle_core::Tensor;

use crate::Result;

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
