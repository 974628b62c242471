//! Architecture of an AutoencoderKL, from a diffusers `config.json`, a latent-diffusion
//! `ddconfig`, or inferred from the weights themselves.

use std::collections::HashMap;

use candle_core::Tensor;
use serde::Deserialize;

use crate::{Error, Result};

/// The scale that maps SD latents to unit variance.
pub const SD_SCALE_FACTOR: f64 = 0.18215;

/// Architecture of an AutoencoderKL (diffusers naming).
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    /// Image channels in.
    pub in_channels: usize,
    /// Image channels out.
    pub out_channels: usize,
    /// Channels of each resolution level, highest resolution first.
    pub block_out_channels: Vec<usize>,
    /// Residual blocks per level in the encoder (the decoder has one more).
    pub layers_per_block: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Whether a 1×1 conv follows the encoder.
    pub use_quant_conv: bool,
    /// Whether a 1×1 conv precedes the decoder.
    pub use_post_quant_conv: bool,
    /// Latent scale factor (0.18215 for SD).
    pub scaling_factor: f64,
}

impl Default for VaeConfig {
    /// The Stable Diffusion VAE (sd-vae-ft-mse, autoencoder_kl.pth).
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            use_quant_conv: true,
            use_post_quant_conv: true,
            scaling_factor: SD_SCALE_FACTOR,
        }
    }
}

#[derive(Deserialize)]
struct DiffusersJson {
    in_channels: Option<usize>,
    out_channels: Option<usize>,
    block_out_channels: Vec<usize>,
    layers_per_block: usize,
    latent_channels: usize,
    norm_num_groups: Option<usize>,
    use_quant_conv: Option<bool>,
    use_post_quant_conv: Option<bool>,
    scaling_factor: Option<f64>,
}

#[derive(Deserialize)]
struct LdmDdConfig {
    z_channels: usize,
    in_channels: usize,
    out_ch: usize,
    ch: usize,
    ch_mult: Vec<usize>,
    num_res_blocks: usize,
}

#[derive(Deserialize)]
struct LdmJson {
    ddconfig: LdmDdConfig,
    embed_dim: usize,
    scale_factor: Option<f64>,
}

impl VaeConfig {
    /// Reads a diffusers `config.json` or a latent-diffusion config (`{"ddconfig": ..., "embed_dim": ...}`).
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let config = if value.get("ddconfig").is_some() {
            let ldm: LdmJson = serde_json::from_value(value).map_err(|e| Error::Config(e.to_string()))?;
            let dd = ldm.ddconfig;
            if dd.z_channels != ldm.embed_dim {
                return Err(Error::Config(format!(
                    "z_channels {} differs from embed_dim {}; only equal sizes are supported",
                    dd.z_channels, ldm.embed_dim
                )));
            }
            Self {
                in_channels: dd.in_channels,
                out_channels: dd.out_ch,
                block_out_channels: dd.ch_mult.iter().map(|m| m * dd.ch).collect(),
                layers_per_block: dd.num_res_blocks,
                latent_channels: ldm.embed_dim,
                norm_num_groups: 32,
                use_quant_conv: true,
                use_post_quant_conv: true,
                scaling_factor: ldm.scale_factor.unwrap_or(SD_SCALE_FACTOR),
            }
        } else {
            let d: DiffusersJson = serde_json::from_value(value).map_err(|e| Error::Config(e.to_string()))?;
            Self {
                in_channels: d.in_channels.unwrap_or(3),
                out_channels: d.out_channels.unwrap_or(3),
                block_out_channels: d.block_out_channels,
                layers_per_block: d.layers_per_block,
                latent_channels: d.latent_channels,
                norm_num_groups: d.norm_num_groups.unwrap_or(32),
                use_quant_conv: d.use_quant_conv.unwrap_or(true),
                use_post_quant_conv: d.use_post_quant_conv.unwrap_or(true),
                scaling_factor: d.scaling_factor.unwrap_or(SD_SCALE_FACTOR),
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// Infers the architecture from diffusers-named weights (group count: 32, the SD value).
    pub fn infer(tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let dims = |key: &str| -> Result<Vec<usize>> {
            tensors
                .get(key)
                .map(|t| t.dims().to_vec())
                .ok_or_else(|| Error::Config(format!("cannot infer the architecture: `{key}` is missing")))
        };
        let conv_in = dims("encoder.conv_in.weight")?;
        let conv_out = dims("decoder.conv_out.weight")?;
        let mut block_out_channels = Vec::new();
        while let Ok(d) = dims(&format!("encoder.down_blocks.{}.resnets.0.conv1.weight", block_out_channels.len())) {
            block_out_channels.push(d[0]);
        }
        let mut layers_per_block = 0;
        while tensors.contains_key(&format!("encoder.down_blocks.0.resnets.{layers_per_block}.conv1.weight")) {
            layers_per_block += 1;
        }
        let latent_channels = dims("decoder.conv_in.weight")?[1];
        let config = Self {
            in_channels: conv_in[1],
            out_channels: conv_out[0],
            block_out_channels,
            layers_per_block,
            latent_channels,
            norm_num_groups: 32,
            use_quant_conv: tensors.contains_key("quant_conv.weight"),
            use_post_quant_conv: tensors.contains_key("post_quant_conv.weight"),
            scaling_factor: SD_SCALE_FACTOR,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        if self.block_out_channels.is_empty() || self.layers_per_block == 0 || self.latent_channels == 0 {
            return Err(Error::Config("needs at least one level, one block per level and one latent channel".into()));
        }
        if let Some(c) = self.block_out_channels.iter().find(|c| !c.is_multiple_of(self.norm_num_groups)) {
            return Err(Error::Config(format!("{c} channels do not split into {} groups", self.norm_num_groups)));
        }
        Ok(())
    }

    /// How many times the image side shrinks into the latent.
    pub fn downsampling(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}
