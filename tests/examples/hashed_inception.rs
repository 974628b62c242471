//! Writes the FID Inception weights of the golden `fid_inception` case (made from their names,
//! as its README says) as a safetensors file, so that a machine without the real weights can
//! run code that needs some. Usage: `cargo run -p maskdit-tests --example hashed_inception --
//! OUT.safetensors`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).ok_or("usage: hashed_inception OUT.safetensors")?;
    let tensors = maskdit_tests::hashed_inception_weights(&maskdit_tests::fid_inception_case());
    candle_core::safetensors::save(&tensors, &out)?;
    println!("{} tensors in {out}", tensors.len());
    Ok(())
}
