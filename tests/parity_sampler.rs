//! Parity of the samplers with the reference, driven by the recorded noise of every model case,
//! and per-image determinism of seeded sampling.

use std::collections::HashMap;
use std::ops::ControlFlow;

use candle_core::{DType, Tensor};
use maskdit_sampler::{DdpmOptions, EdmOptions, Guided, RecordedNoise, Sampler, SeededNoise};
use maskdit_tests::{assert_close, case_model as model, cases_of, get, load, scalar, stop_after, CaseKind};

const SAMPLER_TOLERANCE: f64 = 1e-4;

fn text_option(refs: &HashMap<String, Tensor>, key: &str) -> Option<String> {
    refs.get(key).map(|t| String::from_utf8(t.to_vec1::<u8>().unwrap()).unwrap())
}

fn number_option(refs: &HashMap<String, Tensor>, key: &str) -> Option<f64> {
    refs.contains_key(key).then(|| scalar(refs, key))
}

/// A sampler option by its name, as the command line spells it.
fn choice<T: clap::ValueEnum>(name: &str) -> T {
    T::from_str(name, false).unwrap_or_else(|e| panic!("unknown option `{name}`: {e}"))
}

/// The EDM-family options recorded in a reference file (`opt.*`), on the reference defaults.
fn edm_options(refs: &HashMap<String, Tensor>) -> EdmOptions {
    let mut o = EdmOptions::heun(number_option(refs, "opt.num_steps").expect("opt.num_steps") as usize);
    if let Some(v) = text_option(refs, "opt.solver") {
        o.solver = choice(&v);
    }
    if let Some(v) = text_option(refs, "opt.discretization") {
        o.discretization = choice(&v);
    }
    if let Some(v) = text_option(refs, "opt.schedule") {
        o.schedule = choice(&v);
    }
    if let Some(v) = text_option(refs, "opt.scaling") {
        o.scaling = choice(&v);
    }
    o.sigma_min = number_option(refs, "opt.sigma_min");
    o.sigma_max = number_option(refs, "opt.sigma_max");
    if let Some(v) = number_option(refs, "opt.rho") {
        o.rho = v;
    }
    if let Some(v) = number_option(refs, "opt.S_churn") {
        o.s_churn = v;
    }
    if let Some(v) = number_option(refs, "opt.S_min") {
        o.s_min = v;
    }
    if let Some(v) = number_option(refs, "opt.S_max") {
        o.s_max = v;
    }
    if let Some(v) = number_option(refs, "opt.S_noise") {
        o.s_noise = v;
    }
    if let Some(v) = number_option(refs, "opt.alpha") {
        o.alpha = v;
    }
    for key in refs.keys().filter(|k| k.starts_with("opt.")) {
        let known = [
            "num_steps",
            "solver",
            "discretization",
            "schedule",
            "scaling",
            "sigma_min",
            "sigma_max",
            "rho",
            "S_churn",
            "S_min",
            "S_max",
            "S_noise",
            "alpha",
        ];
        assert!(known.contains(&&key[4..]), "sampler option `{key}` is not understood by this test");
    }
    o
}

