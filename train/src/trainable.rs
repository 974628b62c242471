//! A model whose parameters are trainable variables.

use std::borrow::Cow;
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand_chacha::ChaCha12Rng;

use maskdit::init::reference_weights;
use maskdit::model::FROZEN_PARAMETERS;
use maskdit::{MaskDit, ModelConfig};

use crate::Result;

/// A [`MaskDit`] built on variables, with the parameter lists training needs.
pub struct TrainableModel {
    model: MaskDit,
    varmap: VarMap,
}

impl std::fmt::Debug for TrainableModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainableModel").field("config", self.model.config()).finish_non_exhaustive()
    }
}

impl TrainableModel {
    /// Variables initialised from `tensors` (official names), which must hold every parameter.
    /// Each tensor is released as soon as its variable holds a copy, so building costs one set
    /// of weights, not two.
    pub fn from_tensors(config: &ModelConfig, tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        {
            let mut vars = varmap.data().lock().map_err(|_| crate::Error::Input("variable map poisoned".into()))?;
            for (name, t) in tensors {
                vars.insert(name, Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(device)?)?);
            }
        }
        let model = MaskDit::new(config, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        Ok(Self { model, varmap })
    }

    /// A fresh model with the reference's initialisation ([`maskdit::init`]), drawn from `rng`.
    pub fn fresh(config: &ModelConfig, rng: &mut ChaCha12Rng, device: &Device) -> Result<Self> {
        Self::from_tensors(config, reference_weights(config, rng, device)?, device)
    }

    /// The network (its forward passes record gradients).
    pub fn model(&self) -> &MaskDit {
        &self.model
    }

    /// The network computing in `dtype`: the model itself for f32, else a network on `dtype`
    /// casts of the f32 variables, through which gradients flow back to them.
    pub fn compute_model(&self, dtype: DType) -> Result<Cow<'_, MaskDit>> {
        if dtype == DType::F32 {
            return Ok(Cow::Borrowed(&self.model));
        }
        let casts = self
            .all_params()
            .into_iter()
            .map(|(name, var)| Ok((name, var.as_tensor().to_dtype(dtype)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let device = self.model.device().clone();
        let vb = VarBuilder::from_tensors(casts, dtype, &device);
        Ok(Cow::Owned(MaskDit::new(self.model.config(), vb)?))
    }

    /// Every parameter, frozen tables included, sorted by name.
    pub fn all_params(&self) -> Vec<(String, Var)> {
        let vars = self.varmap.data().lock().expect("variable map");
        let mut out: Vec<(String, Var)> = vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The parameters the optimiser updates (all but the fixed position tables), sorted by name.
    pub fn trainable_params(&self) -> Vec<(String, Var)> {
        self.all_params().into_iter().filter(|(k, _)| !FROZEN_PARAMETERS.contains(&k.as_str())).collect()
    }

    /// A copy of the current weights, by name.
    pub fn weights(&self) -> Result<HashMap<String, Tensor>> {
        self.all_params().into_iter().map(|(k, v)| Ok((k, v.as_tensor().detach().copy()?))).collect()
    }
}
