//! Class arguments: indices, a model's own class names, or ImageNet class names.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

const IMAGENET_LABELS: &str = include_str!("../assets/imagenet_labels.json");

fn normalise(name: &str) -> String {
    name.trim().to_lowercase().replace([' ', '-'], "_")
}

/// The ImageNet class names, index order.
pub fn imagenet_names() -> Result<Vec<String>> {
    let labels: BTreeMap<String, (String, String)> =
        serde_json::from_str(IMAGENET_LABELS).context("the built-in ImageNet label list is malformed")?;
    let mut named: Vec<(usize, String)> = labels
        .into_iter()
        .map(|(index, (_, name))| Ok((index.parse::<usize>().context("bad index in the ImageNet label list")?, name)))
        .collect::<Result<_>>()?;
    named.sort();
    Ok(named.into_iter().map(|(_, name)| name).collect())
}

/// Resolves one `--class` value for a model with `num_classes` classes: one of the model's own
/// `names` (from its file), an index, or (for 1000-class models without names of their own) an
/// ImageNet class name such as `golden retriever`.
pub fn resolve_class(value: &str, num_classes: usize, names: &[String]) -> Result<usize> {
    if num_classes == 0 {
        bail!("this model is unconditional; drop --class");
    }
    if let Some(index) = names.iter().position(|name| normalise(name) == normalise(value)) {
        return Ok(index);
    }
    if let Ok(index) = value.trim().parse::<i128>() {
        if index < 0 || index >= num_classes as i128 {
            bail!("class {index} is out of range: this model has classes 0..{}", num_classes - 1);
        }
        return Ok(index as usize);
    }
    if !names.is_empty() {
        bail!(crate::registry::unknown("class of this model", &normalise(value), names.iter()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_index_and_name() -> Result<()> {
        assert_eq!(resolve_class("golden retriever", 1000, &[])?, 207);
        assert_eq!(resolve_class("Golden_Retriever", 1000, &[])?, 207);
        assert_eq!(resolve_class("n02099601", 1000, &[])?, 207);
        assert_eq!(imagenet_names()?[207], "golden_retriever");
        assert_eq!(resolve_class("7", 10, &[])?, 7);
        let err = resolve_class("golden retreiver", 1000, &[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("golden_retriever"), "{err}");
        assert!(resolve_class("10", 10, &[]).is_err());
        assert!(resolve_class("cat", 10, &[]).is_err());
        let err = resolve_class("-1", 10, &[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("out of range"), "{err}");
        let own: Vec<String> = ["loops", "lines"].map(String::from).into();
        assert_eq!(resolve_class("Lines", 2, &own)?, 1);
        assert_eq!(resolve_class("0", 2, &own)?, 0);
        let err = resolve_class("lnes", 2, &own).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("lines"), "{err}");
        Ok(())
    }

    #[test]
    fn no_class_argument_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(3);
        let alphabet = ['0', '9', '-', '_', ' ', 'a', 'n', 'é', '1'];
        for _ in 0..2_000 {
            let len = rng.random_range(0..30);
            let text: String = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            for classes in [0, 10, 1000] {
                let _ = resolve_class(&text, classes, &[]);
            }
            let _ = resolve_class(&text, 2, &["a".into(), "b".into()]);
        }
    }
}
