//! Class names: a model's own, or ImageNet's for the official 1000-class models; and class
//! arguments resolved to indices.

use std::collections::BTreeMap;

use crate::{unknown, Error, Result};

const IMAGENET_LABELS: &str = include_str!("../assets/imagenet_labels.json");

/// The built-in ImageNet list: index → (WordNet id, name).
fn imagenet_labels() -> Result<BTreeMap<String, (String, String)>> {
    serde_json::from_str(IMAGENET_LABELS)
        .map_err(|e| Error::Registry(format!("the built-in ImageNet label list is malformed: {e}")))
}

fn label_index(index: &str) -> Result<usize> {
    index.parse().map_err(|_| Error::Registry(format!("bad index `{index}` in the built-in ImageNet label list")))
}

/// The form class names are compared in: trimmed, lower case, spaces and hyphens as
/// underscores (`Golden Retriever` and `golden_retriever` are one name).
pub fn normalise(name: &str) -> String {
    name.trim().to_lowercase().replace([' ', '-'], "_")
}

/// The ImageNet class names, index order.
pub fn imagenet_names() -> Result<Vec<String>> {
    let mut named: Vec<(usize, String)> = imagenet_labels()?
        .into_iter()
        .map(|(index, (_, name))| Ok((label_index(&index)?, name)))
        .collect::<Result<_>>()?;
    named.sort();
    Ok(named.into_iter().map(|(_, name)| name).collect())
}

/// The class names of a model with `num_classes` classes: its `own` names (recorded in its
/// file) where it has them, ImageNet's for a 1000-class model, none otherwise.
pub fn class_names(num_classes: usize, own: &[String]) -> Result<Vec<String>> {
    if !own.is_empty() {
        return Ok(own.to_vec());
    }
    if num_classes == 1000 {
        return imagenet_names();
    }
    Ok(Vec::new())
}

/// Resolves one `--class` value for a model with `num_classes` classes: one of the model's own
/// `names` (from its file), an index, or (for 1000-class models without names of their own) an
/// ImageNet class name such as `golden retriever`.
pub fn resolve_class(value: &str, num_classes: usize, names: &[String]) -> Result<usize> {
    if num_classes == 0 {
        return Err(Error::Class("this model is unconditional; drop --class".into()));
    }
    let own: Vec<(usize, String)> = (0..)
        .zip(names)
        .filter(|(_, name)| normalise(name) == normalise(value))
        .map(|(index, name)| (index, maskdit_io::printable(name).into_owned()))
        .collect();
    if let Some(index) = one_of(value, &own)? {
        return Ok(index);
    }
    if let Ok(index) = value.trim().parse::<i128>() {
        if index < 0 || index >= num_classes as i128 {
            return Err(Error::Class(format!(
                "class {index} is out of range: this model has classes 0..{}",
                num_classes - 1
            )));
        }
        return Ok(index as usize);
    }
    if !names.is_empty() {
        return Err(unknown("class of this model", &normalise(value), names.iter()));
    }
    if num_classes != 1000 {
        return Err(Error::Class(format!(
            "class `{value}` is not a number; this {num_classes}-class model takes class indices 0..{}",
            num_classes - 1
        )));
    }
    let labels = imagenet_labels()?;
    let want = normalise(value);
    let mut names = Vec::with_capacity(labels.len());
    let mut found = Vec::new();
    for (index, (wnid, name)) in &labels {
        if normalise(name) == want || wnid.eq_ignore_ascii_case(value.trim()) {
            found.push((label_index(index)?, format!("{name}, WordNet {wnid}")));
        }
        names.push(name.clone());
    }
    found.sort();
    match one_of(value, &found)? {
        Some(index) => Ok(index),
        None => Err(unknown("ImageNet class", &want, names.iter())),
    }
}

/// Refuses class names that differ only by case (or spaces and hyphens against underscores),
/// which `--class` could not tell apart.
pub fn check_distinct(names: &[String]) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if let Some(other) = names[..i].iter().find(|other| normalise(other) == normalise(name)) {
            return Err(Error::Class(format!(
                "the classes `{}` and `{}` differ only by case or spacing, so they could not be told apart by name; \
                 rename one",
                maskdit_io::printable(other),
                maskdit_io::printable(name)
            )));
        }
    }
    Ok(())
}

/// The one class of `found` (index, description); none is `None`, several an error that
/// lists them with their indices (ImageNet has two "crane"s).
fn one_of(value: &str, found: &[(usize, String)]) -> Result<Option<usize>> {
    match found {
        [] => Ok(None),
        [(index, _)] => Ok(Some(*index)),
        several => {
            let listed: Vec<String> = several.iter().map(|(index, what)| format!("{index} ({what})")).collect();
            Err(Error::Class(format!(
                "`{}` names {} classes: {}; pass the index of the one you mean",
                maskdit_io::printable(value.trim()),
                several.len(),
                listed.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_the_models_own_or_imagenets() -> Result<()> {
        assert_eq!(class_names(1000, &[])?[207], "golden_retriever");
        assert_eq!(class_names(2, &["a".into(), "b".into()])?, ["a", "b"]);
        assert!(class_names(10, &[])?.is_empty());
        Ok(())
    }

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
    fn ambiguous_names_are_answered_with_their_indices() {
        let err = resolve_class("crane", 1000, &[]).unwrap_err().to_string();
        assert!(err.contains("134 (crane") && err.contains("517 (crane") && err.contains("index"), "{err}");
        assert!(resolve_class("maillot", 1000, &[]).is_err());
        assert_eq!(resolve_class("134", 1000, &[]).unwrap(), 134);
        assert_eq!(resolve_class("n03126707", 1000, &[]).unwrap(), 517);
        let own: Vec<String> = ["Cat", "dog", "cat"].map(String::from).into();
        let err = resolve_class("CAT", 3, &own).unwrap_err().to_string();
        assert!(err.contains("0 (Cat)") && err.contains("2 (cat)"), "{err}");
        let forged: Vec<String> = ["a\nwrote 0 images".into(), "a\nwrote 0 images".into()].into();
        let err = resolve_class("a\nwrote 0 images", 2, &forged).unwrap_err().to_string();
        assert!(!err.contains('\n'), "{err}");
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
