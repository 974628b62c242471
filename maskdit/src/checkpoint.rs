//! Reading and writing model weights: safetensors files and official PyTorch checkpoints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::{Error, MaskDit, ModelConfig, Result};

/// Which weights of an official training checkpoint (`model`, `ema`, `opt`, `args`) to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightSet {
    /// The exponential moving average, used for sampling (the default).
    #[default]
    Ema,
    /// The raw training weights.
    Model,
}

impl WeightSet {
    /// The key of this set in an official checkpoint.
    pub fn key(self) -> &'static str {
        match self {
            Self::Ema => "ema",
            Self::Model => "model",
        }
    }
}

/// Prefixes that wrappers (DistributedDataParallel, `torch.compile`) add to parameter names.
const WRAPPER_PREFIXES: [&str; 2] = ["module.", "_orig_mod."];

/// Strips every wrapper prefix from the front of `name`.
pub fn strip_wrapper_prefixes(name: &str) -> &str {
    let mut name = name;
    while let Some(rest) = WRAPPER_PREFIXES.iter().find_map(|p| name.strip_prefix(p)) {
        name = rest;
    }
    name
}

fn checkpoint_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads every tensor of a weights file, on the CPU in the file's dtypes, with wrapper prefixes
/// stripped. `.safetensors` files are read as they are; anything else is read as a PyTorch
/// pickle: a plain state dict, or a training checkpoint whose `set` entry is taken.
pub fn read_tensors(path: &Path, set: WeightSet) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        });
    }
    let raw: Vec<(String, Tensor)> = if path.extension().is_some_and(|e| e == "safetensors") {
        candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| checkpoint_error(path, format!("not a readable safetensors file ({e})")))?
            .into_iter()
            .collect()
    } else {
        read_pytorch(path, set)?
    };
    let mut tensors = HashMap::with_capacity(raw.len());
    for (name, tensor) in raw {
        let key = strip_wrapper_prefixes(&name).to_string();
        if tensors.insert(key.clone(), tensor).is_some() {
            return Err(checkpoint_error(path, format!("key `{key}` appears twice once prefixes are stripped")));
        }
    }
    Ok(tensors)
}

fn read_pytorch(path: &Path, set: WeightSet) -> Result<Vec<(String, Tensor)>> {
    let unreadable = |e: candle_core::Error| checkpoint_error(path, format!("not a readable PyTorch checkpoint ({e})"));
    let top = candle_core::pickle::PthTensors::new(path, None).map_err(unreadable)?;
    let source = if top.tensor_infos().is_empty() {
        candle_core::pickle::PthTensors::new(path, Some(set.key())).map_err(|_| {
            checkpoint_error(path, format!("holds no `{}` weights and is not a plain state dict", set.key()))
        })?
    } else {
        top
    };
    let mut out = Vec::with_capacity(source.tensor_infos().len());
    let mut names: Vec<String> = source.tensor_infos().keys().cloned().collect();
    names.sort();
    for name in names {
        if let Some(t) = source.get(&name).map_err(unreadable)? {
            out.push((name, t));
        }
    }
    if out.is_empty() {
        return Err(checkpoint_error(path, format!("its `{}` entry holds no tensors", set.key())));
    }
    Ok(out)
}

/// Checks `tensors` against the parameters of `config`: every key present, none extra, shapes equal.
pub fn check_keys(path: &Path, config: &ModelConfig, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let expected = MaskDit::parameter_shapes(config)?;
    for (key, shape) in &expected {
        match tensors.get(key) {
            None => {
                return Err(Error::MissingKey { path: path.to_path_buf(), key: key.clone(), expected: shape.clone() })
            }
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(Error::ShapeMismatch {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    expected: shape.clone(),
                    found: t.dims().to_vec(),
                })
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
    let mut extra: Vec<&String> = tensors.keys().filter(|k| !known.contains(k.as_str())).collect();
    extra.sort();
    if let Some(key) = extra.first() {
        return Err(Error::UnexpectedKey {
            path: path.to_path_buf(),
            key: (*key).clone(),
            found: tensors[*key].dims().to_vec(),
        });
    }
    Ok(())
}

/// Loads a model of architecture `config` from `path` with strict key and shape checks,
/// casting the weights to `dtype` on `device`.
pub fn load(path: &Path, config: &ModelConfig, set: WeightSet, dtype: DType, device: &Device) -> Result<MaskDit> {
    let tensors = read_tensors(path, set)?;
    check_keys(path, config, &tensors)?;
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    MaskDit::new(config, vb)
}

/// Writes `tensors` to a safetensors file atomically (a temporary file renamed into place).
pub fn save(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let tmp = temporary_sibling(path);
    candle_core::safetensors::save(tensors, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        checkpoint_error(path, format!("could not be written ({e})"))
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

/// `dir/.name.tmp-<pid>` next to `path`.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
