//! `.npz` files: image batches in ADM's layout (`arr_0`, N×H×W×3 uint8), streamed a batch at a
//! time so that a 10 GB sample file never sits in memory, and statistics files (`mu`, `sigma`,
//! the layout of the official reference statistics).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, DVector};

use crate::{Error, Result, Statistics};

fn npz_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data { path: path.to_path_buf(), reason: reason.into() }
}

fn open_archive(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>> {
    let file = File::open(path).map_err(|e| npz_error(path, format!("cannot be opened ({e})")))?;
    zip::ZipArchive::new(BufReader::new(file)).map_err(|e| npz_error(path, format!("is not an .npz archive ({e})")))
}

/// The names of the arrays in an `.npz` file.
pub fn array_names(path: &Path) -> Result<Vec<String>> {
    let archive = open_archive(path)?;
    Ok(archive
        .file_names()
        .filter_map(|name| name.ok().and_then(|n| n.strip_suffix(".npy").map(str::to_string)))
        .collect())
}

/// An `.npy` header: element type, memory order and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Reads the header of the `.npy` stream `reader` (leaving it at the first element).
fn read_npy_header(reader: &mut impl Read) -> std::result::Result<NpyHeader, String> {
    let mut start = [0u8; 8];
    reader.read_exact(&mut start).map_err(|_| "is too short to be an .npy array".to_string())?;
    if &start[..6] != b"\x93NUMPY" {
        return Err("is not an .npy array".into());
    }
    let len = if start[6] == 1 {
        let mut len = [0u8; 2];
        reader.read_exact(&mut len).map_err(|_| "has a truncated .npy header")?;
        u16::from_le_bytes(len) as usize
    } else {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len).map_err(|_| "has a truncated .npy header")?;
        u32::from_le_bytes(len) as usize
    };
    if len > 1 << 20 {
        return Err("has an implausible .npy header".into());
    }
    let mut text = vec![0u8; len];
    reader.read_exact(&mut text).map_err(|_| "has a truncated .npy header")?;
    let text = String::from_utf8_lossy(&text);
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = text.find(&format!("'{key}'")).ok_or_else(|| format!("has no `{key}` in its .npy header"))?;
        Ok(text[at + key.len() + 2..].trim_start().trim_start_matches(':').trim_start())
    };
    let descr = field("descr")?;
    let descr = descr.strip_prefix('\'').and_then(|d| d.split('\'').next()).ok_or("has an unreadable dtype")?;
    let fortran_order = field("fortran_order")?.starts_with("True");
    let shape = field("shape")?;
    let shape = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or("has an unreadable shape")?;
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>().map_err(|_| format!("has a shape entry `{d}`")))
        .collect::<std::result::Result<Vec<usize>, String>>()?;
    Ok(NpyHeader { descr: descr.to_string(), fortran_order, shape })
}

/// Images stored in an `.npz` file as `arr_0`, N×H×W×3 uint8 (ADM's sample and reference
/// batches), read a batch at a time.
#[derive(Debug, Clone)]
pub struct NpzImages {
    path: PathBuf,
    /// Number of images, height, width.
    shape: (usize, usize, usize),
}

