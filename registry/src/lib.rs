//! The registry of known MaskDiT weights and where to get them.
//!
//! [`Registry`] reads `weights.toml` (compiled in, or the file `MASKDIT_REGISTRY` names): the
//! official checkpoints, the VAEs they pair with, the pre-encoded ImageNet latents, the FID
//! Inception network, and the toolkit's embedded MNIST model. The `fetch` functions turn an
//! entry into verified local files: from the Hugging Face Hub first (the file found by listing
//! the repository, checked against the size and SHA-256 it lists, cached in the standard
//! `$HF_HOME/hub` layout shared with Python), then from the registry's mirror addresses.
//! `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN` and `HF_HUB_OFFLINE` are honoured. Names from a listing,
//! a header or a registry file never reach outside the cache, and the token goes only to the
//! endpoint. [`labels`] gives a
//! model's class names and resolves class arguments. Nothing here prints: downloads report to a
//! [`DownloadProgress`].
//!
//! ```no_run
//! use maskdit_registry::{fetch, Quiet, Registry};
//!
//! # fn main() -> maskdit_registry::Result<()> {
//! let registry = Registry::load()?;
//! let entry = registry.model("imagenet256-guidance")?;
//! let weights = fetch::model_weights("imagenet256-guidance", entry, &mut Quiet)?;
//! let vae = entry.vae.as_deref().map(|name| fetch::fetch_vae(name, registry.vae(name)?, &mut Quiet)).transpose()?;
//! let names = maskdit_registry::labels::class_names(entry.num_classes.unwrap_or(1000), &[])?;
//! println!("{weights:?} with {vae:?}; class 207 is {}", names[207]);
//! # Ok(())
//! # }
//! ```

mod catalog;
mod error;
pub mod fetch;
pub mod hub;
pub mod labels;
mod progress;
mod untrusted;

pub use catalog::{
    unknown, url_cache_dir, DatasetEntry, EvaluatorEntry, ModelEntry, Registry, VaeEntry, EMBEDDED_MNIST, INCEPTION_FID,
};
pub use error::{Error, Result};
pub use fetch::ModelWeights;
pub use progress::{DownloadProgress, Quiet};
