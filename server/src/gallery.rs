//! The gallery on disk: each finished request's PNGs and a record of its settings
//! (`job-ID.json`), written atomically, read back at start-up.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::request::Settings;
use crate::{Error, Result};

/// Most records read back at start-up (the newest).
const MAX_RECORDS: usize = 1000;
/// Largest record file read.
const MAX_RECORD_BYTES: u64 = 64 << 10;

/// One finished request as the gallery keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The job's id.
    pub id: String,
    /// When it finished, milliseconds since the epoch.
    pub finished_ms: u64,
    /// Its settings.
    pub settings: Settings,
    /// Its images' file names in the gallery, in seed order.
    pub images: Vec<String>,
    /// The `maskdit generate` command that makes the same images.
    pub command: String,
}

/// The gallery folder.
#[derive(Debug, Clone)]
pub struct Gallery {
    dir: PathBuf,
}

/// Whether `name` is a file name the server made: `job-ID-SEED.png` or `job-ID.json`, letters,
/// digits and `-` only.
pub fn is_server_name(name: &str, extension: &str) -> bool {
    name.strip_prefix("job-").and_then(|rest| rest.strip_suffix(extension)).is_some_and(|stem| {
        !stem.is_empty() && stem.len() <= 64 && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

impl Gallery {
    /// The gallery in `dir`, created if absent.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Gallery { path: dir.to_path_buf(), reason: e.to_string() })?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// The records on disk, newest first; unreadable ones are skipped.
    pub fn records(&self) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut records: Vec<Record> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| is_server_name(n, ".json")))
            .filter(|e| e.metadata().is_ok_and(|m| m.is_file() && m.len() <= MAX_RECORD_BYTES))
            .filter_map(|e| serde_json::from_slice::<Record>(&std::fs::read(e.path()).ok()?).ok())
            .filter(|r| r.images.iter().all(|name| is_server_name(name, ".png")))
            .collect();
        records.sort_by(|a, b| b.finished_ms.cmp(&a.finished_ms).then_with(|| b.id.cmp(&a.id)));
        records.truncate(MAX_RECORDS);
        records
    }

    /// Writes the images (`(file name, PNG bytes)`) and then the record, each atomically.
    pub fn keep(&self, record: &Record, images: &[(String, Vec<u8>)]) -> Result<()> {
        for (name, bytes) in images {
            maskdit_io::write_atomic(&self.dir.join(name), |f| std::io::Write::write_all(f, bytes))?;
        }
        let text = serde_json::to_vec_pretty(record).map_err(|e| Error::Server(e.to_string()))?;
        let path = self.dir.join(format!("job-{}.json", record.id));
        maskdit_io::write_atomic(&path, |f| std::io::Write::write_all(f, &text))?;
        Ok(())
    }

    /// The path of gallery image `name`, if it is a name the server made and the file exists.
    pub fn image(&self, name: &str) -> Option<PathBuf> {
        let path = self.dir.join(name);
        (is_server_name(name, ".png") && path.is_file()).then_some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::is_server_name;

    #[test]
    fn only_names_the_server_makes_are_served() {
        assert!(is_server_name("job-18c2f-3-000007.png", ".png"));
        for bad in ["../secret.png", "job-.png", "job-a/b.png", "job-a.png.json", "x.png", "job-%2e%2e.png"] {
            assert!(!is_server_name(bad, ".png"), "{bad}");
        }
    }
}
