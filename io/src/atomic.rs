//! Writing files whole or not at all: a temporary sibling is written, flushed, synced to disk
//! and renamed over the target, so readers see the old file or the complete new one.
//!
//! Temporaries are named `.NAME.tmp-PID-RANDOM` in the target's folder and created exclusively
//! (`O_CREAT|O_EXCL`, which never follows a link), so nothing placed in a shared folder
//! beforehand can redirect a write. Files get the usual `0666` less the umask. Temporaries that
//! a killed process left behind (its pid no longer running) are removed by this process's
//! first write into the same folder.

use std::fs::{File, Permissions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// The folder and file name of `path` (`.` for a bare name).
fn split(path: &Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Format { path: path.to_path_buf(), reason: "not a file name to write to".into() })?;
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((folder.to_path_buf(), name))
}

/// `.NAME.tmp-`: the start of every temporary written for target `NAME`.
fn temporary_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Whether process `pid` is running on this machine.
#[cfg(unix)]
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(not(unix))]
fn alive(_pid: u32) -> bool {
    true
}

/// Characters of a temporary name's random part.
const RANDOM_CHARS: usize = 12;

/// The writing pid of a temporary's name (`.NAME.tmp-PID-RANDOM`, or `.NAME.tmp-PID` as
/// earlier versions named them); `None` for any other name.
fn temporary_pid(name: &str) -> Option<u32> {
    let (_, rest) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    let (pid, random) = rest.split_once('-').unwrap_or((rest, ""));
    let random_ok =
        random.is_empty() || (random.len() == RANDOM_CHARS && random.bytes().all(|b| b.is_ascii_alphanumeric()));
    (random_ok && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.parse().ok())?
}

/// Removes, once per folder and process, the temporaries in `folder` whose writing process is
/// gone (best effort).
fn remove_stale_temporaries(folder: &Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let key = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
    match SWEPT.lock() {
        Ok(mut swept) if !swept.contains(&key) => swept.push(key),
        _ => return,
    }
    let Ok(entries) = std::fs::read_dir(folder) else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(temporary_pid) else { continue };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        let path = entry.path();
        // `symlink_metadata` so that a link is removed, never followed.
        let removed = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
            Ok(_) => std::fs::remove_file(&path),
            Err(e) => Err(e),
        };
        let _ = removed;
    }
}

/// A temporary builder for target `name`: `.NAME.tmp-PID-` and a random part.
fn builder(prefix: &str) -> tempfile::Builder<'_, '_> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).rand_bytes(RANDOM_CHARS);
    builder
}

/// Makes a durable rename in `folder` (a folder that cannot be synced is not an error).
fn sync_folder(folder: &Path) {
    if let Ok(dir) = File::open(folder) {
        let _ = dir.sync_all();
    }
}

/// Writes `path` through a buffered writer handed to `write`, whole or not at all: the
/// temporary is flushed, synced and renamed over `path`. On any failure, including write
/// errors that only surface when the buffer is flushed, the temporary is removed, `path` is
/// left as it was and the error is returned.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let (folder, name) = split(path)?;
    remove_stale_temporaries(&folder);
    let prefix = format!("{}{}-", temporary_prefix(&name), std::process::id());
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        Permissions::from_mode(0o666)
    };
    #[cfg(not(unix))]
    let mode = std::fs::metadata(&folder).map_err(io_error(&folder))?.permissions();
    let temporary = builder(&prefix).permissions(mode).tempfile_in(&folder).map_err(io_error(&folder))?;
    // The temporary is removed when `tmp_path` drops without being persisted.
    let (file, tmp_path) = temporary.into_parts();
    let mut writer = BufWriter::new(file);
    write(&mut writer).map_err(io_error(&tmp_path))?;
    let file = writer.into_inner().map_err(|e| io_error(&tmp_path)(e.into_error()))?;
    file.sync_all().map_err(io_error(&tmp_path))?;
    tmp_path.persist(path).map_err(|e| io_error(path)(e.error))?;
    sync_folder(&folder);
    Ok(())
}

