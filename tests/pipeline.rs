//! The sampling pipeline: per-seed determinism, classes given or drawn, stopping, refusals.

use std::ops::ControlFlow;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use maskdit::weights;
use maskdit_pipeline::{Decoder, Error, Pipeline};
use maskdit_sampler::{EdmOptions, Sampler, Step};
use maskdit_tests::{case_model as model, cases_of, CaseKind};

/// The first class-conditional case's model, with churn so that per-step noise is drawn too.
fn conditional() -> Pipeline {
    let model = cases_of(CaseKind::Model).iter().map(|c| model(c)).find(|m| m.config().num_classes > 0).unwrap();
    let sampler = Sampler::Edm(EdmOptions { s_churn: 20.0, ..EdmOptions::heun(4) });
    Pipeline::new(model, Decoder::Pixels, sampler).with_guidance(1.5, None).unwrap()
}

fn keep_going(_: &Step<'_>) -> ControlFlow<()> {
    ControlFlow::Continue(())
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

#[test]
fn an_image_depends_on_its_seed_and_class_only() {
    let pipeline = conditional();
    let classes = pipeline.model().config().num_classes;
    let batch = pipeline.sample(&[3, 11, 42], None, &mut keep_going).unwrap();
    let alone = pipeline.sample(&[11], None, &mut keep_going).unwrap();
    assert_eq!(bits(&batch.get(1).unwrap()), bits(&alone.get(0).unwrap()), "seed 11 changed with its batch");
    assert_ne!(bits(&batch.get(0).unwrap()), bits(&alone.get(0).unwrap()), "different seeds, same sample");
    // A class drawn from the seed, given explicitly, gives the same sample: the draw happens
    // either way, so the later noise stays the same.
    let config = pipeline.model().config();
    let mut stream = maskdit_sampler::SeededNoise::new(&[11]);
    stream.latents(&[config.in_channels, config.input_size, config.input_size], &Device::Cpu).unwrap();
    let drawn = stream.class_indices(classes);
    let given = pipeline.sample(&[11], Some(&drawn), &mut keep_going).unwrap();
    assert_eq!(bits(&given), bits(&alone), "giving the drawn class changed the sample");
    let other = pipeline.sample(&[11], Some(&[(drawn[0] + 1) % classes]), &mut keep_going).unwrap();
    assert_ne!(bits(&other), bits(&alone), "the class made no difference");
}

#[test]
fn the_step_hook_stops_the_run() {
    let pipeline = conditional();
    let mut seen = 0;
    let err = pipeline.sample(&[0, 1], None, &mut maskdit_tests::stop_after(2, &mut seen)).unwrap_err();
    assert!(matches!(err, Error::Sampler(maskdit_sampler::Error::Stopped { done: 2, total: 4 })), "{err}");
    assert_eq!(seen, 2);
}

#[test]
fn requests_that_do_not_fit_the_model_are_refused() {
    let pipeline = conditional();
    let classes = pipeline.model().config().num_classes;
    for (seeds, given) in [(&[0u64, 1][..], vec![0]), (&[0][..], vec![classes])] {
        let err = pipeline.sample(seeds, Some(&given), &mut keep_going).unwrap_err();
        assert!(matches!(err, Error::Request(_)), "{err}");
    }
    assert!(matches!(pipeline.sample(&[], None, &mut keep_going), Err(Error::Request(_))));
    for scale in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(conditional().with_guidance(scale, None), Err(Error::Request(_))), "scale {scale}");
    }
    let unconditional = cases_of(CaseKind::Model).iter().map(|c| model(c)).find(|m| m.config().num_classes == 0);
    let unconditional = Pipeline::new(unconditional.unwrap(), Decoder::Pixels, Sampler::Edm(EdmOptions::heun(2)));
    let err = unconditional.clone().with_guidance(1.5, None).unwrap_err();
    assert!(err.to_string().contains("class-conditional"), "{err}");
    let unconditional = unconditional.with_guidance(1.0, None).unwrap();
    assert!(matches!(unconditional.sample(&[0], Some(&[0]), &mut keep_going), Err(Error::Request(_))));
    assert_eq!(unconditional.sample(&[0, 5], None, &mut keep_going).unwrap().dim(0).unwrap(), 2);
}

#[test]
fn non_finite_samples_are_an_error_that_names_the_seeds() {
    let pipeline = conditional();
    let broken = Pipeline::new(pipeline.model().clone(), Decoder::Pixels, Sampler::Edm(EdmOptions::heun(2)))
        .with_guidance(1e300, None)
        .unwrap();
    let err = broken.sample(&[4, 9], None, &mut keep_going).unwrap_err();
    assert!(matches!(err, Error::NonFinite { first: 4, last: 9, .. }), "{err}");
}

#[test]
fn the_embedded_model_makes_digit_images() {
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry/assets/mnist.safetensors")).unwrap();
    let model = weights::load_bytes(&bytes, DType::F32, &Device::Cpu).unwrap();
    let pipeline = Pipeline::new(model, Decoder::Pixels, Sampler::Edm(EdmOptions::heun(3)));
    assert_eq!(pipeline.image_side(), 28);
    let images = pipeline.images(&[0, 1, 2], Some(&[7, 7, 3]), &mut keep_going).unwrap();
    assert_eq!(images.len(), 3);
    assert!(images.iter().all(|i| (i.width(), i.height()) == (28, 28) && i.color() == image::ColorType::L8));
}
