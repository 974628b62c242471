//! The toolkit's own data shards: safetensors files with `labels` `(N,)` (absent in data
//! without labels) and either `moments` `(N, 2C, H, W)` (latent distributions, sampled when
//! read) or `images` `(N, C, H, W)` / `(N, H, W)` (u8 in 0…255 or float in [−1, 1]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha12Rng;

use super::{sample_latent, Dataset, Example};
use crate::{Error, Result};

/// Examples of one or more shards, held in memory.
#[derive(Debug, Clone)]
pub struct ShardDataset {
    values: Vec<f32>,
    /// One per example; `None` for data without labels.
    labels: Option<Vec<usize>>,
    len: usize,
    dims: [usize; 3],
    per_item: usize,
    latent_scale: Option<f64>,
    /// Each shard's file and the index of its first example.
    origins: Vec<(PathBuf, usize)>,
}

fn shard_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data { path: path.to_path_buf(), reason: reason.into() }
}

impl ShardDataset {
    /// Reads shards; latent moments are scaled by `latent_scale` when sampled (0.18215 for SD).
    pub fn open(paths: &[PathBuf], latent_scale: f64) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::Input("no data shards given".into()));
        }
        let mut out: Option<Self> = None;
        for path in paths {
            let tensors = maskdit_io::read_tensors(path, "", |name| Some(name.to_string()))
                .map_err(|e| shard_error(path, format!("not a readable shard ({e})")))?;
            let shard = Self::from_tensors(path, &tensors, latent_scale)?;
            match &mut out {
                None => out = Some(shard),
                Some(all) => {
                    if all.dims != shard.dims || all.latent_scale.is_some() != shard.latent_scale.is_some() {
                        return Err(shard_error(
                            path,
                            format!("holds {:?} examples, earlier shards {:?}", shard.dims, all.dims),
                        ));
                    }
                    all.origins.push((path.clone(), all.len));
                    all.values.extend(shard.values);
                    all.len += shard.len;
                    match (&mut all.labels, shard.labels) {
                        (Some(labels), Some(more)) => labels.extend(more),
                        (None, None) => {}
                        (Some(_), None) => {
                            return Err(shard_error(path, "has no `labels` but the shards before it have"));
                        }
                        (None, Some(_)) => {
                            return Err(shard_error(path, "has `labels` but the shards before it have none"));
                        }
                    }
                }
            }
        }
        out.ok_or_else(|| Error::Input("no data shards given".into()))
    }

    fn from_tensors(path: &Path, tensors: &HashMap<String, Tensor>, latent_scale: f64) -> Result<Self> {
        let labels = tensors
            .get("labels")
            .map(|labels| -> Result<Vec<usize>> {
                labels
                    .to_dtype(DType::F64)?
                    .flatten_all()?
                    .to_vec1::<f64>()?
                    .into_iter()
                    .enumerate()
                    .map(|(row, label)| {
                        if label.is_finite() && label >= 0.0 && label.fract() == 0.0 && label < u32::MAX as f64 {
                            Ok(label as usize)
                        } else {
                            Err(shard_error(
                                path,
                                format!("example {row} has label {label}: labels are whole numbers from 0"),
                            ))
                        }
                    })
                    .collect()
            })
            .transpose()?;
        let (data, latent) = match (tensors.get("moments"), tensors.get("images")) {
            (Some(m), _) => (m.clone(), true),
            (None, Some(i)) => (i.clone(), false),
            (None, None) => return Err(shard_error(path, "has neither `moments` nor `images`")),
        };
        let data = if data.rank() == 3 { data.unsqueeze(1)? } else { data };
        let (n, c, h, w) = data
            .dims4()
            .map_err(|_| shard_error(path, format!("data of shape {:?} is not (N, C, H, W)", data.dims())))?;
        if let Some(labels) = labels.as_ref().filter(|l| l.len() != n) {
            return Err(shard_error(path, format!("{n} examples but {} labels", labels.len())));
        }
        let is_u8 = data.dtype() == DType::U8;
        let values = if is_u8 { ((data.to_dtype(DType::F32)? / 127.5)? - 1.0)? } else { data.to_dtype(DType::F32)? };
        let values = values.flatten_all()?.to_vec1::<f32>()?;
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(shard_error(path, format!("example {} holds NaN or infinite values", at / (c * h * w))));
        }
        if !latent && !is_u8 {
            // Float images are in [−1, 1]; allow for rounding.
            if let Some(at) = values.iter().position(|v| v.abs() > 1.0 + 1e-3) {
                return Err(shard_error(
                    path,
                    format!(
                        "example {} holds the value {} but float images lie in [-1, 1]; store 0..255 pixels as u8, \
                         or scale them to [-1, 1]",
                        at / (c * h * w),
                        values[at]
                    ),
                ));
            }
        }
        let (channels, latent_scale) = if latent {
            if c % 2 != 0 {
                return Err(shard_error(path, format!("moments have an odd channel count {c}")));
            }
            (c / 2, Some(latent_scale))
        } else {
            (c, None)
        };
        let origins = vec![(path.to_path_buf(), 0)];
        Ok(Self { values, labels, len: n, dims: [channels, h, w], per_item: c * h * w, latent_scale, origins })
    }

    /// The largest label plus one (0 without labels).
    pub fn num_classes(&self) -> usize {
        self.labels.as_ref().and_then(|l| l.iter().max()).map_or(0, |m| m + 1)
    }
}

