//! What a sampler shows of each step to its caller (progress, traces, previews).

use std::ops::ControlFlow;

use candle_core::Tensor;

/// The per-step hook of the samplers: sees every step, and stops the run by returning
/// `ControlFlow::Break(())` (the sampler then returns [`crate::Error::Stopped`]).
pub type OnStep<'a> = dyn FnMut(&Step<'_>) -> ControlFlow<()> + 'a;

/// Runs `hook` on `step`; its `Break` becomes [`crate::Error::Stopped`].
pub(crate) fn report(hook: &mut OnStep<'_>, step: &Step<'_>) -> crate::Result<()> {
    match hook(step) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(crate::Error::Stopped { done: step.done(), total: step.total }),
    }
}

/// One sampler step, as seen by the per-step callback: the state that was denoised, the
/// denoised estimate and the noise level, before the sampler moves on.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Index of the step, from 0.
    pub index: usize,
    /// Number of steps of the run.
    pub total: usize,
    /// The noise level σ the denoiser was evaluated at (after churn, where there is any).
    pub sigma: f64,
    /// The sampler's state that was denoised, f64 `(N, C, H, W)`, in the sampler's own scaling.
    pub x: &'a Tensor,
    /// The denoised estimate of the clean images, f64 `(N, C, H, W)`.
    pub denoised: &'a Tensor,
}

impl Step<'_> {
    /// Steps finished once this one is (for progress bars).
    pub fn done(&self) -> usize {
        self.index + 1
    }
}
