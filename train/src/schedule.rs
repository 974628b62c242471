//! Schedules over training progress: the mask ratio and the learning-rate ramp-up.

use crate::{Error, Result};

/// Shape of the mask-ratio schedule over training progress `x ∈ [0, 1]` (the reference's
/// `get_mask_ratio_fn`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaskCurve {
    /// Always `ratio`.
    Constant,
    /// `(ratio − min)·cos(πx/2)^k + min`, k = 2…6.
    Cosine(u32),
    /// `(ratio − min)·exp(−7x) + min`.
    Exp,
    /// `(ratio − min)·x + min`.
    Linear,
}

/// A mask ratio as a function of training progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskSchedule {
    /// The curve.
    pub curve: MaskCurve,
    /// The scale (the constant ratio, or the ratio at the curve's peak).
    pub ratio: f64,
    /// The floor.
    pub ratio_min: f64,
}

impl MaskSchedule {
    /// A constant ratio.
    pub fn constant(ratio: f64) -> Self {
        Self { curve: MaskCurve::Constant, ratio, ratio_min: 0.0 }
    }

    /// Parses `constant`, `cosine2` … `cosine6`, `exp` or `linear`.
    pub fn parse(name: &str, ratio: f64, ratio_min: f64) -> Result<Self> {
        let curve = match name {
            "constant" => MaskCurve::Constant,
            "exp" => MaskCurve::Exp,
            "linear" => MaskCurve::Linear,
            other => match other.strip_prefix("cosine").and_then(|k| k.parse::<u32>().ok()) {
                Some(k @ 2..=6) => MaskCurve::Cosine(k),
                _ => {
                    return Err(Error::Config(format!(
                        "unknown mask schedule `{name}`; expected constant, cosine2..cosine6, exp or linear"
                    )))
                }
            },
        };
        for r in [ratio, ratio_min] {
            if !(0.0..1.0).contains(&r) {
                return Err(Error::Config(format!("mask ratio {r} must lie in [0, 1)")));
            }
        }
        Ok(Self { curve, ratio, ratio_min })
    }

    /// The ratio at progress `x` (fraction of the planned steps done).
    pub fn at(&self, x: f64) -> f64 {
        let span = self.ratio - self.ratio_min;
        match self.curve {
            MaskCurve::Constant => self.ratio,
            MaskCurve::Cosine(k) => span * (std::f64::consts::PI * x / 2.0).cos().powi(k as i32) + self.ratio_min,
            MaskCurve::Exp => span * (-7.0 * x).exp() + self.ratio_min,
            MaskCurve::Linear => span * x + self.ratio_min,
        }
    }
}

/// The reference's warm-up: `lr · min(step · global_batch / max(rampup_kimg · 1000, 1e-8), 1)`,
/// evaluated with the number of steps already taken (so the very first step runs at rate 0
/// whenever the formula gives 0 there, as in the reference).
pub fn ramped_lr(lr: f64, step: u64, global_batch: usize, rampup_kimg: f64) -> f64 {
    lr * (step as f64 * global_batch as f64 / (rampup_kimg * 1000.0).max(1e-8)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_match_the_reference_formulas() {
        let cos = MaskSchedule::parse("cosine3", 0.5, 0.1).unwrap();
        assert!((cos.at(0.0) - 0.5).abs() < 1e-12 && (cos.at(1.0) - 0.1).abs() < 1e-12);
        assert!((cos.at(0.5) - (0.4 * (std::f64::consts::FRAC_PI_4.cos()).powi(3) + 0.1)).abs() < 1e-12);
        assert!((MaskSchedule::parse("exp", 0.5, 0.0).unwrap().at(1.0) - 0.5 * (-7f64).exp()).abs() < 1e-12);
        assert_eq!(MaskSchedule::parse("linear", 0.5, 0.1).unwrap().at(0.5), 0.4 * 0.5 + 0.1);
        assert_eq!(MaskSchedule::parse("constant", 0.5, 0.1).unwrap().at(0.7), 0.5);
        assert!(MaskSchedule::parse("cosine7", 0.5, 0.0).is_err());
        assert!(MaskSchedule::parse("constant", 1.5, 0.0).is_err());
    }

    #[test]
    fn lr_ramps_linearly_over_kimg() {
        assert_eq!(ramped_lr(1e-4, 0, 256, 10.0), 0.0);
        assert!((ramped_lr(1e-4, 20, 256, 10.0) - 1e-4 * 5120.0 / 10000.0).abs() < 1e-18);
        assert_eq!(ramped_lr(1e-4, 1000, 256, 10.0), 1e-4);
        assert_eq!(ramped_lr(5e-5, 3, 64, 0.0), 5e-5);
    }
}
