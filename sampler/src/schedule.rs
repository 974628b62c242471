//! Noise-level schedules σ(t) and scalings s(t) of the generalized EDM sampler, in f64.

/// VP schedule parameters (β_d, β_min).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpParams {
    /// Extent of the schedule.
    pub beta_d: f64,
    /// Initial slope.
    pub beta_min: f64,
}

impl VpParams {
    /// σ(t) = √(exp(½β_d t² + β_min t) − 1).
    pub fn sigma(&self, t: f64) -> f64 {
        (std::f64::consts::E.powf(0.5 * self.beta_d * t * t + self.beta_min * t) - 1.0).sqrt()
    }

    /// t(σ), the inverse of [`Self::sigma`].
    pub fn sigma_inv(&self, sigma: f64) -> f64 {
        ((self.beta_min * self.beta_min + 2.0 * self.beta_d * (sigma * sigma + 1.0).ln()).sqrt() - self.beta_min)
            / self.beta_d
    }
}

/// How the noise level depends on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Schedule {
    /// σ(t) = t.
    Linear,
    /// Variance preserving.
    Vp,
    /// Variance exploding: σ(t) = √t.
    Ve,
}

/// How the state is scaled over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Scaling {
    /// s(t) = 1.
    None,
    /// s(t) = 1 / √(1 + σ(t)²).
    Vp,
}

/// A schedule bound to its VP parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoiseSchedule {
    pub schedule: Schedule,
    pub scaling: Scaling,
    pub vp: VpParams,
}

impl NoiseSchedule {
    pub fn sigma(&self, t: f64) -> f64 {
        match self.schedule {
            Schedule::Linear => t,
            Schedule::Vp => self.vp.sigma(t),
            Schedule::Ve => t.sqrt(),
        }
    }

    pub fn sigma_deriv(&self, t: f64) -> f64 {
        match self.schedule {
            Schedule::Linear => 1.0,
            Schedule::Vp => {
                let s = self.sigma(t);
                0.5 * (self.vp.beta_min + self.vp.beta_d * t) * (s + 1.0 / s)
            }
            Schedule::Ve => 0.5 / t.sqrt(),
        }
    }

    pub fn sigma_inv(&self, sigma: f64) -> f64 {
        match self.schedule {
            Schedule::Linear => sigma,
            Schedule::Vp => self.vp.sigma_inv(sigma),
            Schedule::Ve => sigma * sigma,
        }
    }

    pub fn s(&self, t: f64) -> f64 {
        match self.scaling {
            Scaling::None => 1.0,
            Scaling::Vp => 1.0 / (1.0 + self.sigma(t).powi(2)).sqrt(),
        }
    }

    pub fn s_deriv(&self, t: f64) -> f64 {
        match self.scaling {
            Scaling::None => 0.0,
            Scaling::Vp => -self.sigma(t) * self.sigma_deriv(t) * self.s(t).powi(3),
        }
    }
}
