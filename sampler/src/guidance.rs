//! Classifier-free guidance as a denoiser wrapper.

use candle_core::Tensor;

use crate::{per_sample_sigma, Denoiser, Error, Result};

/// Guides a conditional denoiser: `uncond + scale·(cond − uncond)`, where the conditional and
/// null-label (all-zero row) halves are evaluated in one batched call. A scale of 1 is a plain
/// call on the given batch; any other scale needs class labels (an unconditional model, or
/// labels of width 0, is refused).
#[derive(Debug, Clone)]
pub struct Guided<D> {
    inner: D,
    scale: f64,
}

impl<D: Denoiser> Guided<D> {
    /// Wraps `inner` with guidance strength `scale` (1 = off).
    pub fn new(inner: D, scale: f64) -> Self {
        Self { inner, scale }
    }

    /// The guidance strength.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

impl<D: Denoiser> Denoiser for Guided<D> {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let labels = match labels {
            Some(labels) if self.scale != 1.0 => labels,
            None if self.scale != 1.0 => {
                return Err(Error::Option(format!(
                    "guidance (scale {}) needs class labels; an unconditional model samples with scale 1",
                    self.scale
                )))
            }
            _ => return self.inner.denoise(x, sigma, labels),
        };
        if labels.dim(candle_core::D::Minus1)? == 0 {
            return Err(Error::Option(format!(
                "guidance (scale {}) needs a class-conditional model; this one has no classes (use scale 1)",
                self.scale
            )));
        }
        let batch = x.dim(0)?;
        let sigma = per_sample_sigma(sigma, batch)?;
        let both = self.inner.denoise(
            &Tensor::cat(&[x, x], 0)?,
            &Tensor::cat(&[&sigma, &sigma], 0)?,
            Some(&Tensor::cat(&[labels, &labels.zeros_like()?], 0)?),
        )?;
        let cond = both.narrow(0, 0, batch)?;
        let uncond = both.narrow(0, batch, batch)?;
        Ok((&uncond + ((cond - &uncond)? * self.scale)?)?)
    }
}
