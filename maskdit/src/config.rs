//! Model configuration and the official architecture presets.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Architecture of a MaskDiT network, in the field names of the official code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Spatial size of the (latent) input, in pixels.
    pub input_size: usize,
    /// Side of a square patch.
    pub patch_size: usize,
    /// Channels of the input (4 for SD latents).
    pub in_channels: usize,
    /// Width of the encoder blocks.
    pub hidden_size: usize,
    /// Number of encoder blocks.
    pub depth: usize,
    /// Attention heads of the encoder blocks.
    pub num_heads: usize,
    /// MLP width as a multiple of the block width.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Number of classes; 0 for an unconditional model.
    pub num_classes: usize,
    /// Whether the light decoder follows the encoder.
    #[serde(default)]
    pub use_decoder: bool,
    /// Width of the decoder blocks (official: 512).
    #[serde(default)]
    pub decoder_hidden_size: usize,
    /// Number of decoder blocks (official: 8).
    #[serde(default)]
    pub decoder_depth: usize,
    /// Attention heads of the decoder blocks (official: 16).
    #[serde(default)]
    pub decoder_num_heads: usize,
    /// Weight of the MAE reconstruction loss; a learnable mask token exists when it is > 0.
    #[serde(default)]
    pub mae_loss_coef: f64,
    /// Fraction of patches removed during masked training.
    #[serde(default)]
    pub mask_ratio: f64,
    /// Probability of dropping a label during training.
    #[serde(default = "default_class_dropout")]
    pub class_dropout_prob: f64,
}

fn default_mlp_ratio() -> f64 {
    4.0
}

fn default_class_dropout() -> f64 {
    0.1
}

/// Official decoder: 512 wide, 8 blocks, 16 heads.
pub const OFFICIAL_DECODER: (usize, usize, usize) = (512, 8, 16);

impl ModelConfig {
    /// An official DiT preset (`DiT-S/2`, `DiT-B/4`, `DiT-XL/2`, `DiT-H/8`, ...), for a
    /// latent of `input_size` pixels with `in_channels` channels and `num_classes` classes.
    /// The decoder is the official one (512 wide, 8 deep, 16 heads) when `use_decoder`.
    pub fn preset(
        name: &str,
        input_size: usize,
        in_channels: usize,
        num_classes: usize,
        use_decoder: bool,
    ) -> Result<Self> {
        let (family, patch) = name.strip_prefix("DiT-").and_then(|rest| rest.split_once('/')).ok_or_else(|| {
            Error::Config(format!("unknown preset `{name}`; try one of {}", Self::PRESETS.join(", ")))
        })?;
        let (depth, hidden_size, num_heads) = match family {
            "S" => (12, 384, 6),
            "B" => (12, 768, 12),
            "L" => (24, 1024, 16),
            "XL" => (28, 1152, 16),
            "H" => (32, 1280, 16),
            _ => {
                return Err(Error::Config(format!("unknown preset `{name}`; try one of {}", Self::PRESETS.join(", "))))
            }
        };
        let patch_size = match patch {
            "2" => 2,
            "4" => 4,
            "8" => 8,
            _ => return Err(Error::Config(format!("unknown preset `{name}`; patch size must be 2, 4 or 8"))),
        };
        let (dec_hidden, dec_depth, dec_heads) = if use_decoder { OFFICIAL_DECODER } else { (0, 0, 0) };
        let config = Self {
            input_size,
            patch_size,
            in_channels,
            hidden_size,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            num_classes,
            use_decoder,
            decoder_hidden_size: dec_hidden,
            decoder_depth: dec_depth,
            decoder_num_heads: dec_heads,
            mae_loss_coef: if use_decoder { 0.1 } else { 0.0 },
            mask_ratio: 0.5,
            class_dropout_prob: 0.1,
        };
        config.validate()?;
        Ok(config)
    }

    /// Names accepted by [`ModelConfig::preset`].
    pub const PRESETS: [&'static str; 15] = [
        "DiT-S/2", "DiT-S/4", "DiT-S/8", "DiT-B/2", "DiT-B/4", "DiT-B/8", "DiT-L/2", "DiT-L/4", "DiT-L/8", "DiT-XL/2",
        "DiT-XL/4", "DiT-XL/8", "DiT-H/2", "DiT-H/4", "DiT-H/8",
    ];

    /// Reads a configuration from JSON text (the golden `config.json` layout).
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Patches per side.
    pub fn grid_size(&self) -> usize {
        self.input_size / self.patch_size
    }

    /// Tokens per image.
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// Whether the decoder carries a learnable mask token (decoder present and MAE loss on).
    pub fn has_mask_token(&self) -> bool {
        self.use_decoder && self.mae_loss_coef > 0.0
    }

    /// Width of the tokens the final layer sees.
    pub fn final_hidden_size(&self) -> usize {
        if self.use_decoder {
            self.decoder_hidden_size
        } else {
            self.hidden_size
        }
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.patch_size == 0 || self.input_size == 0 || !self.input_size.is_multiple_of(self.patch_size) {
            return fail(format!(
                "input_size {} is not a positive multiple of patch_size {}",
                self.input_size, self.patch_size
            ));
        }
        if self.in_channels == 0 {
            return fail("in_channels must be positive".into());
        }
        let check_width = |what: &str, width: usize, heads: usize| -> Result<()> {
            if width == 0 || heads == 0 || !width.is_multiple_of(heads) {
                return Err(Error::Config(format!(
                    "{what} width {width} is not a positive multiple of its {heads} heads"
                )));
            }
            if !width.is_multiple_of(4) {
                return Err(Error::Config(format!(
                    "{what} width {width} must be a multiple of 4 for the 2-D sin-cos position table"
                )));
            }
            Ok(())
        };
        check_width("encoder", self.hidden_size, self.num_heads)?;
        if self.use_decoder {
            check_width("decoder", self.decoder_hidden_size, self.decoder_num_heads)?;
            if self.decoder_depth == 0 {
                return fail("decoder_depth must be positive when use_decoder is set".into());
            }
        }
        if self.mlp_ratio.is_nan() || self.mlp_ratio <= 0.0 {
            return fail(format!("mlp_ratio {} must be positive", self.mlp_ratio));
        }
        if !(0.0..1.0).contains(&self.mask_ratio) {
            return fail(format!("mask_ratio {} must lie in [0, 1)", self.mask_ratio));
        }
        Ok(())
    }
}
