//! With the `cuda` feature, compiles every `cuda/*.cu` to PTX in `OUT_DIR` with nvcc (for
//! compute capability `CUDA_COMPUTE_CAP`, default 80: PTX the driver compiles for its own GPU,
//! Ampere and newer); without it, does nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let capability = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let capability = capability.trim().replace('.', "");
    if capability.is_empty() || !capability.chars().all(|c| c.is_ascii_digit()) {
        panic!("CUDA_COMPUTE_CAP `{capability}`: expected a compute capability such as 80 or 90");
    }
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let sources = Path::new("cuda");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(sources)
        .expect("kernels/cuda holds the CUDA sources")
        .map(|entry| entry.expect("a readable kernels/cuda").path())
        .filter(|path| path.extension().is_some_and(|e| e == "cu"))
        .collect();
    entries.sort();
    for source in entries {
        let stem = source.file_stem().and_then(|s| s.to_str()).expect("a UTF-8 file name");
        let ptx = out.join(format!("{stem}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", "--expt-relaxed-constexpr"])
            .arg(format!("-arch=compute_{capability}"))
            .arg("-I")
            .arg(sources)
            .arg(&source)
            .arg("-o")
            .arg(&ptx)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{nvcc}` ({e}): the `cuda` feature needs the CUDA toolkit's nvcc on PATH \
                     (scripts/check-cuda.sh installs Debian's), or set NVCC"
                )
            });
        if !status.success() {
            panic!("`{nvcc}` failed on {} ({status})", source.display());
        }
    }
}
