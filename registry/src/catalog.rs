//! The catalogue of known models, VAEs, datasets and evaluation networks (`weights.toml`,
//! compiled in).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// The registry text compiled into the crate.
const REGISTRY: &str = include_str!("../../weights.toml");

/// The weights of the embedded model (class-conditional MNIST digits, trained by the toolkit).
pub const EMBEDDED_MNIST: &[u8] = include_bytes!("../assets/mnist.safetensors");

/// All entries.
#[derive(Debug, Deserialize)]
pub struct Registry {
    /// The model `generate` uses without `--model`.
    pub default_model: String,
    /// Diffusion models by name.
    pub models: BTreeMap<String, ModelEntry>,
    /// VAEs by name.
    pub vaes: BTreeMap<String, VaeEntry>,
    /// Training data by name.
    #[serde(default)]
    pub datasets: BTreeMap<String, DatasetEntry>,
    /// Networks for sample evaluation by name.
    #[serde(default)]
    pub evaluators: BTreeMap<String, EvaluatorEntry>,
}

/// A network used to evaluate samples (a single file at a direct address).
#[derive(Debug, Clone, Deserialize)]
pub struct EvaluatorEntry {
    /// What it is.
    pub description: String,
    /// Direct download address.
    pub url: String,
    /// File name in the cache.
    pub file: String,
    /// Expected SHA-256, hex: all 64 digits, or the leading ones a file name publishes.
    pub sha256: Option<String>,
}

/// The registry name of the FID Inception weights.
pub const INCEPTION_FID: &str = "inception-fid";

/// A diffusion model.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    /// What it is.
    pub description: String,
    /// Shipped inside the binary.
    #[serde(default)]
    pub embedded: bool,
    /// Direct download address (tried after the Hub).
    pub url: Option<String>,
    /// More direct addresses, tried in order after `url`.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Hugging Face Hub repository.
    pub repo: Option<String>,
    /// Hub revision.
    pub revision: Option<String>,
    /// File name (in the Hub repo, or of the cached download).
    pub file: String,
    /// Expected SHA-256 of the file, hex.
    pub sha256: Option<String>,
    /// DiT preset of the architecture (absent: recorded in the file).
    pub preset: Option<String>,
    /// Output image size in pixels.
    pub resolution: usize,
    /// Latent size (absent: pixel-space model).
    pub latent_size: Option<usize>,
    /// Latent channels.
    pub latent_channels: Option<usize>,
    /// Number of classes.
    pub num_classes: Option<usize>,
    /// Whether the decoder is present.
    pub decoder: Option<bool>,
    /// VAE to decode with (latent models).
    pub vae: Option<String>,
    /// Default number of sampling steps.
    pub steps: usize,
    /// Default guidance scale.
    pub cfg: f64,
    /// Default noise levels `[low, high]` guidance applies to (absent: every level).
    pub guidance_interval: Option<[f64; 2]>,
}

/// Training data: an LMDB folder in a Hub dataset repository.
#[derive(Debug, Clone, Deserialize)]
pub struct DatasetEntry {
    /// What it is.
    pub description: String,
    /// Hub dataset repository.
    pub repo: String,
    /// Hub revision.
    pub revision: Option<String>,
    /// A part of the path of the LMDB folder that tells it from the repository's others.
    pub folder_contains: String,
    /// The files of the LMDB folder; the first (`data.mdb`) is required, the others are taken
    /// where the folder has them.
    pub files: Vec<String>,
    /// Address of the folder elsewhere (tried after the Hub): the files are fetched below it.
    pub mirror: Option<String>,
    /// Latent channels.
    pub channels: usize,
    /// Latent side.
    pub resolution: usize,
}

/// A VAE.
#[derive(Debug, Clone, Deserialize)]
pub struct VaeEntry {
    /// What it is.
    pub description: String,
    /// Hugging Face Hub repository.
    pub repo: Option<String>,
    /// Hub revision.
    pub revision: Option<String>,
    /// Direct download address (single file; tried after the Hub).
    pub url: Option<String>,
    /// More direct addresses of a single-file VAE, tried in order after `url`.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Files to fetch; the first holds the weights.
    pub files: Vec<String>,
    /// Expected SHA-256 of the weights file, hex.
    pub sha256: Option<String>,
}

impl Registry {
    /// The registry: the file `MASKDIT_REGISTRY` names, else the compiled-in one.
    pub fn load() -> Result<Self> {
        match std::env::var_os("MASKDIT_REGISTRY") {
            Some(path) => {
                let path = Path::new(&path);
                let text =
                    std::fs::read_to_string(path).map_err(Error::io("read the registry (MASKDIT_REGISTRY)", path))?;
                Self::parse(&text).map_err(|e| {
                    Error::Registry(format!("{} is not a registry like weights.toml: {e}", path.display()))
                })
            }
            None => Self::builtin(),
        }
    }

    /// The registry compiled into the crate (the workspace's weights.toml).
    pub fn builtin() -> Result<Self> {
        Self::parse(REGISTRY).map_err(|e| Error::Registry(format!("the built-in weights.toml is malformed: {e}")))
    }

    /// A registry from the text of a weights.toml, checked: checksums are hex, the default
    /// model is listed.
    pub fn parse(text: &str) -> Result<Self> {
        let registry: Self = toml::from_str(text).map_err(|e| Error::Registry(e.to_string()))?;
        let checksums = registry.models.values().map(|e| &e.sha256);
        let checksums = checksums.chain(registry.vaes.values().map(|e| &e.sha256));
        for sha in checksums.chain(registry.evaluators.values().map(|e| &e.sha256)).flatten() {
            if !(8..=64).contains(&sha.len()) || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::Registry(format!("`{sha}` is not a SHA-256 (8 to 64 hex digits)")));
            }
        }
        if !registry.models.contains_key(&registry.default_model) {
            return Err(Error::Registry(format!("default model `{}` is not listed", registry.default_model)));
        }
        Ok(registry)
    }

    /// The model called `name`, or an error suggesting the nearest names.
    pub fn model(&self, name: &str) -> Result<&ModelEntry> {
        self.models.get(name).ok_or_else(|| unknown("model", name, self.models.keys()))
    }

    /// The VAE called `name`, or an error suggesting the nearest names.
    pub fn vae(&self, name: &str) -> Result<&VaeEntry> {
        self.vaes.get(name).ok_or_else(|| unknown("VAE", name, self.vaes.keys()))
    }
}

/// [`Error::Unknown`] for `name`, with the three known names closest to it.
pub fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> Error {
    let mut scored: Vec<(f64, &String)> = known.map(|k| (strsim::jaro_winkler(name, k), k)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let suggestions = scored.iter().take(3).map(|(_, k)| k.to_string()).collect();
    Error::Unknown { what: what.to_string(), name: name.to_string(), suggestions }
}

/// Where downloads by URL are cached: `$HF_HOME/maskdit` or `~/.cache/huggingface/maskdit`.
pub fn url_cache_dir() -> PathBuf {
    let base = std::env::var_os("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache").join("huggingface")
    });
    base.join("maskdit")
}
