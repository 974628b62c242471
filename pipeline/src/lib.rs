//! From seeds and classes to images with MaskDiT: a [`Pipeline`] holds a model, its guidance,
//! a sampler and a [`Decoder`], and turns a batch of seeds into samples, pixels or 8-bit
//! images. PNG files and progress bars stay with the caller; the sampler's step hook passes
//! through (progress, previews, stopping early).
//!
//! ```no_run
//! use std::ops::ControlFlow;
//!
//! use candle_core::{DType, Device};
//! use maskdit_pipeline::{Decoder, Pipeline};
//! use maskdit_sampler::{EdmOptions, Sampler};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = maskdit::checkpoint::load_bytes(&std::fs::read("mnist.safetensors")?, DType::F32, &Device::Cpu)?;
//! let pipeline = Pipeline::new(model, Decoder::Pixels, Sampler::Edm(EdmOptions::heun(18))).with_guidance(1.3, None)?;
//! let digits = pipeline.images(&[0, 1, 2], Some(&[7, 7, 7]), &mut |_| ControlFlow::Continue(()))?;
//! digits[0].save("seven.png")?;
//! # Ok(())
//! # }
//! ```

mod decoder;
mod error;
mod pipeline;

pub use decoder::Decoder;
pub use error::{Error, Result};
pub use pipeline::Pipeline;
