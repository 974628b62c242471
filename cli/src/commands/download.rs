//! `maskdit download`: registry entries into the cache.

use anyhow::{bail, Result};
use clap::Args;
use maskdit_registry::fetch::{fetch_dataset, fetch_evaluator, fetch_model, fetch_vae};
use maskdit_registry::Registry;

use crate::runtime::progress::DownloadBar;

/// Options of `maskdit download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Registry name (see `maskdit list`).
    name: String,
}

/// Downloads a model (and the VAE it pairs with), a VAE, a dataset or an evaluation network of
/// the registry into the cache and prints where it is.
pub fn run(args: DownloadArgs) -> Result<()> {
    let name = args.name.as_str();
    let registry = Registry::load()?;
    let path = if let Some(entry) = registry.models.get(name) {
        if entry.embedded {
            bail!("`{name}` is embedded in maskdit; there is nothing to download");
        }
        let path = fetch_model(name, entry, &mut DownloadBar::default())?;
        if let Some(vae) = &entry.vae {
            let vae_path = fetch_vae(vae, registry.vae(vae)?, &mut DownloadBar::default())?;
            eprintln!("VAE {vae}: {}", vae_path.display());
        }
        path
    } else if let Some(entry) = registry.vaes.get(name) {
        fetch_vae(name, entry, &mut DownloadBar::default())?
    } else if let Some(entry) = registry.datasets.get(name) {
        fetch_dataset(name, entry, &mut DownloadBar::default())?
    } else if let Some(entry) = registry.evaluators.get(name) {
        fetch_evaluator(name, entry, &mut DownloadBar::default())?
    } else {
        let all: Vec<String> = registry
            .models
            .keys()
            .chain(registry.vaes.keys())
            .chain(registry.datasets.keys())
            .chain(registry.evaluators.keys())
            .cloned()
            .collect();
        return Err(maskdit_registry::unknown("model, VAE, dataset or evaluator", name, all.iter()).into());
    };
    println!("{}", path.display());
    Ok(())
}
