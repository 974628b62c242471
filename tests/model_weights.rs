//! Model weights files: strict key checks with named errors, wrapper prefixes, saving,
//! reduced-precision loading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use maskdit::{weights, Error, Mask, ModelConfig, WeightSet};
use maskdit_tests::{cases_of, get, load, relative_l2, CaseKind, Scratch, SeededTensors};

fn first_case() -> (PathBuf, ModelConfig) {
    let case = cases_of(CaseKind::Model).into_iter().next().expect("a model case");
    let config = ModelConfig::from_json(&std::fs::read_to_string(case.join("config.json")).unwrap()).unwrap();
    (case, config)
}

fn case_weights(case: &Path) -> HashMap<String, Tensor> {
    load(&case.join("weights.safetensors"))
}

fn load_from(tensors: &HashMap<String, Tensor>, config: &ModelConfig, name: &str) -> maskdit::Result<maskdit::MaskDit> {
    let dir = Scratch::new(name);
    let path = dir.join("w.safetensors");
    weights::save(tensors, &path).unwrap();
    weights::load(&path, config, WeightSet::Ema, DType::F32, &Device::Cpu)
}

#[test]
fn missing_key_is_named() {
    let (case, config) = first_case();
    let mut tensors = case_weights(&case);
    tensors.remove("model.blocks.0.attn.qkv.weight");
    match load_from(&tensors, &config, "missing") {
        Err(Error::MissingKey { key, .. }) => assert_eq!(key, "model.blocks.0.attn.qkv.weight"),
        other => panic!("expected a missing-key error, got {other:?}"),
    }
}

#[test]
fn unexpected_key_is_named() {
    let (case, config) = first_case();
    let mut tensors = case_weights(&case);
    tensors.insert("model.extra.weight".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap());
    let err = load_from(&tensors, &config, "unexpected").unwrap_err();
    assert!(matches!(&err, Error::UnexpectedKey { key, .. } if key == "model.extra.weight"), "{err}");
}

#[test]
fn shape_mismatch_names_key_and_both_shapes() {
    let (case, config) = first_case();
    let mut tensors = case_weights(&case);
    let key = "model.final_layer.linear.bias";
    let want = tensors[key].dims().to_vec();
    tensors.insert(key.into(), Tensor::zeros(want[0] + 1, DType::F32, &Device::Cpu).unwrap());
    let err = load_from(&tensors, &config, "shape").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(key) && text.contains(&format!("{want:?}")) && text.contains(&format!("[{}]", want[0] + 1)),
        "{text}"
    );
}

#[test]
fn wrapper_prefixes_are_tolerated() {
    let (case, config) = first_case();
    let tensors: HashMap<String, Tensor> =
        case_weights(&case).into_iter().map(|(k, v)| (format!("module._orig_mod.{k}"), v)).collect();
    let model = load_from(&tensors, &config, "prefix").unwrap();
    let refs = load(&case.join("forward.safetensors"));
    let out = model.denoise(get(&refs, "x"), get(&refs, "sigma"), Some(get(&refs, "labels"))).unwrap();
    assert!(relative_l2(&out, get(&refs, "out")) <= 1e-5);
}

