//! Samplers for EDM-preconditioned diffusion models: the generalized EDM sampler (EDM's Heun
//! sampler among its settings), ancestral DDPM, and classifier-free guidance as a denoiser
//! wrapper. Step arithmetic is f64, as in the reference; the denoiser sees f32. Every sampler
//! reports each step (state, denoised estimate, σ) to a hook, which may stop the run.
//!
//! ```no_run
//! use candle_core::{Device, Tensor};
//! use maskdit_sampler::{Denoiser, EdmOptions, Guided, SeededNoise};
//!
//! # fn run(model: &dyn Denoiser, labels: &Tensor) -> maskdit_sampler::Result<Tensor> {
//! let mut noise = SeededNoise::new(&[0, 1, 2, 3]);
//! let latents = noise.latents(&[4, 32, 32], &Device::Cpu)?;
//! let guided = Guided::new(model, 1.5);
//! EdmOptions::heun(40).sample(&guided, &latents, Some(labels), &mut noise, &mut |step| {
//!     eprintln!("step {}/{} at sigma {:.3}", step.done(), step.total, step.sigma);
//!     std::ops::ControlFlow::Continue(())
//! })
//! # }
//! ```

mod ddpm;
mod denoiser;
mod edm;
mod error;
mod guidance;
mod noise;
mod schedule;
mod step;

pub use ddpm::DdpmOptions;
pub use denoiser::{per_sample_sigma, Denoiser};
pub use edm::{Discretization, EdmOptions, Solver};
pub use error::{Error, Result};
pub use guidance::{GuidanceInterval, Guided};
pub use noise::{NoiseSource, RecordedNoise, SeededNoise};
pub use schedule::{Scaling, Schedule, VpParams};
pub use step::{OnStep, Step};

/// Most noise levels one run may take (ancestral DDPM's 1000 is well inside): a bound checked
/// before the levels are laid out.
pub const MAX_STEPS: usize = 10_000;

/// A sampler with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    /// The generalized EDM sampler (EDM Heun by default).
    Edm(EdmOptions),
    /// Ancestral DDPM.
    Ddpm(DdpmOptions),
}

impl Sampler {
    /// Runs the sampler from unit-normal `latents`; `on_step` sees every step and may stop it.
    pub fn sample(
        &self,
        denoiser: &dyn Denoiser,
        latents: &candle_core::Tensor,
        labels: Option<&candle_core::Tensor>,
        noise: &mut dyn NoiseSource,
        on_step: &mut OnStep<'_>,
    ) -> Result<candle_core::Tensor> {
        match self {
            Self::Edm(o) => o.sample(denoiser, latents, labels, noise, on_step),
            Self::Ddpm(o) => o.sample(denoiser, latents, labels, noise, on_step),
        }
    }

    /// Number of steps (progress total).
    pub fn num_steps(&self) -> usize {
        match self {
            Self::Edm(o) => o.num_steps,
            Self::Ddpm(o) => o.num_steps,
        }
    }
}
