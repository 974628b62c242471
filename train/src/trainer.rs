//! The training loop: batches, masks, loss, AdamW, EMA, and checkpoints that resume exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use maskdit::{Mask, ModelConfig};

use crate::data::Dataset;
use crate::{
    ramped_lr, AdamW, AdamWConfig, EdmLoss, Ema, Error, MaskSchedule, Result, TrainableModel, TrainingCheckpoint,
};

/// Settings of a training run (serialised into its checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Examples per optimiser step (all micro-batches together).
    pub batch_size: usize,
    /// Micro-batches per step (gradient accumulation); `batch_size` must divide evenly.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning-rate warm-up, in thousands of examples.
    pub lr_rampup_kimg: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// EMA decay per step.
    pub ema_decay: f64,
    /// Mask-ratio curve name (`constant`, `cosine2`…`cosine6`, `exp`, `linear`).
    pub mask_schedule: String,
    /// Mask ratio (the curve's scale).
    pub mask_ratio: f64,
    /// Mask-ratio floor of the curve.
    pub mask_ratio_min: f64,
    /// Weight of the MAE loss in masked steps.
    pub mae_loss_coef: f64,
    /// Probability that an example's label row is zeroed (trains the null label for guidance).
    pub class_dropout_prob: f64,
    /// Random horizontal flips of the examples.
    pub xflip: bool,
    /// Steps of the whole run (the mask schedule's time scale and the stopping point).
    pub max_steps: u64,
    /// Seed of all training randomness.
    pub seed: u64,
    /// Mean of ln σ in the EDM loss (EDM and the official recipes: −1.2).
    #[serde(default = "default_p_mean")]
    pub p_mean: f64,
    /// Standard deviation of ln σ in the EDM loss (EDM and the official recipes: 1.2).
    #[serde(default = "default_p_std")]
    pub p_std: f64,
    /// Arithmetic of the forward and backward passes (weights, optimiser and EMA stay f32).
    #[serde(default)]
    pub precision: Precision,
}

fn default_p_mean() -> f64 {
    -1.2
}

fn default_p_std() -> f64 {
    1.2
}

/// Arithmetic of a training step's forward and backward passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: the network runs on bf16 copies of the f32 master weights; gradients
    /// flow back through the casts into the f32 weights; preconditioning and loss stay f32.
    Bf16,
}

impl Precision {
    /// The dtype the network computes in.
    pub fn compute_dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
        }
    }
}

impl TrainOptions {
    fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 || self.grad_accum == 0 || !self.batch_size.is_multiple_of(self.grad_accum) {
            return fail(format!(
                "batch size {} must be a positive multiple of grad_accum {}",
                self.batch_size, self.grad_accum
            ));
        }
        if self.lr.is_nan() || self.lr <= 0.0 {
            return fail(format!("learning rate {} must be positive", self.lr));
        }
        if !(0.0..=1.0).contains(&self.ema_decay) || !(0.0..=1.0).contains(&self.class_dropout_prob) {
            return fail("ema_decay and class_dropout_prob must lie in [0, 1]".into());
        }
        if !(self.p_std.is_finite() && self.p_std > 0.0 && self.p_mean.is_finite()) {
            return fail(format!(
                "the noise distribution needs a finite P_mean and P_std > 0, got {} and {}",
                self.p_mean, self.p_std
            ));
        }
        if self.max_steps == 0 {
            return fail("max_steps must be positive".into());
        }
        MaskSchedule::parse(&self.mask_schedule, self.mask_ratio, self.mask_ratio_min)?;
        Ok(())
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepReport {
    /// Steps done after this one.
    pub step: u64,
    /// Mean loss of the step's examples.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Mask ratio used.
    pub mask_ratio: f64,
}

/// Where the run stands: everything besides weights needed to continue it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps done.
    pub step: u64,
    /// Passes over the data begun.
    pub epoch: u64,
    /// Position within the current pass.
    pub cursor: usize,
    /// Seed of the training random stream.
    pub rng_seed: String,
    /// Word position of the training random stream.
    pub rng_word_pos: String,
}

