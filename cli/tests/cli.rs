//! The `maskdit` binary end to end: generation with the embedded model and with a golden tiny
//! model + tiny VAE, batch independence, fine-tuning, and the error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use maskdit_tests::{cases_of, CaseKind, Scratch};

mod common;
use common::{fails, maskdit, ok, s};

fn tiny_model() -> PathBuf {
    cases_of(CaseKind::Model)[0].join("weights.safetensors")
}

fn tiny_vae() -> PathBuf {
    cases_of(CaseKind::VaeDiffusers)[0].join("diffusion_pytorch_model.safetensors")
}

#[test]
fn embedded_model_writes_one_png_per_seed() {
    let out = Scratch::new("embedded");
    ok(&["generate", "--class", "3", "--seeds", "0-2", "--steps", "4", "--out", s(&out)]);
    for seed in 0..3 {
        let img = image::open(out.join(format!("{seed:06}.png"))).unwrap();
        assert_eq!((img.width(), img.height()), (28, 28));
    }
    assert!(!out.join("000003.png").exists());
}

#[test]
fn tiny_latent_model_generates_through_the_vae_and_batches_do_not_matter() {
    let (model, vae) = (tiny_model(), tiny_vae());
    let batched = Scratch::new("batched");
    let grid = batched.join("grid.png");
    ok(&[
        "generate",
        "--model",
        s(&model),
        "--vae",
        s(&vae),
        "--seeds",
        "0-4",
        "--batch",
        "3",
        "--steps",
        "3",
        "--cfg",
        "1.5",
        "--class",
        "2",
        "--s-churn",
        "5",
        "--out",
        s(&batched),
        "--grid",
        s(&grid),
    ]);
    let alone = Scratch::new("alone");
    ok(&[
        "generate",
        "--model",
        s(&model),
        "--vae",
        s(&vae),
        "--seeds",
        "4",
        "--batch",
        "1",
        "--steps",
        "3",
        "--cfg",
        "1.5",
        "--class",
        "2",
        "--s-churn",
        "5",
        "--out",
        s(&alone),
    ]);
    let a = std::fs::read(batched.join("000004.png")).unwrap();
    let b = std::fs::read(alone.join("000004.png")).unwrap();
    assert_eq!(a, b, "seed 4 differs between a batch and alone");
    let img = image::open(batched.join("000000.png")).unwrap();
    assert_eq!((img.width(), img.height()), (16, 16));
    assert!(image::open(&grid).is_ok());
    for sampler in ["ddpm", "generalized"] {
        let out = Scratch::new(sampler);
        ok(&[
            "generate",
            "--model",
            s(&model),
            "--vae",
            s(&vae),
            "--seeds",
            "0",
            "--steps",
            "3",
            "--sampler",
            sampler,
            "--discretization",
            "vp",
            "--schedule",
            "vp",
            "--scaling",
            "vp",
            "--out",
            s(&out),
        ]);
        assert!(out.join("000000.png").exists());
    }
}

