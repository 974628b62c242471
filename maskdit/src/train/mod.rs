//! Training: the EDM loss (masked and unmasked), AdamW, EMA, schedules, data and the loop.

mod ema;
mod loss;
mod optimizer;
mod trainable;

pub use ema::Ema;
pub use loss::{mae_loss, patchify, EdmLoss};
pub use optimizer::{AdamW, AdamWConfig};
pub use trainable::TrainableModel;
