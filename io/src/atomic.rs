//! Writing files whole or not at all: a temporary sibling is written, flushed, synced to disk
//! and renamed over the target, so readers see the old file or the complete new one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// `dir/.name.tmp-<pid>` beside `path`: the temporary file [`replace_file`] writes.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Replaces `path` with the file that `fill` creates at the temporary path it is given:
/// the temporary file is synced to disk and renamed over `path`. On any failure the temporary
/// file is removed, `path` is left as it was and the error is returned.
pub fn replace_file(path: &Path, fill: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let tmp = temporary_sibling(path);
    let result = fill(&tmp)
        .and_then(|()| File::open(&tmp)?.sync_all())
        .map_err(io_error(&tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io_error(path)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable; a folder that cannot be synced is not an error.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Writes `path` through a buffered writer handed to `write`, whole or not at all (see
/// [`replace_file`]); write errors, including those that only surface when the buffer is
/// flushed, fail the call.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    replace_file(path, |tmp| {
        let mut file = BufWriter::new(File::create(tmp)?);
        write(&mut file)?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()
    })
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
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_folder_in_the_way_fails_and_leaves_no_temporary() {
        let dir = scratch("folder");
        let target = dir.join("taken");
        std::fs::create_dir(&target).unwrap();
        assert!(write_atomic(&target, |f| f.write_all(b"x")).is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
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
