//! `maskdit convert`: official PyTorch checkpoints to safetensors.

use std::path::Path;

use anyhow::{bail, Result};
use maskdit::{checkpoint, WeightSet};

/// Writes the chosen weights of `input` (prefixes stripped) to `output` as safetensors,
/// keeping the architecture a toolkit checkpoint records.
pub fn convert(input: &Path, output: &Path, weights: &str) -> Result<()> {
    let set = match weights {
        "ema" => WeightSet::Ema,
        "model" => WeightSet::Model,
        other => bail!("unknown --weights `{other}`; use ema or model"),
    };
    if output.extension().is_none_or(|e| e != "safetensors") {
        bail!("the output file should end in .safetensors");
    }
    let tensors = checkpoint::read_tensors(input, set)?;
    let recorded =
        if input.extension().is_some_and(|e| e == "safetensors") { checkpoint::read_config(input)? } else { None };
    match recorded {
        // A toolkit checkpoint: keep its architecture with the weights.
        Some(config) => checkpoint::save_model(&tensors, &config, output)?,
        None => checkpoint::save(&tensors, output)?,
    }
    eprintln!("wrote {} tensors ({} weights) to {}", tensors.len(), set.key(), output.display());
    Ok(())
}
