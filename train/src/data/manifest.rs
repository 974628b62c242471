//! The manifest of a shard folder (`manifest.json`), written by `encode` after the last shard:
//! which shards make the set, with their sizes and example counts. A folder whose shards do
//! not match its manifest is a partial or mixed set and is refused.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The manifest's file name inside a shard folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The format the manifest records.
const FORMAT: &str = "maskdit-shards/1";

/// One shard of a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the folder.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Examples it holds.
    pub examples: usize,
}

/// What a shard folder holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardManifest {
    /// `maskdit-shards/1`.
    pub format: String,
    /// False from the start of an encoding until its last shard is written: a folder left
    /// so is an interrupted encoding.
    pub complete: bool,
    /// The shards, in order.
    pub shards: Vec<ShardEntry>,
}

/// The shard files of a folder and whether a manifest vouched for them.
#[derive(Debug, Clone)]
pub struct ShardFolder {
    /// The shards, in order.
    pub files: Vec<PathBuf>,
    /// False for folders written before manifests existed: a partial set cannot be told apart.
    pub has_manifest: bool,
}

fn data_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data { path: path.to_path_buf(), reason: reason.into() }
}

/// The `.safetensors` files directly in `folder`, sorted by name.
fn safetensors_in(folder: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(folder).map_err(|e| data_error(folder, format!("cannot read the folder ({e})")))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    found.sort();
    Ok(found)
}

impl ShardManifest {
    /// Marks `folder` as being encoded (an incomplete manifest without shards), atomically.
    pub fn begin(folder: &Path) -> Result<()> {
        Self { format: FORMAT.into(), complete: false, shards: Vec::new() }.write_to(folder)
    }

    /// The manifest of the finished set `shards`, written to `folder` atomically.
    pub fn write(folder: &Path, shards: Vec<ShardEntry>) -> Result<()> {
        Self { format: FORMAT.into(), complete: true, shards }.write_to(folder)
    }

    fn write_to(&self, folder: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Input(e.to_string()))?;
        Ok(maskdit_io::write_atomic(&folder.join(MANIFEST_FILE), |f| std::io::Write::write_all(f, text.as_bytes()))?)
    }

    /// The entry of a shard file just written.
    pub fn entry(path: &Path, examples: usize) -> Result<ShardEntry> {
        let bytes = std::fs::metadata(path).map_err(|e| data_error(path, e.to_string()))?.len();
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(ShardEntry { file, bytes, examples })
    }
}

/// The shards of `folder`: exactly those its manifest lists, each present with its recorded
/// size and no other shard beside them; without a manifest, every `.safetensors` file.
pub fn shards_in(folder: &Path) -> Result<ShardFolder> {
    let manifest_path = folder.join(MANIFEST_FILE);
    let found = safetensors_in(folder)?;
    let text = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if found.is_empty() {
                return Err(data_error(folder, "holds no .safetensors shards and no LMDB (data.mdb)"));
            }
            return Ok(ShardFolder { files: found, has_manifest: false });
        }
        Err(e) => return Err(data_error(&manifest_path, e.to_string())),
    };
    let manifest: ShardManifest = serde_json::from_str(&text)
        .ok()
        .filter(|m: &ShardManifest| m.format == FORMAT)
        .ok_or_else(|| data_error(&manifest_path, format!("is not a {FORMAT} manifest")))?;
    if !manifest.complete {
        return Err(data_error(
            folder,
            "is a partial set: its encoding never finished (interrupted?); encode it again with --overwrite",
        ));
    }
    let mut files = Vec::with_capacity(manifest.shards.len());
    for shard in &manifest.shards {
        if shard.file.contains(['/', '\\']) || shard.file.starts_with('.') {
            return Err(data_error(&manifest_path, format!("names `{}`, not a shard of this folder", shard.file)));
        }
        let path = folder.join(&shard.file);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == shard.bytes => files.push(path),
            Ok(meta) => {
                return Err(data_error(
                    folder,
                    format!(
                        "{} has {} bytes, the manifest says {}: the set was changed after encoding; encode it again",
                        shard.file,
                        meta.len(),
                        shard.bytes
                    ),
                ))
            }
            Err(_) => {
                return Err(data_error(
                    folder,
                    format!("{} is listed in the manifest but missing: a partial set; encode it again", shard.file),
                ))
            }
        }
    }
    if let Some(stray) = found.iter().find(|f| !files.contains(f)) {
        return Err(data_error(
            folder,
            format!(
                "{} is not part of the set its manifest lists (a mixed set); remove it or encode into an empty folder",
                stray.display()
            ),
        ));
    }
    if files.is_empty() {
        return Err(data_error(folder, "its manifest lists no shards"));
    }
    Ok(ShardFolder { files, has_manifest: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_and_mixed_sets_are_refused() {
        let dir = std::env::temp_dir().join(format!("maskdit-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let shard = |name: &str, bytes: usize| {
            std::fs::write(dir.join(name), vec![0u8; bytes]).unwrap();
            ShardManifest::entry(&dir.join(name), 1).unwrap()
        };
        let entries = vec![shard("shard-00000.safetensors", 10), shard("shard-00001.safetensors", 20)];
        // Without a manifest (written before manifests existed): loadable, flagged.
        assert!(!shards_in(&dir).unwrap().has_manifest);
        // An encoding that began and never finished.
        ShardManifest::begin(&dir).unwrap();
        assert!(shards_in(&dir).unwrap_err().to_string().contains("never finished"));
        ShardManifest::write(&dir, entries).unwrap();
        let set = shards_in(&dir).unwrap();
        assert!(set.has_manifest && set.files.len() == 2);
        std::fs::write(dir.join("shard-00009.safetensors"), b"old").unwrap();
        assert!(shards_in(&dir).unwrap_err().to_string().contains("mixed set"));
        std::fs::remove_file(dir.join("shard-00009.safetensors")).unwrap();
        std::fs::remove_file(dir.join("shard-00001.safetensors")).unwrap();
        assert!(shards_in(&dir).unwrap_err().to_string().contains("partial set"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
