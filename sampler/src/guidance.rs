//! Classifier-free guidance as a denoiser wrapper.

use candle_core::Tensor;

use crate::{per_sample_sigma, Denoiser, Error, Result};

/// Guides a conditional denoiser: `uncond + scale·(cond − uncond)`, where the conditional and
/// null-label (all-zero row) halves are evaluated in one batched call. A scale of 1 is a plain
/// call on the given batch; any other scale needs class labels (an unconditional model, or
/// labels of width 0, is refused). With an interval, guidance applies only to samples whose
/// noise level lies in it; the others get the plain conditional output (and when no sample of
/// a call is inside, the call is a plain one).
#[derive(Debug, Clone)]
pub struct Guided<D> {
    inner: D,
    scale: f64,
    interval: Option<GuidanceInterval>,
}

/// The noise levels `low < σ ≤ high` where guidance applies (Kynkäänniemi et al. 2024:
/// guidance at low noise levels mostly narrows the samples' variety, at the highest it harms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuidanceInterval {
    /// Guidance applies above this noise level.
    pub low: f64,
    /// Guidance applies up to this noise level (inclusive).
    pub high: f64,
}

impl GuidanceInterval {
    /// The interval `low < σ ≤ high`; refused unless `0 ≤ low < high`.
    pub fn new(low: f64, high: f64) -> Result<Self> {
        if !(low >= 0.0 && low < high) {
            return Err(Error::Option(format!(
                "guidance interval {low}..{high}: needs 0 ≤ low < high (noise levels σ)"
            )));
        }
        Ok(Self { low, high })
    }

    /// Whether guidance applies at noise level `sigma`.
    pub fn contains(&self, sigma: f64) -> bool {
        sigma > self.low && sigma <= self.high
    }
}

impl std::str::FromStr for GuidanceInterval {
    type Err = Error;

    /// Reads `LOW:HIGH`, e.g. `0:3`.
    fn from_str(text: &str) -> Result<Self> {
        let bounds =
            text.split_once(':').and_then(|(low, high)| Some((low.trim().parse().ok()?, high.trim().parse().ok()?)));
        match bounds {
            Some((low, high)) => Self::new(low, high),
            None => Err(Error::Option(format!("guidance interval `{text}`: expected LOW:HIGH noise levels, e.g. 0:3"))),
        }
    }
}

impl std::fmt::Display for GuidanceInterval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.low, self.high)
    }
}

impl<D: Denoiser> Guided<D> {
    /// Wraps `inner` with guidance strength `scale` (1 = off) at every noise level.
    pub fn new(inner: D, scale: f64) -> Self {
        Self { inner, scale, interval: None }
    }

    /// Applies guidance only to noise levels inside `interval` (`None`: at every level).
    pub fn with_interval(mut self, interval: Option<GuidanceInterval>) -> Self {
        self.interval = interval;
        self
    }

