//! The AutoencoderKL: encoder to latent moments, decoder back to images. Built from
//! candle-transformers' Stable Diffusion blocks on diffusers-named weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, VarBuilder};
use candle_transformers::models::stable_diffusion::unet_2d_blocks::{
    DownEncoderBlock2D, DownEncoderBlock2DConfig, UpDecoderBlock2D, UpDecoderBlock2DConfig,
};

use crate::attention::MidBlock;
use crate::layout::{ldm_to_diffusers, Layout};
use crate::{Error, Result, VaeConfig};

const EPS: f64 = 1e-6;

fn conv3(vb: VarBuilder, cin: usize, cout: usize) -> candle_core::Result<Conv2d> {
    candle_nn::conv2d(cin, cout, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb)
}

fn mid_block(vb: VarBuilder, channels: usize, groups: usize) -> candle_core::Result<MidBlock> {
    MidBlock::new(vb, channels, groups, EPS)
}

struct Encoder {
    conv_in: Conv2d,
    down: Vec<DownEncoderBlock2D>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(vb: VarBuilder, c: &VaeConfig) -> candle_core::Result<Self> {
        let ch = &c.block_out_channels;
        let conv_in = conv3(vb.pp("conv_in"), c.in_channels, ch[0])?;
        let down = (0..ch.len())
            .map(|i| {
                let cfg = DownEncoderBlock2DConfig {
                    num_layers: c.layers_per_block,
                    resnet_eps: EPS,
                    resnet_groups: c.norm_num_groups,
                    add_downsample: i + 1 < ch.len(),
                    downsample_padding: 0,
                    ..Default::default()
                };
                DownEncoderBlock2D::new(vb.pp(format!("down_blocks.{i}")), ch[i.saturating_sub(1)], ch[i], cfg)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let last = *ch.last().expect("validated");
        Ok(Self {
            conv_in,
            down,
            mid: mid_block(vb.pp("mid_block"), last, c.norm_num_groups)?,
            norm_out: candle_nn::group_norm(c.norm_num_groups, last, EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv3(vb.pp("conv_out"), last, 2 * c.latent_channels)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for block in &self.down {
            h = block.forward(&h)?;
        }
        let h = self.norm_out.forward(&self.mid.forward(&h)?)?;
        self.conv_out.forward(&h.silu()?)
    }
}

struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    up: Vec<UpDecoderBlock2D>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(vb: VarBuilder, c: &VaeConfig) -> candle_core::Result<Self> {
        let reversed: Vec<usize> = c.block_out_channels.iter().rev().copied().collect();
        let up = (0..reversed.len())
            .map(|i| {
                let cfg = UpDecoderBlock2DConfig {
                    num_layers: c.layers_per_block + 1,
                    resnet_eps: EPS,
                    resnet_groups: c.norm_num_groups,
                    add_upsample: i + 1 < reversed.len(),
                    ..Default::default()
                };
                UpDecoderBlock2D::new(vb.pp(format!("up_blocks.{i}")), reversed[i.saturating_sub(1)], reversed[i], cfg)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let first = c.block_out_channels[0];
        Ok(Self {
            conv_in: conv3(vb.pp("conv_in"), c.latent_channels, reversed[0])?,
            mid: mid_block(vb.pp("mid_block"), reversed[0], c.norm_num_groups)?,
            up,
            norm_out: candle_nn::group_norm(c.norm_num_groups, first, EPS, vb.pp("conv_norm_out"))?,
            conv_out: conv3(vb.pp("conv_out"), first, c.out_channels)?,
        })
    }

    fn forward(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.mid.forward(&self.conv_in.forward(z)?)?;
        for block in &self.up {
            h = block.forward(&h)?;
        }
        self.conv_out.forward(&self.norm_out.forward(&h)?.silu()?)
    }
}

/// The diagonal Gaussian the encoder predicts for each latent.
#[derive(Debug, Clone)]
pub struct Moments {
    /// Mean, `(N, latent, h, w)`.
    pub mean: Tensor,
    /// Log-variance (unclamped), `(N, latent, h, w)`.
    pub logvar: Tensor,
}

impl Moments {
    /// Splits stacked moments `(N, 2·latent, h, w)` into mean and log-variance.
    pub fn from_stacked(moments: &Tensor) -> Result<Self> {
        let half = moments.dim(1)? / 2;
        Ok(Self { mean: moments.narrow(1, 0, half)?, logvar: moments.narrow(1, half, half)? })
    }

    /// Mean and log-variance stacked on channels, `(N, 2·latent, h, w)`.
    pub fn stacked(&self) -> Result<Tensor> {
        Ok(Tensor::cat(&[&self.mean, &self.logvar], 1)?)
    }

    /// A scaled latent `scale · (mean + exp(½·clamp(logvar, −30, 20)) · eps)` for unit-normal `eps`.
    pub fn sample(&self, eps: &Tensor, scale: f64) -> Result<Tensor> {
        let std = (self.logvar.clamp(-30f32, 20f32)? * 0.5)?.exp()?;
        Ok(((&self.mean + std.mul(eps)?)? * scale)?)
    }
}

/// A Stable Diffusion AutoencoderKL.
pub struct Autoencoder {
    config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    dtype: DType,
}

impl std::fmt::Debug for Autoencoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoencoder").field("config", &self.config).field("dtype", &self.dtype).finish_non_exhaustive()
    }
}

impl Autoencoder {
    /// Builds the autoencoder of architecture `config` (checked first) from diffusers-named
    /// tensors.
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        config: VaeConfig,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::new(config, VarBuilder::from_tensors(tensors, dtype, device))
    }

    /// Builds the autoencoder of architecture `config` (checked first) from a variable builder
    /// with diffusers names, e.g. a `VarMap`'s for freshly initialised weights.
    pub fn new(config: VaeConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let dtype = vb.dtype();
        let z2 = 2 * config.latent_channels;
        let quant_conv = config
            .use_quant_conv
            .then(|| candle_nn::conv2d(z2, z2, 1, Default::default(), vb.pp("quant_conv")))
            .transpose()?;
        let lc = config.latent_channels;
        let post_quant_conv = config
            .use_post_quant_conv
            .then(|| candle_nn::conv2d(lc, lc, 1, Default::default(), vb.pp("post_quant_conv")))
            .transpose()?;
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), &config)?,
            decoder: Decoder::new(vb.pp("decoder"), &config)?,
            quant_conv,
            post_quant_conv,
            config,
            dtype,
        })
    }

    /// Loads weights in either layout (`.safetensors`, or a PyTorch `.pth`/`.pt`/`.ckpt` holding a
    /// state dict directly or under `state_dict`). The architecture is `config`, else the
    /// `config.json` beside a diffusers file, else inferred from the weights.
    pub fn load(path: &Path, config: Option<VaeConfig>, dtype: DType, device: &Device) -> Result<Self> {
        let fail = |reason: String| Error::Weights { path: path.to_path_buf(), reason };
        let tensors = read_weights(path)?;
        let tensors = match Layout::detect(&tensors) {
            Some(Layout::Diffusers) => tensors,
            Some(Layout::LatentDiffusion) => ldm_to_diffusers(tensors),
            None => {
                return Err(fail(
                    "neither the diffusers layout (encoder.down_blocks.*) nor the latent-diffusion layout \
                     (encoder.down.*); is this an AutoencoderKL?"
                        .into(),
                ))
            }
        };
        let beside = path.with_file_name("config.json");
        let config = match config {
            Some(c) => c,
            None if beside.exists() => {
                let text =
                    std::fs::read_to_string(&beside).map_err(|source| Error::Io { path: beside.clone(), source })?;
                VaeConfig::from_json(&text).map_err(|e| Error::Weights {
                    path: beside.clone(),
                    reason: format!("is not a VAE configuration ({e}); fix it or move it away"),
                })?
            }
            None => VaeConfig::infer(&tensors).map_err(|e| fail(e.to_string()))?,
        };
        Self::from_tensors(tensors, config, dtype, device).map_err(|e| match e {
            Error::Config(reason) => Error::Config(reason),
            other => fail(format!("does not fit the architecture ({other})")),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Images `(N, C, H, W)` in [−1, 1] → latent moments.
    pub fn encode(&self, images: &Tensor) -> Result<Moments> {
        let h = self.encoder.forward(&images.to_dtype(self.dtype)?)?;
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(&h)?,
            None => h,
        };
        Moments::from_stacked(&moments.to_dtype(DType::F32)?)
    }

    /// Unscaled latents `(N, latent, h, w)` → images in about [−1, 1].
    pub fn decode_unscaled(&self, z: &Tensor) -> Result<Tensor> {
        let z = z.to_dtype(self.dtype)?;
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(&z)?,
            None => z,
        };
        Ok(self.decoder.forward(&z)?.to_dtype(DType::F32)?)
    }

    /// Scaled latents (as the diffusion model produces them) → images, decoding at most
    /// `max_batch` latents at a time so memory stays bounded; `progress` gets the images done.
    pub fn decode(&self, z: &Tensor, max_batch: usize, progress: &mut dyn FnMut(usize)) -> Result<Tensor> {
        let z = (z.to_dtype(DType::F32)? / self.config.scaling_factor)?;
        let n = z.dim(0)?;
        let step = max_batch.max(1);
        let mut parts = Vec::with_capacity(n.div_ceil(step));
        for start in (0..n).step_by(step) {
            let len = step.min(n - start);
            parts.push(self.decode_unscaled(&z.narrow(0, start, len)?)?);
            progress(start + len);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}

/// Reads every tensor of a VAE weights file: safetensors, or a PyTorch state dict given directly
/// or under `state_dict`.
fn read_weights(path: &Path) -> Result<HashMap<String, Tensor>> {
    maskdit_io::read_tensors(path, "state_dict", |name| Some(name.to_string())).map_err(|e| match e {
        maskdit_io::Error::Io { path, source } => Error::Io { path, source },
        maskdit_io::Error::Format { path, reason } => Error::Weights { path, reason },
        locked @ maskdit_io::Error::Locked { .. } => {
            Error::Weights { path: locked.path().to_path_buf(), reason: locked.to_string() }
        }
    })
}
