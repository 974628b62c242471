//! Reading tensor files: safetensors by positioned reads of just the tensors asked for (no
//! memory map, so nothing but the kept tensors ever becomes resident), and PyTorch pickles (a
//! plain state dict, or a dict holding one under a key; read tensor by tensor).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use std::cell::Cell;
use std::os::unix::fs::FileExt;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::{Error, Result};

/// Largest safetensors header this reader accepts (the format's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

fn format_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), reason: reason.into() }
}

thread_local! {
    /// Tensor bytes this thread has read from weights files.
    static BYTES_READ: Cell<u64> = const { Cell::new(0) };
}

/// How many tensor bytes [`read_tensors`] has read on the calling thread so far (to check that
/// only the tensors asked for are read).
pub fn bytes_read_on_this_thread() -> u64 {
    BYTES_READ.with(Cell::get)
}

fn count_read(bytes: usize) {
    BYTES_READ.with(|total| total.set(total.get() + bytes as u64));
}

/// A tensor's entry in a safetensors header.
#[derive(Debug, Deserialize)]
struct Entry {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Whether `path` names a safetensors file (by its extension).
pub fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

/// Reads the tensors of a weights file that `select` keeps, on the CPU in the file's dtypes.
/// `select` maps a stored name to the name to return it under, or `None` to skip it; two
/// stored names mapped to one name are an error. A `.safetensors` file is memory-mapped and
/// only the kept tensors are read; any other file is read as a PyTorch file (zip, or the legacy
/// format from before PyTorch 1.6): a plain state dict, or else the state dict stored under
/// `pickle_entry`.
pub fn read_tensors(
    path: &Path,
    pickle_entry: &str,
    mut select: impl FnMut(&str) -> Option<String>,
) -> Result<HashMap<String, Tensor>> {
    if !path.is_file() {
        let reason = if path.exists() { "is not a file" } else { "no such file" };
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, reason),
        });
    }
    let mut out = HashMap::new();
    let mut keep = |stored: &str, load: &dyn Fn() -> candle_core::Result<Option<Tensor>>| -> Result<()> {
        let Some(name) = select(stored) else { return Ok(()) };
        let tensor = load().map_err(|e| format_error(path, format!("tensor `{stored}` is unreadable ({e})")))?;
        if let Some(t) = &tensor {
            count_read(t.elem_count() * t.dtype().size_in_bytes());
        }
        if let Some(tensor) = tensor {
            if out.insert(name.clone(), tensor).is_some() {
                return Err(format_error(path, format!("two tensors are read as `{name}`")));
            }
        }
        Ok(())
    };
    if is_safetensors(path) {
        let (header_len, entries) = read_entries(path)?;
        let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let data_start = 8 + header_len;
        for (stored, entry) in entries {
            keep(&stored, &|| read_entry(&file, data_start, &entry).map(Some))?;
        }
        return Ok(out);
    }
    if crate::legacy::is_legacy(path) {
        crate::legacy::read_legacy(path, pickle_entry, &mut keep)?;
        return Ok(out);
    }
    let unreadable = |e: candle_core::Error| format_error(path, format!("not a readable PyTorch checkpoint ({e})"));
    let top = candle_core::pickle::PthTensors::new(path, None).map_err(unreadable)?;
    let source = if top.tensor_infos().is_empty() {
        candle_core::pickle::PthTensors::new(path, Some(pickle_entry))
            .map_err(|_| format_error(path, format!("holds no `{pickle_entry}` entry and is not a plain state dict")))?
    } else {
        top
    };
    let mut names: Vec<String> = source.tensor_infos().keys().cloned().collect();
    names.sort();
    if names.is_empty() {
        return Err(format_error(path, format!("its `{pickle_entry}` entry holds no tensors")));
    }
    for stored in names {
        keep(&stored, &|| source.get(&stored))?;
    }
    Ok(out)
}

/// What a safetensors file's header says: its string metadata and the names of its tensors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// The `__metadata__` strings (empty if there are none).
    pub metadata: HashMap<String, String>,
    /// The stored tensor names, sorted.
    pub tensor_names: Vec<String>,
}

/// Reads the header of a safetensors file (and nothing else of it).
pub fn read_header(path: &Path) -> Result<Header> {
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| format_error(path, "is too short to be a safetensors file"))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(format_error(path, "has an implausible safetensors header"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|_| format_error(path, "has a truncated safetensors header"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|_| format_error(path, "has an unreadable safetensors header"))?;
    let metadata = header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    let mut tensor_names: Vec<String> = header.keys().filter(|k| *k != "__metadata__").cloned().collect();
    tensor_names.sort();
    Ok(Header { metadata, tensor_names })
}

/// The header length and the tensor entries of a safetensors file, checked against its size.
fn read_entries(path: &Path) -> Result<(u64, Vec<(String, Entry)>)> {
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let file_len = file.metadata().map_err(|source| Error::Io { path: path.to_path_buf(), source })?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| format_error(path, "is too short to be a safetensors file"))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(format_error(path, "has an implausible safetensors header"));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|_| format_error(path, "has a truncated safetensors header"))?;
    let mut header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|_| format_error(path, "has an unreadable safetensors header"))?;
    header.remove("__metadata__");
    let data_len = file_len - 8 - header_len;
    let mut entries = Vec::with_capacity(header.len());
    for (name, value) in header {
        let entry: Entry = serde_json::from_value(value)
            .map_err(|e| format_error(path, format!("has an unreadable header entry for `{name}` ({e})")))?;
        let (start, end) = entry.data_offsets;
        let expected = entry.shape.iter().product::<usize>() as u64 * entry.dtype.bitsize() as u64 / 8;
        if start > end || end > data_len || end - start != expected {
            return Err(format_error(
                path,
                format!("tensor `{name}` lies outside the file or has the wrong size (truncated or corrupt file?)"),
            ));
        }
        entries.push((name, entry));
    }
    entries.sort_by_key(|(_, e)| e.data_offsets.0);
    Ok((header_len, entries))
}

/// Reads one tensor at its place in the file.
fn read_entry(file: &std::fs::File, data_start: u64, entry: &Entry) -> candle_core::Result<Tensor> {
    let dtype = DType::try_from(entry.dtype)?;
    let (start, end) = entry.data_offsets;
    let mut bytes = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut bytes, data_start + start)?;
    Tensor::from_raw_buffer(&bytes, dtype, &entry.shape, &Device::Cpu)
}
