//! Owning a folder: an advisory lock on `FOLDER/.maskdit.lock` that the operating system
//! releases when its holder ends, however it ends. The file names the holder's pid.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::{Error, Result};

/// The lock file's name inside the folder it guards.
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
    _file: File,
}

/// The pid written in a lock file, if it names one.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

impl FolderLock {
    /// Takes `folder` (which must exist) with `access`, or fails with [`Error::Locked`] naming
    /// the holder's pid where the lock file records it. Never waits.
    pub fn acquire(folder: &Path, access: Access) -> Result<Self> {
        let path = folder.join(LOCK_FILE);
        let io = |source| Error::Io { path: path.clone(), source };
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // A link planted at the lock's name is refused, not followed.
            options.custom_flags(libc::O_NOFOLLOW);
        }
        let mut file = options.open(&path).map_err(io)?;
        let locked = match access {
            Access::Exclusive => file.try_lock(),
            Access::Shared => file.try_lock_shared(),
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked { folder: folder.to_path_buf(), holder: holder(&mut file) })
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        if access == Access::Exclusive {
            let pid = std::process::id().to_string();
            file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(pid.as_bytes())).map_err(io)?;
        } else if holder(&mut file).is_none() {
            // Shared holders leave a pid only where none is recorded: any one of them will do.
            let pid = std::process::id().to_string();
            let _ = file.seek(std::io::SeekFrom::End(0)).and_then(|_| file.write_all(pid.as_bytes()));
        }
        Ok(Self { _file: file })
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
        FolderLock::acquire(&dir, Access::Exclusive).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
