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
use maskdit_parallel::Collective;

use crate::data::Dataset;
use crate::{
    ramped_lr, AdamW, AdamWConfig, EdmLoss, Ema, Error, MaskSchedule, Result, TrainableModel, TrainingCheckpoint,
};

/// Settings of a training run (serialised into its checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Examples per optimiser step: all ranks and micro-batches together.
    pub batch_size: usize,
    /// Micro-batches per step and rank (gradient accumulation); each rank's share of
    /// `batch_size` must divide evenly. It changes only round-off, not the run.
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

/// Where the run stands: everything besides weights and settings needed to continue it
/// exactly. All randomness is a function of the seed and each example's place in the run
/// (step × batch + position), so the step alone says where to go on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimiser steps done.
    pub step: u64,
    /// Ranks the run was saved from (informative: a run resumes exactly on any number).
    #[serde(default = "one")]
    pub world_size: usize,
}

fn one() -> usize {
    1
}

/// Key of the per-example random streams, apart from the weight initialisation's.
const EXAMPLE_STREAM_KEY: u64 = 0x6D61_736B_6469_7431;

/// The random stream of the example at `position` of the run (`step × batch + index`): it
/// picks the latent's noise, the flip, the label dropout, σ, the noise and the mask, so that
/// any number of ranks and micro-batches draws exactly what one rank with the whole batch does.
pub fn example_rng(seed: u64, position: u64) -> ChaCha12Rng {
    let mut rng = ChaCha12Rng::seed_from_u64(seed ^ EXAMPLE_STREAM_KEY);
    rng.set_stream(position);
    rng
}

