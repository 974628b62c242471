//! `maskdit`: generate images with MaskDiT, download the official checkpoints, train and
//! fine-tune.

mod commands;
mod runtime;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::{bench, convert, download, encode, fid, generate, list, serve, train};
use runtime::{allocator, launch};

/// MaskDiT on candle: sampling, checkpoints, training.
#[derive(Debug, Parser)]
#[command(name = "maskdit", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate class-conditional images, one PNG per seed.
    ///
    /// Examples:
    ///   maskdit generate --class 3 --seeds 0-15 --out digits
    ///   maskdit generate --model imagenet256-guidance --class "golden retriever" --cfg 1.5 --device cuda
    Generate(generate::GenerateArgs),
    /// A web page for making images: pick a class by name, watch the image form, keep a gallery.
    ///
    /// Examples:
    ///   maskdit serve                      # the embedded MNIST model at http://127.0.0.1:7860
    ///   maskdit serve --model imagenet256-guidance --device cuda --out my-gallery
    Serve(serve::ServeArgs),
    /// Download a registry model, VAE or dataset into the cache (Hugging Face cache layout).
    ///
    /// Example: maskdit download imagenet256-guidance
    Download(download::DownloadArgs),
    /// List the registry, marking what is cached; or a model's classes.
    ///
    /// Examples:
    ///   maskdit list
    ///   maskdit list --classes my-model.safetensors
    List(list::ListArgs),
    /// Convert an official PyTorch checkpoint to safetensors.
    ///
    /// Example: maskdit convert 2000000.pt 2000000-ema.safetensors --weights ema
    Convert(convert::ConvertArgs),
    /// Time the forward passes, a training step and a sampling step.
    ///
    /// Example: maskdit bench --model DiT-XL/2 --batch 2 --latent-size 32 --iters 3 --json
    Bench(bench::BenchArgs),
    /// Encode an image folder (one subfolder per class) into latent shards for training, or
    /// into pixel shards (--vae none).
    ///
    /// Examples:
    ///   maskdit encode --images imagenet/train --out latents --vae sd-vae-ft-mse --resolution 256
    ///   maskdit encode --images my-digits --out digit-shards --vae none --resolution 28 --grey
    Encode(encode::EncodeArgs),
    /// Train a model from scratch (masked pretraining with the mnist/imagenet presets).
    ///
    /// Example: maskdit train --preset mnist-pretrain --data digits.safetensors --out runs/mnist
    Train(train::TrainArgs),
    /// Fine-tune from a checkpoint (the unmasking tune stage).
    ///
    /// Example: maskdit finetune --preset imagenet256-finetune --from 2000000.pt --data latents/ --out runs/ft
    Finetune(train::FinetuneArgs),
    /// FID between two image sets (folders, ADM-layout .npz files or statistics files), with
    /// the Inception Score of each image set.
    ///
    /// Example: maskdit fid samples/ VIRTUAL_imagenet256_labeled.npz --inception pt_inception-2015-12-05-6726825d.pth
    Fid(fid::FidArgs),
    /// Write the FID statistics (mu, sigma) of an image set, in the official layout.
    ///
    /// Example: maskdit fid-stats real-images/ --out reference-stats.npz --inception pt_inception-2015-12-05-6726825d.pth
    FidStats(fid::FidStatsArgs),
}

fn main() -> ExitCode {
    allocator::keep_large_buffers();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Download(args) => download::run(args),
        Command::List(args) => list::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Train(args) => train::run(args, None),
        Command::Finetune(args) => train::run(args.train, Some((args.from, args.allow_partial))),
        Command::Fid(args) => fid::run(args),
        Command::FidStats(args) => fid::run_stats(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<launch::RanksExited>() => {
            ExitCode::from(err.downcast_ref::<launch::RanksExited>().map_or(1, |e| e.0))
        }
        Err(err) if err.is::<train::Interrupted>() => {
            eprintln!("{err}");
            ExitCode::from(130)
        }
        Err(err) => {
            // Messages carry names from data (paths, class names): no control sequences reach
            // the terminal, only the message's own line breaks.
            eprintln!("error: {}", maskdit_io::printable_lines(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
