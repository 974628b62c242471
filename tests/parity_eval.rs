//! Parity of the evaluation code with pytorch-fid, driven by every case folder of
//! `$MASKDIT_GOLDEN_EVAL` (default `tests/golden-eval/`) and its `config.json` `kind`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use maskdit_eval::{FidInception, InputMode, Statistics};
use maskdit_tests::{get, hashed_inception_weights, load, relative_l2};
use nalgebra::{DMatrix, DVector};

/// The case folders with their `kind`.
fn eval_cases() -> Vec<(PathBuf, String)> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = std::env::var_os("MASKDIT_GOLDEN_EVAL").map_or_else(|| manifest.join("golden-eval"), PathBuf::from);
    let mut cases: Vec<(PathBuf, String)> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| {
            let config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p.join("config.json")).unwrap()).unwrap();
            let kind = config["kind"].as_str().unwrap_or_else(|| panic!("{}: no kind", p.display())).to_string();
            (p, kind)
        })
        .collect();
    cases.sort();
    for (path, kind) in &cases {
        assert!(["frechet", "fid_inception"].contains(&kind.as_str()), "{}: unknown kind `{kind}`", path.display());
    }
    assert!(!cases.is_empty());
    cases
}

fn vector(t: &Tensor) -> DVector<f64> {
    DVector::from_vec(t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap())
}

fn matrix(t: &Tensor) -> DMatrix<f64> {
    let (r, c) = t.dims2().unwrap();
    DMatrix::from_row_iterator(r, c, t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap())
}

fn relative(got: &nalgebra::DMatrix<f64>, want: &nalgebra::DMatrix<f64>) -> f64 {
    (got - want).norm() / want.norm()
}

#[test]
fn statistics_and_frechet_distances_match_pytorch_fid() {
    let mut checked = 0;
    for (case, _) in eval_cases().into_iter().filter(|(_, kind)| kind == "frechet") {
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("config.json")).unwrap()).unwrap();
        let refs = load(&case.join("io.safetensors"));
        for name in config["cases"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()) {
            let key = |k: &str| format!("{name}.{k}");
            let mut stats = Vec::new();
            for side in ["1", "2"] {
                let features = get(&refs, &key(&format!("features{side}")));
                let dims = features.dim(1).unwrap();
                let values: Vec<f32> = features.flatten_all().unwrap().to_vec1().unwrap();
                let got = Statistics::from_features(&values, dims).unwrap();
                let (mu, sigma) =
                    (vector(get(&refs, &key(&format!("mu{side}")))), matrix(get(&refs, &key(&format!("sigma{side}")))));
                let mu_err = (&got.mu - &mu).norm() / mu.norm();
                let sigma_err = relative(&got.sigma, &sigma);
                assert!(
                    mu_err <= 1e-9 && sigma_err <= 1e-9,
                    "{name}{side}: mean {mu_err:.1e}, covariance {sigma_err:.1e}"
                );
                stats.push(Statistics::new(mu, sigma).unwrap());
            }
            let want = vector(get(&refs, &key("fid")))[0];
            let got = stats[0].frechet_distance(&stats[1]).unwrap();
            let tolerance = if name == "full" { 1e-6 } else { 1e-4 };
            let err = (got - want).abs() / want.abs();
            eprintln!("{}: {name} FID {got} (pytorch-fid {want}), relative error {err:.1e}", case.display());
            assert!(err <= tolerance, "{name}: FID {got} against {want}");
            checked += 1;
        }
        // The official reference-statistics layout (`np.savez(mu=…, sigma=…)`) holds `full`'s first set.
        let npz: std::collections::HashMap<String, Tensor> =
            Tensor::read_npz(case.join("stats_edm_layout.npz")).unwrap().into_iter().collect();
        let stored = Statistics::new(vector(&npz["mu"]), matrix(&npz["sigma"])).unwrap();
        let full = Statistics::new(vector(get(&refs, "full.mu1")), matrix(get(&refs, "full.sigma1"))).unwrap();
        assert_eq!(stored, full, "stats_edm_layout.npz");
    }
    assert!(checked > 0, "no Fréchet cases");
}

/// The whole network on hashed weights: the resize, the block means, the pooled features and
/// the logits against pytorch-fid's.
#[test]
fn fid_inception_matches_pytorch_fid() {
    let device = maskdit_tests::device();
    let cases: Vec<_> = eval_cases().into_iter().filter(|(_, kind)| kind == "fid_inception").collect();
    assert!(!cases.is_empty(), "no FID Inception case");
    for (case, _) in cases {
        let tensors = hashed_inception_weights(&case);
        let network = FidInception::from_tensors(&tensors, &device).unwrap();
        let refs = load(&case.join("io.safetensors"));
        let pixels = get(&refs, "pixels").to_device(&device).unwrap();
        let resized = InputMode::PytorchFid.prepare(&pixels).unwrap();
        let mut report = vec![("resized", relative_l2(&resized, get(&refs, "resized")), 1e-6)];
        let out = network.forward(&resized).unwrap();
        for (i, mean) in out.block_means.iter().enumerate() {
            let name = ["block0_mean", "block1_mean", "block2_mean"][i];
            report.push((name, relative_l2(mean, get(&refs, name)), 1e-4));
        }
        report.push(("pool", relative_l2(&out.pool, get(&refs, "pool")), 1e-4));
        report.push(("logits", relative_l2(&out.logits, get(&refs, "logits")), 1e-4));
        eprintln!("{}: {report:?}", case.display());
        for (name, err, budget) in report {
            assert!(
                err <= maskdit_tests::tolerance(budget),
                "{}: {name} relative error {err:.2e} > {budget:.0e}",
                case.display()
            );
        }
    }
}
