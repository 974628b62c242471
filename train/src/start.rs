//! Starting a fine-tune from a checkpoint: the parameters that may differ from the model's
//! without being asked, and the weights (model and EMA) the run starts from.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use maskdit::{weights, MaskDit, ModelConfig, WeightSet};
use rand::SeedableRng;

use crate::{Error, Result, Start, TrainableModel};

/// What starting from a checkpoint skipped and set fresh, for the caller to report.
#[derive(Debug, Clone, Default)]
pub struct StartReport {
    /// Checkpoint tensors that do not fit the model (`name (why)`), with the weight set they
    /// come from.
    pub skipped: Vec<(WeightSet, Vec<String>)>,
    /// Model parameters the checkpoint lacks, initialised fresh (sorted).
    pub initialised: Vec<String>,
    /// Why the EMA starts from the model weights, when the checkpoint holds no usable EMA.
    pub ema_from_model: Option<String>,
}

/// Whether a fine-tune may take parameter `name` fresh instead of from the checkpoint without
/// `allow_partial`: the fixed position tables (another resolution), the decoder and the mask
/// token (a decoder added or dropped; then also the final layer, whose input width follows the
/// decoder), and the label embedding (another set of classes).
pub fn expected_difference(name: &str, decoder_changed: bool) -> bool {
    name.ends_with("pos_embed")
        || name.starts_with("model.decoder_")
        || name == "model.mask_token"
        || name.starts_with("model.y_embedder.")
        || (decoder_changed && name.starts_with("model.final_layer."))
}

/// A short list of names: the first few and how many there are.
pub fn short_list(names: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut text = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// The weights of set `set` of `path` that fit `config`, and those that do not (`name (why)`).
/// Refuses misfits other than [expected differences](expected_difference) unless
/// `allow_partial`.
fn fitting(
    path: &Path,
    set: WeightSet,
    config: &ModelConfig,
    expected: &HashMap<String, Vec<usize>>,
    allow_partial: bool,
) -> Result<(HashMap<String, Tensor>, Vec<String>)> {
    let tensors = weights::read_tensors(path, set)?;
    let decoder_changed = tensors.keys().any(|k| k.starts_with("model.decoder_")) != config.use_decoder;
    let (mut kept, mut unfit) = (HashMap::new(), Vec::new());
    for (name, t) in tensors {
        match expected.get(&name) {
            Some(shape) if shape.as_slice() == t.dims() => {
                kept.insert(name, t);
            }
            Some(shape) => unfit.push(format!("{name} {:?} (the model's: {shape:?})", t.dims())),
            None => unfit.push(format!("{name} (not in the model)")),
        }
    }
    let mut absent: Vec<String> = expected.keys().filter(|k| !kept.contains_key(*k)).cloned().collect();
    unfit.sort();
    absent.sort();
    let surprising = |list: &[String]| -> Vec<String> {
        let name = |entry: &String| entry.split(' ').next().unwrap_or(entry).to_string();
        list.iter().filter(|entry| !expected_difference(&name(entry), decoder_changed)).cloned().collect()
    };
    let (bad_unfit, bad_absent) = (surprising(&unfit), surprising(&absent));
    if (!bad_unfit.is_empty() || !bad_absent.is_empty()) && !allow_partial {
        return Err(Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!(
                "does not fit this architecture ({} weights): {} of its tensors do not fit ({}) and {} of the model's \
                 parameters are missing ({}); is this the right checkpoint and architecture? To train from it anyway, \
                 with the misfits initialised fresh, allow a partial start (--allow-partial)",
                set.key(),
                bad_unfit.len(),
                short_list(&bad_unfit),
                bad_absent.len(),
                short_list(&bad_absent)
            ),
        });
    }
    Ok((kept, unfit))
}

/// The start of a fine-tune of `config` from checkpoint `path` (an official `.pt` or a toolkit
/// checkpoint): model and EMA weights matched by name, those the checkpoint lacks initialised
/// fresh (the EMA's from the model's), the optimiser state fresh. Misfits other than the
/// [expected differences](expected_difference) are refused unless `allow_partial`.
pub fn start_from_checkpoint(path: &Path, config: &ModelConfig, allow_partial: bool) -> Result<(Start, StartReport)> {
    let expected: HashMap<String, Vec<usize>> = MaskDit::parameter_shapes(config)?.into_iter().collect();
    let mut report = StartReport::default();
    let (mut model, unfit) = fitting(path, WeightSet::Model, config, &expected, allow_partial)?;
    if !unfit.is_empty() {
        report.skipped.push((WeightSet::Model, unfit));
    }
    let ema = match fitting(path, WeightSet::Ema, config, &expected, allow_partial) {
        Ok((ema, unfit)) => {
            if !unfit.is_empty() {
                report.skipped.push((WeightSet::Ema, unfit));
            }
            Some(ema)
        }
        Err(e) => {
            report.ema_from_model = Some(e.to_string());
            None
        }
    };
    let mut initialised: Vec<String> = expected.keys().filter(|name| !model.contains_key(*name)).cloned().collect();
    if !initialised.is_empty() {
        // A whole fresh model only when something is missing: it costs a set of weights.
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(0);
        let mut fresh = TrainableModel::fresh(config, &mut rng, &Device::Cpu)?.weights()?;
        for name in &initialised {
            if let Some(t) = fresh.remove(name) {
                model.insert(name.clone(), t);
            }
        }
    }
    let ema = ema.map(|mut ema| {
        for (name, t) in &model {
            ema.entry(name.clone()).or_insert_with(|| t.clone());
        }
        ema
    });
    initialised.sort();
    report.initialised = initialised;
    Ok((Start::From { model, ema }, report))
}
