//! Outputs that would destroy the inputs of the same command are refused before any work.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// `path` made absolute with links resolved; a file that does not exist yet is resolved
/// through its folder.
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(path) = std::fs::canonicalize(path) {
        return Some(path);
    }
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(std::fs::canonicalize(folder).ok()?.join(path.file_name()?))
}

/// Refuses `output` (the value of option `flag`) when it is one of `inputs` or lies inside
/// an input folder, where it would replace the input or be read as one next time.
pub(crate) fn refuse_overwriting_inputs<'a>(
    flag: &str,
    output: &Path,
    inputs: impl IntoIterator<Item = &'a Path>,
) -> Result<()> {
    let Some(out) = resolved(output) else { return Ok(()) };
    for input in inputs {
        let Some(input_path) = resolved(input) else { continue };
        if out == input_path {
            bail!("{flag} {} is an input of this command; write it elsewhere", output.display());
        }
        if input_path.is_dir() && out.starts_with(&input_path) {
            bail!(
                "{flag} {} lies inside the input folder {}, where it would be read as input; write it elsewhere",
                output.display(),
                input.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_onto_or_into_inputs_are_refused() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("maskdit-outputs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("images"))?;
        std::fs::write(dir.join("shard.safetensors"), b"x")?;
        let inputs = [dir.join("images"), dir.join("shard.safetensors")];
        let inputs = || inputs.iter().map(PathBuf::as_path);
        assert!(refuse_overwriting_inputs("--out", &dir.join("shard.safetensors"), inputs()).is_err());
        assert!(refuse_overwriting_inputs("--out", &dir.join("images/../shard.safetensors"), inputs()).is_err());
        assert!(refuse_overwriting_inputs("--out", &dir.join("images/stats.npz"), inputs()).is_err());
        refuse_overwriting_inputs("--out", &dir.join("stats.npz"), inputs())?;
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }
}
