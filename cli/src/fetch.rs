//! Fetching registry entries for the commands that need them: through the Hugging Face Hub cache, or by URL with resume and
//! checksum.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hf_hub::{Repo, RepoType};
use sha2::{Digest, Sha256};

use crate::progress;
use crate::registry::{url_cache_dir, ModelEntry, VaeEntry};

/// Whether `HF_HUB_OFFLINE` asks for no network.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0" && v.to_lowercase() != "false")
}

/// Where a file of `repo` lives once cached (Hub) or downloaded (URL), if present.
fn cached(name: &str, repo: Option<(&str, &str)>, file: &str) -> Option<PathBuf> {
    match repo {
        Some((repo, revision)) => hf_hub::Cache::from_env()
            .repo(Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string()))
            .get(file),
        None => Some(url_cache_dir().join(name).join(file)).filter(|p| p.exists()),
    }
}

/// The cached path of a model entry, if present.
pub fn cached_model(name: &str, entry: &ModelEntry) -> Option<PathBuf> {
    let repo = entry.repo.as_deref().map(|r| (r, entry.revision.as_deref().unwrap_or("main")));
    cached(name, repo, &entry.file)
}

/// The cached weights of a VAE entry, if all its files are present.
pub fn cached_vae(name: &str, entry: &VaeEntry) -> Option<PathBuf> {
    let repo = entry.repo.as_deref().map(|r| (r, entry.revision.as_deref().unwrap_or("main")));
    let paths: Option<Vec<PathBuf>> = entry.files.iter().map(|f| cached(name, repo, f)).collect();
    paths.and_then(|p| p.into_iter().next())
}

fn fetch(
    name: &str,
    repo: Option<(&str, &str)>,
    url: Option<&str>,
    file: &str,
    sha256: Option<&str>,
) -> Result<PathBuf> {
    if let Some(path) = cached(name, repo, file) {
        return Ok(path);
    }
    if offline() {
        bail!("`{name}` ({file}) is not in the cache and HF_HUB_OFFLINE is set; run `maskdit download {name}` with network access first");
    }
    match (repo, url) {
        (Some((repo, revision)), _) => {
            let api = hf_hub::api::sync::ApiBuilder::from_env()
                .with_token(std::env::var("HF_TOKEN").ok().or_else(|| hf_hub::Cache::from_env().token()))
                .with_progress(true)
                .build()
                .context("cannot set up the Hugging Face Hub client")?;
            let path = api
                .repo(Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string()))
                .get(file)
                .with_context(|| format!("downloading {file} from the Hub repo {repo} failed; check the network, HF_ENDPOINT and HF_TOKEN"))?;
            if let Some(want) = sha256 {
                verify(&path, want)?;
            }
            Ok(path)
        }
        (None, Some(url)) => download_url(url, &url_cache_dir().join(name).join(file), sha256),
        (None, None) => bail!("registry entry `{name}` has neither a Hub repo nor a url"),
    }
}

/// Fetches a model entry (a no-op when cached).
pub fn fetch_model(name: &str, entry: &ModelEntry) -> Result<PathBuf> {
    let repo = entry.repo.as_deref().map(|r| (r, entry.revision.as_deref().unwrap_or("main")));
    fetch(name, repo, entry.url.as_deref(), &entry.file, entry.sha256.as_deref())
}

/// Fetches every file of a VAE entry; returns the weights file.
pub fn fetch_vae(name: &str, entry: &VaeEntry) -> Result<PathBuf> {
    let repo = entry.repo.as_deref().map(|r| (r, entry.revision.as_deref().unwrap_or("main")));
    let mut first = None;
    for (i, file) in entry.files.iter().enumerate() {
        let sha = if i == 0 { entry.sha256.as_deref() } else { None };
        let path = fetch(name, repo, entry.url.as_deref(), file, sha)?;
        first.get_or_insert(path);
    }
    first.with_context(|| format!("VAE `{name}` lists no files"))
}

/// Downloads `url` to `dest`, resuming a partial `.part` file; a file whose checksum does not
/// match is deleted.
pub fn download_url(url: &str, dest: &Path, sha256: Option<&str>) -> Result<PathBuf> {
    let dir = dest.parent().context("download destination has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let part = dest.with_extension("part");
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut request = ureq::get(url);
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = request.call().with_context(|| format!("cannot download {url}; check the network connection"))?;
    let resumed = response.status() == 206;
    let length = response.header("Content-Length").and_then(|l| l.parse::<u64>().ok());
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&part)
        .with_context(|| format!("cannot write {}", part.display()))?;
    let start = if resumed { have } else { 0 };
    let bar = progress::bar(start + length.unwrap_or(0), "download");
    bar.set_position(start);
    let mut reader = response.into_reader();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buffer)
            .with_context(|| format!("download of {url} broke off; run the same command again to resume"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buffer[..n]).with_context(|| format!("cannot write {}", part.display()))?;
        bar.inc(n as u64);
    }
    out.sync_all()?;
    bar.finish_and_clear();
    if let Some(want) = sha256 {
        if let Err(e) = verify(&part, want) {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    }
    std::fs::rename(&part, dest).with_context(|| format!("cannot move the download to {}", dest.display()))?;
    Ok(dest.to_path_buf())
}

/// Checks a file's SHA-256 against `want` (hex).
pub fn verify(path: &Path, want: &str) -> Result<()> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != want.to_lowercase() {
        bail!("{} has SHA-256 {got}, expected {want}: the file is corrupt or not the listed one (deleted; download again)", path.display());
    }
    Ok(())
}