#[test]
fn corrupt_and_absent_files_give_clear_errors() {
    let (_, config) = first_case();
    let dir = Scratch::new("corrupt");
    for name in ["bad.safetensors", "bad.pt"] {
        let path = dir.join(name);
        std::fs::write(&path, b"this is not a checkpoint").unwrap();
        let err = weights::load(&path, &config, WeightSet::Ema, DType::F32, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::WeightsFile { .. }), "{name}: {err}");
    }
    let err = weights::load(&dir.join("absent.pt"), &config, WeightSet::Ema, DType::F32, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn wrong_architecture_is_rejected() {
    let (case, mut config) = first_case();
    config.depth += 1;
    let err = weights::load(&case.join("weights.safetensors"), &config, WeightSet::Ema, DType::F32, &Device::Cpu)
        .unwrap_err();
    assert!(matches!(err, Error::MissingKey { .. }), "{err}");
}

/// The first case's EMA weights in f32, f16 and bf16, and the inputs of its forward reference.
struct ReducedPrecision {
    models: [maskdit::MaskDit; 3],
    refs: HashMap<String, Tensor>,
}

impl ReducedPrecision {
    fn new() -> Self {
        let (case, config) = first_case();
        let load_as = |dtype| {
            weights::load(&case.join("weights.safetensors"), &config, WeightSet::Ema, dtype, &Device::Cpu).unwrap()
        };
        let models = [load_as(DType::F32), load_as(DType::F16), load_as(DType::BF16)];
        Self { models, refs: load(&case.join("forward.safetensors")) }
    }

    /// Relative errors of the f16 and bf16 outputs against the f32 model's, on the reference
    /// input with its latents replaced by ones drawn from `seed` (same scale), or on the
    /// reference input itself when `seed` is `None`.
    fn errors(&self, seed: Option<u64>) -> [f64; 2] {
        let x = get(&self.refs, "x");
        let x = match seed {
            Some(seed) => {
                let scale = x.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap().sqrt();
                SeededTensors::new(seed).normal(0.0, scale, x.dims())
            }
            None => x.clone(),
        };
        let (sigma, labels) = (get(&self.refs, "sigma"), get(&self.refs, "labels"));
        let out = |model: &maskdit::MaskDit| {
            let out = model.denoise(&x, sigma, Some(labels)).unwrap();
            assert_eq!(out.dtype(), DType::F32, "{:?} model's output", model.dtype());
            out
        };
        let want = out(&self.models[0]);
        [relative_l2(&out(&self.models[1]), &want), relative_l2(&out(&self.models[2]), &want)]
    }
}

// Budgets: 1.5× the worst of 1,000 seeds, rounded up (`reduced_precision_spread_over_seeds`,
// measured 2026-11-30): f16 worst 2.20e-4, 99.9th 2.13e-4; bf16 worst 1.74e-3, 99.9th 1.71e-3.
// The reference input reads 1.72e-4 (f16) and 1.30e-3 (bf16).
const F16_INFERENCE_BUDGET: f64 = 3.3e-4;
const BF16_INFERENCE_BUDGET: f64 = 2.7e-3;

#[test]
fn reduced_precision_inference_stays_close() {
    let check = ReducedPrecision::new();
    assert_eq!(check.models.each_ref().map(|m| m.dtype()), [DType::F32, DType::F16, DType::BF16]);
    for seed in [None, Some(0), Some(1), Some(2)] {
        let [f16, bf16] = check.errors(seed);
        assert!(f16 <= F16_INFERENCE_BUDGET, "input {seed:?}: f16 relative error {f16:.3e}");
        assert!(bf16 <= BF16_INFERENCE_BUDGET, "input {seed:?}: bf16 relative error {bf16:.3e}");
    }
}

/// The spread the reduced-precision budgets come from, over seeds 0..1000:
/// `cargo test -p maskdit-tests --test checkpoint -- --ignored --nocapture reduced_precision_spread`.
#[test]
#[ignore = "a measurement that sets the f16/bf16 budgets; prints, asserts nothing"]
fn reduced_precision_spread_over_seeds() {
    let check = ReducedPrecision::new();
    let errors: Vec<[f64; 2]> = (0..1000).map(|seed| check.errors(Some(seed))).collect();
    for (i, name) in ["f16", "bf16"].into_iter().enumerate() {
        let values: Vec<f64> = errors.iter().map(|e| e[i]).collect();
        let (worst, quantile) = maskdit_tests::worst_and_quantile(&values, 0.999);
        println!("{name}: worst {worst:.3e}, 99.9th {quantile:.3e}; reference input {:.3e}", check.errors(None)[i]);
    }
}

#[test]
fn random_mask_keeps_the_right_tokens() {
    let (case, config) = first_case();
    let model =
        weights::load(&case.join("weights.safetensors"), &config, WeightSet::Ema, DType::F32, &Device::Cpu).unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    let length = config.num_patches();
    let mask = Mask::random(5, length, 0.5, &mut rng, &Device::Cpu).unwrap();
    assert_eq!(mask.kept(), length / 2);
    let removed: Vec<f32> = mask.binary().sum(1).unwrap().to_vec1().unwrap();
    assert!(removed.iter().all(|&r| r as usize == length - length / 2));
    let again = Mask::from_ids(mask.ids_keep(), mask.ids_restore()).unwrap();
    assert_eq!(again.binary().to_vec2::<f32>().unwrap(), mask.binary().to_vec2::<f32>().unwrap());
    let x = SeededTensors::new(1).normal(0.0, 1.0, (5, config.in_channels, config.input_size, config.input_size));
    let sigma = Tensor::new(1.0f32, &Device::Cpu).unwrap();
    let out = model.denoise_train(&x, &sigma, None, Some(&mask)).unwrap();
    assert_eq!(out.dims(), x.dims());
    // The encoder sees the kept tokens only: changing the pixels of a removed patch changes
    // the output only through the skip connection c_skip·x.
    let removed_token = mask.binary().get(0).unwrap().to_vec1::<f32>().unwrap().iter().position(|&m| m == 1.0).unwrap();
    let grid = config.grid_size();
    let (row, col, p) = (removed_token / grid, removed_token % grid, config.patch_size);
    let mut bump = vec![0f32; x.elem_count()];
    let (c, s) = (config.in_channels, config.input_size);
    for ch in 0..c {
        for i in row * p..(row + 1) * p {
            for j in col * p..(col + 1) * p {
                bump[(ch * s + i) * s + j] = 3.0;
            }
        }
    }
    let bump = Tensor::from_vec(bump, x.dims(), &Device::Cpu).unwrap();
    let moved = model.denoise_train(&(&x + &bump).unwrap(), &sigma, None, Some(&mask)).unwrap();
    let c_skip = 0.25 / (1.0 + 0.25);
    let want = (&out + (&bump * c_skip).unwrap()).unwrap();
    assert!(relative_l2(&moved, &want) < 1e-6, "a removed patch reached the network");
    let keep = mask.ids_keep().to_vec2::<u32>().unwrap();
    let swapped: Vec<u32> = keep.iter().flat_map(|row| row.iter().rev().copied()).collect();
    let swapped = Tensor::from_vec(swapped, mask.ids_keep().dims(), &Device::Cpu).unwrap();
    assert!(Mask::from_ids(&swapped, mask.ids_restore()).is_err(), "inconsistent ids must be rejected");
}

#[test]
fn unconditional_model_runs_and_rejects_labels() {
    let mut config = ModelConfig::preset("DiT-S/8", 16, 4, 0, false).unwrap();
    config.depth = 1;
    let mut rng = <rand_chacha::ChaCha12Rng as rand::SeedableRng>::seed_from_u64(3);
    let trainable = maskdit_train::TrainableModel::fresh(&config, &mut rng, &Device::Cpu).unwrap();
    let model = trainable.model();
    let x = SeededTensors::new(2).normal(0.0, 1.0, (2, 4, 16, 16));
    let sigma = Tensor::new(&[0.5f32, 3.0], &Device::Cpu).unwrap();
    let out = model.denoise(&x, &sigma, None).unwrap();
    assert_eq!(out.dims(), x.dims());
    let labels = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(model.denoise(&x, &sigma, Some(&labels)), Err(Error::Input(_))));
    // A fresh model is adaLN-Zero: the network output is zero, so D(x) = c_skip·x.
    let c_skip = (sigma.sqr().unwrap() + 0.25).unwrap().recip().unwrap().affine(0.25, 0.0).unwrap();
    let want = x.broadcast_mul(&c_skip.reshape((2, 1, 1, 1)).unwrap()).unwrap();
    assert!(relative_l2(&out, &want) < 1e-6);
}

