//! The training loop: exact resume, the official LMDB layout, shards, and refusal of NaN losses.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use maskdit::ModelConfig;
use maskdit_tests::{worst_and_quantile, Scratch, SeededTensors};
use maskdit_train::data::{write_shard, Dataset, LmdbDataset, LmdbWriter, ShardDataset};
use maskdit_train::{Error, Precision, Start, TrainOptions, Trainer};
use rand::SeedableRng;

fn tiny_config() -> ModelConfig {
    ModelConfig::from_json(
        r#"{"input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 32, "depth": 2, "num_heads": 2,
            "num_classes": 5, "use_decoder": true, "decoder_hidden_size": 16, "decoder_depth": 1,
            "decoder_num_heads": 2, "mae_loss_coef": 0.1, "mask_ratio": 0.5}"#,
    )
    .unwrap()
}

fn options(max_steps: u64) -> TrainOptions {
    TrainOptions {
        batch_size: 6,
        grad_accum: 2,
        lr: 1e-3,
        lr_rampup_kimg: 0.012,
        weight_decay: 0.0,
        ema_decay: 0.9,
        mask_schedule: "cosine2".into(),
        mask_ratio: 0.5,
        mask_ratio_min: 0.1,
        mae_loss_coef: 0.1,
        class_dropout_prob: 0.2,
        xflip: true,
        max_steps,
        seed: 17,
        p_mean: -1.2,
        p_std: 1.2,
        precision: Precision::F32,
    }
}

/// A shard of 10 random latent distributions (moments) with labels, drawn from `seed`.
fn shard(dir: &std::path::Path, seed: u64) -> PathBuf {
    let moments = SeededTensors::new(seed).normal(0.0, 1.0, (10, 8, 8, 8));
    let labels: Vec<usize> = (0..10).map(|i| i % 5).collect();
    let path = dir.join("shard-000.safetensors");
    write_shard(&path, "moments", &moments, Some(&labels)).unwrap();
    path
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

#[test]
fn interrupted_and_resumed_run_is_bit_identical() {
    let dir = Scratch::new("resume");
    let data = shard(&dir, 1);
    let open = || -> Box<dyn Dataset> { Box::new(ShardDataset::open(std::slice::from_ref(&data), 0.18215).unwrap()) };
    let mut whole = Trainer::new(tiny_config(), options(5), open(), Start::Fresh, &Device::Cpu).unwrap();
    let mut losses = Vec::new();
    while !whole.finished() {
        losses.push(whole.train_step().unwrap().loss);
    }
    assert!(losses.iter().all(|l| l.is_finite()));
    // The EMA must not hold on to gradient graphs (that leaked every step's weights once).
    assert!(whole.ema_weights().values().all(|t| !t.track_op()), "EMA tensors track a graph");
    assert!(whole.model().weights().unwrap().values().all(|t| !t.track_op()), "weight copies track a graph");

    let mut first = Trainer::new(tiny_config(), options(5), open(), Start::Fresh, &Device::Cpu).unwrap();
    for _ in 0..2 {
        first.train_step().unwrap();
    }
    let ckpt = dir.join("0000002.safetensors");
    first.save(&ckpt).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&ckpt, open(), &Device::Cpu).unwrap();
    assert_eq!(resumed.step_count(), 2);
    let mut later = Vec::new();
    while !resumed.finished() {
        later.push(resumed.train_step().unwrap().loss);
    }
    assert_eq!(later, losses[2..].to_vec(), "losses after resuming");
    let (a, b) = (whole.model().weights().unwrap(), resumed.model().weights().unwrap());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(bits(t), bits(&b[name]), "weight {name} differs after resume");
    }
    let (a, b) = (whole.ema_weights(), resumed.ema_weights());
    for (name, t) in &a {
        assert_eq!(bits(t), bits(&b[name]), "EMA {name} differs after resume");
    }
    // The checkpoint also loads as plain weights for sampling (EMA by default).
    let model = maskdit::weights::load(&ckpt, &tiny_config(), maskdit::WeightSet::Ema, DType::F32, &Device::Cpu);
    assert!(model.is_ok(), "{:?}", model.err());
}