    /// The guidance strength.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

impl<D: Denoiser> Denoiser for Guided<D> {
    fn denoise(&self, x: &Tensor, sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let labels = match labels {
            Some(labels) if self.scale != 1.0 => labels,
            None if self.scale != 1.0 => {
                return Err(Error::Option(format!(
                    "guidance (scale {}) needs class labels; an unconditional model samples with scale 1",
                    self.scale
                )))
            }
            _ => return self.inner.denoise(x, sigma, labels),
        };
        if labels.dim(candle_core::D::Minus1)? == 0 {
            return Err(Error::Option(format!(
                "guidance (scale {}) needs a class-conditional model; this one has no classes (use scale 1)",
                self.scale
            )));
        }
        let batch = x.dim(0)?;
        let sigma = per_sample_sigma(sigma, batch)?;
        // With an interval: each sample's scale (1 outside it).
        let scales: Option<Vec<f32>> = match self.interval {
            None => None,
            Some(interval) => Some(
                sigma
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(|s| if interval.contains(s as f64) { self.scale as f32 } else { 1.0 })
                    .collect(),
            ),
        };
        if scales.as_ref().is_some_and(|scales| scales.iter().all(|&s| s == 1.0)) {
            return self.inner.denoise(x, &sigma, Some(labels));
        }
        let both = self.inner.denoise(
            &Tensor::cat(&[x, x], 0)?,
            &Tensor::cat(&[&sigma, &sigma], 0)?,
            Some(&Tensor::cat(&[labels, &labels.zeros_like()?], 0)?),
        )?;
        let cond = both.narrow(0, 0, batch)?;
        let uncond = both.narrow(0, batch, batch)?;
        let guidance = match scales {
            None => ((cond - &uncond)? * self.scale)?,
            Some(scales) => {
                let mut shape = vec![1; x.rank()];
                shape[0] = batch;
                let scales = Tensor::from_vec(scales, shape, x.device())?.to_dtype(cond.dtype())?;
                (cond - &uncond)?.broadcast_mul(&scales)?
            }
        };
        Ok((&uncond + guidance)?)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use candle_core::{DType, Device, Tensor};

    use super::{GuidanceInterval, Guided};
    use crate::{Denoiser, Result};

    /// Adds each sample's label sum to it (conditional: `x + 1`, unconditional: `x`) and
    /// records the batch size of every call.
    #[derive(Default)]
    struct LabelSum {
        batches: RefCell<Vec<usize>>,
    }

    impl Denoiser for LabelSum {
        fn denoise(&self, x: &Tensor, _sigma: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
            let batch = x.dim(0)?;
            self.batches.borrow_mut().push(batch);
            let sums = match labels {
                Some(labels) => labels.sum(1)?,
                None => Tensor::zeros(batch, DType::F32, x.device())?,
            };
            Ok(x.broadcast_add(&sums.reshape((batch, 1, 1, 1))?)?)
        }
    }

    /// The first value of each sample of a guided call at noise levels `sigmas`, and the batch
    /// sizes the model saw.
    fn guided_values(scale: f64, interval: Option<GuidanceInterval>, sigmas: &[f32]) -> (Vec<f32>, Vec<usize>) {
        let device = Device::Cpu;
        let n = sigmas.len();
        let x = Tensor::zeros((n, 1, 2, 2), DType::F32, &device).unwrap();
        // Every sample asks for class 0 of 2.
        let labels = Tensor::cat(
            &[Tensor::ones((n, 1), DType::F32, &device).unwrap(), Tensor::zeros((n, 1), DType::F32, &device).unwrap()],
            1,
        )
        .unwrap();
        let model = LabelSum::default();
        let sigma = Tensor::new(sigmas, &device).unwrap();
        let out = Guided::new(&model, scale).with_interval(interval).denoise(&x, &sigma, Some(&labels)).unwrap();
        let values = out.flatten_from(1).unwrap().narrow(1, 0, 1).unwrap().flatten_all().unwrap();
        (values.to_vec1().unwrap(), model.batches.take())
    }

    #[test]
    fn guidance_applies_only_inside_the_interval() {
        let interval = Some(GuidanceInterval::new(1.0, 5.0).unwrap());
        let sigmas = [0.5, 1.0, 2.0, 5.0, 10.0];
        // Everywhere: uncond + 3·(cond − uncond) = 3.
        assert_eq!(guided_values(3.0, None, &sigmas), (vec![3.0; 5], vec![10]));
        // 1 < σ ≤ 5 guided (3), the rest conditional (1), in one doubled call.
        assert_eq!(guided_values(3.0, interval, &sigmas), (vec![1.0, 1.0, 3.0, 3.0, 1.0], vec![10]));
        // No sample inside: one plain conditional call on the batch as it is.
        assert_eq!(guided_values(3.0, interval, &[0.2, 20.0]), (vec![1.0, 1.0], vec![2]));
    }

    #[test]
    fn intervals_parse_and_bad_ones_are_refused() {
        let interval: GuidanceInterval = " 0 : 3 ".parse().unwrap();
        assert_eq!(interval, GuidanceInterval { low: 0.0, high: 3.0 });
        assert_eq!(interval.to_string().parse::<GuidanceInterval>().unwrap(), interval);
        assert!(!interval.contains(0.0) && interval.contains(3.0) && !interval.contains(3.5));
        for bad in ["3:1", "2:2", "-1:2", "0-3", "a:b", "", "NaN:3"] {
            let error = bad.parse::<GuidanceInterval>().unwrap_err().to_string();
            assert!(error.contains("guidance interval"), "{bad}: {error}");
        }
    }
}
