//! Parity of the backbone with the official implementation, for every model case of the
//! golden folder: unmasked, masked and guided forwards, from safetensors and `.pt` weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::DType;
use maskdit::{weights, Mask, MaskDit, ModelConfig, WeightSet};
use maskdit_sampler::{Denoiser, Guided};
use maskdit_tests::{assert_close, cases_of, get, load, scalar, CaseKind};

const FORWARD_TOLERANCE: f64 = 1e-5;

fn config(case: &Path) -> ModelConfig {
    let text = std::fs::read_to_string(case.join("config.json")).expect("config.json");
    ModelConfig::from_json(&text).unwrap_or_else(|e| panic!("{}: {e}", case.display()))
}

fn model(case: &Path, file: &str, set: WeightSet) -> MaskDit {
    weights::load(&case.join(file), &config(case), set, DType::F32, &maskdit_tests::device())
        .unwrap_or_else(|e| panic!("{}: {e}", case.display()))
}

fn model_cases() -> Vec<std::path::PathBuf> {
    let cases = cases_of(CaseKind::Model);
    assert!(!cases.is_empty(), "no model cases in the golden folder");
    cases
}

#[test]
fn unmasked_forward_matches_reference() {
    for case in model_cases() {
        let refs = load(&case.join("forward.safetensors"));
        let net = model(&case, "weights.safetensors", WeightSet::Ema);
        let out = net.denoise(get(&refs, "x"), get(&refs, "sigma"), Some(get(&refs, "labels"))).unwrap();
        assert_close(&format!("{} forward.out", case.display()), &out, get(&refs, "out"), FORWARD_TOLERANCE);
    }
}

#[test]
fn checkpoint_weight_sets_match_reference() {
    for case in model_cases() {
        let refs = load(&case.join("forward.safetensors"));
        let (x, sigma, labels) = (get(&refs, "x"), get(&refs, "sigma"), get(&refs, "labels"));
        let ema = model(&case, "checkpoint.pt", WeightSet::Ema);
        let out = ema.denoise(x, sigma, Some(labels)).unwrap();
        assert_close(
            &format!("{} forward.out_ema (checkpoint.pt ema)", case.display()),
            &out,
            get(&refs, "out_ema"),
            FORWARD_TOLERANCE,
        );
        let raw = model(&case, "checkpoint.pt", WeightSet::Model);
        let out = raw.denoise(x, sigma, Some(labels)).unwrap();
        assert_close(
            &format!("{} forward.out (checkpoint.pt model)", case.display()),
            &out,
            get(&refs, "out"),
            FORWARD_TOLERANCE,
        );
    }
}

#[test]
fn masked_forward_matches_reference() {
    for case in model_cases() {
        let refs = load(&case.join("forward_masked.safetensors"));
        let net = model(&case, "weights.safetensors", WeightSet::Ema);
        let mask = Mask::from_ids(get(&refs, "ids_keep"), get(&refs, "ids_restore")).unwrap();
        let length = get(&refs, "ids_restore").dim(1).unwrap();
        assert_eq!(mask.kept(), maskdit::mask::kept_tokens(length, scalar(&refs, "mask_ratio")));
        let out =
            net.denoise_train(get(&refs, "x"), get(&refs, "sigma"), Some(get(&refs, "labels")), Some(&mask)).unwrap();
        let name = case.display();
        assert_close(&format!("{name} forward_masked.out"), &out, get(&refs, "out"), FORWARD_TOLERANCE);
        assert_close(&format!("{name} forward_masked.mask"), mask.binary(), get(&refs, "mask"), FORWARD_TOLERANCE);
    }
}

#[test]
fn guided_forward_matches_reference() {
    for case in model_cases() {
        let net = model(&case, "weights.safetensors", WeightSet::Ema);
        if net.config().num_classes == 0 {
            // The official guided forward asserts classes: no reference, and ours refuses.
            assert!(!case.join("forward_cfg.safetensors").exists(), "{}", case.display());
            let refs = load(&case.join("forward.safetensors"));
            let err = Guided::new(&net, 1.5).denoise(get(&refs, "x"), get(&refs, "sigma"), Some(get(&refs, "labels")));
            assert!(err.is_err_and(|e| e.to_string().contains("class-conditional")), "{}", case.display());
            continue;
        }
        let refs = load(&case.join("forward_cfg.safetensors"));
        let guided = Guided::new(&net, scalar(&refs, "cfg_scale"));
        let out = guided.denoise(get(&refs, "x"), get(&refs, "sigma"), Some(get(&refs, "labels"))).unwrap();
        assert_close(&format!("{} forward_cfg.out", case.display()), &out, get(&refs, "out"), FORWARD_TOLERANCE);
    }
}

#[test]
fn unmasked_training_forward_equals_inference_forward() {
    for case in model_cases() {
        let refs = load(&case.join("forward.safetensors"));
        let net = model(&case, "weights.safetensors", WeightSet::Ema);
        let out = net.denoise_train(get(&refs, "x"), get(&refs, "sigma"), Some(get(&refs, "labels")), None).unwrap();
        assert_close(&format!("{} differentiable kernels", case.display()), &out, get(&refs, "out"), FORWARD_TOLERANCE);
    }
}

fn manifest_config(name: &str) -> ModelConfig {
    match name {
        "maskdit-xl2-256" => ModelConfig::preset("DiT-XL/2", 32, 4, 1000, true),
        "maskdit-xl2-512" => ModelConfig::preset("DiT-XL/2", 64, 4, 1000, true),
        "maskdit-xl2-256-nodecoder" => ModelConfig::preset("DiT-XL/2", 32, 4, 1000, false),
        other => panic!("manifest entry `{other}` has no known architecture"),
    }
    .unwrap()
}

#[test]
fn full_size_presets_match_manifest() {
    let path = maskdit_tests::golden_roots()
        .into_iter()
        .map(|root| root.join("manifest.json"))
        .find(|path| path.exists())
        .expect("a golden folder with manifest.json");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let entries = manifest.as_object().expect("manifest is an object");
    assert!(!entries.is_empty());
    for (name, entry) in entries {
        let config = manifest_config(name);
        let want: HashMap<String, Vec<usize>> = entry["params"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect()))
            .collect();
        let got: HashMap<String, Vec<usize>> = MaskDit::parameter_shapes(&config).unwrap().into_iter().collect();
        assert_eq!(got.len(), want.len(), "{name}: parameter count of names");
        for (key, shape) in &want {
            assert_eq!(got.get(key), Some(shape), "{name}: parameter `{key}`");
        }
        let total: usize = got.values().map(|s| s.iter().product::<usize>()).sum();
        assert_eq!(total as u64, entry["num_parameters"].as_u64().unwrap(), "{name}: number of parameters");
        let frozen: usize = maskdit::model::FROZEN_PARAMETERS
            .iter()
            .filter_map(|k| got.get(*k))
            .map(|s| s.iter().product::<usize>())
            .sum();
        assert_eq!((total - frozen) as u64, entry["num_trainable"].as_u64().unwrap(), "{name}: trainable parameters");
    }
}