/// Three steps in bf16 against three in f32 from the same start, on a shard drawn from `seed`
/// and with the trainer seeded by `seed`: the largest relative difference of a step's loss,
/// and the relative L2 difference of the weights' updates. Also checks that the bf16 run's
/// master weights stay f32 and that the f32 run moved.
fn bf16_against_f32(seed: u64) -> (f64, f64) {
    let dir = Scratch::new(&format!("bf16-{seed}"));
    let data = shard(&dir, seed);
    let open = || -> Box<dyn Dataset> { Box::new(ShardDataset::open(std::slice::from_ref(&data), 0.18215).unwrap()) };
    let run = |precision| {
        let options = TrainOptions { precision, seed, ..options(3) };
        let mut trainer = Trainer::new(tiny_config(), options, open(), Start::Fresh, &Device::Cpu).unwrap();
        let start = trainer.model().weights().unwrap();
        let losses: Vec<f64> = (0..3).map(|_| trainer.train_step().unwrap().loss).collect();
        (start, trainer.model().weights().unwrap(), losses)
    };
    let (start, f32_weights, f32_losses) = run(Precision::F32);
    let (_, bf16_weights, bf16_losses) = run(Precision::Bf16);
    let losses = f32_losses.iter().zip(&bf16_losses).map(|(a, b)| (a - b).abs() / a.abs()).fold(0.0, f64::max);
    let (mut moved, mut diff) = (0f64, 0f64);
    for (name, w) in &bf16_weights {
        assert_eq!(w.dtype(), DType::F32, "{name} is not f32");
        let update_f32 = (&f32_weights[name] - &start[name]).unwrap();
        let update_bf16 = (w - &start[name]).unwrap();
        let sum_sq = |t: Tensor| t.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        moved += sum_sq(update_f32.clone());
        diff += sum_sq((&update_bf16 - &update_f32).unwrap());
    }
    assert!(moved > 0.0, "the f32 run did not move");
    (losses, (diff / moved).sqrt())
}

// Budgets: 1.5× the worst of 1,000 seeds, rounded up (`bf16_training_spread_over_seeds`,
// measured 2026-11-30): a step's loss worst 6.54e-6, 99.9th 6.45e-6 (small because a fresh
// adaLN-Zero network outputs zero, so the early losses hardly depend on the network); the
// updates worst 1.354e-1, 99.9th 1.328e-1.
const BF16_LOSS_BUDGET: f64 = 1e-5;
const BF16_UPDATE_BUDGET: f64 = 0.21;

#[test]
fn bf16_mixed_precision_tracks_f32_training_on_f32_master_weights() {
    for seed in 0..3 {
        let (losses, updates) = bf16_against_f32(seed);
        eprintln!("seed {seed}: bf16 vs f32 losses within {losses:.3e}, updates {updates:.3e}");
        assert!(losses <= BF16_LOSS_BUDGET, "seed {seed}: a bf16 loss differs from f32 by {losses:.3e}");
        assert!(updates <= BF16_UPDATE_BUDGET, "seed {seed}: bf16 updates differ from f32 ones by {updates:.3e}");
    }
}

/// The spread the bf16 training budgets come from, over seeds 0..1000:
/// `cargo test -p maskdit-tests --test training -- --ignored --nocapture bf16_training_spread`.
#[test]
#[ignore = "a measurement that sets the bf16 budgets; prints, asserts nothing"]
fn bf16_training_spread_over_seeds() {
    let (losses, updates): (Vec<f64>, Vec<f64>) = (0..1000).map(bf16_against_f32).unzip();
    let (lw, lq) = worst_and_quantile(&losses, 0.999);
    let (uw, uq) = worst_and_quantile(&updates, 0.999);
    println!("losses: worst {lw:.3e}, 99.9th {lq:.3e}; updates: worst {uw:.3e}, 99.9th {uq:.3e}");
}

