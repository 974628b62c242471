//! The generalized sampler of the EDM paper (Karras et al. 2022, Algorithm 2 and its
//! ablations): Euler or Heun steps over EDM / VP / VE / iDDPM time discretizations, with
//! optional stochastic churn. EDM's own Heun sampler is [`EdmOptions::heun`].

use candle_core::{DType, Tensor};

use crate::schedule::{NoiseSchedule, Scaling, Schedule, VpParams};
use crate::step::{report, OnStep};
use crate::{Denoiser, Error, NoiseSource, Result, Step};

/// The ODE solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Solver {
    /// First order.
    Euler,
    /// Second order (one extra evaluation per step, none on the last).
    Heun,
}

/// How the noise levels of the steps are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Discretization {
    /// Polynomial spacing with exponent ρ (EDM).
    Edm,
    /// Uniform in VP time.
    Vp,
    /// Geometric in σ² (VE).
    Ve,
    /// The noise levels of improved DDPM's cosine schedule.
    Iddpm,
}

/// Settings of the generalized EDM sampler; defaults are the reference's.
#[derive(Debug, Clone, PartialEq)]
pub struct EdmOptions {
    /// Number of noise levels (≥ 2).
    pub num_steps: usize,
    /// Lowest noise level; `None`: the discretization's default.
    pub sigma_min: Option<f64>,
    /// Highest noise level; `None`: the discretization's default.
    pub sigma_max: Option<f64>,
    /// Exponent of the EDM discretization.
    pub rho: f64,
    /// ODE solver.
    pub solver: Solver,
    /// Time discretization.
    pub discretization: Discretization,
    /// Noise schedule σ(t).
    pub schedule: Schedule,
    /// Scaling s(t).
    pub scaling: Scaling,
    /// Lowest VP time.
    pub epsilon_s: f64,
    /// iDDPM low-noise adjustment.
    pub c_1: f64,
    /// iDDPM high-noise adjustment.
    pub c_2: f64,
    /// iDDPM number of training steps.
    pub m: usize,
    /// Position of the Heun intermediate point (1: classic Heun).
    pub alpha: f64,
    /// Stochasticity: total churn.
    pub s_churn: f64,
    /// Churn only at σ ≥ this.
    pub s_min: f64,
    /// Churn only at σ ≤ this.
    pub s_max: f64,
    /// Noise inflation of the churn.
    pub s_noise: f64,
}

impl Default for EdmOptions {
    fn default() -> Self {
        Self::heun(18)
    }
}

impl EdmOptions {
    /// EDM's deterministic Heun sampler (Algorithm 2 with no churn): σ 0.002…80, ρ 7.
    pub fn heun(num_steps: usize) -> Self {
        Self {
            num_steps,
            sigma_min: None,
            sigma_max: None,
            rho: 7.0,
            solver: Solver::Heun,
            discretization: Discretization::Edm,
            schedule: Schedule::Linear,
            scaling: Scaling::None,
            epsilon_s: 1e-3,
            c_1: 0.001,
            c_2: 0.008,
            m: 1000,
            alpha: 1.0,
            s_churn: 0.0,
            s_min: 0.0,
            s_max: f64::INFINITY,
            s_noise: 1.0,
        }
    }

    fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Option(m));
        if self.num_steps < 2 || self.num_steps > crate::MAX_STEPS {
            return fail(format!("num_steps must be between 2 and {}, got {}", crate::MAX_STEPS, self.num_steps));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return fail(format!("alpha must lie in (0, 1], got {}", self.alpha));
        }
        if !(self.s_churn >= 0.0 && self.s_churn.is_finite() && self.s_noise >= 0.0 && self.s_noise.is_finite()) {
            return fail(format!(
                "S_churn and S_noise must be finite and not negative, got {} and {}",
                self.s_churn, self.s_noise
            ));
        }
        if self.s_min.is_nan() || self.s_max.is_nan() {
            return fail("S_min and S_max must be numbers (S_max may be infinite)".into());
        }
        if let (Some(lo), Some(hi)) = (self.sigma_min, self.sigma_max) {
            if !(lo > 0.0 && lo < hi) {
                return fail(format!("need 0 < sigma_min < sigma_max, got {lo} and {hi}"));
            }
        }
        Ok(())
    }

    fn default_vp() -> VpParams {
        VpParams { beta_d: 19.1, beta_min: 0.1 }
    }

    /// The noise-level range in use.
    pub fn sigma_range(&self) -> (f64, f64) {
        let vp = Self::default_vp();
        let lo = self.sigma_min.unwrap_or(match self.discretization {
            Discretization::Vp => vp.sigma(self.epsilon_s),
            Discretization::Ve => 0.02,
            Discretization::Iddpm | Discretization::Edm => 0.002,
        });
        let hi = self.sigma_max.unwrap_or(match self.discretization {
            Discretization::Vp => vp.sigma(1.0),
            Discretization::Ve => 100.0,
            Discretization::Iddpm => 81.0,
            Discretization::Edm => 80.0,
        });
        (lo, hi)
    }

    fn schedule(&self) -> NoiseSchedule {
        let (lo, hi) = self.sigma_range();
        let eps = self.epsilon_s;
        let beta_d = 2.0 * ((lo * lo + 1.0).ln() / eps - (hi * hi + 1.0).ln()) / (eps - 1.0);
        let beta_min = (hi * hi + 1.0).ln() - 0.5 * beta_d;
        NoiseSchedule { schedule: self.schedule, scaling: self.scaling, vp: VpParams { beta_d, beta_min } }
    }

    /// The noise levels σ_0 > … > σ_{N−1} of the steps.
    pub fn sigma_steps(&self) -> Vec<f64> {
        let (lo, hi) = self.sigma_range();
        let n = self.num_steps;
        let frac = |i: usize| i as f64 / (n - 1) as f64;
        match self.discretization {
            Discretization::Edm => {
                let (a, b) = (hi.powf(1.0 / self.rho), lo.powf(1.0 / self.rho));
                (0..n).map(|i| (a + frac(i) * (b - a)).powf(self.rho)).collect()
            }
            Discretization::Vp => {
                let vp = self.schedule().vp;
                (0..n).map(|i| vp.sigma(1.0 + frac(i) * (self.epsilon_s - 1.0))).collect()
            }
            Discretization::Ve => (0..n).map(|i| (hi * hi * (lo * lo / (hi * hi)).powf(frac(i))).sqrt()).collect(),
            Discretization::Iddpm => {
                let levels = iddpm_levels(self.m, self.c_1, self.c_2);
                let kept: Vec<f64> = levels.into_iter().filter(|&u| u >= lo && u <= hi).collect();
                let span = (kept.len() - 1) as f64 / (n - 1) as f64;
                (0..n).map(|i| kept[(span * i as f64).round_ties_even() as usize]).collect()
            }
        }
    }

    /// Samples from the initial unit-normal `latents` `(N, C, H, W)` over this sampler's
    /// noise levels ([`Self::sigma_steps`]); returns f32 samples. `on_step` sees every step and may stop the run.
    pub fn sample(
        &self,
        denoiser: &dyn Denoiser,
        latents: &Tensor,
        labels: Option<&Tensor>,
        noise: &mut dyn NoiseSource,
        on_step: &mut OnStep<'_>,
    ) -> Result<Tensor> {
        self.validate()?;
        self.sample_sigmas(denoiser, latents, labels, noise, &self.sigma_steps(), on_step)
    }

    /// Samples over the given noise levels `sigmas`, σ_0 > … > σ_{N−1} > 0 (a final step to 0
    /// follows), with this sampler's solver, schedule, scaling and churn; `num_steps`,
    /// `sigma_min`/`sigma_max` and the discretization are not used, except that the VP schedule
    /// takes its parameters from the σ range.
    pub fn sample_sigmas(
        &self,
        denoiser: &dyn Denoiser,
        latents: &Tensor,
        labels: Option<&Tensor>,
        noise: &mut dyn NoiseSource,
        sigmas: &[f64],
        on_step: &mut OnStep<'_>,
    ) -> Result<Tensor> {
        if sigmas.is_empty() || sigmas.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(Error::Option("the noise levels must be finite and positive".into()));
        }
        if sigmas.windows(2).any(|w| w[1] >= w[0]) {
            return Err(Error::Option("the noise levels must decrease".into()));
        }
        let sched = self.schedule();
        let mut t_steps: Vec<f64> = sigmas.iter().map(|&s| sched.sigma_inv(s)).collect();
        t_steps.push(0.0);
        let n = sigmas.len();
        let dims = latents.dims().to_vec();
        let batch = dims[0];
        let device = latents.device();
        let gamma_max = (self.s_churn / n as f64).min(std::f64::consts::SQRT_2 - 1.0);
        let denoise = |x: &Tensor, t: f64| -> Result<Tensor> {
            let x_in = (x / sched.s(t))?.to_dtype(DType::F32)?;
            let sigma = Tensor::full(sched.sigma(t) as f32, batch, device)?;
            Ok(denoiser.denoise(&x_in, &sigma, labels)?.to_dtype(DType::F64)?)
        };
        let slope = |x: &Tensor, denoised: &Tensor, t: f64| -> Result<Tensor> {
            let (sig, ds, s, ss) = (sched.sigma(t), sched.sigma_deriv(t), sched.s(t), sched.s_deriv(t));
            Ok(((x * (ds / sig + ss / s))? - (denoised * (ds * s / sig))?)?)
        };
        let mut x = (latents.to_dtype(DType::F64)? * (sched.sigma(t_steps[0]) * sched.s(t_steps[0])))?;
        for i in 0..n {
            let (t_cur, t_next) = (t_steps[i], t_steps[i + 1]);
            let sigma_cur = sched.sigma(t_cur);
            let gamma = if self.s_min <= sigma_cur && sigma_cur <= self.s_max { gamma_max } else { 0.0 };
            let t_hat = sched.sigma_inv(sigma_cur + gamma * sigma_cur);
            let spread =
                (sched.sigma(t_hat).powi(2) - sigma_cur.powi(2)).max(0.0).sqrt() * sched.s(t_hat) * self.s_noise;
            let mut x_hat = (&x * (sched.s(t_hat) / sched.s(t_cur)))?;
            if spread > 0.0 {
                x_hat = (x_hat + (noise.noise(i, &dims, device)? * spread)?)?;
            }
            let h = t_next - t_hat;
            let denoised = denoise(&x_hat, t_hat)?;
            let d_cur = slope(&x_hat, &denoised, t_hat)?;
            report(on_step, &Step { index: i, total: n, sigma: sched.sigma(t_hat), x: &x_hat, denoised: &denoised })?;
            x = if self.solver == Solver::Euler || i == n - 1 {
                (&x_hat + (&d_cur * h)?)?
            } else {
                let x_prime = (&x_hat + (&d_cur * (self.alpha * h))?)?;
                let t_prime = t_hat + self.alpha * h;
                let d_prime = slope(&x_prime, &denoise(&x_prime, t_prime)?, t_prime)?;
                let w = 1.0 / (2.0 * self.alpha);
                (&x_hat + (((&d_cur * (1.0 - w))? + (d_prime * w)?)? * h)?)?
            };
        }
        Ok(x.to_dtype(DType::F32)?)
    }
}