/// Replaces `path` with the file that `fill` creates at the path it is given (for writers
/// that only take a path): `fill` writes inside a fresh private folder (`0700`) beside `path`,
/// so no other user can interfere; the result gets `0666` less the umask, is synced and renamed
/// over `path`. On any failure the private folder is removed, `path` is left as it was and the
/// error is returned.
pub fn replace_file(path: &Path, fill: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let (folder, name) = split(path)?;
    remove_stale_temporaries(&folder);
    let prefix = format!("{}{}-", temporary_prefix(&name), std::process::id());
    let private = builder(&prefix).tempdir_in(&folder).map_err(io_error(&folder))?;
    let tmp = private.path().join(&name);
    // A file made the ordinary way carries the umask's mode; the writer's own file may not
    // (safetensors makes its files 0600).
    let probe = private.path().join(".mode");
    let mode = File::create(&probe).and_then(|f| f.metadata()).map(|m| m.permissions()).map_err(io_error(&probe))?;
    fill(&tmp).map_err(io_error(&tmp))?;
    let file = File::open(&tmp).map_err(io_error(&tmp))?;
    if !file.metadata().map_err(io_error(&tmp))?.is_file() {
        return Err(Error::Format { path: tmp, reason: "the writer did not leave a plain file".into() });
    }
    file.set_permissions(mode).and_then(|()| file.sync_all()).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))?;
    sync_folder(&folder);
    // Dropping `private` removes the folder and the mode probe.
    Ok(())
}

/// Appends `line` and a newline to `path` (created if absent) in one write, flushed to disk:
/// for append-only logs.
pub fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io_error(path))?;
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    file.write_all(&bytes).and_then(|()| file.sync_data()).map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("maskdit-io-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = scratch("keep");
        let path = dir.join("a.txt");
        write_atomic(&path, |f| f.write_all(b"old")).unwrap();
        let err = write_atomic(&path, |f| {
            f.write_all(b"new")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let err = replace_file(&path, |_| Err(std::io::Error::other("disk full"))).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_folder_in_the_way_fails_and_leaves_no_temporary() {
        let dir = scratch("folder");
        let target = dir.join("taken");
        std::fs::create_dir(&target).unwrap();
        assert!(write_atomic(&target, |f| f.write_all(b"x")).is_err());
        assert!(replace_file(&target, |tmp| std::fs::write(tmp, b"x")).is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn links_planted_at_old_temporary_names_are_not_followed_and_stale_ones_go() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("links");
        let victim = dir.join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        let target = dir.join("out.png");
        // The names earlier versions used, and a guess at this process's names.
        for planted in
            [format!(".out.png.tmp-{}", std::process::id()), format!(".out.png.tmp-{}-x", std::process::id())]
        {
            std::os::unix::fs::symlink(&victim, dir.join(planted)).unwrap();
        }
        // Leftovers of a process that is gone (pid beyond the kernel's maximum): of this target,
        // and of a checkpoint write killed half-way, and a user's file that only looks similar.
        let stale = dir.join(".out.png.tmp-4194305-abcdefABCDEF");
        std::fs::write(&stale, b"half a file").unwrap();
        let stale_checkpoint = dir.join(".0000100.safetensors.tmp-4194305-0123456789ab");
        std::fs::create_dir(&stale_checkpoint).unwrap();
        let lookalike = dir.join(".notes.tmp-4194305-mine");
        std::fs::write(&lookalike, b"keep").unwrap();
        write_atomic(&target, |f| f.write_all(b"image")).unwrap();
        // A writer that makes its file 0600, as safetensors does.
        replace_file(&dir.join("w.safetensors"), |tmp| {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(tmp)?.write_all(b"weights")
        })
        .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&target).unwrap(), b"image");
        assert!(!stale.exists() && !stale_checkpoint.exists(), "a dead process's temporary stayed");
        assert!(lookalike.exists(), "a file that is no temporary was removed");
        // Files follow the umask like any other (0022 or 0002 leave them readable to others).
        let umask_mode = {
            let probe = dir.join("probe");
            File::create(&probe).unwrap();
            std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777
        };
        for written in ["out.png", "w.safetensors"] {
            let mode = std::fs::metadata(dir.join(written)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, umask_mode, "{written}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn appended_lines_accumulate() {
        let dir = scratch("append");
        let log = dir.join("log.jsonl");
        append_line(&log, "{\"a\":1}").unwrap();
        append_line(&log, "{\"a\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
