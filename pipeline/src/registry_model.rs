//! Registry models ready to sample: weights fetched and verified (or embedded), the
//! architecture the registry entry names, the VAE it pairs with, its default settings.

use candle_core::{DType, Device};
use maskdit::{checkpoint, MaskDit, ModelConfig, WeightSet};
use maskdit_registry::{fetch, DownloadProgress, ModelWeights, Registry};
use maskdit_sampler::GuidanceInterval;
use maskdit_vae::Autoencoder;

use crate::{Error, Result};

/// A registry model with its defaults.
#[derive(Debug, Clone)]
pub struct RegistryModel {
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
) -> Result<RegistryModel> {
    let entry = registry.model(name)?;
    let interval = entry
        .guidance_interval
        .map(|[low, high]| GuidanceInterval::new(low, high))
        .transpose()
        .map_err(|e| Error::Request(format!("registry entry {name}: {e}")))?;
    let model = match fetch::model_weights(name, entry, progress)? {
        ModelWeights::Embedded(bytes) => checkpoint::load_bytes(bytes, dtype, device)?,
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
            checkpoint::load(&path, &config, set, dtype, device)?
        }
    };
    Ok(RegistryModel { model, vae: entry.vae.clone(), steps: entry.steps, guidance: entry.cfg, interval })
}

/// Loads VAE `name` of `registry`, fetched and verified when not cached.
pub fn load_vae(
    registry: &Registry,
    name: &str,
    dtype: DType,
    device: &Device,
    progress: &mut dyn DownloadProgress,
) -> Result<Autoencoder> {
    let path = fetch::fetch_vae(name, registry.vae(name)?, progress)?;
    Ok(Autoencoder::load(&path, None, dtype, device)?)
}