fn legacy_fixture(name: &str) -> PathBuf {
    // Written by scripts/make-legacy-fixture.py through torch.save(..., _use_new_zipfile_serialization=False).
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy-pth").join(name)
}

fn read_all(path: &Path, entry: &str) -> maskdit_io::Result<HashMap<String, Tensor>> {
    maskdit_io::read_tensors(path, entry, |name| Some(name.to_string()))
}

#[test]
fn legacy_pytorch_files_are_read() {
    let tensors = read_all(&legacy_fixture("state_dict.pth"), "state_dict").unwrap();
    let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["bn.num_batches_tracked", "bn.running_var", "conv.weight", "half", "shared.matrix", "shared.row"]
    );

    let conv = &tensors["conv.weight"];
    assert_eq!((conv.dims(), conv.dtype()), (&[2, 3, 3, 3][..], DType::F32));
    let expected: Vec<f32> = (0..54).map(|i| i as f32 * 0.25 - 3.0).collect();
    assert_eq!(conv.flatten_all().unwrap().to_vec1::<f32>().unwrap(), expected);

    let var = &tensors["bn.running_var"];
    assert_eq!(var.dtype(), DType::F64);
    assert_eq!(var.to_vec1::<f64>().unwrap(), [0.125, 1.125, 2.125, 3.125, 4.125]);

    let half = tensors["half"].to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(half, [0.0, 1.5, 3.0, 4.5]);

    let count = &tensors["bn.num_batches_tracked"];
    assert_eq!((count.dims(), count.dtype()), (&[][..], DType::I64));
    assert_eq!(count.to_scalar::<i64>().unwrap(), 7);

    // Two tensors viewing one storage: the row starts at element 4.
    let matrix = tensors["shared.matrix"].to_vec2::<f32>().unwrap();
    assert_eq!(matrix[2], [4.0, 4.5, 5.0, 5.5]);
    assert_eq!(tensors["shared.row"].to_vec1::<f32>().unwrap(), [2.0, 2.5, 3.0, 3.5]);
}

#[test]
fn legacy_nested_state_dicts_and_their_faults_are_handled() {
    let nested = read_all(&legacy_fixture("nested.pth"), "state_dict").unwrap();
    assert_eq!(nested.keys().collect::<Vec<_>>(), ["weight"]);
    assert_eq!(nested["weight"].dims(), [2, 3, 3, 3]);

    let error = read_all(&legacy_fixture("transposed.pth"), "state_dict").unwrap_err().to_string();
    assert!(error.contains("not contiguous") && error.contains("weight"), "{error}");

    // A truncated copy is refused with a message that names the fault, never a panic.
    let dir = Scratch::new("legacy-truncated");
    let bytes = std::fs::read(legacy_fixture("state_dict.pth")).unwrap();
    for keep in [20, bytes.len() / 2, bytes.len() - 3] {
        let path = dir.join("cut.pth");
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let error = read_all(&path, "state_dict").unwrap_err().to_string();
        assert!(error.contains("cut.pth"), "{keep} bytes: {error}");
    }
}