#[test]
fn trains_from_an_lmdb_in_the_official_layout() {
    let scratch = Scratch::new("lmdb");
    let dir = scratch.join("train");
    let mut writer = LmdbWriter::create(&dir, 1 << 24).unwrap();
    let moments = SeededTensors::new(2).normal(0.0, 1.0, (8, 8, 8, 8));
    for i in 0..8 {
        let m = moments.get(i).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        writer.push(&m, i % 5).unwrap();
    }
    writer.finish().unwrap();
    let flipped = LmdbDataset::open(&dir, 4, 8, true, 0.18215).unwrap();
    assert_eq!(flipped.len(), 8, "with xflip the flipped copies are used too");
    flipped.close();
    let dataset = LmdbDataset::open(&dir, 4, 8, false, 0.18215).unwrap();
    assert_eq!(dataset.len(), 4, "without xflip only the first half (originals) is used");
    let mut options = options(2);
    options.batch_size = 4;
    let mut trainer = Trainer::new(tiny_config(), options, Box::new(dataset), Start::Fresh, &Device::Cpu).unwrap();
    let before = trainer.model().weights().unwrap();
    while !trainer.finished() {
        assert!(trainer.train_step().unwrap().loss.is_finite());
    }
    let after = trainer.model().weights().unwrap();
    // adaLN-Zero: from a fresh start only the output layer has a gradient at first.
    let key = "model.final_layer.linear.weight";
    assert_ne!(bits(&before[key]), bits(&after[key]), "training did not move {key}");
    assert!(LmdbDataset::open(&dir.join("missing"), 4, 8, false, 0.18215).is_err());
}

#[test]
fn reads_an_lmdb_written_by_python_lmdb() {
    // Written by scripts/make-lmdb-fixture.py through python-lmdb, as the official data
    // preparation writes its latents.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/python-lmdb");
    let dataset = LmdbDataset::open(&dir, 4, 8, true, 0.18215).unwrap();
    assert_eq!(dataset.len(), 6);
    assert_eq!(dataset.dims(), [4, 8, 8]);
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(0);
    for i in 0..6 {
        let example = dataset.get(i, &mut rng).unwrap();
        assert_eq!(example.label, Some(i % 3), "label of example {i}");
        assert_eq!(example.values.len(), 4 * 8 * 8);
        for (j, &v) in example.values.iter().enumerate() {
            let mean = ((i + 1) as f32 * 0.01) * ((j % 17) as f32 - 8.0);
            assert!((v - 0.18215 * mean).abs() <= 1e-6, "example {i} value {j}: {v} vs {}", 0.18215 * mean);
        }
    }
    dataset.close();
}

#[test]
fn a_nan_loss_stops_the_run_with_an_error() {
    let dir = Scratch::new("nan");
    let images = SeededTensors::new(3).uniform(-1.0, 1.0, (4, 4, 8, 8));
    let path = dir.join("images.safetensors");
    write_shard(&path, "images", &images, Some(&[0, 1, 2, 3])).unwrap();
    let dataset = ShardDataset::open(&[path], 0.18215).unwrap();
    let mut options = options(10);
    // A learning rate that throws the weights to ~1e30 in one step: the next loss overflows.
    (options.batch_size, options.grad_accum, options.lr, options.lr_rampup_kimg) = (4, 1, 1e30, 0.0);
    let mut trainer = Trainer::new(tiny_config(), options, Box::new(dataset), Start::Fresh, &Device::Cpu).unwrap();
    let err = loop {
        let before = trainer.model().weights().unwrap();
        match trainer.train_step() {
            Ok(report) => assert!(report.step < 5, "the loss stayed finite"),
            Err(err) => {
                let after = trainer.model().weights().unwrap();
                assert!(before.iter().all(|(k, v)| bits(v) == bits(&after[k])), "weights changed by a failed step");
                break err;
            }
        }
    };
    assert!(matches!(err, Error::NonFinite { step: 2.., .. }), "{err}");
}

