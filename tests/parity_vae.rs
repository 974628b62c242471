//! Parity of the AutoencoderKL with the reference in both layouts, for every VAE case of the
//! golden folder, and clear errors for unusable weight files.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use maskdit_tests::{assert_close, cases_of, get, load, scalar, CaseKind};
use maskdit_vae::{Autoencoder, Error, Moments, VaeConfig};

const VAE_TOLERANCE: f64 = 1e-5;

fn config(case: &std::path::Path) -> VaeConfig {
    VaeConfig::from_json(&std::fs::read_to_string(case.join("config.json")).unwrap()).unwrap()
}

#[test]
fn latent_diffusion_layout_matches_reference() {
    let cases = cases_of(CaseKind::VaeLdm);
    assert!(!cases.is_empty());
    for case in cases {
        let io = load(&case.join("io.safetensors"));
        let cfg = config(&case);
        assert!((cfg.scaling_factor - scalar(&io, "scale_factor")).abs() < 1e-7);
        for file in ["autoencoder_kl.pth", "weights.safetensors"] {
            let vae =
                Autoencoder::load(&case.join(file), Some(cfg.clone()), DType::F32, &maskdit_tests::device()).unwrap();
            let name = format!("{} {file}", case.display());
            let moments = vae.encode(get(&io, "image")).unwrap().stacked().unwrap();
            assert_close(&format!("{name} moments"), &moments, get(&io, "moments"), VAE_TOLERANCE);
            let decoded = vae.decode(get(&io, "z"), 1, &mut |_| {}).unwrap();
            assert_close(&format!("{name} decoded"), &decoded, get(&io, "decoded"), VAE_TOLERANCE);
        }
    }
}

#[test]
fn diffusers_layout_matches_reference() {
    let cases = cases_of(CaseKind::VaeDiffusers);
    assert!(!cases.is_empty());
    for case in cases {
        let io = load(&case.join("io.safetensors"));
        // No explicit config: the loader reads the config.json beside the weights.
        let weights = case.join("diffusion_pytorch_model.safetensors");
        let vae = Autoencoder::load(&weights, None, DType::F32, &maskdit_tests::device()).unwrap();
        assert_eq!(vae.config(), &config(&case));
        let name = case.display();
        let moments = vae.encode(get(&io, "image")).unwrap();
        assert_close(&format!("{name} mean"), &moments.mean, get(&io, "mean"), VAE_TOLERANCE);
        assert_close(&format!("{name} logvar"), &moments.logvar, get(&io, "logvar"), VAE_TOLERANCE);
        let decoded = vae.decode_unscaled(get(&io, "z")).unwrap();
        assert_close(&format!("{name} decoded"), &decoded, get(&io, "decoded"), VAE_TOLERANCE);
    }
}

#[test]
fn architecture_inferred_from_weights_matches_config() {
    for (kind, file) in
        [(CaseKind::VaeLdm, "weights.safetensors"), (CaseKind::VaeDiffusers, "diffusion_pytorch_model.safetensors")]
    {
        for case in cases_of(kind) {
            let dir = maskdit_tests::Scratch::new(&format!("vae-infer-{kind:?}"));
            let copy = dir.join("w.safetensors");
            std::fs::copy(case.join(file), &copy).unwrap();
            let vae = Autoencoder::load(&copy, None, DType::F32, &maskdit_tests::device()).unwrap();
            let mut want = config(&case);
            want.scaling_factor = maskdit_vae::SD_SCALE_FACTOR;
            assert_eq!(vae.config(), &want, "{}", case.display());
        }
    }
}

#[test]
fn decoding_in_sub_batches_is_exact() {
    let case = &cases_of(CaseKind::VaeDiffusers)[0];
    let io = load(&case.join("io.safetensors"));
    let vae = Autoencoder::load(
        &case.join("diffusion_pytorch_model.safetensors"),
        None,
        DType::F32,
        &maskdit_tests::device(),
    )
    .unwrap();
    let z = Tensor::cat(&[get(&io, "z"), get(&io, "z"), get(&io, "z")], 0).unwrap();
    let mut seen = Vec::new();
    let parts = vae.decode(&z, 4, &mut |done| seen.push(done)).unwrap();
    assert_eq!(seen, vec![4, 6]);
    let whole = vae.decode(&z, 100, &mut |_| {}).unwrap();
    assert!(maskdit_tests::relative_l2(&parts, &whole) < maskdit_tests::tolerance(1e-6));
}

#[test]
fn latent_sampling_uses_clamped_std() {
    let mean = Tensor::new(&[[[[1f32]]], [[[0f32]]]], &maskdit_tests::device()).unwrap();
    let logvar = Tensor::new(&[[[[2f32 * 2f32.ln()]]], [[[100f32]]]], &maskdit_tests::device()).unwrap();
    let eps = Tensor::ones((2, 1, 1, 1), DType::F32, &maskdit_tests::device()).unwrap();
    let z = Moments { mean, logvar }.sample(&eps, 0.5).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!((z[0] - 0.5 * (1.0 + 2.0)).abs() < 1e-5, "{z:?}");
    assert!((z[1] - 0.5 * 10f32.exp()).abs() / (0.5 * 10f32.exp()) < 1e-5, "clamped at 20: {z:?}");
}

#[test]
fn wrong_or_incomplete_weights_are_named() {
    let model_case = &cases_of(CaseKind::Model)[0];
    let err = Autoencoder::load(&model_case.join("weights.safetensors"), None, DType::F32, &maskdit_tests::device())
        .unwrap_err();
    assert!(matches!(&err, Error::Weights { reason, .. } if reason.contains("layout")), "{err}");

    let case = &cases_of(CaseKind::VaeLdm)[0];
    let mut tensors: HashMap<String, Tensor> = load(&case.join("weights.safetensors"));
    tensors.remove("decoder.conv_in.weight");
    let dir = maskdit_tests::Scratch::new("vae-missing");
    let path = dir.join("w.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = Autoencoder::load(&path, Some(config(case)), DType::F32, &maskdit_tests::device()).unwrap_err();
    assert!(err.to_string().contains("decoder.conv_in.weight"), "{err}");
}

#[test]
fn an_impossible_configuration_is_refused_before_any_weight_is_read() {
    let case = &cases_of(CaseKind::VaeLdm)[0];
    let tensors: HashMap<String, Tensor> = load(&case.join("weights.safetensors"));
    let bad = VaeConfig { norm_num_groups: 7, ..config(case) };
    let err = Autoencoder::from_tensors(tensors, bad, DType::F32, &maskdit_tests::device()).unwrap_err();
    assert!(matches!(&err, Error::Config(reason) if reason.contains("groups")), "{err}");
}
