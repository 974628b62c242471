//! `--seeds`: comma-separated seeds and inclusive ranges, each seed once, read lazily; and
//! `--shard`, the part of a seed list one process takes.

use std::str::FromStr;

/// The seeds of a run, in the order given: one image each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeds {
    /// Inclusive ranges, in the order given.
    ranges: Vec<(u64, u64)>,
    /// How many seeds the ranges hold.
    count: u64,
}

impl FromStr for Seeds {
    type Err = String;

    /// Parses e.g. `0-63` or `1,5,9-12`; a seed listed twice is an error.
    fn from_str(text: &str) -> Result<Self, String> {
        let number = |s: &str, part: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("`{part}` is not a seed or a seed range; write e.g. 0-63 or 1,5,9"))
        };
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!("empty entry in seeds `{text}`; write e.g. 0-63 or 1,5,9"));
            }
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (number(a, part)?, number(b, part)?),
                None => (number(part, part)?, number(part, part)?),
            };
            if last < first {
                return Err(format!("seed range `{part}` is empty (end before start)"));
            }
            ranges.push((first, last));
        }
        let mut sorted = ranges.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[1].0 <= w[0].1) {
            return Err(format!("seed {} is listed twice; each seed makes one image", w[1].0));
        }
        let count = ranges
            .iter()
            .try_fold(0u64, |sum, (a, b)| (b - a).checked_add(1).and_then(|n| sum.checked_add(n)))
            .ok_or_else(|| "more seeds than can be counted (2^64); ask for fewer".to_string())?;
        Ok(Self { ranges, count })
    }
}

impl Seeds {
    /// Number of seeds.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// The seeds in the order given, produced as they are read.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges.iter().flat_map(|&(a, b)| a..=b)
    }

    /// Whether `seed` is one of them.
    pub fn contains(&self, seed: u64) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&seed))
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn lists_and_ranges() -> Result<(), String> {
        let seeds: Seeds = "1,5, 9-10".parse()?;
        assert_eq!(seeds.iter().collect::<Vec<_>>(), [1, 5, 9, 10]);
        assert_eq!(seeds.len(), 4);
        assert!(seeds.contains(9) && !seeds.contains(8));
        for bad in ["", "3-1", "a", "1,,2", "1-b", "-1", "1,1,1", "0-5,3", "0-18446744073709551615"] {
            assert!(bad.parse::<Seeds>().is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn huge_ranges_are_counted_not_built() -> Result<(), String> {
        let seeds: Seeds = "0-18446744073709551614".parse()?;
        assert_eq!(seeds.len(), u64::MAX);
        assert_eq!(seeds.iter().take(3).collect::<Vec<_>>(), [0, 1, 2]);
        Ok(())
    }

    #[test]
    fn no_input_panics() {
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(5);
        let alphabet = ['0', '1', '9', '-', ',', ' ', 'x', '8'];
        for _ in 0..20_000 {
            let len = rng.random_range(0..24);
            let text: String = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            if let Ok(seeds) = text.parse::<Seeds>() {
                assert!(seeds.len() >= 1);
                assert_eq!(seeds.iter().next(), Some(seeds.ranges[0].0));
            }
        }
    }
}

/// `--shard i/n`: the part of a run one of `n` processes takes — the seeds at positions
/// `i, i + n, i + 2n, …` of the list — so that shards together write every image once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u64,
    count: u64,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl FromStr for Shard {
    type Err = String;

    /// Parses `i/n` with `i < n`, e.g. `0/4`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a shard; write i/n with i from 0 to n-1, e.g. 0/4");
        let (index, count) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) =
            (index.trim().parse::<u64>().map_err(|_| bad())?, count.trim().parse::<u64>().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// Part `index` of `count` (`index < count`, else the whole list).
    pub fn new(index: usize, count: usize) -> Self {
        if index < count {
            Self { index: index as u64, count: count as u64 }
        } else {
            Self::default()
        }
    }

    /// Whether this shard takes the seed at `position` of the list.
    pub fn takes(&self, position: u64) -> bool {
        position % self.count == self.index
    }
}
