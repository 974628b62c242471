//! The official pre-encoded ImageNet latents: an LMDB with `length` (decimal count),
//! `z-{i}` (f32 moments `(2C, H, W)`: mean and logvar stacked) and `y-{i}` (decimal label).
//! As in the reference, the second half of the entries are the horizontally flipped copies
//! of the first: without `xflip` only the first `length / 2` are used.

use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions};
use rand_chacha::ChaCha12Rng;

use super::{sample_latent, Dataset, Example};
use crate::{Error, Result};

fn lmdb_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Data { path: path.to_path_buf(), reason: format!("LMDB: {reason}") }
}

/// An official latent LMDB opened read-only.
pub struct LmdbDataset {
    path: PathBuf,
    env: Env,
    db: Database<Bytes, Bytes>,
    len: usize,
    dims: [usize; 3],
    latent_scale: f64,
}

impl std::fmt::Debug for LmdbDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LmdbDataset").field("path", &self.path).field("len", &self.len).finish_non_exhaustive()
    }
}

impl LmdbDataset {
    /// Opens the LMDB folder `path` holding latents of `resolution`² with `channels` channels.
    pub fn open(path: &Path, channels: usize, resolution: usize, xflip: bool, latent_scale: f64) -> Result<Self> {
        if !path.is_dir() {
            return Err(lmdb_error(path, "not a folder (expected the LMDB directory holding data.mdb)"));
        }
        // SAFETY: the environment is opened read-only and without locking; the file must not
        // be modified while training reads it, as with the reference loader.
        let env = unsafe { EnvOpenOptions::new().max_dbs(1).flags(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK).open(path) }
            .map_err(|e| lmdb_error(path, e))?;
        let rtxn = env.read_txn().map_err(|e| lmdb_error(path, e))?;
        let db: Database<Bytes, Bytes> = env
            .open_database(&rtxn, None)
            .map_err(|e| lmdb_error(path, e))?
            .ok_or_else(|| lmdb_error(path, "has no main database"))?;
        let length = db
            .get(&rtxn, b"length")
            .map_err(|e| lmdb_error(path, e))?
            .and_then(|b| std::str::from_utf8(b).ok()?.trim().parse::<usize>().ok())
            .ok_or_else(|| lmdb_error(path, "has no decimal `length` entry"))?;
        drop(rtxn);
        let len = if xflip { length } else { length / 2 };
        Ok(Self { path: path.to_path_buf(), env, db, len, dims: [channels, resolution, resolution], latent_scale })
    }
}

impl LmdbDataset {
    /// Closes the environment, so that the folder can be opened again in this process.
    pub fn close(self) {
        self.env.prepare_for_closing().wait();
    }
}

impl Dataset for LmdbDataset {
    fn check(&self, num_classes: usize) -> Result<()> {
        // The rest is checked as the examples stream in.
        let first = self.get(0, &mut <ChaCha12Rng as rand::SeedableRng>::seed_from_u64(0))?;
        if num_classes > 0 && first.label.is_some_and(|l| l >= num_classes) {
            return Err(lmdb_error(
                &self.path,
                format!(
                    "`y-0` is {} but the model has {num_classes} classes (labels 0..{})",
                    first.label.unwrap_or_default(),
                    num_classes - 1
                ),
            ));
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    fn dims(&self) -> [usize; 3] {
        self.dims
    }

    fn labeled(&self) -> bool {
        true
    }

    fn get(&self, index: usize, rng: &mut ChaCha12Rng) -> Result<Example> {
        let path = &self.path;
        let rtxn = self.env.read_txn().map_err(|e| lmdb_error(path, e))?;
        let z = self
            .db
            .get(&rtxn, format!("z-{index}").as_bytes())
            .map_err(|e| lmdb_error(path, e))?
            .ok_or_else(|| lmdb_error(path, format!("missing `z-{index}`")))?;
        let [c, h, w] = self.dims;
        if z.len() != 4 * 2 * c * h * w {
            return Err(lmdb_error(
                path,
                format!("`z-{index}` holds {} bytes, expected {} f32 moments", z.len(), 2 * c * h * w),
            ));
        }
        let moments: Vec<f32> = z.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if moments.iter().any(|v| !v.is_finite()) {
            return Err(lmdb_error(path, format!("`z-{index}` holds NaN or infinite moments; re-encode that example")));
        }
        let label = self
            .db
            .get(&rtxn, format!("y-{index}").as_bytes())
            .map_err(|e| lmdb_error(path, e))?
            .and_then(|b| std::str::from_utf8(b).ok()?.trim().parse::<usize>().ok())
            .ok_or_else(|| lmdb_error(path, format!("missing or non-decimal `y-{index}`")))?;
        Ok(Example { values: sample_latent(&moments, self.latent_scale, rng)?, label: Some(label) })
    }
}

/// Writes an LMDB in the official layout (for tools and tests).
pub struct LmdbWriter {
    path: PathBuf,
    env: Env,
    db: Database<Bytes, Bytes>,
    count: usize,
}

impl LmdbWriter {
    /// Creates (or opens) the LMDB folder `path`, with room for `map_size` bytes.
    pub fn create(path: &Path, map_size: usize) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        // SAFETY: the environment is opened once by this writer.
        let env = unsafe { EnvOpenOptions::new().map_size(map_size).max_dbs(1).open(path) }
            .map_err(|e| lmdb_error(path, e))?;
        let mut wtxn = env.write_txn().map_err(|e| lmdb_error(path, e))?;
        let db = env.create_database(&mut wtxn, None).map_err(|e| lmdb_error(path, e))?;
        wtxn.commit().map_err(|e| lmdb_error(path, e))?;
        Ok(Self { path: path.to_path_buf(), env, db, count: 0 })
    }

    /// Appends one example: stacked moments and its label.
    pub fn push(&mut self, moments: &[f32], label: usize) -> Result<()> {
        let path = &self.path;
        let bytes: Vec<u8> = moments.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut wtxn = self.env.write_txn().map_err(|e| lmdb_error(path, e))?;
        self.db.put(&mut wtxn, format!("z-{}", self.count).as_bytes(), &bytes).map_err(|e| lmdb_error(path, e))?;
        self.db
            .put(&mut wtxn, format!("y-{}", self.count).as_bytes(), label.to_string().as_bytes())
            .map_err(|e| lmdb_error(path, e))?;
        self.count += 1;
        self.db.put(&mut wtxn, b"length", self.count.to_string().as_bytes()).map_err(|e| lmdb_error(path, e))?;
        wtxn.commit().map_err(|e| lmdb_error(path, e))
    }

    /// Flushes and closes the environment, so that it can be opened again for reading.
    pub fn finish(self) -> Result<()> {
        self.env.force_sync().map_err(|e| lmdb_error(&self.path, e))?;
        self.env.prepare_for_closing().wait();
        Ok(())
    }
}
