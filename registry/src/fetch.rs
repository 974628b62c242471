//! Fetching registry entries for the commands that need them: from the Hugging Face Hub first
//! (the file found by listing the repository, verified against the size and SHA-256 it lists),
//! then from the mirror addresses the registry names (resumed, checked against the registry's
//! SHA-256 where known). Every failure is reported when none succeeds.

use std::path::{Path, PathBuf};

use crate::catalog::{url_cache_dir, DatasetEntry, EvaluatorEntry, ModelEntry, Registry, VaeEntry, INCEPTION_FID};
use crate::hub::{self, HubRepo, RepoKind};
use crate::{untrusted, DownloadProgress, Error, Result};

/// Whether `HF_HUB_OFFLINE` asks for no network.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0" && v.to_lowercase() != "false")
}

/// Where one registry file comes from.
struct Source<'a> {
    /// Registry name of the entry.
    name: &'a str,
    /// Hub repository and revision.
    repo: Option<(&'a str, &'a str)>,
    /// File name (found in the Hub repo by listing; the cached name of a mirror download).
    file: &'a str,
    /// Expected SHA-256, hex.
    sha256: Option<&'a str>,
    /// Direct addresses, tried in order after the Hub.
    mirrors: Vec<String>,
}

/// `url` with its scheme and host replaced by `MASKDIT_MIRROR_BASE` when that is set (to
/// point every mirror at a local stand-in).
fn mirror_url(url: &str) -> String {
    let Ok(base) = std::env::var("MASKDIT_MIRROR_BASE") else { return url.to_string() };
    let path = url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or("/");
    format!("{}{path}", base.trim_end_matches('/'))
}

impl Source<'_> {
    fn hub(&self) -> Option<Result<HubRepo>> {
        self.repo.map(|(repo, revision)| HubRepo::new(RepoKind::Model, repo, revision))
    }

    /// `URL_CACHE/NAME/FILE`, for a registry name and file name that are single names.
    fn mirror_destination(&self) -> Result<PathBuf> {
        untrusted::plain_name("the registry name", self.name)?;
        untrusted::plain_name("the registry file", self.file)?;
        Ok(url_cache_dir().join(self.name).join(self.file))
    }

    /// The verified cached copy, if any.
    fn cached(&self) -> Option<PathBuf> {
        if let Some(path) = self.hub().and_then(|hub| hub.ok()?.cached(self.file)) {
            return Some(path);
        }
        let dest = self.mirror_destination().ok()?;
        let intact = dest.is_file()
            && self.sha256.is_none_or(|want| hub::sha256_of(&dest).is_ok_and(|got| checksum_matches(&got, want)));
        intact.then_some(dest)
    }

    fn fetch(&self, progress: &mut dyn DownloadProgress) -> Result<PathBuf> {
        if let Some(path) = self.cached() {
            return Ok(path);
        }
        if offline() {
            return Err(Error::Offline { name: self.name.to_string() });
        }
        let mut failures = Vec::new();
        if let Some(((repo, _), hub)) = self.repo.zip(self.hub()) {
            let fetched = hub.and_then(|hub| {
                let files = hub.list()?;
                let file = hub::resolve(&files, self.file, self.sha256, hub.name())?.clone();
                hub.download(self.file, &file, progress)
            });
            match fetched {
                Ok(path) => return Ok(path),
                Err(e) => failures.push(format!("Hub repo {}: {e}", maskdit_io::printable(repo))),
            }
        }
        let destination = self.mirror_destination()?;
        for url in &self.mirrors {
            let url = mirror_url(url);
            match download_url(&url, &destination, self.sha256, progress) {
                Ok(path) => return Ok(path),
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        if failures.is_empty() {
            return Err(Error::Registry(format!("registry entry `{}` names no Hub repo and no address", self.name)));
        }
        Err(Error::AllSourcesFailed { name: self.name.to_string(), file: Some(self.file.to_string()), failures })
    }
}

fn model_source<'a>(name: &'a str, entry: &'a ModelEntry) -> Source<'a> {
    Source {
        name,
        repo: entry.repo.as_deref().map(|r| (r, entry.revision.as_deref().unwrap_or("main"))),
        file: &entry.file,
        sha256: entry.sha256.as_deref(),
        mirrors: entry.url.iter().chain(&entry.mirrors).cloned().collect(),
    }
}

fn vae_sources<'a>(name: &'a str, entry: &'a VaeEntry) -> impl Iterator<Item = Source<'a>> + 'a {
    entry.files.iter().enumerate().map(move |(i, file)| Source {
        name,
        repo: entry.repo.as_deref().map(|r| (r, entry.revision.as_deref().unwrap_or("main"))),
        file,
        sha256: if i == 0 { entry.sha256.as_deref() } else { None },
        mirrors: entry.url.iter().chain(&entry.mirrors).cloned().collect(),
    })
}

