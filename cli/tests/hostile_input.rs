//! The built binary against hostile or careless input: options that would allocate without
//! bound or take NaN, outputs aimed at inputs, folders another run holds, partial or mixed
//! shard sets, images and statistics files whose headers lie, class names that collide. Each
//! must end in a clear error, with nothing outside the intended folders touched.

use std::path::Path;

use maskdit_tests::Scratch;

mod common;
use common::{fails, ok, s};

/// Digits drawn by the embedded model into `folder`.
fn draw(folder: &Path, class: &str, seeds: &str) {
    ok(&["generate", "--class", class, "--seeds", seeds, "--steps", "4", "--out", s(folder)]);
}

fn encode(images: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["encode", "--images", s(images), "--out", s(out), "--vae", "none"]
        .iter()
        .chain(&["--resolution", "28", "--grey"])
        .map(|a| a.to_string())
        .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn train(data: &Path, out: &Path) -> Vec<String> {
    ["train", "--preset", "mnist-pretrain", "--data", s(data), "--out", s(out), "--steps", "1", "--batch", "2"]
        .iter()
        .map(|a| a.to_string())
        .collect()
}

#[test]
fn numbers_that_are_nan_or_unbounded_are_refused_before_any_work() {
    let dir = Scratch::new("hostile-numbers");
    let out = dir.join("out");
    let err = fails(&["generate", "--s-churn", "nan", "--out", s(&out)]);
    assert!(err.contains("NaN"), "{err}");
    let err = fails(&["generate", "--steps", "1000000000", "--out", s(&out)]);
    assert!(err.contains("10000"), "{err}");
    let err = fails(&["generate", "--cfg", "inf", "--out", s(&out)]);
    assert!(err.contains("finite"), "{err}");
    let err = fails(&["bench", "--latent-size", "100000"]);
    assert!(err.contains("256"), "{err}");
    let err = fails(&["encode", "--images", s(&dir), "--out", s(&out), "--vae", "none", "--resolution", "100000"]);
    assert!(err.contains("4096"), "{err}");
    assert!(!out.exists(), "a refused command created its output folder");
}

#[test]
fn outputs_aimed_at_inputs_are_refused_and_the_inputs_stay() {
    let dir = Scratch::new("hostile-outputs");
    let digits = dir.join("digits");
    draw(&digits, "3", "0-1");
    let png = digits.join("000000.png");
    let before = std::fs::read(&png).unwrap();
    let err =
        fails(&["generate", "--class", "3", "--seeds", "0-1", "--steps", "4", "--out", s(&digits), "--npz", s(&png)]);
    assert!(err.contains("overwrite the image of seed 0"), "{err}");
    let err = fails(&["fid-stats", s(&digits), "--out", s(&digits.join("stats.npz"))]);
    assert!(err.contains("inside the input folder"), "{err}");
    assert_eq!(std::fs::read(&png).unwrap(), before);
    assert!(!digits.join("stats.npz").exists());
}

#[test]
fn encode_owns_its_folder_and_training_refuses_partial_or_mixed_sets() {
    let dir = Scratch::new("hostile-sets");
    let images = dir.join("images");
    draw(&images.join("ones"), "1", "0-1");
    draw(&images.join("twos"), "2", "0-1");
    let shards = dir.join("shards");
    ok(&refs(&encode(&images, &shards, &["--shard-size", "2"])));
    assert!(shards.join("manifest.json").is_file());

    // A non-empty folder is refused without --overwrite; with it the set is replaced whole.
    let err = fails(&refs(&encode(&images, &shards, &[])));
    assert!(err.contains("not empty") && err.contains("--overwrite"), "{err}");
    ok(&refs(&encode(&images, &shards, &["--overwrite"])));
    assert!(!shards.join("shard-00001.safetensors").exists(), "a shard of the old set stayed");

    // An older shard beside the set: a mixed set.
    let stray = shards.join("shard-00007.safetensors");
    std::fs::copy(shards.join("shard-00000.safetensors"), &stray).unwrap();
    let err = fails(&refs(&train(&shards, &dir.join("run-mixed"))));
    assert!(err.contains("mixed set"), "{err}");
    std::fs::remove_file(&stray).unwrap();

    // A set whose listed shard is gone is partial; so is one whose encoding never finished
    // (killed); one without any manifest (encoded before manifests existed) loads, with a
    // warning.
    let partial = dir.join("partial");
    ok(&refs(&encode(&images, &partial, &["--shard-size", "2"])));
    std::fs::remove_file(partial.join("shard-00001.safetensors")).unwrap();
    let err = fails(&refs(&train(&partial, &dir.join("run-partial"))));
    assert!(err.contains("partial set"), "{err}");
    let manifest = shards.join("manifest.json");
    let finished = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, finished.replace("\"complete\": true", "\"complete\": false")).unwrap();
    let err = fails(&refs(&train(&shards, &dir.join("run-killed"))));
    assert!(err.contains("never finished"), "{err}");
    std::fs::remove_file(&manifest).unwrap();
    let out = common::ok(&refs(&train(&shards, &dir.join("run-old"))));
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("warning") && warned.contains("manifest.json"), "{warned}");

    // Class folders that differ only by case.
    let clash = dir.join("clash");
    draw(&clash.join("Cat"), "1", "0");
    draw(&clash.join("cat"), "2", "0");
    let err = fails(&refs(&encode(&clash, &dir.join("clash-shards"), &[])));
    assert!(err.contains("differ only by case"), "{err}");
    // Names that carry terminal escapes reach the terminal escaped.
    let escapes = dir.join("escapes");
    draw(&escapes.join("x\u{1b}[2Jy"), "1", "0");
    draw(&escapes.join("X\u{1b}[2JY"), "2", "0");
    let err = fails(&refs(&encode(&escapes, &dir.join("escape-shards"), &[])));
    assert!(err.contains("differ only by case") && !err.contains('\u{1b}'), "{err:?}");

    // Output inside the image folder.
    let err = fails(&refs(&encode(&images, &images.join("shards"), &[])));
    assert!(err.contains("inside the input folder"), "{err}");
}

