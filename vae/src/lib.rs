//! The Stable Diffusion AutoencoderKL in both on-disk layouts (diffusers and the original
//! latent-diffusion one), with the image helpers a latent diffusion pipeline needs.

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
