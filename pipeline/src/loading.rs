//! Models ready to sample, with their defaults: by registry name (weights fetched and verified,
//! or embedded; the architecture, VAE and settings the entry names) or from a weights file.

use std::path::Path;

use candle_core::{DType, Device};
use maskdit::{weights, MaskDit, ModelConfig, WeightSet};
use maskdit_registry::{fetch, DownloadProgress, ModelWeights, Registry};
use maskdit_sampler::GuidanceInterval;
use maskdit_vae::Autoencoder;

use crate::{Error, Result};

/// A model with its defaults.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    /// The network.
    pub model: MaskDit,
    /// The registry name of the VAE it decodes with (`None`: a pixel-space model).
    pub vae: Option<String>,
    /// Default number of sampling steps.
    pub steps: usize,
    /// Default guidance scale.
    pub guidance: f64,
    /// Default noise levels guidance applies to (`None`: every level).
    pub interval: Option<GuidanceInterval>,
    /// The class names the weights file records (empty when it records none; the official
    /// 1000-class models take ImageNet's, `maskdit_registry::labels`).
    pub class_names: Vec<String>,
}

/// The VAE latent models from a plain weights file decode with.
const FILE_VAE: &str = "sd-vae-ft-mse";

/// Loads weights file `path` (a toolkit `.safetensors` file or an official `.pt`; weights set
/// `set` of a training checkpoint) with its architecture: recorded in the file, else a
/// `config.json` beside it, else `fallback`. Latent models pair with `sd-vae-ft-mse`; the
/// defaults are the official sampler's (40 steps, no guidance).
pub fn load_file(
    path: &Path,
    fallback: Option<ModelConfig>,
    set: WeightSet,
    dtype: DType,
    device: &Device,
) -> Result<LoadedModel> {
    let safetensors = maskdit_io::is_safetensors(path);
    let recorded = if safetensors { weights::read_config(path)? } else { None };
    let beside = path.with_file_name("config.json");
    let config = match (recorded, fallback) {
        (Some(config), _) => config,
        (None, _) if beside.exists() => {
            let text = std::fs::read_to_string(&beside)
                .map_err(|e| Error::Request(format!("cannot read {}: {e}", beside.display())))?;
            ModelConfig::from_json(&text).map_err(|e| {
                Error::Request(format!(
                    "{} is not a model configuration ({e}); fix it or move it away",
                    beside.display()
                ))
            })?
        }
        (None, Some(config)) => config,
        (None, None) => {
            return Err(Error::Request(format!(
                "{} does not record its architecture and has no config.json beside it; name a preset \
                 (e.g. `--arch DiT-XL/2 --latent-size 32`)",
                path.display()
            )))
        }
    };
    let model = weights::load(path, &config, set, dtype, device)?;
    let class_names = if safetensors { weights::read_class_names(path)? } else { Vec::new() };
    let vae = (config.in_channels == 4).then(|| FILE_VAE.to_string());
    Ok(LoadedModel { model, vae, steps: 40, guidance: 1.0, interval: None, class_names })
}

/// Loads model `name` of `registry` (weights set `set` of a training checkpoint): the embedded
/// weights, or its file (fetched and verified when not cached) read as the architecture the
/// entry names.
pub fn load_model(
    registry: &Registry,
    name: &str,
    set: WeightSet,
    dtype: DType,
    device: &Device,
    progress: &mut dyn DownloadProgress,
) -> Result<LoadedModel> {
    let entry = registry.model(name)?;
    let interval = entry
        .guidance_interval
        .map(|[low, high]| GuidanceInterval::new(low, high))
        .transpose()
        .map_err(|e| Error::Request(format!("registry entry {name}: {e}")))?;
    let model = match fetch::model_weights(name, entry, progress)? {
        ModelWeights::Embedded(bytes) => weights::load_bytes(bytes, dtype, device)?,
        ModelWeights::File(path) => {
            let preset = entry
                .preset
                .as_deref()
                .ok_or_else(|| Error::Request(format!("registry entry {name} lacks its architecture preset")))?;
            let config = ModelConfig::preset(
                preset,
                entry.latent_size.unwrap_or(entry.resolution),
                entry.latent_channels.unwrap_or(4),
                entry.num_classes.unwrap_or(1000),
                entry.decoder.unwrap_or(true),
            )?;
            weights::load(&path, &config, set, dtype, device)?
        }
    };
    Ok(LoadedModel {
        model,
        vae: entry.vae.clone(),
        steps: entry.steps,
        guidance: entry.cfg,
        interval,
        class_names: Vec::new(),
    })
}

/// Loads a VAE: the weights file at `name` where one exists, else VAE `name` of `registry`,
/// fetched and verified when not cached.
pub fn load_vae(
    registry: &Registry,
    name: &str,
    dtype: DType,
    device: &Device,
    progress: &mut dyn DownloadProgress,
) -> Result<Autoencoder> {
    let path = match Path::new(name) {
        file if file.exists() => file.to_path_buf(),
        _ => fetch::fetch_vae(name, registry.vae(name)?, progress)?,
    };
    Ok(Autoencoder::load(&path, None, dtype, device)?)
}
