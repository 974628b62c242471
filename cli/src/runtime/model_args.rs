//! Which model a command samples with (`--model`, `--vae`, `--arch`, …), and loading it with
//! its decoder: shared by `generate` and `serve`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use maskdit::{ModelConfig, WeightSet};
use maskdit_pipeline::{Decoder, LoadedModel};
use maskdit_registry::Registry;

use crate::runtime::progress::{self, DownloadBar};

/// The model options.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Registry name (see `maskdit list`) or a weights file; default: the embedded MNIST model.
    #[arg(long)]
    pub model: Option<String>,
    /// VAE for latent models: registry name or weights file (default: the model's).
    #[arg(long)]
    pub vae: Option<String>,
    /// Architecture of a checkpoint file that does not record it: a DiT preset.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(ModelConfig::PRESETS))]
    pub arch: Option<String>,
    /// With --arch: latent size (32 for 256 px, 64 for 512 px).
    #[arg(long, default_value_t = 32, value_parser = crate::runtime::bounds::latent_size)]
    pub latent_size: usize,
    /// With --arch: the checkpoint has no decoder.
    #[arg(long)]
    pub no_decoder: bool,
    /// Weights of a training checkpoint to use.
    #[arg(long, value_enum, default_value_t = WeightSet::Ema)]
    pub weights: WeightSet,
}

impl ModelArgs {
    /// The `--model` value, or the registry's default model.
    pub fn name(&self, registry: &Registry) -> String {
        self.model.clone().unwrap_or_else(|| registry.default_model.clone())
    }

    /// The model `--model` names (a registry entry or a file) with its defaults, and its decoder.
    pub fn load(&self, registry: &Registry, device: &Device, dtype: DType) -> Result<(LoadedModel, Decoder)> {
        let spinner = progress::spinner("loading model");
        let set = self.weights;
        let name = self.name(registry);
        let found = match registry.models.get(&name) {
            Some(entry) => {
                if !entry.embedded {
                    spinner.finish_and_clear();
                }
                maskdit_pipeline::load_model(registry, &name, set, dtype, device, &mut DownloadBar::default())?
            }
            None => {
                let path = PathBuf::from(&name);
                if !path.exists() {
                    if path.extension().is_some() || name.contains(std::path::MAIN_SEPARATOR) {
                        bail!(
                            "{name} does not exist (no such file); check the path, or name a registry model (see \
                             `maskdit list`)"
                        );
                    }
                    return Err(maskdit_registry::unknown("model", &name, registry.models.keys()).into());
                }
                let arch = self.arch.as_deref();
                let fallback =
                    arch.map(|a| ModelConfig::preset(a, self.latent_size, 4, 1000, !self.no_decoder)).transpose()?;
                maskdit_pipeline::load_file(&path, fallback, set, dtype, device)?
            }
        };
        spinner.finish_and_clear();
        let decoder = match self.vae.as_ref().or(found.vae.as_ref()) {
            Some(vae) => {
                let vae = maskdit_pipeline::load_vae(registry, vae, dtype, device, &mut DownloadBar::default())
                    .with_context(|| format!("cannot load the VAE {vae}"))?;
                Decoder::Vae(vae.into())
            }
            None => Decoder::Pixels,
        };
        Ok((found, decoder))
    }
}
