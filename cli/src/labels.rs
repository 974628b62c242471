//! Class arguments: indices, or ImageNet class names.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

const IMAGENET_LABELS: &str = include_str!("../assets/imagenet_labels.json");

fn normalise(name: &str) -> String {
    name.trim().to_lowercase().replace([' ', '-'], "_")
}

/// Resolves one `--class` value for a model with `num_classes` classes: an index, or (for
/// 1000-class models) an ImageNet class name such as `golden retriever`.
pub fn resolve_class(value: &str, num_classes: usize) -> Result<usize> {
    if num_classes == 0 {
        bail!("this model is unconditional; drop --class");
    }
    if let Ok(index) = value.trim().parse::<usize>() {
        if index >= num_classes {
            bail!("class {index} is out of range: this model has classes 0..{}", num_classes - 1);
        }
        return Ok(index);
    }
    if num_classes != 1000 {
        bail!(
            "class `{value}` is not a number; this {num_classes}-class model takes class indices 0..{}",
            num_classes - 1
        );
    }
    let labels: BTreeMap<String, (String, String)> =
        serde_json::from_str(IMAGENET_LABELS).context("the built-in ImageNet label list is malformed")?;
    let want = normalise(value);
    let mut names = Vec::with_capacity(labels.len());
    for (index, (wnid, name)) in &labels {
        if normalise(name) == want || wnid.eq_ignore_ascii_case(value.trim()) {
            return index.parse::<usize>().context("bad index in the ImageNet label list");
        }
        names.push(name.clone());
    }
    Err(anyhow::anyhow!(crate::registry::unknown("ImageNet class", &want, names.iter())))
}

/// Parses `--seeds`: comma-separated numbers and inclusive ranges, e.g. `0-63` or `1,5,9-12`.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    let mut seeds = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            bail!("empty entry in seeds `{text}`; write e.g. 0-63 or 1,5,9");
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (
                    a.trim().parse().with_context(|| format!("bad seed range `{part}`; write e.g. 0-63"))?,
                    b.trim().parse().with_context(|| format!("bad seed range `{part}`; write e.g. 0-63"))?,
                );
                if b < a {
                    bail!("seed range `{part}` is empty (end before start)");
                }
                seeds.extend(a..=b);
            }
            None => seeds.push(part.parse().with_context(|| format!("bad seed `{part}`; write e.g. 0-63 or 1,5,9"))?),
        }
    }
    Ok(seeds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_lists_and_ranges() {
        assert_eq!(parse_seeds("0-3").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(parse_seeds("1,5, 9-10").unwrap(), vec![1, 5, 9, 10]);
        for bad in ["", "3-1", "a", "1,,2", "1-b"] {
            assert!(parse_seeds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn classes_by_index_and_name() {
        assert_eq!(resolve_class("golden retriever", 1000).unwrap(), 207);
        assert_eq!(resolve_class("Golden_Retriever", 1000).unwrap(), 207);
        assert_eq!(resolve_class("n02099601", 1000).unwrap(), 207);
        assert_eq!(resolve_class("7", 10).unwrap(), 7);
        let err = resolve_class("golden retreiver", 1000).unwrap_err().to_string();
        assert!(err.contains("golden_retriever"), "{err}");
        assert!(resolve_class("10", 10).is_err());
        assert!(resolve_class("cat", 10).is_err());
    }
}
