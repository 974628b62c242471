//! From seeds and classes to images with MaskDiT: a [`Pipeline`] holds a model, its guidance,
//! a sampler and a [`Decoder`], and turns a batch of seeds into samples, pixels or 8-bit
//! images. PNG files and progress bars stay with the caller; the sampler's step hook passes
//! through (progress, previews, stopping early).
//!
//! A registry model by name ([`load_model`]: fetched and verified, or the embedded one), with
//! its VAE and default settings — `examples/generate.rs` runs this offline:
//!
//! ```no_run
//! use std::ops::ControlFlow;
//!
//! use candle_core::{DType, Device};
//! use maskdit::WeightSet;
//! use maskdit_pipeline::{load_model, load_vae, Decoder, Pipeline};
//! use maskdit_registry::{Quiet, Registry};
//! use maskdit_sampler::{EdmOptions, Sampler};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (registry, device) = (Registry::load()?, Device::Cpu);
//! let found = load_model(&registry, "imagenet256-guidance", WeightSet::Ema, DType::F32, &device, &mut Quiet)?;
//! let decoder = match &found.vae {
//!     Some(vae) => Decoder::Vae(load_vae(&registry, vae, DType::F32, &device, &mut Quiet)?.into()),
//!     None => Decoder::Pixels,
//! };
//! let sampler = Sampler::Edm(EdmOptions::heun(found.steps));
//! let pipeline = Pipeline::new(found.model, decoder, sampler).with_guidance(found.guidance, found.interval)?;
//! let retrievers = pipeline.images(&[0, 1], Some(&[207, 207]), &mut |_| ControlFlow::Continue(()))?;
//! retrievers[0].save("retriever.png")?;
//! # Ok(())
//! # }
//! ```
//!
//! The other crates: `maskdit-registry` (verified files and class names without a model),
//! `maskdit` (the network itself), `maskdit-sampler` (samplers for any denoiser), `maskdit-vae`,
//! `maskdit-eval` (FID statistics, FID, Inception Score), `maskdit-train` (training and
//! fine-tuning); the README's "Using the library" says which to depend on for what.

mod decoder;
mod error;
mod loading;
mod pipeline;

pub use decoder::Decoder;
pub use error::{Error, Result};
pub use loading::{load_file, load_model, load_vae, LoadedModel};
pub use pipeline::Pipeline;
