//! `maskdit list`: the registry, with where each entry comes from and what is cached.

use std::path::PathBuf;

use anyhow::Result;

use crate::fetch::{cached_dataset, cached_evaluator, cached_model, cached_vae};
use crate::registry::Registry;

/// `cached, verified, 2700.0 MB` for a cached file, `not cached` otherwise.
fn status(cached: Option<PathBuf>) -> String {
    match cached.and_then(|p| std::fs::metadata(p).ok()) {
        Some(meta) => format!("cached, verified, {:.1} MB", meta.len() as f64 / 1e6),
        None => "not cached".into(),
    }
}

/// `Hub repo:file` or the first address.
fn source(repo: Option<&str>, file: &str, url: Option<&str>) -> String {
    match (repo, url) {
        (Some(repo), _) => format!("Hub {repo}: {file}"),
        (None, Some(url)) => url.to_string(),
        (None, None) => "-".into(),
    }
}

/// Prints the registry: each entry's source, whether it is cached (and verified), its size.
pub fn run() -> Result<()> {
    let registry = Registry::load()?;
    println!("models:");
    for (name, entry) in &registry.models {
        let default = if *name == registry.default_model { " (default)" } else { "" };
        let (state, from) = if entry.embedded {
            ("embedded in maskdit".to_string(), "-".to_string())
        } else {
            let first = entry.url.as_deref().or(entry.mirrors.first().map(String::as_str));
            (status(cached_model(name, entry)), source(entry.repo.as_deref(), &entry.file, first))
        };
        println!("  {name}{default}: {}\n      from {from}; {state}", entry.description);
    }
    println!("VAEs:");
    for (name, entry) in &registry.vaes {
        let first = entry.url.as_deref().or(entry.mirrors.first().map(String::as_str));
        let from = source(entry.repo.as_deref(), &entry.files.join(", "), first);
        println!("  {name}: {}\n      from {from}; {}", entry.description, status(cached_vae(name, entry)));
    }
    println!("datasets:");
    for (name, entry) in &registry.datasets {
        let cached = cached_dataset(name, entry).and_then(|folder| Some(folder.join(entry.files.first()?)));
        let from = format!("Hub dataset {}: the LMDB folder naming `{}`", entry.repo, entry.folder_contains);
        println!("  {name}: {}\n      from {from}; {}", entry.description, status(cached));
    }
    println!("evaluation networks:");
    for (name, entry) in &registry.evaluators {
        let cached = status(cached_evaluator(name, entry));
        println!("  {name}: {}\n      from {}; {cached}", entry.description, entry.url);
    }
    Ok(())
}
