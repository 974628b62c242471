//! A training run's folder: `checkpoints/NNNNNNN.safetensors` (one per saved step) and
//! `log.jsonl` (one JSON line per step or measurement); resuming from its latest checkpoint
//! with the run's own settings. One process owns the folder at a time ([`RunFolder::own`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use maskdit::ModelConfig;

use crate::data::Dataset;
use crate::{Error, Result, TrainOptions, Trainer};

/// The folder a run writes to.
#[derive(Debug, Clone)]
pub struct RunFolder {
    root: PathBuf,
}

impl RunFolder {
    /// The run folder at `root` (nothing is created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Creates the folder and its `checkpoints/` folder.
    pub fn create(&self) -> Result<()> {
        let dir = self.checkpoint_dir();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir, source })
    }

    /// Creates the folder and takes it for this process: a second run (or a `--resume`) into
    /// the same folder is refused with this process's pid while the returned lock lives.
    pub fn own(&self) -> Result<maskdit_io::FolderLock> {
        self.create()?;
        Ok(maskdit_io::FolderLock::acquire(&self.root, maskdit_io::Access::Exclusive)?)
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `checkpoints/`.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// The checkpoint of step `step`: `checkpoints/NNNNNNN.safetensors`.
    pub fn checkpoint(&self, step: u64) -> PathBuf {
        self.checkpoint_dir().join(format!("{step:07}.safetensors"))
    }

    /// `log.jsonl`.
    pub fn log(&self) -> PathBuf {
        self.root.join("log.jsonl")
    }

    /// Appends one JSON line to the log.
    pub fn append_log(&self, line: &serde_json::Value) -> Result<()> {
        Ok(maskdit_io::append_line(&self.log(), &line.to_string())?)
    }

    /// The run's checkpoints, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<PathBuf>> {
        let dir = self.checkpoint_dir();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "safetensors")
                    && p.file_stem().is_some_and(|s| s.to_string_lossy().chars().all(|c| c.is_ascii_digit()))
            })
            .collect();
        found.sort();
        Ok(found)
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.checkpoints()?.pop())
    }

    /// Continues the run from its latest checkpoint on `data`. A latest checkpoint that
    /// cannot be read gives an error naming the one before it.
    pub fn resume(&self, data: Box<dyn Dataset>, device: &Device) -> Result<Trainer> {
        let latest = self.latest()?.ok_or_else(|| Error::Checkpoint {
            path: self.checkpoint_dir(),
            reason: "holds no checkpoint to resume from; start a new run instead".into(),
        })?;
        Trainer::resume(&latest, data, device).map_err(|err| {
            let previous = self.checkpoints().ok().and_then(|mut all| {
                all.retain(|p| p != &latest);
                all.pop()
            });
            let reason = match previous {
                Some(previous) => format!(
                    "cannot be resumed ({err}); the checkpoint before it is {}: move this one aside and resume to \
                     continue from there",
                    previous.display()
                ),
                None => format!("cannot be resumed ({err}); there is no earlier checkpoint"),
            };
            Error::Checkpoint { path: latest.clone(), reason }
        })
    }

    /// Drops the log lines of steps after `step` (those of a run interrupted after its last
    /// checkpoint), so that a resumed run logs each step once.
    pub fn forget_log_after(&self, step: u64) -> Result<()> {
        let path = self.log();
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_none_or(|s| s <= step)
            })
            .collect();
        Ok(maskdit_io::write_atomic(&path, |file| kept.iter().try_for_each(|line| writeln!(file, "{line}")))?)
    }
}

/// Refuses to continue `trainer` (resumed) with settings other than its run's: everything but
/// the number of steps and the micro-batching (which changes only round-off) must match; the
/// error names each difference as `key asked (the run's: value)`.
pub fn check_same_run(trainer: &Trainer, config: &ModelConfig, options: &TrainOptions) -> Result<()> {
    let json = |o: TrainOptions| serde_json::to_value(o).map_err(|e| Error::Config(e.to_string()));
    let saved = json(TrainOptions { grad_accum: options.grad_accum, ..trainer.options().clone() })?;
    let asked = json(TrainOptions { max_steps: trainer.options().max_steps, ..options.clone() })?;
    let mut differences: Vec<String> = match (saved.as_object(), asked.as_object()) {
        (Some(saved), Some(asked)) => asked
            .iter()
            .filter(|(key, value)| saved.get(*key) != Some(value))
            .map(|(key, value)| {
                format!("{key} {value} (the run's: {})", saved.get(key).unwrap_or(&serde_json::Value::Null))
            })
            .collect(),
        _ => Vec::new(),
    };
    if trainer.config() != config {
        differences.push("the architecture".into());
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "resuming with other settings than the run was started with: {}; resume with the run's own settings (only \
         the number of steps may change), or start a new run in another folder",
        differences.join(", ")
    )))
}