/// The verified cached path of a model entry, if present.
pub fn cached_model(name: &str, entry: &ModelEntry) -> Option<PathBuf> {
    model_source(name, entry).cached()
}

/// The cached weights of a VAE entry, if all its files are present and verified.
pub fn cached_vae(name: &str, entry: &VaeEntry) -> Option<PathBuf> {
    let paths: Option<Vec<PathBuf>> = vae_sources(name, entry).map(|s| s.cached()).collect();
    paths.and_then(|p| p.into_iter().next())
}

/// Fetches a model entry (a no-op when a verified copy is cached).
pub fn fetch_model(name: &str, entry: &ModelEntry, progress: &mut dyn DownloadProgress) -> Result<PathBuf> {
    model_source(name, entry).fetch(progress)
}

/// Fetches every file of a VAE entry; returns the weights file.
pub fn fetch_vae(name: &str, entry: &VaeEntry, progress: &mut dyn DownloadProgress) -> Result<PathBuf> {
    let mut first = None;
    for source in vae_sources(name, entry) {
        let path = source.fetch(progress)?;
        first.get_or_insert(path);
    }
    first.ok_or_else(|| Error::Registry(format!("VAE `{name}` lists no files")))
}

/// Whether the SHA-256 `have` (64 hex digits) is `want`: all of it, or its leading digits (as
/// pytorch-fid publishes them in its file names).
fn checksum_matches(have: &str, want: &str) -> bool {
    !want.is_empty() && have.starts_with(&want.to_lowercase())
}

fn evaluator_source<'a>(name: &'a str, entry: &'a EvaluatorEntry) -> Source<'a> {
    Source { name, repo: None, file: &entry.file, sha256: entry.sha256.as_deref(), mirrors: vec![entry.url.clone()] }
}

/// The verified cached file of an evaluator entry, if present.
pub fn cached_evaluator(name: &str, entry: &EvaluatorEntry) -> Option<PathBuf> {
    evaluator_source(name, entry).cached()
}

/// The FID Inception weights: `given`, else the registry's inception-fid from the cache.
pub fn inception_weights(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let registry = Registry::load()?;
    let name = INCEPTION_FID;
    let entry =
        registry.evaluators.get(name).ok_or_else(|| Error::Registry(format!("the registry lists no `{name}`")))?;
    cached_evaluator(name, entry).ok_or_else(|| {
        Error::NotFound(format!(
            "this needs the FID Inception weights: run `maskdit download {name}` (or download {} yourself) \
             and pass it with --inception FILE",
            entry.url
        ))
    })
}

/// Fetches an evaluator entry (a no-op when a verified copy is cached).
pub fn fetch_evaluator(name: &str, entry: &EvaluatorEntry, progress: &mut dyn DownloadProgress) -> Result<PathBuf> {
    evaluator_source(name, entry).fetch(progress)
}

/// The most bytes taken from an address whose file size no listing gives (the largest file
/// the registry names, the ImageNet latents' LMDB, is tens of gigabytes).
const MAX_UNLISTED_BYTES: u64 = 64 << 30;

/// Downloads `url` to `dest`, resuming a partial `dest.part`; the file takes its final name
/// only once it is whole (its length as the server announced it) and matches `sha256` (all of
/// it or its leading digits) where that is known. A corrupt file is deleted; a short one stays as the partial to resume.
pub fn download_url(
    url: &str,
    dest: &Path,
    sha256: Option<&str>,
    progress: &mut dyn DownloadProgress,
) -> Result<PathBuf> {
    let dir = dest.parent().ok_or_else(|| Error::Download(format!("{} has no folder", dest.display())))?;
    std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    let part = dest.with_extension("part");
    let transfer = hub::transfer(url, &part, None, Some(MAX_UNLISTED_BYTES), progress)?;
    let got = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    match transfer.total {
        Some(total) if got != total => {
            return Err(Error::Download(format!(
                "the download broke off at {got} of {total} bytes; run the same command again to resume"
            )))
        }
        None if sha256.is_none() => return Err(Error::Download(
            "the server gave no length and the registry no checksum, so the download cannot be checked; not using it"
                .into(),
        )),
        _ => {}
    }
    if let Some(want) = sha256 {
        let have = hub::sha256_of(&part)?;
        if !checksum_matches(&have, want) {
            let _ = std::fs::remove_file(&part);
            return Err(Error::Download(format!(
                "the file has SHA-256 {have}, expected {want}: corrupt or not the listed one (deleted; download again)"
            )));
        }
    }
    std::fs::rename(&part, dest).map_err(Error::io("move the download to", dest))?;
    Ok(dest.to_path_buf())
}

fn dataset_hub(entry: &DatasetEntry) -> Result<HubRepo> {
    HubRepo::new(RepoKind::Dataset, &entry.repo, entry.revision.as_deref().unwrap_or("main"))
}