#[test]
fn bad_training_data_is_refused_before_the_first_step() {
    let dir = Scratch::new("bad-data");
    let device = Device::Cpu;
    let shard = |name: &str, data: (&str, Tensor), labels: Tensor| -> PathBuf {
        let path = dir.join(format!("{name}.safetensors"));
        let tensors = std::collections::HashMap::from([(data.0.to_string(), data.1), ("labels".to_string(), labels)]);
        maskdit::weights::save(&tensors, &path).unwrap();
        path
    };
    let images = || ("images", Tensor::zeros((2, 4, 8, 8), DType::F32, &device).unwrap());
    let refused = |path: PathBuf, says: &str| {
        let err = ShardDataset::open(&[path], 0.18215).unwrap_err();
        assert!(matches!(err, Error::Data { .. }) && err.to_string().contains(says), "{says}: {err}");
    };
    refused(shard("negative", images(), Tensor::new(&[0i64, -1], &device).unwrap()), "label -1");
    refused(shard("fractional", images(), Tensor::new(&[0f32, 1.5], &device).unwrap()), "label 1.5");
    let bytes_as_floats = ("images", Tensor::full(200f32, (2, 4, 8, 8), &device).unwrap());
    refused(shard("pixels", bytes_as_floats, Tensor::new(&[0i64, 1], &device).unwrap()), "[-1, 1]");
    let nan_moments = ("moments", Tensor::full(f32::NAN, (2, 8, 8, 8), &device).unwrap());
    refused(shard("nan", nan_moments, Tensor::new(&[0i64, 1], &device).unwrap()), "NaN");
    // A label the model has no class for is found when the run is set up, not when it is drawn.
    let out_of_range = shard("range", images(), Tensor::new(&[0i64, 7], &device).unwrap());
    let dataset = ShardDataset::open(&[out_of_range], 0.18215).unwrap();
    let err = Trainer::new(tiny_config(), options(1), Box::new(dataset), Start::Fresh, &device).unwrap_err();
    assert!(err.to_string().contains("example 1 has label 7") && err.to_string().contains("5 classes"), "{err}");
}

