//! Command-line numbers checked as they are parsed: sizes that would allocate without bound are
//! capped (the error names the limit), and NaN is refused everywhere.

/// Most noise levels of one sampler run: the sampler's own bound.
pub(crate) const MAX_SAMPLER_STEPS: usize = maskdit_sampler::MAX_STEPS;
/// Largest latent (or pixel-model) side: 256 latents are 2048-pixel images.
pub(crate) const MAX_LATENT_SIZE: usize = 256;
/// Most images handled at once by one command.
pub(crate) const MAX_BATCH: usize = 65_536;
/// Most timed repetitions of a benchmark.
pub(crate) const MAX_ITERS: usize = 10_000;

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim().parse().map_err(|_| format!("`{text}` is not a number of the expected kind"))
}

fn within(text: &str, low: usize, high: usize, what: &str) -> Result<usize, String> {
    let value: usize = number(text)?;
    if value < low || value > high {
        return Err(format!("{what} must be between {low} and {high}"));
    }
    Ok(value)
}

/// A real number that is not NaN (infinities allowed: `--s-max inf`).
pub(crate) fn not_nan(text: &str) -> Result<f64, String> {
    let value: f64 = number(text)?;
    if value.is_nan() {
        return Err("NaN is not a value this option can take".into());
    }
    Ok(value)
}

/// A finite real number.
pub(crate) fn finite(text: &str) -> Result<f64, String> {
    let value = not_nan(text)?;
    if !value.is_finite() {
        return Err("the value must be finite".into());
    }
    Ok(value)
}

/// Sampler noise levels: 1 to [`MAX_SAMPLER_STEPS`].
pub(crate) fn sampler_steps(text: &str) -> Result<usize, String> {
    within(text, 1, MAX_SAMPLER_STEPS, "the number of steps")
}

/// A latent side: 1 to [`MAX_LATENT_SIZE`].
pub(crate) fn latent_size(text: &str) -> Result<usize, String> {
    within(text, 1, MAX_LATENT_SIZE, "the latent size")
}

/// Images at once: 1 to [`MAX_BATCH`].
pub(crate) fn batch(text: &str) -> Result<usize, String> {
    within(text, 1, MAX_BATCH, "the batch")
}

/// Benchmark repetitions: 1 to [`MAX_ITERS`].
pub(crate) fn iters(text: &str) -> Result<usize, String> {
    within(text, 1, MAX_ITERS, "the repetitions")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_unbounded_sizes_are_refused_with_the_limit() {
        assert!(not_nan("nan").is_err() && not_nan("NaN").is_err());
        assert_eq!(not_nan("inf"), Ok(f64::INFINITY));
        assert!(finite("inf").is_err() && finite("-inf").is_err());
        assert_eq!(finite("1.5"), Ok(1.5));
        assert!(sampler_steps("1000000000").unwrap_err().contains("10000"));
        assert!(sampler_steps("0").is_err());
        assert!(latent_size("100000").unwrap_err().contains("256"));
        assert_eq!(batch("16"), Ok(16));
        assert!(batch("1000000000").is_err());
    }
}
