//! The Stable Diffusion AutoencoderKL in both on-disk layouts (diffusers and the original
//! latent-diffusion one), with the image helpers a latent diffusion pipeline needs.
//!
//! Encode an image to a latent and decode it back:
//!
//! ```no_run
//! use candle_core::{DType, Device};
//! use maskdit_vae::{image, Autoencoder, SD_SCALE_FACTOR};
//!
//! # fn main() -> maskdit_vae::Result<()> {
//! let device = Device::Cpu;
//! // diffusers' sd-vae-ft-mse, or the official `autoencoder_kl.pth`; the layout is detected.
//! let vae = Autoencoder::load("diffusion_pytorch_model.safetensors".as_ref(), None, DType::F32, &device)?;
//! let picture = ::image::open("cat.png")?;
//! let pixels = image::from_image(&::image::DynamicImage::ImageRgb8(image::center_crop_adm(&picture, 256)?), &device)?;
//! let moments = vae.encode(&pixels.unsqueeze(0)?)?;
//! let latent = moments.sample(&moments.mean.randn_like(0.0, 1.0)?, SD_SCALE_FACTOR)?; // (1, 4, 32, 32)
//! let decoded = vae.decode(&latent, 8, &mut |_| {})?; // (1, 3, 256, 256) in about [-1, 1]
//! let _back: Vec<::image::DynamicImage> = image::to_images(&decoded)?;
//! # Ok(())
//! # }
//! ```

mod attention;
mod autoencoder;
mod config;
mod error;
pub mod image;
pub mod layout;

pub use autoencoder::{Autoencoder, Moments};
pub use config::{VaeConfig, SD_SCALE_FACTOR};
pub use error::{Error, Result};
pub use layout::Layout;
