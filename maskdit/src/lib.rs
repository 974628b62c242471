//! MaskDiT — the masked diffusion transformer of "Fast Training of Diffusion Models with
//! Masked Transformers" (Zheng, Nie, Vahdat, Anandkumar) — on candle.
//!
//! Load an official checkpoint and denoise a batch:
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use maskdit::{weights, ModelConfig, WeightSet};
//! use maskdit_sampler::{Denoiser, Guided};
//!
//! # fn main() -> maskdit::Result<()> {
//! let config = ModelConfig::preset("DiT-XL/2", 32, 4, 1000, true)?;
//! let model = weights::load(
//!     "imagenet256-ckpt-best_with_guidance.pt".as_ref(),
//!     &config,
//!     WeightSet::Ema,
//!     DType::F32,
//!     &Device::Cpu,
//! )?;
//! let x = Tensor::randn(0f32, 1.0, (2, 4, 32, 32), &Device::Cpu)?;
//! let sigma = Tensor::new(&[2.5f32, 2.5], &Device::Cpu)?;
//! let labels = Tensor::zeros((2, 1000), DType::F32, &Device::Cpu)?; // null labels
//! let denoised = model.denoise(&x, &sigma, Some(&labels))?;
//! // Classifier-free guidance at scale 1.5, both halves in one batched call:
//! let guided = Guided::new(&model, 1.5).denoise(&x, &sigma, Some(&labels))?;
//! # let _ = (denoised, guided);
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod block;
pub mod config;
pub mod embed;
mod error;
pub mod flops;
pub mod heads;
pub mod init;
pub mod labels;
pub mod mask;
pub mod model;
pub mod ops;
pub mod precond;
pub mod weights;

pub use config::ModelConfig;
pub use error::{Error, Result};
pub use labels::one_hot;
pub use mask::Mask;
pub use model::MaskDit;
pub use weights::WeightSet;
