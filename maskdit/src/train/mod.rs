//! Training: the EDM loss (masked and unmasked), AdamW, EMA, schedules, data and the loop.

pub mod data;
mod ema;
mod in_place;
mod loss;
mod optimizer;
mod presets;
mod schedule;
mod trainable;
mod trainer;

pub use ema::Ema;
pub use loss::{mae_loss, patchify, EdmLoss};
pub use optimizer::{AdamW, AdamWConfig};
pub use presets::{mnist_config, preset, TrainPreset, PRESET_NAMES};
pub use schedule::{ramped_lr, MaskCurve, MaskSchedule};
pub use trainable::TrainableModel;
pub use trainer::{Precision, RunState, Start, StepReport, TrainOptions, Trainer};
