//! Training for MaskDiT: the EDM loss (masked and unmasked, with the MAE term), AdamW, EMA,
//! learning-rate and mask-ratio schedules, datasets (the official latent LMDB and the toolkit's
//! shards), the training loop, and checkpoints that resume exactly.
//!
//! Fine-tune a few steps from a checkpoint on a shard of latents, starting as `maskdit
//! finetune` does (model and EMA weights by name; the expected differences taken fresh):
//!
//! ```no_run
//! use candle_core::Device;
//! use maskdit_train::data::ShardDataset;
//! use maskdit_train::{preset, start_from_checkpoint, Trainer};
//!
//! # fn main() -> maskdit_train::Result<()> {
//! let recipe = preset("imagenet256-finetune")?;
//! let (start, report) = start_from_checkpoint("2000000.pt".as_ref(), &recipe.config, false)?;
//! println!("initialised fresh: {:?}", report.initialised);
//! let data = ShardDataset::open(&["latents/shard-000000.safetensors".into()], 0.18215)?;
//! let mut trainer = Trainer::new(recipe.config, recipe.options, Box::new(data), start, &Device::Cpu)?;
//! for _ in 0..10 {
//!     let report = trainer.train_step()?;
//!     println!("step {} loss {:.4}", report.step, report.loss);
//! }
//! trainer.save("0000010.safetensors".as_ref())?;
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod checkpoint;
pub mod data;
mod ema;
mod error;
mod loss;
mod optimizer;
mod presets;
mod run_folder;
mod schedule;
mod start;
mod trainable;
mod trainer;

pub use checkpoint::TrainingCheckpoint;
pub use ema::Ema;
pub use error::{Error, Result};
pub use loss::{mae_loss, patchify, EdmLoss};
pub use optimizer::{AdamW, AdamWConfig};
pub use presets::{mnist_config, preset, TrainPreset, PRESET_NAMES};
pub use run_folder::{check_same_run, RunFolder};
pub use schedule::{ramped_lr, MaskCurve, MaskSchedule};
pub use start::{expected_difference, short_list, start_from_checkpoint, StartReport};
pub use trainable::TrainableModel;
pub use trainer::{example_rng, Precision, RunState, Start, StepReport, TrainOptions, Trainer};
