//! What turns a model's samples into pixels.

use std::sync::Arc;

use candle_core::Tensor;
use maskdit_vae::Autoencoder;

use crate::Result;

/// How samples become pixels in `[-1, 1]`: as they are (pixel-space models) or through a VAE
/// (latent models).
#[derive(Debug, Clone)]
pub enum Decoder {
    /// The samples are the pixels.
    Pixels,
    /// The samples are latents of this VAE (scaled by its scale factor); shared, so that
    /// pipelines that differ in model or sampler decode with one copy.
    Vae(Arc<Autoencoder>),
}

impl Decoder {
    /// Image side per sample side (1 for pixels, the VAE's downsampling factor for latents).
    pub fn upscale(&self) -> usize {
        match self {
            Self::Pixels => 1,
            Self::Vae(vae) => vae.config().downsampling(),
        }
    }

    /// Pixels `(N, C, H, W)` in `[-1, 1]` (values may overshoot) of `samples`, decoding at
    /// most `max_batch` images per VAE call (candle's convolutions unfold their input, about
    /// 0.3 GB per 256-px image in f32).
    pub fn decode(&self, samples: &Tensor, max_batch: usize) -> Result<Tensor> {
        match self {
            Self::Pixels => Ok(samples.clone()),
            Self::Vae(vae) => Ok(vae.decode(samples, max_batch.max(1), &mut |_| {})?),
        }
    }
}
