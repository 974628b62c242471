//! The Hugging Face Hub: a repository's file list, and files downloaded into the standard
//! cache (`$HF_HOME/hub/{models,datasets}--owner--name/{blobs,snapshots,refs}`, shared with Python),
//! verified against the size and SHA-256 the Hub lists before they are put under their names.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{untrusted, DownloadProgress, Error, Result};

/// Pages of one listing followed at most (the Hub gives up to 1000 files a page).
const MAX_PAGES: usize = 1000;
/// Bytes of one listing page read at most.
const MAX_PAGE_BYTES: u64 = 64 << 20;

/// A file of a Hub repository, as its tree listing gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFile {
    /// Path inside the repository.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 (hex) of an LFS file.
    pub sha256: Option<String>,
}

/// One entry of `GET /api/{models|datasets}/{repo}/tree/{revision}`.
#[derive(Debug, Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    oid: String,
}

/// What a Hub repository holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// A model repository.
    Model,
    /// A dataset repository.
    Dataset,
}

/// A Hub repository at a revision.
#[derive(Debug, Clone)]
pub struct HubRepo {
    endpoint: String,
    kind: RepoKind,
    repo: String,
    revision: String,
    token: Option<String>,
}

/// The Hub cache folder (`$HF_HOME/hub`, else `~/.cache/huggingface/hub`).
fn hub_cache() -> PathBuf {
    let home = std::env::var_os("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
        let user = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        user.join(".cache").join("huggingface")
    });
    home.join("hub")
}

/// `HF_TOKEN`, else the token `huggingface-cli login` saved; one that cannot be sent in a
/// header is an error (that does not repeat it).
fn token() -> Result<Option<String>> {
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| hf_hub::Cache::from_env().token());
    let token = token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    token.as_deref().map(untrusted::token).transpose()?;
    Ok(token)
}

/// What the cache remembers of a resolved registry file: where the repository keeps it and
/// what it must hash to.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Resolved {
    file: RepoFile,
    commit: String,
    /// Modification time (ns since the epoch) of the blob when it was last verified.
    verified_mtime: Option<u128>,
}

fn mtime(path: &Path) -> Option<u128> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(modified.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos())
}

