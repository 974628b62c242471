//! `maskdit list`: the registry, marking what is cached.

use anyhow::Result;

use crate::fetch::{cached_model, cached_vae};
use crate::registry::Registry;

/// Prints the registry, marking what is cached.
pub fn run() -> Result<()> {
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