/// One micro-batch with its randomness, ready for the loss.
struct MicroBatch {
    images: Tensor,
    labels: Option<Tensor>,
    rnd_normal: Tensor,
    noise: Tensor,
    mask: Option<Mask>,
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
    /// The visiting order of pass `order_epoch`.
    order: Vec<usize>,
    order_epoch: u64,
    group: Option<Box<dyn Collective>>,
    step: u64,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("options", &self.options)
            .field("step", &self.step)
            .field("world_size", &self.world_size())
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
        match (config.num_classes, dataset.labeled()) {
            (0, true) => {
                return Err(Error::Config(
                    "the data has class labels but the model is unconditional (0 classes): give the model the data's \
                     classes, or drop the labels on purpose to train an unconditional model"
                        .into(),
                ))
            }
            (classes, false) if classes > 0 => {
                return Err(Error::Config(format!(
                    "the data has no class labels but the model has {classes} classes: train an unconditional model \
                     (0 classes) on it, or encode the images in one subfolder per class"
                )))
            }
            _ => {}
        }
        if options.batch_size > dataset.len() {
            return Err(Error::Config(format!(
                "the batch of {} examples is larger than the data's {}; lower --batch to at most {}",
                options.batch_size,
                dataset.len(),
                dataset.len()
            )));
        }
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
            order_epoch: 0,
            group: None,
            step: 0,
        };
        trainer.order = trainer.epoch_order(0);
        Ok(trainer)
    }

    /// Makes this trainer one rank of `group`: every rank takes `batch_size / world_size`
    /// examples of each step, gradients are summed over ranks before AdamW, and the weights and
    /// EMA start as rank 0's. Every rank must call this, with the same settings and data.
    pub fn join(&mut self, mut group: Box<dyn Collective>) -> Result<()> {
        let world = group.world_size();
        let (batch, accum) = (self.options.batch_size, self.options.grad_accum);
        if !batch.is_multiple_of(world) || !(batch / world).is_multiple_of(accum) {
            return Err(Error::Config(format!(
                "batch {batch} does not split over {world} ranks × {accum} micro-batches; choose a batch that is a \
                 multiple of {}",
                world * accum
            )));
        }
        let params = self.model.all_params();
        let tensors: Vec<Tensor> = params.iter().map(|(_, v)| v.as_tensor().clone()).collect();
        for ((_, var), value) in params.iter().zip(maskdit_parallel::broadcast_all(&mut *group, &tensors)?) {
            var.set(&value)?;
        }
        let shadow: Vec<Tensor> = self.ema.weights().iter().map(|(_, t)| t.clone()).collect();
        let shadow = maskdit_parallel::broadcast_all(&mut *group, &shadow)?;
        let names = self.ema.weights().iter().map(|(n, _)| n.clone());
        self.ema = Ema::from_tensors(names.zip(shadow).collect(), self.options.ema_decay)?;
        self.group = Some(group);
        Ok(())
    }

    /// This trainer's rank (0 alone).
    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.rank())
    }

    /// Number of ranks training together (1 alone).
    pub fn world_size(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.world_size())
    }

    /// Whether any rank passes `true` (every rank must call this at the same point): how ranks
    /// agree to stop together, e.g. on Ctrl-C.
    pub fn any_rank(&mut self, flag: bool) -> Result<bool> {
        let Some(group) = self.group.as_mut() else { return Ok(flag) };
        let total = maskdit_parallel::sum_scalars(&mut **group, &[f32::from(u8::from(flag))])?;
        Ok(total[0] > 0.0)
    }

    /// Waits for every rank at the end of the run, so that ranks leaving afterwards is no failure.
    pub fn finish(&mut self) -> Result<()> {
        match self.group.as_mut() {
            Some(group) => Ok(group.finish()?),
            None => Ok(()),
        }
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

    /// The dataset index of the example at `position` of the run.
    fn example_index(&mut self, position: u64) -> usize {
        let len = self.order.len() as u64;
        let epoch = position / len;
        if epoch != self.order_epoch {
            self.order = self.epoch_order(epoch);
            self.order_epoch = epoch;
        }
        self.order[(position % len) as usize]
    }

    /// The `n` examples from `position` of the run, with all their randomness: images
    /// `(n, C, H, W)`, label rows `(n, classes)` (dropout applied), σ's normals, the noise, and
    /// the mask when `mask_ratio` removes tokens.
    fn micro_batch(&mut self, position: u64, n: usize, mask_ratio: f64, device: &Device) -> Result<MicroBatch> {
        let [c, h, w] = self.dataset.dims();
        let classes = self.config.num_classes;
        let length = self.config.num_patches();
        let masked = mask_ratio > 0.0 && maskdit::mask::kept_tokens(length, mask_ratio) < length;
        let mut values = Vec::with_capacity(n * c * h * w);
        let mut labels = Vec::with_capacity(n);
        let mut rnd_normal = Vec::with_capacity(n);
        let mut noise = Vec::with_capacity(n * c * h * w);
        let mut restore = Vec::with_capacity(if masked { n * length } else { 0 });
        for offset in 0..n as u64 {
            let index = self.example_index(position + offset);
            let mut rng = example_rng(self.options.seed, position + offset);
            let mut example = self.dataset.get(index, &mut rng)?;
            if self.options.xflip && rng.random::<f64>() < 0.5 {
                for line in example.values.chunks_exact_mut(w) {
                    line.reverse();
                }
            }
            values.extend(example.values);
            if classes > 0 {
                let label = example.label.ok_or_else(|| Error::Input(format!("example {index} has no label")))?;
                if label >= classes {
                    return Err(Error::Input(format!(
                        "example {index} has label {label} but the model has {classes} classes"
                    )));
                }
                let dropped = rng.random::<f64>() < self.options.class_dropout_prob;
                labels.push((!dropped).then_some(label));
            }
            rnd_normal.push(Distribution::<f32>::sample(&StandardNormal, &mut rng));
            noise.extend((0..c * h * w).map(|_| Distribution::<f32>::sample(&StandardNormal, &mut rng)));
            if masked {
                restore.extend(Mask::random_order(length, &mut rng));
            }
        }
        let mask = if masked {
            let ids_restore = Tensor::from_vec(restore, (n, length), device)?;
            Some(Mask::from_restore(&ids_restore, maskdit::mask::kept_tokens(length, mask_ratio))?)
        } else {
            None
        };
        Ok(MicroBatch {
            images: Tensor::from_vec(values, (n, c, h, w), device)?,
            labels: (classes > 0).then(|| maskdit::one_hot(labels, classes, device)).transpose()?,
            rnd_normal: Tensor::from_vec(rnd_normal, n, device)?,
            noise: Tensor::from_vec(noise, (n, c, h, w), device)?,
            mask,
        })
    }

    /// One optimiser step over `batch_size` examples (this rank's share of them when it is
    /// one of several). A non-finite loss on any rank stops every rank with an error before
    /// any weight changes.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let device = self.model.model().device().clone();
        let share = self.options.batch_size / self.world_size();
        let micro = share / self.options.grad_accum;
        let progress = self.step as f64 / self.options.max_steps as f64;
        let mask_ratio = self.schedule.at(progress);
        let first = self.step * self.options.batch_size as u64 + (self.rank() * share) as u64;
        let mut sum: Option<Vec<Tensor>> = None;
        let mut loss_total = 0.0;
        let compute_dtype = self.options.precision.compute_dtype();
        for part in 0..self.options.grad_accum {
            let batch = self.micro_batch(first + (part * micro) as u64, micro, mask_ratio, &device)?;
            let network = self.model.compute_model(compute_dtype)?;
            let per_sample = self.loss.per_sample(
                &network,
                &batch.images,
                batch.labels.as_ref(),
                &batch.rnd_normal,
                &batch.noise,
                batch.mask.as_ref(),
            )?;
            let loss = (per_sample.sum_all()? / self.options.batch_size as f64)?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            loss_total += value;
            if !value.is_finite() && self.group.is_none() {
                return Err(Error::NonFinite { step: self.step + 1, loss: value });
            }
            let grads = self.opt.gradients(&loss.backward()?)?;
            sum = Some(match sum {
                None => grads,
                Some(acc) => acc.iter().zip(&grads).map(|(a, g)| a + g).collect::<candle_core::Result<Vec<_>>>()?,
            });
        }
        let mut grads = sum.expect("at least one micro-batch");
        if let Some(group) = self.group.as_mut() {
            // The loss first: every rank learns of a non-finite one and stops at the same point.
            loss_total = f64::from(maskdit_parallel::sum_scalars(&mut **group, &[loss_total as f32])?[0]);
            if !loss_total.is_finite() {
                return Err(Error::NonFinite { step: self.step + 1, loss: loss_total });
            }
            grads = maskdit_parallel::sum_all(&mut **group, &grads)?;
        }
        let lr = ramped_lr(self.options.lr, self.step, self.options.batch_size, self.options.lr_rampup_kimg);
        self.opt.set_lr(lr);
        self.opt.step_with(&grads)?;
        self.ema.update(&self.model.all_params())?;
        self.step += 1;
        Ok(StepReport { step: self.step, loss: loss_total, lr, mask_ratio })
    }

    /// Writes a checkpoint (weights, EMA, optimiser moments, run state) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (opt_state, opt_steps) = self.opt.state();
        let state = RunState { step: self.step, world_size: self.world_size() };
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
        trainer.step = state.step;
        Ok(trainer)
    }
}