/// SHA-256 of a file, hex.
pub fn sha256_of(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(Error::io("read", path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(Error::io("read", path))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl HubRepo {
    /// The repository `repo` (`owner/name`) at `revision`, on `HF_ENDPOINT` (default
    /// huggingface.co); names that could leave the cache folder are refused.
    pub fn new(kind: RepoKind, repo: &str, revision: &str) -> Result<Self> {
        untrusted::repo_id(repo)?;
        untrusted::repo_path("the revision", revision)?;
        let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        if untrusted::origin(&endpoint).is_none() {
            return Err(Error::Registry(format!(
                "HF_ENDPOINT `{}` is not an address like https://huggingface.co",
                maskdit_io::printable(&endpoint)
            )));
        }
        Ok(Self { endpoint, kind, repo: repo.to_string(), revision: revision.to_string(), token: token()? })
    }

    /// `models` or `datasets`.
    fn plural(&self) -> &'static str {
        match self.kind {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }

    /// `$HF_HOME/hub/models--owner--name` (or `datasets--…`).
    fn cache_dir(&self) -> PathBuf {
        hub_cache().join(format!("{}--{}", self.plural(), self.repo.replace('/', "--")))
    }

    fn resolved_index(&self) -> PathBuf {
        self.cache_dir().join("maskdit-resolved.json")
    }

    fn read_index(&self) -> BTreeMap<String, Resolved> {
        std::fs::read_to_string(self.resolved_index())
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    fn remember(&self, name: &str, resolved: Resolved) -> Result<()> {
        let mut index = self.read_index();
        index.insert(name.to_string(), resolved);
        let text = serde_json::to_string_pretty(&index).map_err(|e| Error::Registry(e.to_string()))?;
        std::fs::create_dir_all(self.cache_dir()).map_err(Error::io("create", self.cache_dir()))?;
        let path = self.resolved_index();
        Ok(maskdit_io::write_atomic(&path, |f| f.write_all(text.as_bytes()))?)
    }

    /// Asks `url`, which must be on the endpoint's own server (the only one the token goes to).
    fn get(&self, url: &str) -> Result<ureq::Response> {
        if untrusted::origin(url) != untrusted::origin(&self.endpoint) {
            return Err(Error::Unsafe(format!(
                "{} is not on {}, the Hub endpoint; not following it",
                maskdit_io::printable(url),
                self.endpoint
            )));
        }
        let mut request = ureq::get(url);
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        match request.call() {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, _)) => Err(Error::Status { url: url.to_string(), status }),
            Err(e) => Err(Error::Unreachable { url: url.to_string(), reason: e.to_string() }),
        }
    }

    /// Every file of the repository (following the listing's pages on the same server, each
    /// once, at most [`MAX_PAGES`]). A path or object id that could leave the cache folder makes
    /// the whole listing an error.
    pub fn list(&self) -> Result<Vec<RepoFile>> {
        let mut url = Some(format!(
            "{}/api/{}/{}/tree/{}?recursive=true",
            self.endpoint,
            self.plural(),
            self.repo,
            self.revision
        ));
        let mut files = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while let Some(page) = url.take() {
            if !seen.insert(page.clone()) || seen.len() > MAX_PAGES {
                return Err(Error::Unsafe(format!(
                    "the listing of {} does not end (a page repeats or there are over {MAX_PAGES} pages)",
                    self.repo
                )));
            }
            let response = self.get(&page)?;
            url = response.header("Link").and_then(next_page);
            let reader = response.into_reader().take(MAX_PAGE_BYTES);
            let entries: Vec<TreeEntry> = serde_json::from_reader(reader).map_err(|e| Error::Unreachable {
                url: page.clone(),
                reason: format!("no file list in the answer ({e})"),
            })?;
            for entry in entries.into_iter().filter(|e| e.kind == "file") {
                let file =
                    RepoFile { path: entry.path, size: entry.size, sha256: entry.lfs.map(|l| l.oid.to_lowercase()) };
                file.check()?;
                files.push(file);
            }
        }
        Ok(files)
    }

    /// The cached, verified copy of registry file `name`, resolved earlier; a copy found
    /// corrupt is removed (so that it is fetched again), never returned.
    pub fn cached(&self, name: &str) -> Option<PathBuf> {
        let mut resolved = self.read_index().remove(name)?;
        let path = self.snapshot_path(&resolved.commit, &resolved.file).ok()?;
        let blob = std::fs::canonicalize(&path).ok()?;
        let size = std::fs::metadata(&blob).ok()?.len();
        let intact = size == resolved.file.size
            && (resolved.verified_mtime.is_some() && resolved.verified_mtime == mtime(&blob)
                || resolved.file.sha256.as_ref().is_none_or(|want| sha256_of(&blob).is_ok_and(|got| &got == want)));
        if !intact {
            let _ = std::fs::remove_file(&blob);
            let _ = std::fs::remove_file(&path);
            return None;
        }
        if resolved.verified_mtime != mtime(&blob) {
            resolved.verified_mtime = mtime(&blob);
            let _ = self.remember(name, resolved);
        }
        Some(path)
    }

    /// Downloads `file` into the cache (resuming a partial download), verifies its size and
    /// SHA-256, and remembers it as registry file `name`.
    pub fn download(&self, name: &str, file: &RepoFile, progress: &mut dyn DownloadProgress) -> Result<PathBuf> {
        file.check()?;
        let prefix = if self.kind == RepoKind::Dataset { "datasets/" } else { "" };
        let url = format!("{}/{prefix}{}/resolve/{}/{}", self.endpoint, self.repo, self.revision, file.path);
        let blobs = self.cache_dir().join("blobs");
        std::fs::create_dir_all(&blobs).map_err(Error::io("create", &blobs))?;
        let blob_name = file.sha256.clone().unwrap_or_else(|| format!("{}-{}", file.size, file.path.replace('/', "_")));
        let blob = blobs.join(&blob_name);
        untrusted::inside(&blobs, &blob)?;
        let partial = blobs.join(format!("{blob_name}.incomplete"));
        let already =
            blob.is_file() && file.sha256.as_ref().is_some_and(|want| sha256_of(&blob).is_ok_and(|got| &got == want));
        if !already {
            let _ = std::fs::remove_file(&blob);
        }
        let commit =
            if already { self.revision.clone() } else { self.fetch_blob(&url, file, &partial, &blob, progress)? };
        self.link(name, file, &blob_name, commit)
    }

    /// Transfers `url` into `partial`, checks it against `file` and renames it to `blob`;
    /// returns the commit the server named.
    fn fetch_blob(
        &self,
        url: &str,
        file: &RepoFile,
        partial: &Path,
        blob: &Path,
        progress: &mut dyn DownloadProgress,
    ) -> Result<String> {
        let transfer = transfer(url, partial, self.token.as_deref(), Some(file.size), progress)?;
        if let Some(commit) = &transfer.commit {
            untrusted::hex("the commit the server named", commit, 40)?;
        }
        let commit = transfer.commit.unwrap_or_else(|| self.revision.clone());
        let got = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if got != file.size {
            // A resumable partial stays under its own name; nothing looks complete.
            return Err(Error::Download(format!(
                "the download of {} from {} broke off at {got} of {} bytes; run the same command again to resume",
                file.path, self.repo, file.size
            )));
        }
        if let Some(want) = &file.sha256 {
            let have = sha256_of(partial)?;
            if &have != want {
                let _ = std::fs::remove_file(partial);
                return Err(Error::Download(format!(
                    "{} from {} has SHA-256 {have}, the Hub lists {want}: the transfer was corrupt (deleted; download again)",
                    file.path, self.repo
                )));
            }
        }
        std::fs::rename(partial, blob).map_err(Error::io("move the download to", blob))?;
        Ok(commit)
    }

    /// `snapshots/COMMIT/PATH` in the cache, for a commit hash (or this repository's revision)
    /// and a checked file path.
    fn snapshot_path(&self, commit: &str, file: &RepoFile) -> Result<PathBuf> {
        if commit != self.revision {
            untrusted::hex("the commit", commit, 40)?;
        }
        file.check()?;
        let snapshots = self.cache_dir().join("snapshots");
        let path = snapshots.join(commit).join(&file.path);
        untrusted::inside(&snapshots, &path)?;
        Ok(path)
    }

    /// Puts `blob` in the snapshot of `commit` under the file's path and remembers it.
    fn link(&self, name: &str, file: &RepoFile, blob_name: &str, commit: String) -> Result<PathBuf> {
        let blob = self.cache_dir().join("blobs").join(blob_name);
        let link = self.snapshot_path(&commit, file)?;
        let parent = link.parent().ok_or_else(|| Error::Download(format!("{} has no folder", link.display())))?;
        std::fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
        let _ = std::fs::remove_file(&link);
        let depth = file.path.matches('/').count() + commit.matches('/').count() + 2;
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(blob_name);
        std::os::unix::fs::symlink(&target, &link).map_err(Error::io("link", &link))?;
        let refs = self.cache_dir().join("refs");
        std::fs::create_dir_all(&refs).map_err(Error::io("create", &refs))?;
        let reference = refs.join(&self.revision);
        maskdit_io::write_atomic(&reference, |f| f.write_all(commit.as_bytes()))?;
        self.remember(name, Resolved { file: file.clone(), commit, verified_mtime: mtime(&blob) })?;
        Ok(link)
    }

    /// The repository's name.
    pub fn name(&self) -> &str {
        &self.repo
    }
}

impl RepoFile {
    /// Refuses a path that could leave the cache folder and an object id that is not a SHA-256.
    pub fn check(&self) -> Result<()> {
        untrusted::repo_path("the repository file", &self.path)?;
        self.sha256.as_deref().map(|sha| untrusted::hex("the object id", sha, 64)).transpose()?;
        Ok(())
    }
}

/// The `next` address of a `Link` header (`<url>; rel="next"`).
fn next_page(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_string())
    })
}