/// The iDDPM noise levels u_0 > … > u_{M−1} (and u_M = 0), as the reference computes them
/// (ᾱ in f32, the recursion in f64).
fn iddpm_levels(m: usize, c_1: f64, c_2: f64) -> Vec<f64> {
    let alpha_bar = |j: usize| -> f32 {
        let arg = (0.5 * std::f64::consts::PI) as f32 * j as f32 / m as f32 / (c_2 + 1.0) as f32;
        arg.sin().powi(2)
    };
    let mut u = vec![0f64; m + 1];
    for j in (1..=m).rev() {
        let ratio = (alpha_bar(j - 1) / alpha_bar(j)).max(c_1 as f32) as f64;
        u[j - 1] = ((u[j] * u[j] + 1.0) / ratio - 1.0).sqrt();
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_infinite_churn_settings_are_refused() {
        assert!(EdmOptions::heun(18).validate().is_ok());
        let churn = |s_churn, s_noise| EdmOptions { s_churn, s_noise, ..EdmOptions::heun(18) }.validate();
        for (s_churn, s_noise) in [(f64::NAN, 1.0), (f64::INFINITY, 1.0), (1.0, f64::NAN), (-1.0, 1.0)] {
            assert!(churn(s_churn, s_noise).is_err(), "{s_churn} {s_noise}");
        }
        assert!(EdmOptions { s_max: f64::NAN, ..EdmOptions::heun(18) }.validate().is_err());
        assert!(EdmOptions { s_churn: 40.0, s_max: f64::INFINITY, ..EdmOptions::heun(18) }.validate().is_ok());
        assert!(EdmOptions::heun(crate::MAX_STEPS + 1).validate().is_err());
    }
}
