//! EDM preconditioning (Karras et al. 2022): how the raw network output becomes a denoiser.

use candle_core::{DType, Tensor};

use crate::Result;

/// Standard deviation of the training data assumed by the preconditioning.
pub const SIGMA_DATA: f64 = 0.5;

/// The four EDM coefficients for a batch, each of shape `(N, 1, 1, 1)` except `c_noise` `(N,)`.
#[derive(Debug, Clone)]
pub struct EdmCoefficients {
    /// Weight of the input in the output: σ_d² / (σ² + σ_d²).
    pub c_skip: Tensor,
    /// Weight of the network output: σ·σ_d / √(σ² + σ_d²).
    pub c_out: Tensor,
    /// Input scale: 1 / √(σ² + σ_d²).
    pub c_in: Tensor,
    /// Noise conditioning: ln(σ) / 4.
    pub c_noise: Tensor,
}

impl EdmCoefficients {
    /// Computes the coefficients in f32 for per-sample noise levels `sigma` `(N,)`.
    pub fn new(sigma: &Tensor) -> Result<Self> {
        let sigma = sigma.to_dtype(DType::F32)?;
        let n = sigma.elem_count();
        let s = sigma.reshape((n, 1, 1, 1))?;
        let total = (s.sqr()? + SIGMA_DATA * SIGMA_DATA)?;
        let c_skip = (total.recip()? * (SIGMA_DATA * SIGMA_DATA))?;
        let c_out = ((&s * SIGMA_DATA)? / total.sqrt()?)?;
        let c_in = total.sqrt()?.recip()?;
        let c_noise = (sigma.reshape(n)?.log()? / 4.0)?;
        Ok(Self { c_skip, c_out, c_in, c_noise })
    }
}