/// `URL_CACHE/NAME`, for a dataset entry whose name and files are single names.
fn dataset_mirror_folder(name: &str, entry: &DatasetEntry) -> Result<PathBuf> {
    untrusted::plain_name("the registry name", name)?;
    entry.files.iter().try_for_each(|file| untrusted::plain_name("the dataset file", file))?;
    Ok(url_cache_dir().join(name))
}

/// The cached LMDB folder of a dataset entry, if its data file is cached and verified.
pub fn cached_dataset(name: &str, entry: &DatasetEntry) -> Option<PathBuf> {
    let data = entry.files.first()?;
    if let Some(path) = dataset_hub(entry).ok()?.cached(&format!("{name}/{data}")) {
        return path.parent().map(Path::to_path_buf);
    }
    let folder = dataset_mirror_folder(name, entry).ok()?;
    folder.join(data).is_file().then_some(folder)
}

/// The repository files of a dataset entry's LMDB folder: the one folder whose path contains
/// `folder_contains` and holds the data file.
fn dataset_files(files: &[hub::RepoFile], entry: &DatasetEntry, repo: &str) -> Result<Vec<hub::RepoFile>> {
    let data = entry.files.first().ok_or_else(|| Error::Registry("the dataset entry lists no files".into()))?;
    let folders: Vec<&str> = files
        .iter()
        .filter(|f| f.path.rsplit('/').next() == Some(data.as_str()) && f.path.contains(&entry.folder_contains))
        .map(|f| f.path.rsplit_once('/').map_or("", |(folder, _)| folder))
        .collect();
    let folder = match folders.as_slice() {
        [one] => *one,
        [] => {
            return Err(Error::NotFound(format!(
                "the Hub dataset {repo} holds no {data} under a folder naming `{}`",
                entry.folder_contains
            )))
        }
        several => {
            return Err(Error::NotFound(format!(
                "the Hub dataset {repo} holds several LMDB folders naming `{}`: {}",
                entry.folder_contains,
                several.join(", ")
            )))
        }
    };
    let wanted = |file: &str| if folder.is_empty() { file.to_string() } else { format!("{folder}/{file}") };
    Ok(entry.files.iter().filter_map(|file| files.iter().find(|f| f.path == wanted(file)).cloned()).collect())
}

/// Fetches the LMDB folder of a dataset entry (a no-op when cached); returns the folder.
pub fn fetch_dataset(name: &str, entry: &DatasetEntry, progress: &mut dyn DownloadProgress) -> Result<PathBuf> {
    if let Some(folder) = cached_dataset(name, entry) {
        return Ok(folder);
    }
    if offline() {
        return Err(Error::Offline { name: name.to_string() });
    }
    let hub = dataset_hub(entry)?;
    let from_hub = hub.list().and_then(|files| {
        let mut folder = None;
        for file in dataset_files(&files, entry, hub.name())? {
            let base = file.path.rsplit('/').next().unwrap_or(&file.path).to_string();
            let path = hub.download(&format!("{name}/{base}"), &file, progress)?;
            folder.get_or_insert(path.parent().map(Path::to_path_buf).unwrap_or_default());
        }
        folder.ok_or_else(|| Error::NotFound("no files".into()))
    });
    let mut failures = Vec::new();
    match from_hub {
        Ok(folder) => return Ok(folder),
        Err(e) => failures.push(format!("Hub dataset {}: {e}", hub.name())),
    }
    if let Some(mirror) = &entry.mirror {
        let folder = dataset_mirror_folder(name, entry)?;
        let fetched = entry.files.iter().enumerate().try_for_each(|(i, file)| {
            let url = mirror_url(&format!("{}/{file}", mirror.trim_end_matches('/')));
            match download_url(&url, &folder.join(file), None, progress) {
                Ok(_) => Ok(()),
                // Only the data file is required.
                Err(_) if i > 0 => Ok(()),
                Err(e) => Err(format!("{url}: {e}")),
            }
        });
        match fetched {
            Ok(()) => return Ok(folder),
            Err(failure) => failures.push(failure),
        }
    }
    Err(Error::AllSourcesFailed { name: name.to_string(), file: None, failures })
}

/// Where the weights of a registry model are, once resolved.
#[derive(Debug, Clone)]
pub enum ModelWeights {
    /// Compiled into the crate ([`crate::EMBEDDED_MNIST`]).
    Embedded(&'static [u8]),
    /// A verified file in the cache.
    File(PathBuf),
}

/// The weights of model entry `name`: the embedded bytes, else its verified file, fetched
/// when it is not cached.
pub fn model_weights(name: &str, entry: &ModelEntry, progress: &mut dyn DownloadProgress) -> Result<ModelWeights> {
    if entry.embedded {
        return Ok(ModelWeights::Embedded(crate::EMBEDDED_MNIST));
    }
    fetch_model(name, entry, progress).map(ModelWeights::File)
}