#[test]
fn mistakes_get_clear_errors() {
    let out = Scratch::new("errors");
    let o = s(&out);
    let err = fails(&["generate", "--model", "imagenet256-guidence", "--out", o]);
    assert!(err.contains("imagenet256-guidance"), "no suggestion: {err}");
    let err = fails(&["generate", "--class", "12", "--out", o]);
    assert!(err.contains("out of range"), "{err}");
    let err = fails(&["generate", "--class", "seven", "--out", o]);
    assert!(err.contains("class indices"), "{err}");
    for seeds in ["", "5-1", "a-b", "1,,2"] {
        fails(&["generate", "--seeds", seeds, "--out", o]);
    }
    let err = fails(&["generate", "--model", "/no/such/file.pt", "--out", o]);
    assert!(err.contains("unknown model") || err.contains("does not exist"), "{err}");
    let corrupt = out.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a checkpoint").unwrap();
    let err = fails(&["generate", "--model", s(&corrupt), "--arch", "DiT-S/8", "--out", o]);
    assert!(err.contains("corrupt.safetensors"), "{err}");
    // A malformed config.json beside the weights is reported, not silently passed over.
    let beside = out.join("beside");
    std::fs::create_dir_all(&beside).unwrap();
    std::fs::write(beside.join("weights.pt"), b"not a checkpoint").unwrap();
    std::fs::write(beside.join("config.json"), b"{\"hidden_size\": ").unwrap();
    let err = fails(&["generate", "--model", s(&beside.join("weights.pt")), "--arch", "DiT-S/8", "--out", o]);
    assert!(err.contains("config.json") && err.contains("not a model configuration"), "{err}");
    let empty_home = Scratch::new("empty-hf-home");
    let offline = Command::new(env!("CARGO_BIN_EXE_maskdit"))
        .args(["download", "imagenet256-guidance"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", &*empty_home)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&offline.stderr);
    assert!(!offline.status.success() && err.contains("HF_HUB_OFFLINE"), "{err}");
    // Every choice is checked when the command line is read, and the error lists the choices.
    for (args, choices) in [
        (&["generate", "--sampler", "plms"][..], "edm, generalized, ddpm"),
        (&["generate", "--solver", "rk4"], "euler, heun"),
        (&["generate", "--weights", "best"], "ema, model"),
        (&["generate", "--dtype", "f64"], "f32, f16, bf16"),
        (&["generate", "--device", "gpu"], "use cpu, cuda"),
        (&["bench", "--only", "backward"], "gemm, forward, forward_cfg"),
        (&["convert", "a.pt", "b.safetensors", "--weights", "opt"], "ema, model"),
        (&["bench", "--model", "DiT-XXL/2"], "DiT-S/2"),
        (&["generate", "--arch", "UNet"], "DiT-XL/2"),
        (&["train", "--preset", "cifar", "--data", "d", "--out", "o"], "mnist-pretrain"),
    ] {
        let err = fails(args);
        assert!(err.contains("invalid value") && err.contains(choices), "{args:?}: {err}");
    }
    let err = fails(&["train", "--preset", "mnist-pretrain", "--data", o, "--out", o, "--precision", "fp8"]);
    assert!(err.contains("f32, bf16"), "{err}");
    // Nothing that looks complete is left behind by failed runs.
    let pngs = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png"))
        .count();
    assert_eq!(pngs, 0);
}

#[test]
fn help_lists_every_subcommand_with_examples() {
    let out = ok(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["generate", "download", "list", "convert", "encode", "train", "finetune", "bench"] {
        assert!(text.contains(cmd), "`maskdit --help` lacks {cmd}");
        let sub = ok(&[cmd, "--help"]);
        let sub = String::from_utf8_lossy(&sub.stdout);
        assert!(sub.contains("Example"), "`maskdit {cmd} --help` has no example");
    }
    let listed = ok(&["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("mnist") && listed.contains("embedded") && listed.contains("imagenet256-guidance"));
}

#[test]
fn finetune_from_an_official_checkpoint_writes_loadable_checkpoints() {
    let case = &cases_of(CaseKind::Model)[0];
    let dir = Scratch::new("finetune");
    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let config = maskdit::ModelConfig::from_json(&std::fs::read_to_string(case.join("config.json")).unwrap()).unwrap();
    for i in 0..2 {
        let moments = maskdit_tests::SeededTensors::new(i as u64).normal(
            0.0,
            1.0,
            (6, 2 * config.in_channels, config.input_size, config.input_size),
        );
        let labels: Vec<usize> = (0..6).map(|k| (k + i) % config.num_classes).collect();
        maskdit_train::data::write_shard(
            &shards.join(format!("shard-{i:05}.safetensors")),
            "moments",
            &moments,
            Some(&labels),
        )
        .unwrap();
    }
    let run = dir.join("run");
    let export = dir.join("final.safetensors");
    ok(&[
        "finetune",
        "--preset",
        "imagenet256-finetune",
        "--config",
        s(&case.join("config.json")),
        "--from",
        s(&case.join("checkpoint.pt")),
        "--data",
        s(&shards),
        "--out",
        s(&run),
        "--steps",
        "3",
        "--batch",
        "4",
        "--checkpoint-every",
        "2",
        "--export",
        s(&export),
    ]);
    for step in [2, 3] {
        let path = run.join("checkpoints").join(format!("{step:07}.safetensors"));
        maskdit::weights::load(&path, &config, maskdit::WeightSet::Ema, candle_core::DType::F32, &Device::Cpu).unwrap();
    }
    assert_eq!(std::fs::read_to_string(run.join("log.jsonl")).unwrap().lines().count(), 3);
    let exported = maskdit::weights::read_config(&export).unwrap();
    assert_eq!(exported.as_ref(), Some(&config));
    // Starting again without --resume refuses to overwrite; with --resume it continues.
    let (config_json, from) = (case.join("config.json"), case.join("checkpoint.pt"));
    let again = |resume: bool, extra: &[&str]| {
        let mut args =
            vec!["finetune", "--preset", "imagenet256-finetune", "--config", s(&config_json), "--from", s(&from)];
        args.extend(["--data", s(&shards), "--out", s(&run), "--steps", "4", "--batch", "4"]);
        if resume {
            args.push("--resume");
        }
        args.extend(extra);
        maskdit(&args)
    };
    let refused = again(false, &[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("--resume"), "{err}");
    // Resuming with other settings is refused, the differences named.
    let changed = again(true, &["--lr", "0.001", "--seed", "9"]);
    let err = String::from_utf8_lossy(&changed.stderr);
    assert!(!changed.status.success() && err.contains("lr 0.001") && err.contains("seed 9"), "{err}");
    let resumed = again(true, &[]);
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(std::fs::read_to_string(run.join("log.jsonl")).unwrap().lines().count(), 4);
    let latest = run.join("checkpoints").join("0000004.safetensors");
    assert!(latest.exists());
    // A damaged latest checkpoint: the error names the one before it.
    std::fs::write(&latest, b"damaged").unwrap();
    let err = String::from_utf8_lossy(&again(true, &[]).stderr).to_string();
    assert!(err.contains("0000004.safetensors") && err.contains("0000003.safetensors"), "{err}");
    std::fs::remove_file(&latest).unwrap();

    // A checkpoint of another architecture is refused unless --allow-partial says otherwise.
    let mut other: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_json).unwrap()).unwrap();
    other["hidden_size"] = serde_json::json!(32);
    let other_json = dir.join("other.json");
    std::fs::write(&other_json, other.to_string()).unwrap();
    let wrong = |extra: &[&str], out: &Path| {
        let mut args =
            vec!["finetune", "--preset", "imagenet256-finetune", "--config", s(&other_json), "--from", s(&from)];
        args.extend(["--data", s(&shards), "--out", s(out), "--steps", "1", "--batch", "2"]);
        args.extend(extra);
        maskdit(&args)
    };
    let refused = wrong(&[], &dir.join("wrong"));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("--allow-partial") && err.contains("blocks.0"), "{err}");
    let partial = wrong(&["--allow-partial"], &dir.join("partial"));
    assert!(partial.status.success(), "{}", String::from_utf8_lossy(&partial.stderr));
    // An export name the weights could not be loaded back from is refused before training.
    let err = String::from_utf8_lossy(&wrong(&["--export", "model.bin"], &dir.join("bin")).stderr).to_string();
    assert!(err.contains(".safetensors"), "{err}");
    assert!(!dir.join("bin").exists());
}

#[test]
fn encode_turns_an_image_folder_into_latent_shards() {
    let dir = Scratch::new("encode");
    let images = dir.join("images");
    for (class, color) in [("cat", [200u8, 30, 30]), ("dog", [30, 30, 200])] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        for i in 0..2u32 {
            let img = image::RgbImage::from_fn(24 + i, 20, |x, y| {
                image::Rgb([color[0], color[1].wrapping_add((x * y) as u8), color[2]])
            });
            img.save(images.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let out = dir.join("latents");
    ok(&[
        "encode",
        "--images",
        s(&images),
        "--out",
        s(&out),
        "--vae",
        s(&tiny_vae()),
        "--resolution",
        "16",
        "--shard-size",
        "3",
        "--batch",
        "2",
    ]);
    let first = maskdit_tests::load(&out.join("shard-00000.safetensors"));
    assert_eq!(maskdit_tests::get(&first, "moments").dims(), &[3, 8, 8, 8]);
    assert_eq!(maskdit_tests::get(&first, "labels").to_vec1::<i64>().unwrap(), vec![0, 0, 1]);
    let second = maskdit_tests::load(&out.join("shard-00001.safetensors"));
    assert_eq!(maskdit_tests::get(&second, "labels").to_vec1::<i64>().unwrap(), vec![1]);
    let classes: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("classes.json")).unwrap()).unwrap();
    assert_eq!(classes, vec!["cat", "dog"]);
    let err = fails(&["encode", "--images", s(&dir.join("nothing")), "--out", s(&out), "--vae", s(&tiny_vae())]);
    assert!(err.contains("cannot read the image folder"), "{err}");
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Bytes of every file in `dir`, by name.
fn contents(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// A small tmpfs mounted at a scratch folder, unmounted when dropped.
struct SmallDisk(Scratch);

impl SmallDisk {
    /// Mounts `kib` KiB of tmpfs; `None` where this process may not mount (not root).
    fn mount(name: &str, kib: usize) -> Option<Self> {
        let dir = Scratch::new(name);
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs", s(&dir)])
            .status()
            .is_ok_and(|s| s.success());
        assert!(mounted || !root, "running as root, yet a tmpfs could not be mounted at {}", dir.display());
        mounted.then_some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&*self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_run_and_damages_nothing() {
    let Some(disk) = SmallDisk::mount("full-disk", 64) else {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    };
    let out = disk.0.join("digits");
    ok(&["generate", "--class", "3", "--seeds", "0-3", "--out", s(&out)]);
    let before = contents(&out);
    assert_eq!(before.len(), 4);
    assert!(before.values().all(|png| png.len() > 100));
    // Fill what is left of the disk.
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(disk.0.join("filler")).unwrap();
        while filler.write_all(&[7u8; 4096]).and_then(|()| filler.flush()).is_ok() {}
    }
    let err = fails(&["generate", "--class", "5", "--seeds", "0-15", "--out", s(&out)]);
    assert!(err.contains("cannot write") && err.contains("000000.png"), "{err}");
    assert_eq!(contents(&out), before, "images of the earlier run were damaged or temporaries left behind");
}

#[test]
fn impossible_or_destructive_requests_are_refused_up_front() {
    let dir = Scratch::new("refused");
    let o = s(&dir);
    for (seeds, says) in
        [("0-18446744073709551615", "more seeds"), ("1,1,1", "listed twice"), ("0-5,3", "listed twice")]
    {
        let err = fails(&["generate", "--seeds", seeds, "--out", o]);
        assert!(err.contains(says), "{seeds}: {err}");
    }
    // A huge run is fine to ask for (seeds are read lazily), but not as one grid.
    let err = fails(&["generate", "--seeds", "0-1000000000000", "--grid", s(&dir.join("g.png")), "--out", o]);
    assert!(err.contains("--grid tiles at most"), "{err}");
    let err = fails(&["generate", "--seeds", "0-3", "--grid", s(&dir.join("000002.png")), "--out", o]);
    assert!(err.contains("overwrite the image of seed 2"), "{err}");
    let err = fails(&["generate", "--class=-1", "--out", o]);
    assert!(err.contains("out of range"), "{err}");
    let err = fails(&["generate", "--model", s(&dir.join("missing.safetensors")), "--out", o]);
    assert!(err.contains("does not exist"), "{err}");
    // An unknown class of a registry model is found before any download is tried.
    let err = fails(&["generate", "--model", "imagenet256-guidance", "--class", "golden retreiver", "--out", o]);
    assert!(err.contains("ImageNet class") && !err.contains("HF_HUB_OFFLINE"), "{err}");
    assert!(contents(&dir).is_empty());
}

#[test]
fn non_finite_samples_are_an_error() {
    let dir = Scratch::new("nan");
    let embedded = workspace().join("registry/assets/mnist.safetensors");
    let config = maskdit::weights::read_config(&embedded).unwrap().unwrap();
    let mut weights = maskdit::weights::read_tensors(&embedded, maskdit::WeightSet::Ema).unwrap();
    let bias = weights["model.final_layer.linear.bias"].clone();
    weights.insert("model.final_layer.linear.bias".into(), (bias * f64::NAN).unwrap());
    let broken = dir.join("broken.safetensors");
    maskdit::weights::save_model(&weights, &config, &[], &broken).unwrap();
    let out = dir.join("out");
    let err = fails(&["generate", "--model", s(&broken), "--seeds", "0-1", "--steps", "4", "--out", s(&out)]);
    assert!(err.contains("NaN or infinite") && err.contains("weights"), "{err}");
    let err = fails(&["generate", "--cfg", "1e300", "--seeds", "0-1", "--steps", "4", "--out", s(&out)]);
    assert!(err.contains("NaN or infinite") && err.contains("--cfg"), "{err}");
    assert!(contents(&out).is_empty());
}

#[test]
fn an_interrupted_run_saves_and_exits_non_zero() {
    let dir = Scratch::new("interrupt");
    let run = dir.join("run");
    let digits = workspace().join("data/mnist/digits.safetensors");
    let child = Command::new(env!("CARGO_BIN_EXE_maskdit"))
        .args(["train", "--preset", "mnist-pretrain", "--data", s(&digits), "--out", s(&run)])
        .args(["--steps", "100000", "--batch", "2", "--checkpoint-every", "100000"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = run.join("log.jsonl");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2) {
        assert!(started.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: saved") && err.contains("--resume"), "{err}");
    let saved: Vec<_> = std::fs::read_dir(run.join("checkpoints")).unwrap().collect();
    assert_eq!(saved.len(), 1);
}

#[test]
fn an_unconditional_model_generates_and_refuses_guidance_and_classes() {
    let case = cases_of(CaseKind::Model)
        .into_iter()
        .find(|c| std::fs::read_to_string(c.join("config.json")).unwrap().contains("\"num_classes\": 0"))
        .expect("an unconditional golden case");
    let (model, vae) = (case.join("weights.safetensors"), tiny_vae());
    let out = Scratch::new("uncond");
    let args = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", s(&model), "--vae", s(&vae), "--seeds", "0-1", "--steps", "3"];
        args.extend(["--out", s(&out)]);
        args.extend(extra.iter().copied());
        args.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |extra: &[&str]| maskdit(&args(extra).iter().map(String::as_str).collect::<Vec<_>>());
    let made = run(&[]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(out.join("000001.png").exists());
    let guided = String::from_utf8_lossy(&run(&["--cfg", "1.5"]).stderr).to_string();
    assert!(guided.contains("class-conditional"), "{guided}");
    let classed = String::from_utf8_lossy(&run(&["--class", "1"]).stderr).to_string();
    assert!(classed.contains("unconditional"), "{classed}");
}

/// The hashed FID Inception weights of the golden case, as a safetensors file in `dir`.
fn hashed_inception_file(dir: &Path) -> PathBuf {
    let path = dir.join("inception.safetensors");
    let tensors = maskdit_tests::hashed_inception_weights(&maskdit_tests::fid_inception_case());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

/// Writes `count` generated digits of `class` as PNGs into a new folder.
fn digit_folder(name: &str, class: &str, count: usize) -> Scratch {
    let dir = Scratch::new(name);
    let seeds = format!("0-{}", count - 1);
    ok(&["generate", "--class", class, "--seeds", &seeds, "--steps", "4", "--out", s(&dir)]);
    dir
}

fn json_line(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().expect("a line")).expect("JSON")
}

#[test]
fn fid_of_folders_statistics_and_npz_batches_agree() {
    let work = Scratch::new("fid");
    let weights = hashed_inception_file(&work);
    let (threes, fives) = (digit_folder("fid-threes", "3", 10), digit_folder("fid-fives", "5", 10));

    let out = ok(&["fid", s(&threes), s(&fives), "--inception", s(&weights), "--batch", "4", "--json"]);
    let report = json_line(&out);
    let fid = report["fid"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{report}");
    assert_eq!(report["samples"]["images"], 10);
    assert!(report["samples"]["inception_score"].as_f64().unwrap() >= 1.0, "{report}");
    let sfid = report["sfid"].as_f64().unwrap();
    assert!(sfid.is_finite() && sfid > 0.0, "{report}");
    for share in ["precision", "recall"] {
        let value = report[share].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&value) && (value * 10.0).fract() == 0.0, "{share}: {report}");
    }
    assert_eq!(report["missing"], serde_json::json!({}));
    // ADM's input (the TensorFlow graph's resize and scaling) is another measurement.
    let adm = json_line(&ok(&["fid", s(&threes), s(&fives), "--inception", s(&weights), "--resize", "adm", "--json"]));
    let adm_fid = adm["fid"].as_f64().unwrap();
    assert!(adm_fid.is_finite() && adm_fid != fid, "{adm} against {report}");
    let text =
        String::from_utf8_lossy(&ok(&["fid", s(&threes), s(&fives), "--inception", s(&weights)]).stdout).to_string();
    for line in ["FID", "sFID", "precision", "recall", "Inception Score"] {
        assert!(text.contains(line), "{line}: {text}");
    }

    // Statistics written by fid-stats stand in for the folder; with --features they carry
    // what precision and recall need, without it the report says why those are missing.
    let stats = work.join("threes.npz");
    ok(&["fid-stats", s(&threes), "--out", s(&stats), "--inception", s(&weights)]);
    let against_self = json_line(&ok(&["fid", s(&stats), s(&stats), "--json"]));
    assert!(against_self["fid"].as_f64().unwrap().abs() < 1e-6, "{against_self}");
    // Against traces of about 24: round-off of two 2023-dimensional eigendecompositions.
    assert!(against_self["sfid"].as_f64().unwrap().abs() < 1e-4, "{against_self}");
    assert!(against_self["precision"].is_null(), "{against_self}");
    let why = against_self["missing"]["precision_recall"].as_str().unwrap();
    assert!(why.contains("--features"), "{why}");
    let stored = work.join("threes-features.npz");
    ok(&["fid-stats", s(&threes), "--out", s(&stored), "--features", "--inception", s(&weights)]);
    let stored_report = json_line(&ok(&["fid", s(&stored), s(&fives), "--inception", s(&weights), "--json"]));
    for number in ["fid", "sfid", "precision", "recall"] {
        assert_eq!(stored_report[number], report[number], "{number}: {stored_report} against {report}");
    }

    // The fives as an ADM batch (arr_0, N×H×W×3 uint8) give the folder's number.
    let mut images = Vec::new();
    for seed in 0..10 {
        let rgb = image::open(fives.join(format!("{seed:06}.png"))).unwrap().to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        images.push(Tensor::from_vec(rgb.into_raw(), (1, h, w, 3), &Device::Cpu).unwrap());
    }
    let batch = work.join("fives.npz");
    Tensor::write_npz(&[("arr_0", &Tensor::cat(&images, 0).unwrap())], &batch).unwrap();
    let from_npz = json_line(&ok(&["fid", s(&stats), s(&batch), "--inception", s(&weights), "--json"]));
    let relative = (from_npz["fid"].as_f64().unwrap() - fid).abs() / fid;
    assert!(relative < 1e-9, "folder {fid} against npz {from_npz}");

    // The network's speed as a benchmark row.
    let bench = json_line(&ok(&[
        "bench",
        "--only",
        "inception",
        "--inception",
        s(&weights),
        "--batch",
        "2",
        "--iters",
        "1",
        "--json",
    ]));
    assert_eq!(bench["what"], "inception");
    assert!(bench["images_per_second"].as_f64().unwrap() > 0.0, "{bench}");

    // Clear errors, no panics.
    let empty = Scratch::new("fid-empty");
    let err = fails(&["fid", s(&empty), s(&stats), "--inception", s(&weights)]);
    assert!(err.contains("no PNG or JPEG"), "{err}");
    let err = fails(&["fid", s(&threes), s(&stats)]);
    assert!(err.contains("--inception"), "{err}");
    let odd = work.join("odd.npz");
    Tensor::write_npz(&[("pixels", &Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap())], &odd).unwrap();
    let err = fails(&["fid", s(&odd), s(&stats), "--inception", s(&weights)]);
    assert!(err.contains("arr_0"), "{err}");
    let err = fails(&["fid", s(&stats), s(&weights), "--inception", s(&weights)]);
    assert!(err.contains("npz") || err.contains("arr_0"), "{err}");
}

/// The PNGs of `generate --class 2 --seeds 0-1 --steps 4 --cfg CFG EXTRA…`, by name.
fn guided_digits(name: &str, cfg: &str, extra: &[&str]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let out = Scratch::new(name);
    let mut args = vec!["generate", "--class", "2", "--seeds", "0-1", "--steps", "4", "--cfg", cfg, "--out", s(&out)];
    args.extend_from_slice(extra);
    ok(&args);
    contents(&out)
}

#[test]
fn guidance_interval_limits_guidance_to_its_noise_levels() {
    let everywhere = guided_digits("interval-all", "3", &[]);
    assert_eq!(everywhere.len(), 2);
    // An interval holding every noise level of the schedule (σ ≤ 80) is guidance everywhere.
    assert_eq!(guided_digits("interval-wide", "3", &["--guidance-interval", "0:100"]), everywhere);
    // One holding none of them is no guidance at all.
    let unguided = guided_digits("interval-none", "3", &["--guidance-interval", "100:200"]);
    assert_eq!(unguided, guided_digits("interval-cfg1", "1", &[]));
    // σ ≤ 3 holds only the last two of the 4 levels (80, 9.8, 0.48, 0.002): neither of the above.
    let low = guided_digits("interval-low", "3", &["--guidance-interval", "0:3"]);
    assert!(low != everywhere && low != unguided);
    for (value, expected) in [("3:1", "0 ≤ low < high"), ("0-3", "LOW:HIGH"), ("some", "or `all`")] {
        let err = fails(&["generate", "--guidance-interval", value, "--out", "unused"]);
        assert!(err.contains("invalid value") && err.contains(expected), "{value}: {err}");
    }

    // A registry entry's `guidance_interval` is the model's default; --guidance-interval all
    // overrides it; a bad one is reported.
    let dir = Scratch::new("interval-registry");
    let registry = std::fs::read_to_string(workspace().join("weights.toml")).unwrap();
    let with_interval = |bounds: &str| {
        let text = registry.replacen("cfg = 1.3\n", &format!("cfg = 1.3\nguidance_interval = {bounds}\n"), 1);
        assert_ne!(text, registry, "weights.toml's mnist entry no longer reads `cfg = 1.3`");
        let path = dir.join(format!("registry {bounds}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |registry: &Path, name: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut args =
            vec!["generate", "--class", "2", "--seeds", "0-1", "--steps", "4", "--cfg", "3", "--out", s(&out)];
        args.extend_from_slice(extra);
        let result = Command::new(env!("CARGO_BIN_EXE_maskdit"))
            .args(&args)
            .env("HF_HUB_OFFLINE", "1")
            .env("MASKDIT_REGISTRY", registry)
            .output()
            .unwrap();
        (result, out)
    };
    let (result, out) = run(&with_interval("[0.0, 3.0]"), "default", &[]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(contents(&out), low);
    let (result, out) = run(&with_interval("[0.0, 3.0]"), "overridden", &["--guidance-interval", "all"]);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    assert_eq!(contents(&out), everywhere);
    let (result, _) = run(&with_interval("[3.0, 1.0]"), "bad", &[]);
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && err.contains("registry entry mnist") && err.contains("low < high"), "{err}");
}

#[test]
fn shards_split_a_run_and_resume_skips_what_is_written() {
    let whole = Scratch::new("shards-whole");
    ok(&["generate", "--class", "7", "--seeds", "0-5", "--steps", "4", "--out", s(&whole)]);
    let (even, odd) = (Scratch::new("shards-even"), Scratch::new("shards-odd"));
    ok(&["generate", "--class", "7", "--seeds", "0-5", "--steps", "4", "--shard", "0/2", "--out", s(&even)]);
    ok(&["generate", "--class", "7", "--seeds", "0-5", "--steps", "4", "--shard", "1/2", "--out", s(&odd)]);
    for seed in 0..6u64 {
        let name = format!("{seed:06}.png");
        let (mine, other) = if seed % 2 == 0 { (&even, &odd) } else { (&odd, &even) };
        assert!(!other.join(&name).exists(), "{name} written by both shards");
        assert_eq!(std::fs::read(mine.join(&name)).unwrap(), std::fs::read(whole.join(&name)).unwrap(), "{name}");
    }

    // An interrupted run: one image missing; --resume writes only that one, identical.
    let kept = std::fs::read(whole.join("000003.png")).unwrap();
    std::fs::remove_file(whole.join("000003.png")).unwrap();
    let out = ok(&["generate", "--class", "7", "--seeds", "0-5", "--steps", "4", "--resume", "--out", s(&whole)]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("wrote 1 images") && log.contains("images/s"), "{log}");
    assert_eq!(std::fs::read(whole.join("000003.png")).unwrap(), kept);

    // The run packed as an ADM batch: every seed in list order, RGB (grey replicated).
    let npz = whole.join("samples.npz");
    ok(&[
        "generate",
        "--class",
        "7",
        "--seeds",
        "0-5",
        "--steps",
        "4",
        "--resume",
        "--npz",
        s(&npz),
        "--out",
        s(&whole),
    ]);
    let arrays = Tensor::read_npz(&npz).unwrap();
    let arr = &arrays.iter().find(|(name, _)| name == "arr_0").unwrap().1;
    assert_eq!(arr.dims(), [6, 28, 28, 3]);
    let fourth = arr.get(3).unwrap().flatten_all().unwrap().to_vec1::<u8>().unwrap();
    assert_eq!(fourth, image::open(whole.join("000003.png")).unwrap().to_rgb8().into_raw());

    let err = fails(&["generate", "--seeds", "0-5", "--shard", "2/2", "--out", s(&whole)]);
    assert!(err.contains("i/n"), "{err}");
}

#[test]
fn training_logs_the_fid_of_ema_samples() {
    let work = Scratch::new("train-fid");
    let weights = hashed_inception_file(&work);
    let reference = work.join("reference.npz");
    ok(&["fid-stats", s(&digit_folder("train-fid-real", "4", 4)), "--out", s(&reference), "--inception", s(&weights)]);

    let embedded = workspace().join("registry/assets/mnist.safetensors");
    let digits = workspace().join("data/mnist/digits.safetensors");
    let run = work.join("run");
    let mut args = vec!["finetune", "--preset", "mnist-finetune", "--from", s(&embedded), "--data", s(&digits)];
    args.extend(["--out", s(&run), "--steps", "2", "--batch", "4", "--checkpoint-every", "100"]);
    args.extend(["--eval-every", "2", "--eval-num", "4", "--eval-steps", "2", "--eval-batch", "4"]);
    let err = fails(&args);
    assert!(err.contains("--eval-ref"), "{err}");
    args.extend(["--eval-ref", s(&reference), "--inception", s(&weights)]);
    ok(&args);
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    let measured: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("fid").is_some())
        .collect();
    assert_eq!(measured.len(), 1, "{log}");
    assert_eq!(measured[0]["step"], 2);
    assert_eq!(measured[0]["eval_images"], 4);
    assert!(measured[0]["fid"].as_f64().unwrap().is_finite(), "{log}");
}

#[test]
fn own_images_encode_in_pixel_space_and_fine_tune_the_embedded_model() {
    let root = Scratch::new("own-digits");
    for (class, digit) in [("ones", "1"), ("twos", "2")] {
        let folder = root.join(class);
        ok(&["generate", "--class", digit, "--seeds", "0-2", "--steps", "4", "--out", s(&folder)]);
    }
    let shards = Scratch::new("own-digits-shards");
    ok(&["encode", "--images", s(&root), "--out", s(&shards), "--vae", "none", "--resolution", "28", "--grey"]);
    let classes: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(shards.join("classes.json")).unwrap()).unwrap();
    assert_eq!(classes, ["ones", "twos"]);
    let shard = maskdit_tests::load(&shards.join("shard-00000.safetensors"));
    assert_eq!((shard["images"].dims(), shard["images"].dtype()), (&[6, 1, 28, 28][..], candle_core::DType::U8));
    assert_eq!(shard["labels"].to_vec1::<i64>().unwrap(), [0, 0, 0, 1, 1, 1]);
    // The pixels are the PNG's.
    let first = image::open(root.join("ones/000000.png")).unwrap().to_luma8().into_raw();
    assert_eq!(shard["images"].get(0).unwrap().flatten_all().unwrap().to_vec1::<u8>().unwrap(), first);

    let embedded = workspace().join("registry/assets/mnist.safetensors");
    let run = Scratch::new("own-digits-run");
    ok(&["finetune", "--preset", "mnist-finetune", "--from", s(&embedded), "--data", s(&shards), "--out", s(&run)]
        .iter()
        .chain(&["--steps", "2", "--batch", "2", "--checkpoint-every", "2"])
        .copied()
        .collect::<Vec<_>>());
    assert_eq!(std::fs::read_to_string(run.join("log.jsonl")).unwrap().lines().count(), 2);

    let err = fails(&["encode", "--images", s(&root), "--out", s(&shards), "--grey"]);
    assert!(err.contains("--vae none"), "{err}");
}