impl Dataset for ShardDataset {
    fn check(&self, num_classes: usize) -> Result<()> {
        let Some(labels) = self.labels.as_ref().filter(|_| num_classes > 0) else { return Ok(()) };
        let Some(index) = labels.iter().position(|&l| l >= num_classes) else { return Ok(()) };
        let (path, first) = self.origins.iter().rev().find(|(_, first)| *first <= index).unwrap_or(&self.origins[0]);
        Err(shard_error(
            path,
            format!(
                "example {} has label {} but the model has {num_classes} classes (labels 0..{}); check the data, or \
                 train a model with more classes",
                index - first,
                labels[index],
                num_classes - 1
            ),
        ))
    }

    fn len(&self) -> usize {
        self.len
    }

    fn dims(&self) -> [usize; 3] {
        self.dims
    }

    fn labeled(&self) -> bool {
        self.labels.is_some()
    }

    fn get(&self, index: usize, rng: &mut ChaCha12Rng) -> Result<Example> {
        let raw = self
            .values
            .get(index * self.per_item..(index + 1) * self.per_item)
            .ok_or_else(|| Error::Input(format!("example {index} of {}", self.len)))?;
        let values = match self.latent_scale {
            Some(scale) => sample_latent(raw, scale, rng)?,
            None => raw.to_vec(),
        };
        Ok(Example { values, label: self.labels.as_ref().map(|l| l[index]) })
    }
}

/// Writes a shard: `moments` `(N, 2C, H, W)` or `images`, with `labels` `(N,)` unless the data
/// has none, atomically.
pub fn write_shard(path: &Path, data_name: &str, data: &Tensor, labels: Option<&[usize]>) -> Result<()> {
    if data_name != "moments" && data_name != "images" {
        return Err(Error::Input(format!("shard data must be `moments` or `images`, not `{data_name}`")));
    }
    let mut tensors = HashMap::from([(data_name.to_string(), data.to_device(&Device::Cpu)?)]);
    if let Some(labels) = labels {
        if labels.len() != data.dim(0)? {
            return Err(Error::Input(format!("{} labels for {} examples", labels.len(), data.dim(0)?)));
        }
        let values = labels.iter().map(|&l| l as i64).collect::<Vec<_>>();
        tensors.insert("labels".to_string(), Tensor::from_vec(values, labels.len(), &Device::Cpu)?);
    }
    Ok(maskdit::weights::save(&tensors, path)?)
}
