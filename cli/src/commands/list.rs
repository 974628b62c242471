//! `maskdit list`: the registry, with where each entry comes from and what is cached.

use maskdit_io::printable;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use maskdit::{weights, ModelConfig};
use maskdit_registry::fetch::{cached_dataset, cached_evaluator, cached_model, cached_vae};
use maskdit_registry::{Registry, EMBEDDED_MNIST};

/// Options of `maskdit list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Instead of the registry, list the classes of MODEL (a registry name or a weights file):
    /// index and name, as `generate --class` takes them.
    #[arg(long, value_name = "MODEL")]
    classes: Option<String>,
}

/// The class count and own class names of `model`: a registry name or a weights file.
fn model_classes(model: &str, registry: &Registry) -> Result<(usize, Vec<String>)> {
    if let Some(entry) = registry.models.get(model) {
        if entry.embedded {
            let (_, header) = safetensors::SafeTensors::read_metadata(EMBEDDED_MNIST)
                .map_err(|e| anyhow::anyhow!("the embedded model is unreadable: {e}"))?;
            let config = header
                .metadata()
                .as_ref()
                .and_then(|m| m.get(weights::CONFIG_METADATA))
                .context("the embedded model records no architecture")?;
            return Ok((ModelConfig::from_json(config)?.num_classes, Vec::new()));
        }
        return Ok((entry.num_classes.unwrap_or(1000), Vec::new()));
    }
    let path = Path::new(model);
    if !path.exists() {
        return Err(maskdit_registry::unknown("model", model, registry.models.keys()).into());
    }
    if !maskdit_io::is_safetensors(path) {
        bail!(
            "{model} records no classes: the official .pt checkpoints are ImageNet models (see `maskdit list --classes \
             imagenet256-guidance`)"
        );
    }
    let config = weights::read_config(path)?
        .with_context(|| format!("{model} records no architecture (convert it with `maskdit convert`)"))?;
    Ok((config.num_classes, weights::read_class_names(path)?))
}

/// Prints the classes of `model`, one `index<TAB>name` line each.
fn list_classes(model: &str) -> Result<()> {
    let registry = Registry::load()?;
    let (count, names) = model_classes(model, &registry)?;
    if count == 0 {
        println!("{model} is unconditional: it has no classes (generate it without --class)");
        return Ok(());
    }
    let names = match names {
        own if !own.is_empty() => own,
        _ if count == 1000 => maskdit_registry::labels::imagenet_names()?,
        _ => (0..count).map(|i| i.to_string()).collect(),
    };
    for (index, name) in names.iter().enumerate() {
        println!("{index}\t{}", printable(name));
    }
    Ok(())
}

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
        (Some(repo), _) => format!("Hub {}: {}", printable(repo), printable(file)),
        (None, Some(url)) => printable(url).into_owned(),
        (None, None) => "-".into(),
    }
}

/// Prints the registry: each entry's source, whether it is cached (and verified), its size;
/// or, with `--classes`, a model's classes.
pub fn run(args: ListArgs) -> Result<()> {
    if let Some(model) = &args.classes {
        return list_classes(model);
    }
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
        println!("  {}{default}: {}\n      from {from}; {state}", printable(name), printable(&entry.description));
    }
    println!("VAEs:");
    for (name, entry) in &registry.vaes {
        let first = entry.url.as_deref().or(entry.mirrors.first().map(String::as_str));
        let from = source(entry.repo.as_deref(), &entry.files.join(", "), first);
        let state = status(cached_vae(name, entry));
        println!("  {}: {}\n      from {from}; {state}", printable(name), printable(&entry.description));
    }
    println!("datasets:");
    for (name, entry) in &registry.datasets {
        let cached = cached_dataset(name, entry).and_then(|folder| Some(folder.join(entry.files.first()?)));
        let from = format!(
            "Hub dataset {}: the LMDB folder naming `{}`",
            printable(&entry.repo),
            printable(&entry.folder_contains)
        );
        println!("  {}: {}\n      from {from}; {}", printable(name), printable(&entry.description), status(cached));
    }
    println!("evaluation networks:");
    for (name, entry) in &registry.evaluators {
        let cached = status(cached_evaluator(name, entry));
        println!(
            "  {}: {}\n      from {}; {cached}",
            printable(name),
            printable(&entry.description),
            printable(&entry.url)
        );
    }
    Ok(())
}
