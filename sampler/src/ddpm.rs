//! Ancestral DDPM sampling (Ho et al. 2020), respaced, driven by an EDM denoiser.

use candle_core::{DType, Tensor};

use crate::step::{report, OnStep};
use crate::{Denoiser, Error, NoiseSource, Result, Step};

/// Settings of the ancestral DDPM sampler: 1000 training steps with linear β from 1e-4 to
/// 0.02, `num_steps` steps at `linspace(0, 999, num_steps).round()`, the "fixed small"
/// posterior variance, no clipping.
#[derive(Debug, Clone, PartialEq)]
pub struct DdpmOptions {
    /// Number of sampling steps (1 ≤ n ≤ training steps).
    pub num_steps: usize,
    /// Number of training steps.
    pub train_steps: usize,
    /// First β of the linear schedule.
    pub beta_start: f64,
    /// Last β of the linear schedule.
    pub beta_end: f64,
}

impl Default for DdpmOptions {
    fn default() -> Self {
        Self::new(250)
    }
}

impl DdpmOptions {
    /// `num_steps` steps over the standard 1000-step linear schedule.
    pub fn new(num_steps: usize) -> Self {
        Self { num_steps, train_steps: 1000, beta_start: 1e-4, beta_end: 0.02 }
    }

    /// ᾱ_t for every training step, as f32 cumulative products (the reference's precision).
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let n = self.train_steps;
        let mut product = 1f32;
        (0..n)
            .map(|i| {
                let frac = if n > 1 { i as f64 / (n - 1) as f64 } else { 0.0 };
                let beta = (self.beta_start + frac * (self.beta_end - self.beta_start)) as f32;
                product *= 1.0 - beta;
                product as f64
            })
            .collect()
    }

    /// The timesteps visited, from noisiest to cleanest.
    pub fn timesteps(&self) -> Vec<usize> {
        let (n, last) = (self.num_steps, (self.train_steps - 1) as f64);
        let mut steps: Vec<usize> = (0..n)
            .map(|i| if n > 1 { (last * i as f64 / (n - 1) as f64).round_ties_even() as usize } else { 0 })
            .collect();
        steps.reverse();
        steps
    }

    fn validate(&self) -> Result<()> {
        if self.num_steps == 0 || self.num_steps > self.train_steps {
            return Err(Error::Option(format!(
                "DDPM needs between 1 and {} steps, got {}",
                self.train_steps, self.num_steps
            )));
        }
        Ok(())
    }

    /// Samples from `x_T` `(N, C, H, W)` (unit normal); returns f32 samples. `noise` step `k`
    /// is added after step `k` (the last step adds none). `on_step` sees every step (and may stop the run), with `x`
    /// the state before it (in the DDPM scaling, √ᾱ·(x₀ + σ·ε)).
    pub fn sample(
        &self,
        denoiser: &dyn Denoiser,
        x_t: &Tensor,
        labels: Option<&Tensor>,
        noise: &mut dyn NoiseSource,
        on_step: &mut OnStep<'_>,
    ) -> Result<Tensor> {
        self.validate()?;
        let abar = self.alphas_cumprod();
        let steps = self.timesteps();
        let dims = x_t.dims().to_vec();
        let device = x_t.device();
        let batch = dims[0];
        let mut x = x_t.to_dtype(DType::F64)?;
        for (k, &t) in steps.iter().enumerate() {
            let a_t = abar[t];
            let a_prev = steps.get(k + 1).map_or(1.0, |&p| abar[p]);
            let sigma = ((1.0 - a_t) / a_t).sqrt();
            let x_in = (&x / a_t.sqrt())?.to_dtype(DType::F32)?;
            let sigma_in = Tensor::full(sigma as f32, batch, device)?;
            let x0 = denoiser.denoise(&x_in, &sigma_in, labels)?.to_dtype(DType::F64)?;
            report(on_step, &Step { index: k, total: steps.len(), sigma, x: &x, denoised: &x0 })?;
            let alpha = a_t / a_prev;
            let beta = 1.0 - alpha;
            let coef_x0 = a_prev.sqrt() * beta / (1.0 - a_t);
            let coef_xt = alpha.sqrt() * (1.0 - a_prev) / (1.0 - a_t);
            x = ((x0 * coef_x0)? + (&x * coef_xt)?)?;
            if k + 1 < steps.len() {
                let variance = ((1.0 - a_prev) / (1.0 - a_t) * beta).max(1e-20);
                x = (x + (noise.noise(k, &dims, device)? * variance.sqrt())?)?;
            }
        }
        Ok(x.to_dtype(DType::F32)?)
    }
}
