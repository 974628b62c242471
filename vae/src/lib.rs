//! Stable Diffusion AutoencoderKL.
