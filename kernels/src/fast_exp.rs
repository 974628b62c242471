//! A vectorisable `eˣ` for the fused kernels.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split into a part with few significant bits (so `n · LN2_HI` is exact) and the rest.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 · 2²³: adding and subtracting it rounds an f32 of magnitude below 2²² to the nearest
/// integer with two plain additions (no `floorf` call, which would stop vectorisation).
const ROUNDING_SHIFT: f32 = 12_582_912.0;
/// Least-squares fit of `eʳ` on `[−ln2/2, ln2/2]` (degree 6).
const C: [f32; 7] = [1.0, 1.0, 0.5, 0.166_664_15, 0.041_666_217, 0.008_375_131_5, 0.001_394_858_5];

/// `eˣ` as `2ⁿ · eʳ` with `n = round(x / ln 2)` and `r = x − n·ln 2` (two-part ln 2, so `r` is
/// accurate): the exponent bits are set directly and `eʳ` is a polynomial, so loops over it
/// vectorise (libm's `expf` does not). Relative error about 1e-7; inputs are clamped to
/// [−87, 88], so it returns about 1.6e-38 to 1.7e38, never 0 or ∞.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUNDING_SHIFT) - ROUNDING_SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = C[0] + r * (C[1] + r * (C[2] + r * (C[3] + r * (C[4] + r * (C[5] + r * C[6])))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_libm_to_a_few_ulps() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (super::exp(x) as f64, (x as f64).exp());
            worst = worst.max((got / want - 1.0).abs());
            x += 0.001_37;
        }
        assert!(worst < 2e-7, "relative error {worst:e}");
        assert!(super::exp(-1000.0) > 0.0 && super::exp(1000.0).is_finite());
    }
}