#[test]
fn every_sampler_reference_is_matched() {
    let mut checked = 0;
    for case in cases_of(CaseKind::Model) {
        let net = model(&case);
        let mut files: Vec<_> = std::fs::read_dir(&case)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("sampler_"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no sampler references", case.display());
        for file in files {
            let refs = load(&file);
            // Unconditional references carry neither labels nor a guidance scale.
            let scale = if refs.contains_key("cfg_scale") { scalar(&refs, "cfg_scale") } else { 1.0 };
            assert_eq!(refs.contains_key("labels"), net.config().num_classes > 0, "{}", file.display());
            let guided = Guided::new(&net, scale);
            let labels = refs.get("labels");
            let (sampler, start, noise) = if refs.contains_key("x_T") {
                let o = DdpmOptions::new(scalar(&refs, "num_steps") as usize);
                let want: Vec<i64> = get(&refs, "timesteps").to_vec1().unwrap();
                let got: Vec<i64> = o.timesteps().into_iter().map(|t| t as i64).collect();
                assert_eq!(got, want, "{}: DDPM timesteps", file.display());
                (Sampler::Ddpm(o), get(&refs, "x_T"), get(&refs, "noise"))
            } else {
                (Sampler::Edm(edm_options(&refs)), get(&refs, "latents"), get(&refs, "churn_noise"))
            };
            let mut steps_seen = Vec::new();
            let out = sampler
                .sample(&guided, start, labels, &mut RecordedNoise::new(noise.clone()), &mut |step| {
                    steps_seen.push((step.index, step.sigma));
                    ControlFlow::Continue(())
                })
                .unwrap();
            let indices: Vec<usize> = steps_seen.iter().map(|s| s.0).collect();
            assert_eq!(indices, (0..sampler.num_steps()).collect::<Vec<_>>(), "{}: steps seen", file.display());
            assert_close(&file.display().to_string(), &out, get(&refs, "out"), SAMPLER_TOLERANCE);
            if let Sampler::Edm(o) = &sampler {
                // The explicit-σ entry point over the sampler's own levels is the same run.
                let explicit = o
                    .sample_sigmas(
                        &guided,
                        start,
                        labels,
                        &mut RecordedNoise::new(noise.clone()),
                        &o.sigma_steps(),
                        &mut |_| ControlFlow::Continue(()),
                    )
                    .unwrap();
                assert_close(&format!("{} explicit sigmas", file.display()), &explicit, &out, 0.0);
                if o.s_churn == 0.0 {
                    let seen: Vec<f64> = steps_seen.iter().map(|s| s.1).collect();
                    let want = o.sigma_steps();
                    assert!(
                        seen.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-9 * b),
                        "{}: σ seen",
                        file.display()
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn an_image_depends_on_its_seed_only() {
    let case = cases_of(CaseKind::Model).into_iter().next().unwrap();
    let net = model(&case);
    let c = net.config().clone();
    let image = [c.in_channels, c.input_size, c.input_size];
    let mut o = EdmOptions::heun(4);
    o.s_churn = 20.0; // exercise per-step noise too
    let guided = Guided::new(&net, 1.5);
    let sample = |seeds: &[u64]| -> Tensor {
        let mut noise = SeededNoise::new(seeds);
        let latents = noise.latents(&image, &maskdit_tests::device()).unwrap();
        let classes = noise.class_indices(c.num_classes);
        let labels = maskdit::one_hot(classes, c.num_classes, &maskdit_tests::device()).unwrap();
        o.sample(&guided, &latents, Some(&labels), &mut noise, &mut |_| ControlFlow::Continue(())).unwrap()
    };
    let batch = sample(&[3, 11, 42]);
    let alone = sample(&[11]);
    let diff = (batch.get(1).unwrap() - alone.get(0).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "image of seed 11 changed with its batch");
    let other = (batch.get(0).unwrap() - alone.get(0).unwrap()).unwrap().abs().unwrap().max_all().unwrap();
    assert!(other.to_scalar::<f32>().unwrap() > 0.0, "different seeds gave the same image");
}

#[test]
fn the_step_hook_stops_a_run() {
    let net = model(&cases_of(CaseKind::Model)[0]);
    let c = net.config().clone();
    let mut noise = SeededNoise::new(&[0, 1]);
    let latents = noise.latents(&[c.in_channels, c.input_size, c.input_size], &maskdit_tests::device()).unwrap();
    let labels = (c.num_classes > 0)
        .then(|| maskdit::one_hot([0, c.num_classes - 1], c.num_classes, &maskdit_tests::device()).unwrap());
    for sampler in [Sampler::Edm(EdmOptions::heun(6)), Sampler::Ddpm(DdpmOptions::new(6))] {
        let mut seen = 0;
        let err =
            sampler.sample(&net, &latents, labels.as_ref(), &mut noise, &mut stop_after(2, &mut seen)).unwrap_err();
        assert!(matches!(err, maskdit_sampler::Error::Stopped { done: 2, total: 6 }), "{err}");
        assert_eq!(seen, 2, "the run went on after the hook said stop");
    }
}

#[test]
fn bad_options_are_rejected() {
    use clap::ValueEnum;
    assert!(maskdit_sampler::Solver::from_str("rk4", false).is_err());
    assert!(maskdit_sampler::Discretization::from_str("cosine", false).is_err());
    let net = model(&cases_of(CaseKind::Model)[0]);
    let c = net.config();
    let latents =
        Tensor::zeros((1, c.in_channels, c.input_size, c.input_size), DType::F32, &maskdit_tests::device()).unwrap();
    let mut noise = SeededNoise::new(&[0]);
    for sampler in
        [Sampler::Edm(EdmOptions::heun(1)), Sampler::Ddpm(DdpmOptions::new(0)), Sampler::Ddpm(DdpmOptions::new(1001))]
    {
        let err = sampler.sample(&net, &latents, None, &mut noise, &mut |_| ControlFlow::Continue(())).unwrap_err();
        assert!(matches!(err, maskdit_sampler::Error::Option(_)), "{err}");
    }
}
