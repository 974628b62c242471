//! Exponential moving average of the weights.

use candle_core::{Tensor, Var};

use maskdit_kernels::updates::ema;

use crate::Result;

/// `ema ← decay·ema + (1 − decay)·param` for every parameter, after every step.
#[derive(Debug, Clone)]
pub struct Ema {
    decay: f64,
    shadow: Vec<(String, Tensor)>,
}

impl Ema {
    /// Starts from a copy of `params` (detached: the average never joins a gradient graph).
    pub fn new(params: &[(String, Var)], decay: f64) -> Result<Self> {
        let shadow =
            params.iter().map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?))).collect::<Result<Vec<_>>>()?;
        Ok(Self { decay, shadow })
    }

    /// Starts from copies of given weights (for example those of a checkpoint), one per
    /// parameter name; each given tensor is released once copied.
    pub fn from_tensors(shadow: Vec<(String, Tensor)>, decay: f64) -> Result<Self> {
        let shadow = shadow.into_iter().map(|(n, t)| Ok((n, t.detach().copy()?))).collect::<Result<Vec<_>>>()?;
        Ok(Self { decay, shadow })
    }

    /// The decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Moves the average towards `params` (same order as at construction).
    pub fn update(&mut self, params: &[(String, Var)]) -> Result<()> {
        for ((_, average), (_, var)) in self.shadow.iter_mut().zip(params) {
            ema(average, var.as_tensor(), self.decay)?;
        }
        Ok(())
    }

    /// The averaged weights, by name. They share storage with the average, which later updates
    /// may rewrite in place: copy them to keep them.
    pub fn weights(&self) -> &[(String, Tensor)] {
        &self.shadow
    }
}
