//! The `maskdit` command line.

fn main() {
    println!(
        "maskdit {}: MaskDiT on candle. Subcommands arrive with the sampler and CLI work.",
        env!("CARGO_PKG_VERSION")
    );
}
