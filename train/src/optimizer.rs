//! AdamW with its state kept as tensors, so checkpoints can store and restore it exactly.

use candle_core::{backprop::GradStore, Tensor, Var};

use maskdit_kernels::in_place::{self, AdamWUpdate, Average};

use crate::{Error, Result};

/// AdamW hyper-parameters (PyTorch semantics: decoupled weight decay, bias-corrected moments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// AdamW over a fixed list of named parameters.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<(String, Var)>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    steps: u64,
}

impl AdamW {
    /// Zero moments for `params`.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let zeros = || params.iter().map(|(_, v)| v.zeros_like()).collect::<candle_core::Result<Vec<_>>>();
        // Two separate sets: the CPU update rewrites the moments in place.
        let (first, second) = (zeros()?, zeros()?);
        Ok(Self { config, params, first, second, steps: 0 })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Sets the learning rate (for warm-up schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The parameters, by name.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// One update from `grads`; parameters without a gradient count as zero gradient.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let grads = self.gradients(grads)?;
        self.step_with(&grads)
    }

    /// The gradient of each parameter in `grads` (zero where there is none), in parameter order.
    pub fn gradients(&self, grads: &GradStore) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|(_, var)| match grads.get(var.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => Ok(var.zeros_like()?),
            })
            .collect()
    }

    /// One update from gradients given in parameter order.
    pub fn step_with(&mut self, grads: &[Tensor]) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(Error::Input(format!("{} gradients for {} parameters", grads.len(), self.params.len())));
        }
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let correction1 = 1.0 - c.beta1.powi(t);
        let correction2 = 1.0 - c.beta2.powi(t);
        for (i, (_, var)) in self.params.iter().enumerate() {
            let grad = &grads[i].contiguous()?;
            let (first, second) = (&self.first[i], &self.second[i]);
            if in_place::applies(&[var.as_tensor(), grad, first, second]) {
                first.inplace_op2(grad, &Average::Lerp { decay: c.beta1 })?;
                second.inplace_op2(grad, &Average::Squares { decay: c.beta2 })?;
                let update =
                    AdamWUpdate { lr: c.lr, weight_decay: c.weight_decay, eps: c.eps, correction1, correction2 };
                var.as_tensor().inplace_op3(first, second, &update)?;
                continue;
            }
            let m = ((&self.first[i] * c.beta1)? + (grad * (1.0 - c.beta1))?)?;
            let v = ((&self.second[i] * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((&v / correction2)?.sqrt()? + c.eps)?;
            let update = ((&m / correction1)? / denom)?;
            let decayed = if c.weight_decay > 0.0 {
                (var.as_tensor() * (1.0 - c.lr * c.weight_decay))?
            } else {
                var.as_tensor().clone()
            };
            var.set(&(decayed - (update * c.lr)?)?)?;
            self.first[i] = m;
            self.second[i] = v;
        }
        Ok(())
    }

    /// The state as named tensors (`opt/m/<name>`, `opt/v/<name>`) and the step count. The
    /// tensors share storage with the optimiser, which may update them in place: copy them to
    /// keep them across steps.
    pub fn state(&self) -> (Vec<(String, Tensor)>, u64) {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("opt/m/{name}"), self.first[i].clone()));
            out.push((format!("opt/v/{name}"), self.second[i].clone()));
        }
        (out, self.steps)
    }

    /// Restores a state written by [`Self::state`], taking the tensors out of `state` one by one
    /// (each is released once copied).
    pub fn restore(&mut self, mut state: std::collections::HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for (i, (name, var)) in self.params.iter().enumerate() {
            for (prefix, slot) in [("opt/m/", &mut self.first[i]), ("opt/v/", &mut self.second[i])] {
                let key = format!("{prefix}{name}");
                let t = state.remove(&key).ok_or_else(|| Error::Input(format!("optimizer state lacks `{key}`")))?;
                if t.dims() != var.dims() {
                    return Err(Error::Input(format!("optimizer state `{key}` has shape {:?}", t.dims())));
                }
                *slot = t.to_dtype(var.dtype())?.to_device(var.device())?.copy()?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}
