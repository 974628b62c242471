//! `maskdit convert`: official PyTorch checkpoints to safetensors.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use maskdit::{weights, WeightSet};

/// Options of `maskdit convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The .pt checkpoint (or a toolkit training checkpoint).
    input: PathBuf,
    /// The .safetensors file to write.
    output: PathBuf,
    /// Which weights of a training checkpoint to take.
    #[arg(long, value_enum, default_value_t = WeightSet::Ema)]
    weights: WeightSet,
}

/// Writes the chosen weights of the input (prefixes stripped) to the output as safetensors,
/// keeping the architecture a toolkit checkpoint records.
pub fn run(args: ConvertArgs) -> Result<()> {
    let ConvertArgs { input, output, weights: set } = args;
    if !maskdit_io::is_safetensors(&output) {
        bail!("the output file should end in .safetensors");
    }
    crate::runtime::outputs::refuse_overwriting_inputs("the output", &output, [input.as_path()])?;
    let tensors = weights::read_tensors(&input, set)?;
    let recorded = if maskdit_io::is_safetensors(&input) { weights::read_config(&input)? } else { None };
    match recorded {
        // A toolkit checkpoint: keep its architecture with the weights.
        Some(config) => weights::save_model(&tensors, &config, &[], &output)?,
        None => weights::save(&tensors, &output)?,
    }
    eprintln!("wrote {} tensors ({} weights) to {}", tensors.len(), set.key(), output.display());
    Ok(())
}
