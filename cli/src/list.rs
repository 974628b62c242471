//! `maskdit list` and `maskdit download`.

use anyhow::{bail, Result};

use crate::download::{cached_model, cached_vae, fetch_model, fetch_vae};
use crate::registry::Registry;

/// Prints the registry, marking what is cached.
pub fn list() -> Result<()> {
    let registry = Registry::load()?;
    println!("models:");
    for (name, entry) in &registry.models {
        let status = if entry.embedded {
            "embedded"
        } else if cached_model(name, entry).is_some() {
            "cached"
        } else {
            "-"
        };
        let default = if *name == registry.default_model { " (default)" } else { "" };
        println!("  {name:<26} {status:<9} {}{default}", entry.description);
    }
    println!("VAEs:");
    for (name, entry) in &registry.vaes {
        let status = if cached_vae(name, entry).is_some() { "cached" } else { "-" };
        println!("  {name:<26} {status:<9} {}", entry.description);
    }
    Ok(())
}

/// Downloads a model or VAE of the registry into the cache.
pub fn download(name: &str) -> Result<()> {
    let registry = Registry::load()?;
    let path = if let Some(entry) = registry.models.get(name) {
        if entry.embedded {
            bail!("`{name}` is embedded in maskdit; there is nothing to download");
        }
        let path = fetch_model(name, entry)?;
        if let Some(vae) = &entry.vae {
            let vae_path = fetch_vae(vae, registry.vae(vae)?)?;
            eprintln!("VAE {vae}: {}", vae_path.display());
        }
        path
    } else if let Some(entry) = registry.vaes.get(name) {
        fetch_vae(name, entry)?
    } else {
        let all: Vec<String> = registry.models.keys().chain(registry.vaes.keys()).cloned().collect();
        bail!(crate::registry::unknown("model or VAE", name, all.iter()));
    };
    println!("{}", path.display());
    Ok(())
}
