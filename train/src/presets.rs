//! Training recipes: the official MaskDiT configurations and the toolkit's own MNIST model.

use maskdit::ModelConfig;

use crate::{Error, Precision, Result, TrainOptions};

/// A named recipe: architecture, run settings and checkpoint interval.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainPreset {
    /// The architecture.
    pub config: ModelConfig,
    /// The run settings.
    pub options: TrainOptions,
    /// Steps between checkpoints.
    pub checkpoint_every: u64,
    /// Examples per GPU and micro-batch the recipe was run with (the official per-GPU batch);
    /// gradient accumulation keeps each rank's micro-batches within it.
    pub per_gpu_batch: usize,
    /// What the recipe is.
    pub description: &'static str,
}

/// Names accepted by [`preset`].
pub const PRESET_NAMES: [&str; 7] = [
    "imagenet256-pretrain",
    "imagenet256-finetune",
    "imagenet256-finetune-cos",
    "imagenet512-pretrain",
    "imagenet512-finetune",
    "mnist-pretrain",
    "mnist-finetune",
];

fn options(batch_size: usize, lr: f64, mask_ratio: f64, mae: f64, max_steps: u64) -> TrainOptions {
    TrainOptions {
        batch_size,
        grad_accum: 1,
        lr,
        lr_rampup_kimg: 0.0,
        weight_decay: 0.0,
        ema_decay: 0.9999,
        mask_schedule: "constant".into(),
        mask_ratio,
        mask_ratio_min: 0.0,
        mae_loss_coef: mae,
        class_dropout_prob: 0.1,
        xflip: false,
        max_steps,
        seed: 0,
        p_mean: -1.2,
        p_std: 1.2,
        precision: Precision::F32,
    }
}

/// The toolkit's MNIST model: 1×28×28 pixels, 10 classes, patch 4, 128 wide, 6 blocks, with a
/// 64-wide 2-block decoder; small enough to train on two CPU cores in about an hour.
pub fn mnist_config() -> ModelConfig {
    ModelConfig {
        input_size: 28,
        patch_size: 4,
        in_channels: 1,
        hidden_size: 128,
        depth: 6,
        num_heads: 4,
        mlp_ratio: 4.0,
        num_classes: 10,
        use_decoder: true,
        decoder_hidden_size: 64,
        decoder_depth: 2,
        decoder_num_heads: 4,
        mae_loss_coef: 0.1,
        mask_ratio: 0.5,
        class_dropout_prob: 0.1,
    }
}

/// ln σ mean of the MNIST recipes: higher than EDM's −1.2, so that a short run spends more of
/// its steps on the noise levels where a digit's shape is decided (σ ≈ 1–5); with −1.2 the
/// 1500-step model denoised no better than the class mean at σ = 3.
const MNIST_P_MEAN: f64 = -0.6;

/// The recipe called `name`.
pub fn preset(name: &str) -> Result<TrainPreset> {
    let xl = |size| ModelConfig::preset("DiT-XL/2", size, 4, 1000, true);
    let p = match name {
        "imagenet256-pretrain" => TrainPreset {
            config: xl(32)?,
            options: options(1024, 1e-4, 0.5, 0.1, 2_000_000),
            checkpoint_every: 50_000,
            per_gpu_batch: 128,
            description: "MaskDiT-XL/2 masked pretraining on ImageNet-256 latents (mask 0.5, MAE 0.1, lr 1e-4, 2M steps; 128 per GPU × 8 GPUs = global batch 1024)",
        },
        "imagenet256-finetune" => TrainPreset {
            config: xl(32)?,
            options: options(512, 5e-5, 0.0, 0.1, 100_000),
            checkpoint_every: 12_500,
            per_gpu_batch: 64,
            description: "unmasking tune from the 2M-step checkpoint (mask 0, lr 5e-5, checkpoint every 12.5k; 64 per GPU × 8 GPUs = global batch 512; best at 75k steps with guidance)",
        },
        "imagenet256-finetune-cos" => TrainPreset {
            config: xl(32)?,
            options: TrainOptions {
                mask_schedule: "cosine4".into(),
                ..options(512, 5e-5, 0.5, 0.1, 100_000)
            },
            checkpoint_every: 12_500,
            per_gpu_batch: 64,
            description: "cosine unmasking tune from the 2M-step checkpoint (mask 0.5·cos(π/2·t)^4 from 0.5 to 0 over 100k steps, lr 5e-5, checkpoint every 12.5k; 64 per GPU × 8 GPUs = global batch 512; best at 37.5k steps without guidance)",
        },
        "imagenet512-pretrain" => TrainPreset {
            config: xl(64)?,
            options: options(1024, 1e-4, 0.5, 0.1, 1_000_000),
            checkpoint_every: 50_000,
            per_gpu_batch: 32,
            description: "MaskDiT-XL/2 masked pretraining on ImageNet-512 latents (mask 0.5, MAE 0.1, global batch 1024)",
        },
        "imagenet512-finetune" => TrainPreset {
            config: xl(64)?,
            options: options(512, 5e-5, 0.0, 0.1, 50_000),
            checkpoint_every: 12_500,
            per_gpu_batch: 16,
            description: "unmasking tune at 512 px (mask 0, lr 5e-5, 50k steps; 16 per GPU × 32 GPUs on 4 nodes = global batch 512)",
        },
        "mnist-pretrain" => TrainPreset {
            config: mnist_config(),
            options: TrainOptions { ema_decay: 0.998, lr_rampup_kimg: 5.0, p_mean: MNIST_P_MEAN, ..options(128, 1e-3, 0.5, 0.1, 3000) },
            checkpoint_every: 500,
            per_gpu_batch: 128,
            description: "the embedded MNIST model, masked pretraining (mask 0.5, MAE 0.1, lr 1e-3, batch 128, 3000 steps, P_mean -0.6)",
        },
        "mnist-finetune" => TrainPreset {
            config: mnist_config(),
            options: TrainOptions { ema_decay: 0.995, p_mean: MNIST_P_MEAN, ..options(128, 5e-4, 0.0, 0.1, 2000) },
            checkpoint_every: 250,
            per_gpu_batch: 128,
            description: "the embedded MNIST model, unmasked fine-tune (mask 0, lr 5e-4, 2000 steps, P_mean -0.6)",
        },
        other => {
            return Err(Error::Config(format!("unknown training preset `{other}`; try one of {}", PRESET_NAMES.join(", "))))
        }
    };
    Ok(p)
}
