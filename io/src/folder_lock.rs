//! Owning a folder: an advisory lock (`flock`) on the folder itself, which the operating
//! system releases when its holder ends, however it ends. An exclusive holder also records its
//! pid in `FOLDER/.maskdit.lock` (removed when it lets go), so that others can name it.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The file an exclusive holder records its pid in, inside the folder it holds.
pub const LOCK_FILE: &str = ".maskdit.lock";

/// Whether other processes may hold the folder at the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The only process writing the folder (a training run, a packing `generate`).
    Exclusive,
    /// One of several writers that keep to their own files (`generate` shards).
    Shared,
}

/// A held lock on a folder; released when dropped or when the process ends.
#[derive(Debug)]
pub struct FolderLock {
    /// The pid file this holder wrote (exclusive holders), removed before the lock goes.
    pid_file: Option<PathBuf>,
    /// The folder, open: its lock lives as long as this handle.
    _folder: File,
}

/// The pid an exclusive holder recorded in `folder`, if any.
fn holder(folder: &Path) -> Option<u32> {
    let text = std::fs::read(folder.join(LOCK_FILE)).ok()?;
    std::str::from_utf8(text.get(..text.len().min(32))?).ok()?.trim().parse().ok()
}

impl FolderLock {
    /// Takes `folder` (which must exist) with `access`, or fails with [`Error::Locked`] naming
    /// the holder's pid where an exclusive holder recorded it. Never waits.
    pub fn acquire(folder: &Path, access: Access) -> Result<Self> {
        let io = |source| Error::Io { path: folder.to_path_buf(), source };
        let handle = File::open(folder).map_err(io)?;
        let locked = match access {
            Access::Exclusive => handle.try_lock(),
            Access::Shared => handle.try_lock_shared(),
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked { folder: folder.to_path_buf(), holder: holder(folder) })
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        let pid_file = match access {
            Access::Exclusive => {
                let path = folder.join(LOCK_FILE);
                crate::write_atomic(&path, |f| f.write_all(std::process::id().to_string().as_bytes()))?;
                Some(path)
            }
            Access::Shared => None,
        };
        Ok(Self { pid_file, _folder: handle })
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // Before the folder's handle closes, so that the next holder's pid is never removed.
        if let Some(path) = &self.pid_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_exclusive_holder_many_shared_and_release_on_drop() {
        let dir = std::env::temp_dir().join(format!("maskdit-io-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let first = FolderLock::acquire(&dir, Access::Exclusive).unwrap();
        let err = FolderLock::acquire(&dir, Access::Exclusive).unwrap_err();
        assert!(matches!(err, Error::Locked { holder: Some(pid), .. } if pid == std::process::id()), "{err}");
        assert!(FolderLock::acquire(&dir, Access::Shared).is_err());
        drop(first);
        let a = FolderLock::acquire(&dir, Access::Shared).unwrap();
        let b = FolderLock::acquire(&dir, Access::Shared).unwrap();
        assert!(FolderLock::acquire(&dir, Access::Exclusive).is_err());
        drop((a, b));
        let last = FolderLock::acquire(&dir, Access::Exclusive).unwrap();
        drop(last);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "a released lock left a file");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
