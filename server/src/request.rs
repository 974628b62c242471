//! A generation request as the API takes it, checked against the served model and its limits,
//! and the `maskdit generate` command that makes the same images.

use serde::{Deserialize, Serialize};

use maskdit_sampler::{DdpmOptions, EdmOptions, Sampler};

use crate::ServedModel;

/// Most images one request may ask for.
pub const MAX_IMAGES: usize = 16;
/// Most sampling steps one request may ask for.
pub const MAX_STEPS: usize = 1000;
/// Largest guidance scale accepted.
pub const MAX_GUIDANCE: f64 = 50.0;

/// The samplers the page offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerName {
    /// EDM's Heun sampler (the default of `maskdit generate`).
    Edm,
    /// Ancestral DDPM.
    Ddpm,
}

/// The body of `POST /api/jobs`; absent fields take the model's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// A served model's name (default: the first).
    pub model: Option<String>,
    /// Class: its name or index (default: each seed draws one).
    pub class: Option<serde_json::Value>,
    /// First seed; the images take `seed, seed+1, …`.
    #[serde(default)]
    pub seed: u64,
    /// Number of images.
    pub count: Option<usize>,
    /// Guidance scale (1 = off).
    pub guidance: Option<f64>,
    /// Sampling steps.
    pub steps: Option<usize>,
    /// Sampler.
    pub sampler: Option<SamplerName>,
}

/// A checked request: everything a job needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The served model's name.
    pub model: String,
    /// The class index (`None`: drawn from each seed).
    pub class: Option<usize>,
    /// The class's name, where the model has names.
    pub class_name: Option<String>,
    /// First seed.
    pub seed: u64,
    /// Number of images (seeds `seed..seed+count`).
    pub count: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Sampling steps.
    pub steps: usize,
    /// Sampler.
    pub sampler: SamplerName,
}

impl Request {
    /// Checks the request against `models` (the first is the default); the error says what
    /// is wrong and the limit it broke.
    pub fn settle(&self, models: &[ServedModel]) -> Result<Settings, String> {
        let served = match &self.model {
            None => models.first().ok_or("the server has no model")?,
            Some(name) => models.iter().find(|m| &m.name == name).ok_or_else(|| {
                let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
                format!("unknown model; this server has {}", names.join(", "))
            })?,
        };
        let classes = served.loaded.model.config().num_classes;
        let class = match &self.class {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) if text.trim().is_empty() => None,
            Some(serde_json::Value::String(text)) => Some(text.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(_) => return Err("class must be a name or an index".into()),
        };
        let class = class
            .map(|text| maskdit_registry::labels::resolve_class(&text, classes, &served.class_names))
            .transpose()
            .map_err(|e| e.to_string())?;
        let count = self.count.unwrap_or(1);
        if count == 0 || count > MAX_IMAGES {
            return Err(format!("count must be between 1 and {MAX_IMAGES}"));
        }
        if self.seed.checked_add(count as u64).is_none() {
            return Err("the seeds run past the largest seed".into());
        }
        let sampler = self.sampler.unwrap_or(SamplerName::Edm);
        let steps = self.steps.unwrap_or(served.loaded.steps);
        let fewest = if sampler == SamplerName::Edm { 2 } else { 1 };
        if steps < fewest || steps > MAX_STEPS {
            return Err(format!("steps must be between {fewest} and {MAX_STEPS}"));
        }
        let guidance = match (self.guidance, classes) {
            (Some(g), 0) if g != 1.0 => return Err("this model has no classes, so no guidance: leave it at 1".into()),
            (_, 0) => 1.0,
            (g, _) => g.unwrap_or(served.loaded.guidance),
        };
        if !(0.0..=MAX_GUIDANCE).contains(&guidance) {
            return Err(format!("guidance must be a number between 0 and {MAX_GUIDANCE}"));
        }
        let class_name = class.and_then(|c| served.class_names.get(c).cloned());
        Ok(Settings { model: served.name.clone(), class, class_name, seed: self.seed, count, guidance, steps, sampler })
    }
}

/// `text` quoted for a POSIX shell where it needs quoting.
fn shell_word(text: &str) -> String {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=+@,".contains(&b)) {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl Settings {
    /// The seeds of the images.
    pub fn seeds(&self) -> Vec<u64> {
        (self.seed..self.seed + self.count as u64).collect()
    }

    /// The sampler these settings name, as `maskdit generate` builds it.
    pub fn sampler(&self) -> Sampler {
        match self.sampler {
            SamplerName::Edm => Sampler::Edm(EdmOptions::heun(self.steps)),
            SamplerName::Ddpm => Sampler::Ddpm(DdpmOptions::new(self.steps)),
        }
    }

    /// The `maskdit generate` command that writes the same images, given the model argument
    /// the server was started with.
    pub fn command(&self, model_argument: &str) -> String {
        let last = self.seed + self.count as u64 - 1;
        let mut words = vec!["maskdit".to_string(), "generate".into(), "--model".into(), shell_word(model_argument)];
        if let Some(class) = self.class {
            words.extend(["--class".into(), class.to_string()]);
        }
        words.extend(["--seeds".into(), format!("{}-{last}", self.seed)]);
        words.extend(["--steps".into(), self.steps.to_string(), "--cfg".into(), self.guidance.to_string()]);
        if self.sampler == SamplerName::Ddpm {
            words.extend(["--sampler".into(), "ddpm".into()]);
        }
        words.extend(["--out".into(), "out".into()]);
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::shell_word;

    #[test]
    fn words_are_quoted_only_where_needed() {
        assert_eq!(shell_word("mnist"), "mnist");
        assert_eq!(shell_word("runs/my model.safetensors"), "'runs/my model.safetensors'");
        assert_eq!(shell_word("a'b"), r"'a'\''b'");
        assert_eq!(shell_word("$(rm -rf ~)"), "'$(rm -rf ~)'");
    }
}
