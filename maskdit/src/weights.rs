//! Model weights files: the network's parameters by their official names, in safetensors files
//! (the toolkit's exports and the weights inside its training checkpoints) or official PyTorch
//! checkpoints; read, checked against an architecture, loaded as a [`MaskDit`], saved. A training
//! run's whole state (optimiser, EMA, run state) is `maskdit_train::checkpoint`'s; file formats
//! themselves are `maskdit_io`'s.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::{Error, MaskDit, ModelConfig, Result};

/// Which weights of an official training checkpoint (`model`, `ema`, `opt`, `args`) to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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

fn file_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::WeightsFile { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads the weights of one set from a weights file, on the CPU in the file's dtypes, with
/// wrapper prefixes stripped; only that set's tensors are read. From a toolkit training
/// checkpoint (weights, `ema/…`, `opt/…`) the requested set; from an official PyTorch
/// checkpoint its `set` entry; any other file (a plain state dict, exported weights) whole.
pub fn read_tensors(path: &Path, set: WeightSet) -> Result<HashMap<String, Tensor>> {
    let training = maskdit_io::is_safetensors(path)
        && maskdit_io::read_header(path)?.tensor_names.iter().any(|k| k.starts_with(EMA_PREFIX));
    let tensors = maskdit_io::read_tensors(path, set.key(), |name| {
        let name = match (training, set) {
            (false, _) => return Some(strip_wrapper_prefixes(name).to_string()),
            (true, WeightSet::Ema) => name.strip_prefix(EMA_PREFIX)?,
            (true, WeightSet::Model) => name,
        };
        (!name.contains('/')).then(|| name.to_string())
    })?;
    if tensors.is_empty() {
        return Err(file_error(path, format!("holds no `{}` weights", set.key())));
    }
    Ok(tensors)
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

/// Loads a model from safetensors bytes that record their architecture (as [`save_model`]
/// writes them), e.g. weights compiled into a binary.
pub fn load_bytes(bytes: &[u8], dtype: DType, device: &Device) -> Result<MaskDit> {
    let origin = Path::new("<embedded weights>");
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| file_error(origin, format!("not safetensors ({e})")))?;
    let config = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_METADATA))
        .ok_or_else(|| file_error(origin, "records no architecture"))?;
    let config = ModelConfig::from_json(config)?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
    check_keys(origin, &config, &tensors)?;
    MaskDit::new(&config, VarBuilder::from_tensors(tensors, dtype, device))
}

/// Writes `tensors` to a safetensors file, whole or not at all.
pub fn save(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    save_with_metadata(tensors, HashMap::new(), path)
}

/// Writes `tensors` and string `metadata` to a safetensors file, whole or not at all (see
/// [`maskdit_io::replace_file`]).
pub fn save_with_metadata(
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let contiguous = tensors
        .iter()
        .map(|(k, v)| Ok((k.as_str(), v.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    let info = (!metadata.is_empty()).then_some(metadata);
    maskdit_io::replace_file(path, |tmp| {
        safetensors::serialize_to_file(contiguous.iter().map(|(k, v)| (*k, v)), info, tmp)
            .map_err(std::io::Error::other)
    })?;
    Ok(())
}

/// Metadata key holding the model configuration (JSON) in files the toolkit writes.
pub const CONFIG_METADATA: &str = "maskdit.config";
/// Metadata key of a model's class names (a JSON list, index order).
pub const CLASSES_METADATA: &str = "maskdit.classes";
/// Metadata key of a training checkpoint's run settings (JSON).
pub const OPTIONS_METADATA: &str = "maskdit.train";
/// Metadata key of a training checkpoint's run state (JSON).
pub const STATE_METADATA: &str = "maskdit.state";
/// Name prefix of the EMA weights in a training checkpoint (the raw weights have none).
pub const EMA_PREFIX: &str = "ema/";
/// Name prefix of the optimiser state in a training checkpoint.
pub const OPTIMIZER_PREFIX: &str = "opt/";

/// The architecture recorded in a safetensors file the toolkit wrote, if any.
pub fn read_config(path: &Path) -> Result<Option<ModelConfig>> {
    match maskdit_io::read_header(path)?.metadata.get(CONFIG_METADATA) {
        None => Ok(None),
        Some(text) => ModelConfig::from_json(text).map(Some),
    }
}

/// Writes model weights with their architecture recorded, so they load without a preset, and
/// the names of their classes when given (one per class of `config`; empty: none recorded).
pub fn save_model(
    tensors: &HashMap<String, Tensor>,
    config: &ModelConfig,
    class_names: &[String],
    path: &Path,
) -> Result<()> {
    let mut metadata = HashMap::from([(
        CONFIG_METADATA.to_string(),
        serde_json::to_string(config).map_err(|e| Error::Config(e.to_string()))?,
    )]);
    if !class_names.is_empty() {
        if class_names.len() != config.num_classes {
            return Err(Error::Config(format!(
                "{} class names for a model with {} classes",
                class_names.len(),
                config.num_classes
            )));
        }
        let names = serde_json::to_string(class_names).map_err(|e| Error::Config(e.to_string()))?;
        metadata.insert(CLASSES_METADATA.to_string(), names);
    }
    save_with_metadata(tensors, metadata, path)
}

/// The class names recorded in a safetensors file by [`save_model`] (empty when none are).
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    match maskdit_io::read_header(path)?.metadata.get(CLASSES_METADATA) {
        None => Ok(Vec::new()),
        Some(text) => {
            serde_json::from_str(text).map_err(|e| file_error(path, format!("has unreadable class names ({e})")))
        }
    }
}