/// The file of `files` that registry file `name` is: by SHA-256 where the registry knows it,
/// else by file name; none or several is an error listing the candidates.
pub fn resolve<'a>(files: &'a [RepoFile], name: &str, sha256: Option<&str>, repo: &str) -> Result<&'a RepoFile> {
    let matches: Vec<&RepoFile> = match sha256 {
        Some(want) => files.iter().filter(|f| f.sha256.as_deref() == Some(&want.to_lowercase())).collect(),
        None => files.iter().filter(|f| f.path.rsplit('/').next() == Some(name)).collect(),
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => {
            let similar: Vec<&str> = files
                .iter()
                .map(|f| f.path.as_str())
                .filter(|p| p.ends_with(".pt") || p.ends_with(".pth") || p.ends_with(".safetensors"))
                .collect();
            Err(Error::NotFound(format!(
                "the Hub repo {repo} holds no file {name}; its weight files: {}",
                if similar.is_empty() { "none".to_string() } else { similar.join(", ") }
            )))
        }
        several => {
            let paths: Vec<&str> = several.iter().map(|f| f.path.as_str()).collect();
            Err(Error::NotFound(format!(
                "the Hub repo {repo} holds {name} in several places ({}); name one in weights.toml",
                paths.join(", ")
            )))
        }
    }
}

