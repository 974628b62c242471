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
        let all = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| checkpoint_error(path, format!("not a readable safetensors file ({e})")))?;
        select_weight_set(all, set)
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

/// From a toolkit training checkpoint (weights, `ema/…`, `opt/…`), the requested set; any
/// other safetensors file is taken whole.
fn select_weight_set(all: HashMap<String, Tensor>, set: WeightSet) -> Vec<(String, Tensor)> {
    if !all.keys().any(|k| k.starts_with(EMA_PREFIX)) {
        return all.into_iter().collect();
    }
    all.into_iter()
        .filter_map(|(k, v)| match set {
            WeightSet::Ema => k.strip_prefix(EMA_PREFIX).map(|k| (k.to_string(), v)),
            WeightSet::Model => (!k.contains('/')).then_some((k, v)),
        })
        .collect()
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

/// Loads a model from safetensors bytes that record their architecture (as [`save_model`]
/// writes them), e.g. weights compiled into a binary.
pub fn load_bytes(bytes: &[u8], dtype: DType, device: &Device) -> Result<MaskDit> {
    let origin = Path::new("<embedded weights>");
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| checkpoint_error(origin, format!("not safetensors ({e})")))?;
    let config = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_METADATA))
        .ok_or_else(|| checkpoint_error(origin, "records no architecture"))?;
    let config = ModelConfig::from_json(config)?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
    check_keys(origin, &config, &tensors)?;
    MaskDit::new(&config, VarBuilder::from_tensors(tensors, dtype, device))
}

/// Writes `tensors` to a safetensors file atomically (a temporary file renamed into place).
pub fn save(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    save_with_metadata(tensors, HashMap::new(), path)
}

/// Writes `tensors` and string `metadata` to a safetensors file atomically.
pub fn save_with_metadata(
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let tmp = temporary_sibling(path);
    let contiguous = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<Vec<_>>>()?;
    let info = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize_to_file(contiguous.iter().map(|(k, v)| (k.as_str(), v)), info, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        checkpoint_error(path, format!("could not be written ({e})"))
    })?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io { path: path.to_path_buf(), source }
    })
}

/// The string metadata of a safetensors file (empty if it has none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| checkpoint_error(path, "is too short to be a safetensors file"))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        return Err(checkpoint_error(path, "has an implausible safetensors header"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(|_| checkpoint_error(path, "has a truncated safetensors header"))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| checkpoint_error(path, "has an unreadable safetensors header"))?;
    Ok(header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default())
}

/// Metadata key holding the model configuration (JSON) in files the toolkit writes.
pub const CONFIG_METADATA: &str = "maskdit.config";
const OPTIONS_METADATA: &str = "maskdit.train";
const STATE_METADATA: &str = "maskdit.state";
const EMA_PREFIX: &str = "ema/";

/// The architecture recorded in a safetensors file the toolkit wrote, if any.
pub fn read_config(path: &Path) -> Result<Option<ModelConfig>> {
    match read_metadata(path)?.get(CONFIG_METADATA) {
        None => Ok(None),
        Some(text) => ModelConfig::from_json(text).map(Some),
    }
}

/// Writes model weights with their architecture recorded, so they load without a preset.
pub fn save_model(tensors: &HashMap<String, Tensor>, config: &ModelConfig, path: &Path) -> Result<()> {
    let config = serde_json::to_string(config).map_err(|e| Error::Config(e.to_string()))?;
    save_with_metadata(tensors, HashMap::from([(CONFIG_METADATA.to_string(), config)]), path)
}

/// Everything a training checkpoint holds.
#[derive(Debug, Clone)]
pub struct TrainingCheckpoint {
    /// The architecture.
    pub config: ModelConfig,
    /// The run settings (JSON).
    pub options: serde_json::Value,
    /// Where the run stands (JSON).
    pub state: serde_json::Value,
    /// Model weights.
    pub model: HashMap<String, Tensor>,
    /// EMA weights.
    pub ema: HashMap<String, Tensor>,
    /// Optimiser state (`opt/…` names).
    pub optimizer: HashMap<String, Tensor>,
}

/// Writes a training checkpoint atomically.
pub fn write_training_checkpoint(path: &Path, ckpt: &TrainingCheckpoint) -> Result<()> {
    let mut tensors = ckpt.model.clone();
    tensors.extend(ckpt.ema.iter().map(|(k, v)| (format!("{EMA_PREFIX}{k}"), v.clone())));
    tensors.extend(ckpt.optimizer.iter().map(|(k, v)| (k.clone(), v.clone())));
    let config = serde_json::to_string(&ckpt.config).map_err(|e| Error::Config(e.to_string()))?;
    let metadata = HashMap::from([
        (CONFIG_METADATA.to_string(), config),
        (OPTIONS_METADATA.to_string(), ckpt.options.to_string()),
        (STATE_METADATA.to_string(), ckpt.state.to_string()),
    ]);
    save_with_metadata(&tensors, metadata, path)
}

/// Reads a training checkpoint written by [`write_training_checkpoint`].
pub fn read_training_checkpoint(path: &Path) -> Result<TrainingCheckpoint> {
    let metadata = read_metadata(path)?;
    let field = |key: &str| {
        metadata
            .get(key)
            .ok_or_else(|| checkpoint_error(path, format!("is not a training checkpoint (no `{key}` metadata)")))
    };
    let config = ModelConfig::from_json(field(CONFIG_METADATA)?)?;
    let parse = |key: &str| -> Result<serde_json::Value> {
        serde_json::from_str(field(key)?)
            .map_err(|_| checkpoint_error(path, format!("has unreadable `{key}` metadata")))
    };
    let (options, state) = (parse(OPTIONS_METADATA)?, parse(STATE_METADATA)?);
    let all = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| checkpoint_error(path, format!("not a readable safetensors file ({e})")))?;
    let (mut model, mut ema, mut optimizer) = (HashMap::new(), HashMap::new(), HashMap::new());
    for (k, v) in all {
        if let Some(name) = k.strip_prefix(EMA_PREFIX) {
            ema.insert(name.to_string(), v);
        } else if k.starts_with("opt/") {
            optimizer.insert(k, v);
        } else {
            model.insert(k, v);
        }
    }
    check_keys(path, &config, &model)?;
    check_keys(path, &config, &ema)?;
    Ok(TrainingCheckpoint { config, options, state, model, ema, optimizer })
}

/// `dir/.name.tmp-<pid>` next to `path`.
pub fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}
