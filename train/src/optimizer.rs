//! AdamW with its state kept as tensors, so checkpoints can store and restore it exactly.

use candle_core::{backprop::GradStore, Tensor, Var};

use maskdit_kernels::updates::{adamw, AdamWStep};

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
        let hyper = AdamWStep {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            step: self.steps,
        };
        for (((_, var), grad), (first, second)) in
            self.params.iter().zip(grads).zip(self.first.iter_mut().zip(self.second.iter_mut()))
        {
            adamw(var, grad, first, second, &hyper)?;
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
