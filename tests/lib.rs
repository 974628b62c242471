//! Helpers shared by the workspace tests: locating the reference tensors of the official
//! implementation and comparing against them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

pub mod hub_standin;
pub mod mnist_judge;

/// The folders of reference cases: `$MASKDIT_GOLDEN` (several separated by `:`), or
/// `tests/golden/` and `tests/golden-uncond/` of this workspace. A relative folder is taken from
/// the current directory, else from the workspace root.
pub fn golden_roots() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var("MASKDIT_GOLDEN") {
        Ok(dirs) => dirs
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|dir| {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() || dir.exists() {
                    dir
                } else {
                    manifest.parent().expect("workspace root").join(dir)
                }
            })
            .collect(),
        Err(_) => vec![manifest.join("golden"), manifest.join("golden-uncond")],
    }
}

/// What a case folder holds, judged from its `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseKind {
    /// A MaskDiT model case (forward, loss, training, sampler references).
    Model,
    /// An AutoencoderKL in the original latent-diffusion layout.
    VaeLdm,
    /// An AutoencoderKL in the diffusers layout.
    VaeDiffusers,
}

/// Every case folder of the golden root with its kind. Panics on a folder without a readable
/// `config.json` or of a kind no test knows, so that no case is skipped silently.
pub fn cases() -> Vec<(PathBuf, CaseKind)> {
    let roots = golden_roots();
    let mut out = Vec::new();
    let entries = roots.iter().flat_map(|root| {
        std::fs::read_dir(root).unwrap_or_else(|e| panic!("cannot read golden folder {}: {e}", root.display()))
    });
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if !path.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(path.join("config.json"))
            .unwrap_or_else(|e| panic!("case {} has no readable config.json: {e}", path.display()));
        let config: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("case {}: bad config.json: {e}", path.display()));
        let kind = if config.get("hidden_size").is_some() {
            CaseKind::Model
        } else if config.get("format").and_then(|f| f.as_str()) == Some("ldm") {
            CaseKind::VaeLdm
        } else if config.get("_class_name").and_then(|c| c.as_str()) == Some("AutoencoderKL") {
            CaseKind::VaeDiffusers
        } else {
            panic!("case {}: config.json describes nothing the tests know how to check", path.display());
        };
        out.push((path, kind));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no case folders in {roots:?}");
    out
}

/// The case folders of one kind.
pub fn cases_of(kind: CaseKind) -> Vec<PathBuf> {
    cases().into_iter().filter(|(_, k)| *k == kind).map(|(p, _)| p).collect()
}

/// The device the parity suites run on: `$MASKDIT_DEVICE` (`cpu`, `cuda` or `cuda:N`; default
/// `cpu`).
pub fn device() -> Device {
    let name = std::env::var("MASKDIT_DEVICE").unwrap_or_else(|_| "cpu".into());
    match name.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0).expect("MASKDIT_DEVICE=cuda: no usable CUDA device"),
        other => {
            let ordinal = other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("MASKDIT_DEVICE `{other}`: use cpu, cuda or cuda:N"));
            Device::new_cuda(ordinal).unwrap_or_else(|e| panic!("MASKDIT_DEVICE={other}: {e}"))
        }
    }
}

/// `cpu_tolerance` on the CPU; off it at least 1e-4, the f32 budget for GPU kernels (other
/// summation orders, TF32-free cuBLAS).
pub fn tolerance(cpu_tolerance: f64) -> f64 {
    if device().is_cpu() {
        cpu_tolerance
    } else {
        cpu_tolerance.max(1e-4)
    }
}

/// Reads every tensor of a safetensors file onto [`device`].
pub fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &device()).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The EMA weights of model case `case` (its `config.json` and `weights.safetensors`), in f32
/// on [`device`].
pub fn case_model(case: &Path) -> maskdit::MaskDit {
    let text = std::fs::read_to_string(case.join("config.json")).expect("the case's config.json");
    let config = maskdit::ModelConfig::from_json(&text).expect("a model configuration");
    let weights = case.join("weights.safetensors");
    maskdit::weights::load(&weights, &config, maskdit::WeightSet::Ema, DType::F32, &device())
        .unwrap_or_else(|e| panic!("cannot load {}: {e}", weights.display()))
}

/// A sampler step hook that stops the run once `done` steps are finished, counting in `seen`
/// the steps it was shown.
pub fn stop_after(
    done: usize,
    seen: &mut usize,
) -> impl FnMut(&maskdit_sampler::Step<'_>) -> std::ops::ControlFlow<()> + '_ {
    move |step| {
        *seen += 1;
        if step.done() == done {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    }
}

/// `map[key]`, or a panic naming the file's missing key.
pub fn get<'a>(map: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    map.get(key).unwrap_or_else(|| panic!("reference file lacks `{key}`"))
}

/// A scalar tensor as f64.
pub fn scalar(map: &HashMap<String, Tensor>, key: &str) -> f64 {
    get(map, key).to_dtype(DType::F64).and_then(|t| t.flatten_all()?.get(0)?.to_scalar::<f64>()).expect("scalar")
}

pub use maskdit_testkit::{relative_l2, worst_and_quantile, SeededTensors};

/// Panics with a message naming `what` when the relative L2 error exceeds `tolerance` (on the
/// CPU; see [`tolerance`] for other devices).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tolerance: f64) {
    let tolerance = self::tolerance(tolerance);
    let err = relative_l2(got, want);
    assert!(err <= tolerance, "{what}: relative L2 error {err:.3e} exceeds {tolerance:.0e}");
    eprintln!("{what}: relative L2 error {err:.3e}");
}

/// A scratch folder under the system's temporary folder, empty when made and removed with
/// everything in it when dropped.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// An empty folder named after `name` and this process.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("maskdit-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a writable temporary folder");
        Self(dir)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The README's hash of `golden-eval`: FNV-1a 64 of `salt:name`, then SplitMix64 of each
/// element index, reduced to -3..=3, as `offset + v · scale` in f32.
fn hashed_tensor(salt: &str, name: &str, offset: f32, scale: f32, shape: &[usize]) -> Tensor {
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{salt}:{name}").bytes() {
        key = (key ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count as u64)
        .map(|i| {
            let mut z = key.wrapping_add((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let v = (z % 7) as i64 - 3;
            offset + v as f32 * scale
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("hashed tensor")
}

/// The FID Inception weights of a `fid_inception` case (`config.json`'s tensors, made from
/// their names by the README's hash), by pytorch-fid's names.
pub fn hashed_inception_weights(case: &Path) -> HashMap<String, Tensor> {
    let text = std::fs::read_to_string(case.join("config.json")).expect("config.json");
    let config: serde_json::Value = serde_json::from_str(&text).expect("config.json is JSON");
    let salt = config["salt"].as_str().expect("salt");
    config["tensors"]
        .as_object()
        .expect("tensors")
        .iter()
        .map(|(name, spec)| {
            let shape: Vec<usize> =
                spec["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().expect("dim") as usize).collect();
            let offset = spec["offset"].as_f64().expect("offset") as f32;
            let scale = spec["scale"].as_f64().expect("scale") as f32;
            (name.clone(), hashed_tensor(salt, name, offset, scale, &shape))
        })
        .collect()
}

/// The public FID Inception case folder.
pub fn fid_inception_case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden-eval/fid_inception")
}
