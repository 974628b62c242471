//! Training checkpoints: weights, EMA, optimiser moments and run state in one safetensors file
//! (the layout of [`maskdit::weights`]'s constants), written whole or not at all.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use maskdit::weights::{
    check_keys, save_with_metadata, CONFIG_METADATA, EMA_PREFIX, OPTIMIZER_PREFIX, OPTIONS_METADATA, STATE_METADATA,
};
use maskdit::ModelConfig;

use crate::{Error, Result};

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

fn checkpoint_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

impl TrainingCheckpoint {
    /// Writes the checkpoint to `path`, whole or not at all.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut tensors = self.model.clone();
        tensors.extend(self.ema.iter().map(|(k, v)| (format!("{EMA_PREFIX}{k}"), v.clone())));
        tensors.extend(self.optimizer.iter().map(|(k, v)| (k.clone(), v.clone())));
        let config = serde_json::to_string(&self.config).map_err(|e| Error::Config(e.to_string()))?;
        let metadata = HashMap::from([
            (CONFIG_METADATA.to_string(), config),
            (OPTIONS_METADATA.to_string(), self.options.to_string()),
            (STATE_METADATA.to_string(), self.state.to_string()),
        ]);
        Ok(save_with_metadata(&tensors, metadata, path)?)
    }

    /// Reads a checkpoint written by [`Self::write`], checking both weight sets against the
    /// recorded architecture.
    pub fn read(path: &Path) -> Result<Self> {
        let metadata = maskdit_io::read_header(path)?.metadata;
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
        let (mut model, mut ema, mut optimizer) = (HashMap::new(), HashMap::new(), HashMap::new());
        for (name, tensor) in maskdit_io::read_tensors(path, "", |name| Some(name.to_string()))? {
            if let Some(short) = name.strip_prefix(EMA_PREFIX) {
                ema.insert(short.to_string(), tensor);
            } else if name.starts_with(OPTIMIZER_PREFIX) {
                optimizer.insert(name, tensor);
            } else {
                model.insert(name, tensor);
            }
        }
        check_keys(path, &config, &model)?;
        check_keys(path, &config, &ema)?;
        Ok(Self { config, options, state, model, ema, optimizer })
    }
}
