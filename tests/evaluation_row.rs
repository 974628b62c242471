//! The rest of the paper's evaluation row against `tests/fixtures/eval/` (made by
//! `scripts/make-eval-fixtures.py` from pytorch-fid, scipy, TensorFlow and numpy versions of
//! ADM's definitions): sFID's spatial features and distance, precision and recall, ADM's input
//! resize.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use maskdit_eval::npz::EvaluationFile;
use maskdit_eval::{precision_recall, FidInception, InputMode, PrecisionRecall};
use maskdit_tests::{fid_inception_case, hashed_inception_weights, relative_l2, SeededTensors};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/eval").join(name)
}

fn tensors(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn spatial_features_match_pytorch_fid() {
    let io = tensors("spatial.safetensors");
    let network = FidInception::from_tensors(&hashed_inception_weights(&fid_inception_case()), &Device::Cpu).unwrap();
    let input = InputMode::PytorchFid.prepare(&io["pixels"]).unwrap();
    let out = network.forward(&input).unwrap();
    assert_eq!(out.spatial.dims(), [3, maskdit_eval::SPATIAL_DIMS]);
    let pool = relative_l2(&out.pool, &io["pool"]);
    let spatial = relative_l2(&out.spatial, &io["spatial"]);
    assert!(pool < 1e-4 && spatial < 1e-4, "pool {pool:e}, spatial {spatial:e}");
}

#[test]
fn sfid_of_adm_layout_statistics_matches_adm() {
    let sets = [0, 1].map(|i| EvaluationFile::read(&fixture(&format!("sfid_set{i}.npz"))).unwrap());
    let expected = Tensor::read_npz(fixture("sfid_expected.npz")).unwrap();
    let want = |name: &str| {
        let (_, t) = expected.iter().find(|(n, _)| n == name).unwrap();
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()[0]
    };
    let pair = |f: fn(&EvaluationFile) -> &Option<maskdit_eval::Statistics>| {
        let (a, b) = (f(&sets[0]).as_ref().unwrap(), f(&sets[1]).as_ref().unwrap());
        a.frechet_distance(b).unwrap()
    };
    for (name, got) in [("fid", pair(|s| &s.statistics)), ("sfid", pair(|s| &s.spatial_statistics))] {
        let relative = (got - want(name)).abs() / want(name).abs();
        assert!(relative < 1e-6, "{name}: {got} against ADM's {} ({relative:e})", want(name));
    }
    assert!(sets[0].pool_features.is_none());
}

#[test]
fn precision_recall_shares_are_exact() {
    let io = tensors("precision_recall.safetensors");
    let mut names: Vec<&str> = io.keys().filter_map(|k| k.strip_suffix(".expected")).collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    for name in names {
        let samples = &io[&format!("{name}.samples")];
        let reference = &io[&format!("{name}.reference")];
        let dims = samples.dim(1).unwrap();
        let got = precision_recall(&values(samples), &values(reference), dims, &Device::Cpu).unwrap();
        let expected = io[&format!("{name}.expected")].to_vec1::<f64>().unwrap();
        assert_eq!(got, PrecisionRecall { precision: expected[0], recall: expected[1] }, "{name}");
    }
}

/// Straight from the definition, in f64: what the blocked computation must reproduce across
/// its block edges.
fn precision_recall_direct(samples: &[f32], reference: &[f32], dims: usize) -> PrecisionRecall {
    let rows = |v: &[f32]| v.chunks(dims).map(|r| r.iter().map(|&x| x as f64).collect()).collect::<Vec<Vec<f64>>>();
    let (s, r) = (rows(samples), rows(reference));
    let d = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>();
    let radii = |set: &[Vec<f64>]| -> Vec<f64> {
        (0..set.len())
            .map(|i| {
                let mut others: Vec<f64> = (0..set.len()).filter(|&j| j != i).map(|j| d(&set[i], &set[j])).collect();
                others.sort_by(f64::total_cmp);
                others[2]
            })
            .collect()
    };
    let (rs, rr) = (radii(&s), radii(&r));
    let precision = s.iter().filter(|x| r.iter().zip(&rr).any(|(y, &ry)| d(x, y) <= ry)).count();
    let recall = r.iter().filter(|y| s.iter().zip(&rs).any(|(x, &rx)| d(x, y) <= rx)).count();
    PrecisionRecall { precision: precision as f64 / s.len() as f64, recall: recall as f64 / r.len() as f64 }
}

#[test]
fn blocked_precision_recall_matches_the_definition_across_blocks() {
    let mut draw = SeededTensors::new(17);
    let dims = 3;
    let samples = values(&draw.normal(0.0, 1.0, (2100, dims)));
    let reference = values(&draw.normal(0.3, 1.3, (1300, dims)));
    let got = precision_recall(&samples, &reference, dims, &Device::Cpu).unwrap();
    assert_eq!(got, precision_recall_direct(&samples, &reference, dims));
}

#[test]
fn adm_resize_matches_tensorflow() {
    let io = tensors("adm_resize.safetensors");
    let mut names: Vec<&str> = io.keys().filter_map(|k| k.strip_suffix(".pixels")).collect();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        let pixels = io[&format!("{name}.pixels")].permute((0, 3, 1, 2)).unwrap().contiguous().unwrap();
        // The prepared input is v / 256 (the network's 2x − 1 then gives (v − 128) / 128).
        let got = (InputMode::Adm.prepare(&pixels).unwrap() * 256.0).unwrap();
        let want = io[&format!("{name}.resized")].permute((0, 3, 1, 2)).unwrap();
        let error = relative_l2(&got, &want);
        assert!(error < 1e-6, "{name}: {error:e}");
        // pytorch-fid's resize is another one: the two differ visibly.
        let other = (InputMode::PytorchFid.prepare(&pixels).unwrap() * 255.0).unwrap();
        assert!(relative_l2(&other, &want) > 1e-3, "{name}");
    }
}