#[test]
fn mismatched_data_is_rejected() {
    let dir = Scratch::new("mismatch");
    let images = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap();
    let path = dir.join("mnist-like.safetensors");
    write_shard(&path, "images", &images, Some(&[0, 1])).unwrap();
    let dataset = ShardDataset::open(&[path], 0.18215).unwrap();
    let err = Trainer::new(tiny_config(), options(1), Box::new(dataset), Start::Fresh, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

#[test]
fn one_set_of_a_training_checkpoint_is_read_without_the_others() {
    let dir = Scratch::new("one-set");
    let data = ShardDataset::open(&[shard(&dir, 1)], 0.18215).unwrap();
    let mut trainer = Trainer::new(tiny_config(), options(2), Box::new(data), Start::Fresh, &Device::Cpu).unwrap();
    trainer.train_step().unwrap();
    let path = dir.join("0000001.safetensors");
    trainer.save(&path).unwrap();
    for set in [maskdit::WeightSet::Ema, maskdit::WeightSet::Model] {
        let before = maskdit_io::bytes_read_on_this_thread();
        let weights = maskdit::weights::read_tensors(&path, set).unwrap();
        let read = maskdit_io::bytes_read_on_this_thread() - before;
        let set_bytes: u64 = weights.values().map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64).sum();
        assert_eq!(read, set_bytes, "{set:?}: read {read} bytes for a set of {set_bytes}");
        // The file holds four sets (weights, EMA and both AdamW moments, less the frozen tables).
        assert!(read * 3 < std::fs::metadata(&path).unwrap().len(), "{set:?}");
    }
}

#[test]
fn a_fine_tune_starts_from_an_official_checkpoint_as_the_cli_does() {
    let case = maskdit_tests::cases_of(maskdit_tests::CaseKind::Model)
        .into_iter()
        .find(|case| case.join("checkpoint.pt").exists())
        .expect("a case with an official training checkpoint");
    let checkpoint = case.join("checkpoint.pt");
    let config = ModelConfig::from_json(&std::fs::read_to_string(case.join("config.json")).unwrap()).unwrap();
    let (start, report) = maskdit_train::start_from_checkpoint(&checkpoint, &config, false).unwrap();
    assert!(report.skipped.is_empty() && report.initialised.is_empty() && report.ema_from_model.is_none());
    let Start::From { model, ema: Some(ema) } = start else { panic!("no EMA taken from the checkpoint") };
    let name = "model.final_layer.linear.weight";
    assert_ne!(bits(&model[name]), bits(&ema[name]), "model and EMA weights are the checkpoint's two sets");

    // Other classes: the label embedding is an expected difference, taken fresh and reported.
    let mut other_classes = config.clone();
    other_classes.num_classes += 3;
    let (start, report) = maskdit_train::start_from_checkpoint(&checkpoint, &other_classes, false).unwrap();
    assert!(report.initialised.iter().all(|n| n.starts_with("model.y_embedder.")), "{:?}", report.initialised);
    assert!(!report.skipped.is_empty(), "the checkpoint's label embedding does not fit and is skipped");
    let Start::From { model, ema: Some(ema) } = start else { panic!("no EMA") };
    assert_eq!(model.len(), ema.len());

    // A deeper model misses whole blocks: refused unless a partial start is allowed.
    let mut deeper = config.clone();
    deeper.depth += 1;
    let Err(err) = maskdit_train::start_from_checkpoint(&checkpoint, &deeper, false) else {
        panic!("a checkpoint missing whole blocks was taken without --allow-partial")
    };
    assert!(matches!(err, Error::Checkpoint { .. }) && err.to_string().contains("--allow-partial"), "{err}");
    let (_, report) = maskdit_train::start_from_checkpoint(&checkpoint, &deeper, true).unwrap();
    assert!(report.initialised.iter().any(|n| n.starts_with(&format!("model.blocks.{}.", config.depth))));
}

#[test]
fn a_run_folder_resumes_its_latest_checkpoint_and_cuts_its_log_back() {
    let dir = Scratch::new("run-folder");
    let data = shard(&dir, 4);
    let open = || -> Box<dyn Dataset> { Box::new(ShardDataset::open(std::slice::from_ref(&data), 0.18215).unwrap()) };
    let run = maskdit_train::RunFolder::new(dir.join("run"));
    run.create().unwrap();
    assert_eq!(run.latest().unwrap(), None);
    let mut trainer = Trainer::new(tiny_config(), options(5), open(), Start::Fresh, &Device::Cpu).unwrap();
    for _ in 0..3 {
        let report = trainer.train_step().unwrap();
        run.append_log(&serde_json::json!({"step": report.step, "loss": report.loss})).unwrap();
        if report.step < 3 {
            trainer.save(&run.checkpoint(report.step)).unwrap();
        }
    }
    assert_eq!(run.checkpoints().unwrap(), [run.checkpoint(1), run.checkpoint(2)]);
    // Interrupted after step 3, whose checkpoint was never written: resume from step 2.
    let resumed = run.resume(open(), &Device::Cpu).unwrap();
    assert_eq!(resumed.step_count(), 2);
    run.forget_log_after(resumed.step_count()).unwrap();
    assert_eq!(std::fs::read_to_string(run.log()).unwrap().lines().count(), 2);
    maskdit_train::check_same_run(&resumed, &tiny_config(), &options(9)).unwrap();
    let changed = TrainOptions { lr: 2e-3, ..options(5) };
    let err = maskdit_train::check_same_run(&resumed, &tiny_config(), &changed).unwrap_err().to_string();
    assert!(err.contains("lr 0.002"), "{err}");
    // A damaged latest checkpoint: the error names the one before it.
    std::fs::write(run.checkpoint(2), b"damaged").unwrap();
    let Err(err) = run.resume(open(), &Device::Cpu) else { panic!("a damaged checkpoint was resumed") };
    let (latest, previous) = (run.checkpoint(2), run.checkpoint(1));
    let err = err.to_string();
    assert!(err.contains(&*latest.to_string_lossy()) && err.contains(&*previous.to_string_lossy()), "{err}");
}