impl NpzImages {
    /// Checks that `path` holds `arr_0` as N×H×W×3 uint8 in C order.
    pub fn open(path: &Path) -> Result<Self> {
        let mut archive = open_archive(path)?;
        let mut entry = archive.by_name("arr_0.npy").map_err(|_| {
            npz_error(path, "has no `arr_0` array (images are stored as arr_0, N×H×W×3 uint8, as ADM's batches)")
        })?;
        let header = read_npy_header(&mut entry).map_err(|reason| npz_error(path, format!("arr_0 {reason}")))?;
        match header.shape[..] {
            [n, h, w, 3] if !header.fortran_order && (header.descr == "|u1" || header.descr == "<u1") => {
                Ok(Self { path: path.to_path_buf(), shape: (n, h, w) })
            }
            _ => Err(npz_error(
                path,
                format!(
                    "arr_0 is {} of shape {:?}{}; images must be N×H×W×3 uint8",
                    header.descr,
                    header.shape,
                    if header.fortran_order { " in Fortran order" } else { "" }
                ),
            )),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.shape.0
    }

    /// Whether the file holds no image.
    pub fn is_empty(&self) -> bool {
        self.shape.0 == 0
    }

    /// Calls `each` with consecutive batches of at most `batch` images, `(n, 3, H, W)` u8.
    pub fn for_each_batch(&self, batch: usize, each: &mut dyn FnMut(Tensor) -> Result<()>) -> Result<()> {
        let (n, h, w) = self.shape;
        let mut archive = open_archive(&self.path)?;
        let mut entry = archive.by_name("arr_0.npy").map_err(|e| npz_error(&self.path, e.to_string()))?;
        read_npy_header(&mut entry).map_err(|reason| npz_error(&self.path, reason))?;
        let image_bytes = h * w * 3;
        let mut done = 0;
        while done < n {
            let count = batch.max(1).min(n - done);
            let mut bytes = vec![0u8; count * image_bytes];
            entry
                .read_exact(&mut bytes)
                .map_err(|e| npz_error(&self.path, format!("ends inside image {done} or later ({e})")))?;
            let images =
                Tensor::from_vec(bytes, (count, h, w, 3), &Device::Cpu)?.permute((0, 3, 1, 2))?.contiguous()?;
            each(images)?;
            done += count;
        }
        Ok(())
    }
}

/// Reads `mu` and `sigma` from a statistics file, or `None` when the file has no such arrays.
pub fn read_statistics(path: &Path) -> Result<Option<Statistics>> {
    let names = array_names(path)?;
    if !(names.iter().any(|n| n == "mu") && names.iter().any(|n| n == "sigma")) {
        return Ok(None);
    }
    let arrays = Tensor::read_npz_by_name(path, &["mu", "sigma"])
        .map_err(|e| npz_error(path, format!("has unreadable `mu`/`sigma` arrays ({e})")))?;
    let (mu, sigma) = (&arrays[0], &arrays[1]);
    let dims = mu.elem_count();
    if sigma.dims() != [dims, dims] {
        return Err(npz_error(path, format!("has mu of {dims} values but sigma of shape {:?}", sigma.dims())));
    }
    let values = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?) };
    let mu = DVector::from_vec(values(mu)?);
    let sigma = DMatrix::from_row_slice(dims, dims, &values(sigma)?);
    if mu.iter().chain(sigma.iter()).any(|v| !v.is_finite()) {
        return Err(npz_error(path, "holds NaN or infinite statistics"));
    }
    Ok(Some(Statistics::new(mu, sigma)?))
}

/// Writes `stats` as `mu` and `sigma` (f64) in the official statistics layout, atomically.
pub fn write_statistics(stats: &Statistics, path: &Path) -> Result<()> {
    let dims = stats.mu.len();
    let mu = Tensor::from_slice(stats.mu.as_slice(), dims, &Device::Cpu)?;
    // nalgebra stores column-major; the covariance is symmetric, but write it row by row anyway.
    let rows: Vec<f64> = stats.sigma.transpose().as_slice().to_vec();
    let sigma = Tensor::from_vec(rows, (dims, dims), &Device::Cpu)?;
    maskdit_io::replace_file(path, |tmp| {
        Tensor::write_npz(&[("mu", &mu), ("sigma", &sigma)], tmp).map_err(std::io::Error::other)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_headers_are_parsed() {
        let text = "{'descr': '|u1', 'fortran_order': False, 'shape': (5, 32, 32, 3), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
        let header = read_npy_header(&mut bytes.as_slice()).unwrap();
        assert_eq!(header, NpyHeader { descr: "|u1".into(), fortran_order: false, shape: vec![5, 32, 32, 3] });
        let text = "{'descr': '<f8', 'fortran_order': True, 'shape': (7,), }";
        let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
        bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
        let header = read_npy_header(&mut bytes.as_slice()).unwrap();
        assert_eq!(header, NpyHeader { descr: "<f8".into(), fortran_order: true, shape: vec![7] });
        assert!(read_npy_header(&mut &b"\x93NUMPY"[..]).is_err());
    }
}
