//! `maskdit`: generate images with MaskDiT, download the official checkpoints, train and
//! fine-tune.

mod device;
mod progress;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// MaskDiT on candle: sampling, checkpoints, training.
#[derive(Debug, Parser)]
#[command(name = "maskdit", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a model from scratch (masked pretraining with the mnist/imagenet presets).
    ///
    /// Example: maskdit train --preset mnist-pretrain --data digits.safetensors --out runs/mnist
    Train(train::TrainArgs),
    /// Fine-tune from a checkpoint (the unmasking tune stage).
    ///
    /// Example: maskdit finetune --preset imagenet256-finetune --from 2000000.pt --data latents/ --out runs/ft
    Finetune {
        /// Starting checkpoint: an official .pt (model + ema; optimiser state not needed) or a
        /// toolkit checkpoint.
        #[arg(long)]
        from: PathBuf,
        /// Refuse checkpoint keys that do not fit the model instead of skipping them.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        args: train::TrainArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train::run(args, None),
        Command::Finetune { from, strict, args } => train::run(args, Some((from, strict))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
