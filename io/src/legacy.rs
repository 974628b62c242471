//! PyTorch's legacy serialization (before 1.6, or `_use_new_zipfile_serialization=False`): a
//! stream of pickles — magic number, protocol version, system info, the object, the list of
//! storage keys — followed by each storage in that order as an 8-byte little-endian element
//! count and the raw elements. pytorch-fid's Inception weights are stored this way.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{Device, Tensor};

use crate::{Error, Result};

/// The first pickle of every legacy file: protocol 2, the magic number 0x1950a86a20f9469cfc6c
/// as a 10-byte LONG1, STOP.
const MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
/// The protocol version every legacy file records (1001).
const PROTOCOL_VERSION: i64 = 1001;

fn format_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), reason: reason.into() }
}

/// Whether the file starts like a legacy PyTorch file.
pub(crate) fn is_legacy(path: &Path) -> bool {
    let mut start = [0u8; MAGIC.len()];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut start)).is_ok() && start == MAGIC
}

fn read_pickle<R: BufRead>(reader: &mut R, path: &Path, what: &str) -> Result<Object> {
    let mut stack = Stack::empty();
    stack
        .read_loop(reader)
        .and_then(|()| stack.finalize())
        .map_err(|e| format_error(path, format!("has an unreadable {what} ({e})")))
}

/// Where one stored tensor's elements are.
struct Stored {
    name: String,
    info: candle_core::pickle::TensorInfo,
    key: String,
}

/// Receives each stored tensor by name with a loader of its values (see [`read_legacy`]).
pub(crate) type Keep<'a> = dyn FnMut(&str, &dyn Fn() -> candle_core::Result<Option<Tensor>>) -> Result<()> + 'a;

/// Reads the tensors of a legacy PyTorch file that `keep` selects: a state dict, or the state
/// dict under `entry` of a dict. Only contiguous tensors are supported (what `state_dict()`
/// saves).
pub(crate) fn read_legacy(path: &Path, entry: &str, keep: &mut Keep) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let file_len = file.metadata().map_err(|source| Error::Io { path: path.to_path_buf(), source })?.len();
    let mut reader = BufReader::new(&file);
    let mut magic = [0u8; MAGIC.len()];
    reader.read_exact(&mut magic).map_err(|_| format_error(path, "is too short"))?;
    if magic != MAGIC {
        return Err(format_error(path, "is not a legacy PyTorch file (wrong magic number)"));
    }
    match read_pickle(&mut reader, path, "protocol version")? {
        Object::Int(v) if i64::from(v) == PROTOCOL_VERSION => {}
        Object::Long(v) if v == PROTOCOL_VERSION => {}
        other => {
            return Err(format_error(path, format!("has protocol version {other:?}, expected {PROTOCOL_VERSION}")))
        }
    }
    read_pickle(&mut reader, path, "system information")?;
    let object = read_pickle(&mut reader, path, "object")?;
    let keys = match read_pickle(&mut reader, path, "storage list")? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| k.unicode().map_err(|k| format_error(path, format!("has a storage key {k:?}"))))
            .collect::<Result<Vec<String>>>()?,
        other => return Err(format_error(path, format!("has a storage list {other:?}"))),
    };
    let position = reader.stream_position().map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    drop(reader);

    let state_dict = match object {
        Object::Dict(items) => match items.iter().position(|(k, _)| *k == Object::Unicode(entry.to_string())) {
            Some(at) => items.into_iter().nth(at).map(|(_, v)| v),
            None => Some(Object::Dict(items)),
        },
        _ => None,
    };
    let Some(Object::Dict(items)) = state_dict else {
        return Err(format_error(path, format!("holds neither a state dict nor one under `{entry}`")));
    };
    let mut tensors = Vec::new();
    for (name, value) in items {
        let Ok(text) = name.clone().unicode() else { continue };
        let info = value
            .into_tensor_info(name, Path::new(""))
            .map_err(|e| format_error(path, format!("tensor `{text}` is unreadable ({e})")))?;
        if let Some(info) = info {
            let key = info.path.trim_start_matches('/').to_string();
            tensors.push(Stored { name: text, info, key });
        }
    }
    if tensors.is_empty() {
        return Err(format_error(path, "holds no tensors"));
    }

    // The storages follow one another in the listed order; a storage's element size is that of
    // the tensors viewing it.
    let mut element_size = HashMap::new();
    for t in &tensors {
        element_size.insert(t.key.clone(), t.info.dtype.size_in_bytes() as u64);
    }
    let mut storages = HashMap::new();
    let mut at = position;
    for key in keys {
        let size = *element_size
            .get(&key)
            .ok_or_else(|| format_error(path, format!("storage `{key}` is viewed by no tensor of the state dict")))?;
        let mut count = [0u8; 8];
        file.read_exact_at(&mut count, at)
            .map_err(|_| format_error(path, format!("ends before storage `{key}` (truncated file?)")))?;
        let bytes = u64::from_le_bytes(count)
            .checked_mul(size)
            .filter(|&b| at + 8 + b <= file_len)
            .ok_or_else(|| format_error(path, format!("storage `{key}` runs past the end of the file (truncated?)")))?;
        storages.insert(key, (at + 8, bytes));
        at += 8 + bytes;
    }

    for t in tensors {
        let (start, bytes) = *storages.get(&t.key).ok_or_else(|| {
            format_error(path, format!("tensor `{}` views storage `{}`, which is not stored", t.name, t.key))
        })?;
        let layout = &t.info.layout;
        let dims = layout.shape().dims().to_vec();
        if !layout.is_contiguous() {
            return Err(format_error(
                path,
                format!("tensor `{}` is not contiguous, which this reader does not support", t.name),
            ));
        }
        let offset = layout.start_offset() as u64;
        // Checked: a hostile shape must not overflow into a small length.
        let length = dims
            .iter()
            .try_fold(t.info.dtype.size_in_bytes() as u64, |acc, &d| acc.checked_mul(d as u64))
            .filter(|&length| offset.checked_add(length).is_some_and(|end| end <= bytes));
        let Some(length) = length else {
            return Err(format_error(path, format!("tensor `{}` lies outside its storage", t.name)));
        };
        let dtype = t.info.dtype;
        keep(&t.name, &|| {
            let mut data = vec![0u8; length as usize];
            file.read_exact_at(&mut data, start + offset)?;
            Tensor::from_raw_buffer(&data, dtype, &dims, &Device::Cpu).map(Some)
        })?;
    }
    Ok(())
}