/// A training run.
pub struct Trainer {
    config: ModelConfig,
    options: TrainOptions,
    model: TrainableModel,
    opt: AdamW,
    ema: Ema,
    loss: EdmLoss,
    schedule: MaskSchedule,
    dataset: Box<dyn Dataset>,
    order: Vec<usize>,
    rng: ChaCha12Rng,
    step: u64,
    epoch: u64,
    cursor: usize,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("options", &self.options)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// How a run starts.
pub enum Start {
    /// Fresh weights, drawn from the run's seed.
    Fresh,
    /// Given weights (official names) for the model and, optionally, for the EMA (else a copy).
    From {
        /// Model weights.
        model: HashMap<String, Tensor>,
        /// EMA weights.
        ema: Option<HashMap<String, Tensor>>,
    },
}

impl Trainer {
    /// Starts a run of `config` on `dataset`.
    pub fn new(
        config: ModelConfig,
        options: TrainOptions,
        dataset: Box<dyn Dataset>,
        start: Start,
        device: &Device,
    ) -> Result<Self> {
        options.validate()?;
        let [c, h, w] = dataset.dims();
        if c != config.in_channels || h != config.input_size || w != config.input_size {
            return Err(Error::Config(format!(
                "the data holds {c}×{h}×{w} examples but the model takes {}×{}×{}",
                config.in_channels, config.input_size, config.input_size
            )));
        }
        if dataset.is_empty() {
            return Err(Error::Input("the dataset is empty".into()));
        }
        dataset.check(config.num_classes)?;
        let mut rng = ChaCha12Rng::seed_from_u64(options.seed);
        let (model, ema) = match start {
            Start::Fresh => (TrainableModel::fresh(&config, &mut rng, device)?, None),
            Start::From { model, ema } => (TrainableModel::from_tensors(&config, model, device)?, ema),
        };
        let ema = match ema {
            Some(mut ema) => {
                let shadow = model
                    .all_params()
                    .into_iter()
                    .map(|(name, var)| {
                        let t = ema.remove(&name).ok_or_else(|| Error::Input(format!("EMA weights lack `{name}`")))?;
                        Ok((name, t.to_dtype(DType::F32)?.to_device(var.device())?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ema::from_tensors(shadow, options.ema_decay)?
            }
            None => Ema::new(&model.all_params(), options.ema_decay)?,
        };
        let opt_config = AdamWConfig { lr: options.lr, weight_decay: options.weight_decay, ..AdamWConfig::default() };
        let opt = AdamW::new(model.trainable_params(), opt_config)?;
        let schedule = MaskSchedule::parse(&options.mask_schedule, options.mask_ratio, options.mask_ratio_min)?;
        let loss = EdmLoss { p_mean: options.p_mean, p_std: options.p_std, ..EdmLoss::new(options.mae_loss_coef) };
        let mut trainer = Self {
            config,
            options,
            model,
            opt,
            ema,
            loss,
            schedule,
            dataset,
            order: Vec::new(),
            rng,
            step: 0,
            epoch: 0,
            cursor: 0,
        };
        trainer.order = trainer.epoch_order(0);
        Ok(trainer)
    }

    /// The visiting order of pass `epoch`, a function of the seed and the pass only.
    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        let mut rng =
            ChaCha12Rng::seed_from_u64(self.options.seed ^ (epoch.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
        order
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The run settings.
    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    /// Steps done.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Changes the planned number of steps (e.g. to extend a resumed run). The mask schedule
    /// follows the new length from here on.
    pub fn set_max_steps(&mut self, steps: u64) -> Result<()> {
        if steps == 0 {
            return Err(Error::Config("max_steps must be positive".into()));
        }
        self.options.max_steps = steps;
        Ok(())
    }

    /// Whether the planned steps are done.
    pub fn finished(&self) -> bool {
        self.step >= self.options.max_steps
    }

    /// The trained model.
    pub fn model(&self) -> &TrainableModel {
        &self.model
    }

    /// The EMA weights, by name; live views that the next step updates in place (copy them to
    /// keep them).
    pub fn ema_weights(&self) -> HashMap<String, Tensor> {
        self.ema.weights().iter().cloned().collect()
    }

    fn next_index(&mut self) -> usize {
        if self.cursor == self.order.len() {
            self.epoch += 1;
            self.cursor = 0;
            self.order = self.epoch_order(self.epoch);
        }
        self.cursor += 1;
        self.order[self.cursor - 1]
    }

    /// One micro-batch: images `(n, C, H, W)` and label rows `(n, classes)` (dropout applied).
    fn micro_batch(&mut self, n: usize, device: &Device) -> Result<(Tensor, Option<Tensor>)> {
        let [c, h, w] = self.dataset.dims();
        let classes = self.config.num_classes;
        let mut values = Vec::with_capacity(n * c * h * w);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let index = self.next_index();
            let mut example = self.dataset.get(index, &mut self.rng)?;
            if self.options.xflip && self.rng.random::<f64>() < 0.5 {
                for line in example.values.chunks_exact_mut(w) {
                    line.reverse();
                }
            }
            values.extend(example.values);
            if classes > 0 {
                if example.label >= classes {
                    return Err(Error::Input(format!(
                        "example {index} has label {} but the model has {classes} classes",
                        example.label
                    )));
                }
                let dropped = self.rng.random::<f64>() < self.options.class_dropout_prob;
                labels.push((!dropped).then_some(example.label));
            }
        }
        let images = Tensor::from_vec(values, (n, c, h, w), device)?;
        let labels = (classes > 0).then(|| maskdit::one_hot(labels, classes, device)).transpose()?;
        Ok((images, labels))
    }

    fn normal(&mut self, count: usize) -> Vec<f32> {
        (0..count).map(|_| Distribution::<f32>::sample(&StandardNormal, &mut self.rng)).collect()
    }

    /// One optimiser step over `batch_size` examples. A non-finite loss stops with an error
    /// before any weight changes.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let device = self.model.model().device().clone();
        let micro = self.options.batch_size / self.options.grad_accum;
        let progress = self.step as f64 / self.options.max_steps as f64;
        let mask_ratio = self.schedule.at(progress);
        let length = self.config.num_patches();
        let mut sum: Option<Vec<Tensor>> = None;
        let mut loss_total = 0.0;
        let compute_dtype = self.options.precision.compute_dtype();
        for _ in 0..self.options.grad_accum {
            let (images, labels) = self.micro_batch(micro, &device)?;
            let rnd_normal = Tensor::from_vec(self.normal(micro), micro, &device)?;
            let noise = Tensor::from_vec(self.normal(images.elem_count()), images.dims(), &device)?;
            let mask = if mask_ratio > 0.0 && maskdit::mask::kept_tokens(length, mask_ratio) < length {
                Some(Mask::random(micro, length, mask_ratio, &mut self.rng, &device)?)
            } else {
                None
            };
            let network = self.model.compute_model(compute_dtype)?;
            let per_sample =
                self.loss.per_sample(&network, &images, labels.as_ref(), &rnd_normal, &noise, mask.as_ref())?;
            let loss = (per_sample.sum_all()? / self.options.batch_size as f64)?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(Error::NonFinite { step: self.step + 1, loss: value });
            }
            loss_total += value;
            let grads = self.opt.gradients(&loss.backward()?)?;
            sum = Some(match sum {
                None => grads,
                Some(acc) => acc.iter().zip(&grads).map(|(a, g)| a + g).collect::<candle_core::Result<Vec<_>>>()?,
            });
        }
        let lr = ramped_lr(self.options.lr, self.step, self.options.batch_size, self.options.lr_rampup_kimg);
        self.opt.set_lr(lr);
        self.opt.step_with(&sum.expect("at least one micro-batch"))?;
        self.ema.update(&self.model.all_params())?;
        self.step += 1;
        Ok(StepReport { step: self.step, loss: loss_total, lr, mask_ratio })
    }

    /// Writes a checkpoint (weights, EMA, optimiser moments, run state) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (opt_state, opt_steps) = self.opt.state();
        let (seed, word_pos) = (self.rng.get_seed(), self.rng.get_word_pos());
        let state = RunState {
            step: self.step,
            epoch: self.epoch,
            cursor: self.cursor,
            rng_seed: seed.iter().map(|b| format!("{b:02x}")).collect(),
            rng_word_pos: word_pos.to_string(),
        };
        debug_assert_eq!(opt_steps, self.step);
        TrainingCheckpoint {
            config: self.config.clone(),
            options: serde_json::to_value(&self.options).map_err(|e| Error::Config(e.to_string()))?,
            state: serde_json::to_value(&state).map_err(|e| Error::Config(e.to_string()))?,
            model: self.model.weights()?,
            ema: self.ema_weights(),
            optimizer: opt_state.into_iter().collect(),
        }
        .write(path)
    }

    /// Continues the run saved at `path` on `dataset`, exactly where it stopped. The
    /// checkpoint's tensors are moved into the trainer, not held beside it.
    pub fn resume(path: &Path, dataset: Box<dyn Dataset>, device: &Device) -> Result<Self> {
        let TrainingCheckpoint { config, options, state, model, ema, optimizer } = TrainingCheckpoint::read(path)?;
        let bad = |what: &str| Error::Checkpoint { path: path.to_path_buf(), reason: format!("bad {what}") };
        let options: TrainOptions = serde_json::from_value(options).map_err(|_| bad("training options"))?;
        let state: RunState = serde_json::from_value(state).map_err(|_| bad("run state"))?;
        let start = Start::From { model, ema: Some(ema) };
        let mut trainer = Self::new(config, options, dataset, start, device)?;
        trainer.opt.restore(optimizer, state.step)?;
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(state.rng_seed.get(2 * i..2 * i + 2).ok_or_else(|| bad("random seed"))?, 16)
                .map_err(|_| bad("random seed"))?;
        }
        trainer.rng = ChaCha12Rng::from_seed(seed);
        trainer.rng.set_word_pos(state.rng_word_pos.parse().map_err(|_| bad("random position"))?);
        trainer.step = state.step;
        trainer.epoch = state.epoch;
        trainer.cursor = state.cursor;
        trainer.order = trainer.epoch_order(state.epoch);
        if trainer.cursor > trainer.order.len() {
            return Err(bad("data position (the dataset is smaller than when the run was saved)"));
        }
        Ok(trainer)
    }
}