#[test]
fn a_folder_held_by_another_run_is_refused_with_its_pid() {
    let dir = Scratch::new("hostile-lock");
    let images = dir.join("images");
    draw(&images.join("ones"), "1", "0-1");
    let shards = dir.join("shards");
    ok(&refs(&encode(&images, &shards, &[])));
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let held = maskdit_io::FolderLock::acquire(&run, maskdit_io::Access::Exclusive).unwrap();
    let err = fails(&refs(&train(&shards, &run)));
    assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    assert!(!run.join("checkpoints").join("0000001.safetensors").exists());
    drop(held);
    ok(&refs(&train(&shards, &run)));

    // generate: a packing run needs the folder to itself; a shard may share it.
    let out = dir.join("generated");
    std::fs::create_dir_all(&out).unwrap();
    let shared = maskdit_io::FolderLock::acquire(&out, maskdit_io::Access::Shared).unwrap();
    let npz = dir.join("all.npz");
    let err = fails(&["generate", "--seeds", "0-1", "--steps", "4", "--out", s(&out), "--npz", s(&npz)]);
    assert!(err.contains("in use"), "{err}");
    ok(&["generate", "--seeds", "0-1", "--steps", "4", "--out", s(&out), "--shard", "0/2"]);
    drop(shared);
}

#[test]
fn headers_that_lie_are_refused_before_allocating() {
    let dir = Scratch::new("hostile-headers");
    // A tiny PNG that declares 16000×16000.
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    image::GrayImage::from_pixel(28, 28, image::Luma([7])).save(images.join("a.png")).unwrap();
    std::fs::write(images.join("b.png"), maskdit_testkit::png_declaring(16000, 16000)).unwrap();
    let err = fails(&refs(&encode(&images, &dir.join("shards"), &[])));
    assert!(err.contains("8192"), "{err}");

    // Statistics whose covariance is not symmetric: an error, not a negative FID.
    let stats = |name: &str, sigma: [f64; 4]| {
        let path = dir.join(name);
        let mu = candle_core::Tensor::new(&[0.0f64, 1.0], &candle_core::Device::Cpu).unwrap();
        let sigma = candle_core::Tensor::new(&sigma, &candle_core::Device::Cpu).unwrap().reshape((2, 2)).unwrap();
        candle_core::Tensor::write_npz(&[("mu", &mu), ("sigma", &sigma)], &path).unwrap();
        path
    };
    let good = stats("good.npz", [1.0, 0.0, 0.0, 1.0]);
    let bad = stats("bad.npz", [1.0, 5.0, -5.0, 1.0]);
    let err = fails(&["fid", s(&good), s(&bad), "--statistics-only"]);
    assert!(err.contains("not symmetric"), "{err}");
}