/// What a transfer learned from the server.
#[derive(Debug, Clone, Default)]
pub struct Transfer {
    /// The repository commit the server names (`X-Repo-Commit`).
    pub commit: Option<String>,
    /// The whole file's length, where the server announced it.
    pub total: Option<u64>,
}

/// Streams `url` into `partial`, resuming from its current length, reporting to `progress`. A
/// transfer that ends early is not an error here: the caller checks the size. A file that
/// would grow past `limit` bytes (or past the length the server announced) is deleted and the
/// transfer fails.
pub fn transfer(
    url: &str,
    partial: &Path,
    token: Option<&str>,
    limit: Option<u64>,
    progress: &mut dyn DownloadProgress,
) -> Result<Transfer> {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let mut request = ureq::get(url);
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, _)) => return Ok(Transfer { commit: None, total: Some(have) }),
        Err(ureq::Error::Status(status, _)) => return Err(Error::Status { url: url.to_string(), status }),
        Err(e) => return Err(Error::Unreachable { url: url.to_string(), reason: e.to_string() }),
    };
    let commit = response.header("X-Repo-Commit").map(str::to_string);
    let resumed = response.status() == 206;
    let length = response.header("Content-Length").and_then(|l| l.parse::<u64>().ok());
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(partial)
        .map_err(Error::io("write", partial))?;
    let start = if resumed { have } else { 0 };
    let announced = length.map(|l| start.saturating_add(l));
    let limit = match (limit, announced) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let name = url.rsplit('/').next().unwrap_or(url);
    progress.start(name, start, announced);
    let mut reader = response.into_reader();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = start;
    // A broken connection ends the loop with what arrived; the caller's size check decides.
    while let Ok(n) = reader.read(&mut buffer) {
        if n == 0 {
            break;
        }
        size += n as u64;
        if let Some(limit) = limit.filter(|&limit| size > limit) {
            progress.finish();
            drop(out);
            let _ = std::fs::remove_file(partial);
            return Err(Error::Download(format!(
                "{} sent more than the {limit} bytes listed for it (deleted; download again)",
                maskdit_io::printable(url)
            )));
        }
        if let Err(e) = out.write_all(&buffer[..n]) {
            progress.finish();
            return Err(Error::io("write", partial)(e));
        }
        progress.advance(n as u64);
    }
    progress.finish();
    out.sync_all().map_err(Error::io("write", partial))?;
    Ok(Transfer { commit, total: length.map(|l| start + l) })
}
