//! Reading weights files: safetensors through a memory map, so that only the tensors asked for
//! are read, and PyTorch pickles (a plain state dict, or a dict holding one under a key).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// Largest safetensors header this reader accepts (the format's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

fn format_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), reason: reason.into() }
}

/// Whether `path` names a safetensors file (by its extension).
pub fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "safetensors")
}

/// Reads the tensors of a weights file that `select` keeps, on the CPU in the file's dtypes.
/// `select` maps a stored name to the name to return it under, or `None` to skip it; two
/// stored names mapped to one name are an error. A `.safetensors` file is memory-mapped and
/// only the kept tensors are read; any other file is read as a PyTorch pickle: a plain state
/// dict, or else the state dict stored under `pickle_entry`.
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
        if let Some(tensor) = tensor {
            if out.insert(name.clone(), tensor).is_some() {
                return Err(format_error(path, format!("two tensors are read as `{name}`")));
            }
        }
        Ok(())
    };
    if is_safetensors(path) {
        // SAFETY: the map is read-only and dropped before returning; every kept tensor is
        // copied out of it. As with any memory-mapped reader, the file must not be truncated
        // by another process while this call runs.
        let file = unsafe { MmapedSafetensors::new(path) }
            .map_err(|e| format_error(path, format!("not a readable safetensors file ({e})")))?;
        for (stored, view) in file.tensors() {
            keep(&stored, &|| view.load(&Device::Cpu).map(Some))?;
        }
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
