//! Your own data end to end, at toy size on the CPU: image folders with and without classes →
//! pixel shards → a fine-tune of the embedded MNIST model to new classes (with their names) or
//! to an unconditional model → generation by class name → `list --classes`.

use maskdit_tests::Scratch;
use std::path::{Path, PathBuf};

mod common;
use common::{fails, ok, s};

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn embedded() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry/assets/mnist.safetensors")
}

/// Digits of `class` drawn by the embedded model into `folder` (PNG files).
fn draw(folder: &Path, class: &str, seeds: &str) {
    ok(&["generate", "--class", class, "--seeds", seeds, "--steps", "4", "--out", s(folder)]);
}

/// A short fine-tune of the embedded model on `data` with `extra` options; returns stderr.
fn finetune(data: &Path, out: &Path, extra: &[&str]) -> String {
    let from = embedded();
    let mut args = vec!["finetune", "--preset", "mnist-finetune", "--from", s(&from)];
    args.extend(["--data", s(data), "--out", s(out), "--steps", "2", "--batch", "2", "--checkpoint-every", "2"]);
    args.extend(extra);
    String::from_utf8_lossy(&ok(&args).stderr).into_owned()
}

#[test]
fn new_classes_from_the_embedded_model_keep_their_names() {
    let dir = Scratch::new("own-classes");
    let images = dir.join("images");
    draw(&images.join("loops"), "0", "0-2");
    draw(&images.join("lines"), "1", "0-2");
    let shards = dir.join("shards");
    ok(&["encode", "--images", s(&images), "--out", s(&shards), "--vae", "none", "--resolution", "28", "--grey"]);

    let model = dir.join("two-classes.safetensors");
    let err = finetune(&shards, &dir.join("run"), &["--export", s(&model)]);
    assert!(err.contains("a model of 2 classes") && err.contains("classes.json"), "{err}");
    // Exactly the label embedding starts fresh; everything else comes from the checkpoint.
    assert!(err.contains("model.y_embedder.embedding_table.weight"), "{err}");
    assert!(err.contains("initialised 1 parameters"), "{err}");
    assert!(err.contains("names of the 2 classes"), "{err}");

    assert_eq!(maskdit::weights::read_class_names(&model).unwrap(), ["lines", "loops"]);
    let listed = ok(&["list", "--classes", s(&model)]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "0\tlines\n1\tloops\n");
    let out = dir.join("generated");
    ok(&["generate", "--model", s(&model), "--class", "loops", "--class", "1", "--seeds", "0-1", "--steps", "4"]
        .iter()
        .chain(&["--out", s(&out)])
        .copied()
        .collect::<Vec<_>>());
    assert!(out.join("000000.png").is_file() && out.join("000001.png").is_file());
    let err = fails(&["generate", "--model", s(&model), "--class", "circles", "--out", s(&out)]);
    assert!(err.contains("unknown class of this model `circles`") && err.contains("loops"), "{err}");

    // The registry's models list their classes too.
    let digits = String::from_utf8_lossy(&ok(&["list", "--classes", "mnist"]).stdout).into_owned();
    assert_eq!(digits.lines().count(), 10);
    let imagenet = String::from_utf8_lossy(&ok(&["list", "--classes", "imagenet256-guidance"]).stdout).into_owned();
    assert!(imagenet.contains("207\tgolden_retriever"), "{imagenet}");

    // An explicit count wins over the data's, and labels outside it are refused up front.
    let err = fails(
        &["train", "--preset", "mnist-finetune", "--data", s(&shards), "--out", s(&dir.join("x"))]
            .iter()
            .chain(&["--num-classes", "1", "--steps", "1", "--batch", "2"])
            .copied()
            .collect::<Vec<_>>(),
    );
    assert!(err.contains("label 1") && err.contains("1 classes"), "{err}");
}

#[test]
fn images_without_classes_train_an_unconditional_model() {
    let dir = Scratch::new("own-unlabeled");
    let flat = dir.join("flat");
    draw(&flat, "3", "0-3");
    let shards = dir.join("shards");
    ok(&["encode", "--images", s(&flat), "--out", s(&shards), "--vae", "none", "--resolution", "28", "--grey"]);
    assert!(!shards.join("classes.json").exists());
    let shard = maskdit_tests::load(&shards.join("shard-00000.safetensors"));
    assert!(shard.contains_key("images") && !shard.contains_key("labels"));

    let model = dir.join("unconditional.safetensors");
    let err = finetune(&shards, &dir.join("run"), &["--export", s(&model)]);
    assert!(err.contains("an unconditional model (data without labels)"), "{err}");
    assert!(err.contains("model.y_embedder.embedding_table.weight"), "the dropped label embedding is named: {err}");
    let config = maskdit::weights::read_config(&model).unwrap().unwrap();
    assert_eq!(config.num_classes, 0);
    let listed = String::from_utf8_lossy(&ok(&["list", "--classes", s(&model)]).stdout).into_owned();
    assert!(listed.contains("unconditional"), "{listed}");
    let out = dir.join("generated");
    ok(&["generate", "--model", s(&model), "--seeds", "0-1", "--steps", "4", "--out", s(&out)]);
    let err = fails(&["generate", "--model", s(&model), "--class", "3", "--seeds", "0", "--out", s(&out)]);
    assert!(err.contains("unconditional"), "{err}");

    // Labels and classes must agree unless the labels are dropped on purpose.
    let images = dir.join("labeled");
    draw(&images.join("threes"), "3", "0-1");
    let labeled = dir.join("labeled-shards");
    ok(&["encode", "--images", s(&images), "--out", s(&labeled), "--vae", "none", "--resolution", "28", "--grey"]);
    let train = |data: &Path, out: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["train", "--preset", "mnist-finetune", "--data", s(data), "--out"].iter().map(|a| a.to_string()).collect();
        args.push(s(&dir.join(out)).to_string());
        args.extend(["--steps", "1", "--batch", "2"].iter().map(|a| a.to_string()));
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let err = fails(&refs(&train(&labeled, "a", &["--num-classes", "0"])));
    assert!(err.contains("has class labels but the model is unconditional"), "{err}");
    let err = fails(&refs(&train(&shards, "b", &["--num-classes", "3"])));
    assert!(err.contains("no class labels but the model has 3 classes"), "{err}");
    let err = String::from_utf8_lossy(&ok(&refs(&train(&labeled, "c", &["--ignore-labels"]))).stderr).into_owned();
    assert!(err.contains("an unconditional model (--ignore-labels)"), "{err}");

    // Images beside class folders are ambiguous.
    std::fs::create_dir_all(flat.join("more")).unwrap();
    let err = fails(&["encode", "--images", s(&flat), "--out", s(&dir.join("y")), "--vae", "none", "--grey"]);
    assert!(err.contains("both images and subfolders"), "{err}");
}
