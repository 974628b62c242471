//! Every parity suite in one test binary, to carry to a GPU machine that has no Rust toolchain
//! (one ~65 MB CUDA binary instead of four). Built only with the `cuda` feature:
//! `cargo test -p maskdit-tests --features cuda --test gpu_parity --no-run`.

#[path = "cuda_kernels.rs"]
mod cuda_kernels;
#[path = "parity_eval.rs"]
mod parity_eval;
#[path = "parity_model.rs"]
mod parity_model;
#[path = "parity_sampler.rs"]
mod parity_sampler;
#[path = "parity_train.rs"]
mod parity_train;
#[path = "parity_vae.rs"]
mod parity_vae;
