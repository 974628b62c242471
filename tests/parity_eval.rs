//! Parity of the evaluation code with pytorch-fid, driven by every case folder of
//! `$MASKDIT_GOLDEN_EVAL` (default `tests/golden-eval/`) and its `config.json` `kind`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use maskdit_eval::Statistics;
use maskdit_tests::{get, load};
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

/// The FID Inception network (issue 14) is not implemented yet: its case is listed here, not
/// passed over. Remove the `ignore` when the network lands.
#[test]
#[ignore = "the FID Inception-v3 network is not implemented yet (issue 14)"]
fn fid_inception_matches_pytorch_fid() {
    let cases: Vec<_> = eval_cases().into_iter().filter(|(_, kind)| kind == "fid_inception").collect();
    panic!("{} FID Inception case(s) wait for the network: {cases:?}", cases.len());
}
