//! `.npz` files: image batches in ADM's layout (`arr_0`, N×H×W×3 uint8), streamed a batch at a
//! time so that a 10 GB sample file never sits in memory, and evaluation files (statistics in
//! the official and ADM's layouts, stored features).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, DVector};

use crate::{Error, Result, Statistics};

fn npz_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data { path: path.to_path_buf(), reason: reason.into() }
}

/// An opened `.npz`.
type Archive = zip::ZipArchive<BufReader<File>>;

fn open_archive(path: &Path) -> Result<Archive> {
    let file = File::open(path).map_err(|e| npz_error(path, format!("cannot be opened ({e})")))?;
    zip::ZipArchive::new(BufReader::new(file)).map_err(|e| npz_error(path, format!("is not an .npz archive ({e})")))
}

/// The names of the arrays in an `.npz` file.
pub fn array_names(path: &Path) -> Result<Vec<String>> {
    Ok(names_in(&open_archive(path)?))
}

fn names_in(archive: &Archive) -> Vec<String> {
    archive.file_names().filter_map(|name| name.ok().and_then(|n| n.strip_suffix(".npy").map(str::to_string))).collect()
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

impl NpyHeader {
    /// The bytes the header's shape and element type promise (`None` on overflow).
    fn data_bytes(&self) -> Option<u64> {
        let item_bytes = self.descr.trim_start_matches(['<', '>', '|', '=']).get(1..).and_then(|n| n.parse().ok());
        self.shape.iter().try_fold(item_bytes.unwrap_or(1u64), |acc, &d| acc.checked_mul(d as u64))
    }
}

/// Checks that each array of `names` holds the bytes its header promises, before anything is
/// allocated for it (a damaged or hostile header must not ask for more).
fn check_array_sizes(path: &Path, archive: &mut Archive, names: &[&str]) -> Result<()> {
    for name in names {
        let mut entry =
            archive.by_name(&format!("{name}.npy")).map_err(|_| npz_error(path, format!("has no `{name}` array")))?;
        let header = read_npy_header(&mut entry).map_err(|reason| npz_error(path, format!("`{name}` {reason}")))?;
        if header.data_bytes().is_none_or(|bytes| bytes > entry.size()) {
            return Err(npz_error(
                path,
                format!(
                    "`{name}`'s header promises shape {:?} of {} but the file holds {} bytes for it (damaged file?)",
                    header.shape,
                    header.descr,
                    entry.size()
                ),
            ));
        }
    }
    Ok(())
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
                // The header's shape must fit the stored bytes: a damaged header must not make
                // a batch buffer of absurd size.
                if header.data_bytes().is_none_or(|bytes| bytes > entry.size()) || h == 0 || w == 0 {
                    return Err(npz_error(
                        path,
                        format!(
                            "arr_0's header says {n}×{h}×{w}×3 but it holds {} bytes (damaged file?)",
                            entry.size()
                        ),
                    ));
                }
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

/// Writes `count` images of `height`×`width` RGB as `arr_0` (N×H×W×3 uint8, ADM's layout) to
/// an `.npz` file, atomically; `image(i)` gives image `i`'s `height·width·3` bytes (HWC). The
/// array is stored uncompressed and in ZIP64 form when it passes 4 GB (numpy reads both).
pub fn write_images(
    path: &Path,
    count: usize,
    (height, width): (usize, usize),
    image: &mut dyn FnMut(usize) -> Result<Vec<u8>>,
) -> Result<()> {
    let bytes_per_image = height * width * 3;
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({count}, {height}, {width}, 3), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let total = 10 + header.len() as u64 + (count * bytes_per_image) as u64;
    let mut failure = None;
    let written = maskdit_io::replace_file(path, |tmp| {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(File::create(tmp)?));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(total >= u32::MAX as u64);
        zip.start_file("arr_0.npy", options).map_err(std::io::Error::other)?;
        zip.write_all(b"\x93NUMPY\x01\x00")?;
        zip.write_all(&(header.len() as u16).to_le_bytes())?;
        zip.write_all(header.as_bytes())?;
        for i in 0..count {
            let data = match image(i) {
                Ok(data) if data.len() == bytes_per_image => data,
                Ok(data) => {
                    failure = Some(Error::Input(format!(
                        "image {i} has {} bytes, not {height}×{width}×3 = {bytes_per_image}",
                        data.len()
                    )));
                    return Err(std::io::Error::other("bad image"));
                }
                Err(e) => {
                    failure = Some(e);
                    return Err(std::io::Error::other("bad image"));
                }
            };
            zip.write_all(&data)?;
        }
        zip.finish().map_err(std::io::Error::other)?.into_inner().map_err(|e| e.into_error())?.sync_all()
    });
    match (failure, written) {
        (Some(e), _) => Err(e),
        (None, result) => Ok(result?),
    }
}

/// What an evaluation file holds besides images, each part optional: FID's statistics (`mu`,
/// `sigma`, f64, the official reference statistics' layout), sFID's (`mu_s`, `sigma_s`, as in
/// ADM's reference batches) and the pool features precision and recall need (`pool_features`,
/// `(N, 2048)` f32).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvaluationFile {
    /// Mean and covariance of the pool features.
    pub statistics: Option<Statistics>,
    /// Mean and covariance of the spatial features.
    pub spatial_statistics: Option<Statistics>,
    /// The pool features, row-major `(N, 2048)`.
    pub pool_features: Option<Vec<f32>>,
}

/// Names of the arrays of an [`EvaluationFile`].
const MU: &str = "mu";
const SIGMA: &str = "sigma";
const SPATIAL_MU: &str = "mu_s";
const SPATIAL_SIGMA: &str = "sigma_s";
const POOL_FEATURES: &str = "pool_features";

impl EvaluationFile {
    /// Reads whichever parts `path` holds (a statistics pair counts only when both arrays are
    /// there); values that are not finite, and shapes that do not fit, are errors.
    pub fn read(path: &Path) -> Result<Self> {
        let mut archive = open_archive(path)?;
        let names = names_in(&archive);
        let has = |name: &str| names.iter().any(|n| n == name);
        let present: Vec<&str> =
            [MU, SIGMA, SPATIAL_MU, SPATIAL_SIGMA, POOL_FEATURES].into_iter().filter(|n| has(n)).collect();
        check_array_sizes(path, &mut archive, &present)?;
        let pair = |mu: &str, sigma: &str| -> Result<Option<Statistics>> {
            if has(mu) && has(sigma) {
                read_statistics_pair(path, mu, sigma).map(Some)
            } else {
                Ok(None)
            }
        };
        let pool_features = if has(POOL_FEATURES) {
            let array = Tensor::read_npz_by_name(path, &[POOL_FEATURES])
                .map_err(|e| npz_error(path, format!("has an unreadable `{POOL_FEATURES}` array ({e})")))?;
            let (_, dims) = array[0].dims2().map_err(|_| npz_error(path, format!("`{POOL_FEATURES}` is not 2-d")))?;
            if dims != crate::FEATURE_DIMS {
                return Err(npz_error(path, format!("`{POOL_FEATURES}` has {dims} columns, not 2048")));
            }
            let values = array[0].to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(npz_error(path, format!("`{POOL_FEATURES}` holds NaN or infinite values")));
            }
            Some(values)
        } else {
            None
        };
        Ok(Self { statistics: pair(MU, SIGMA)?, spatial_statistics: pair(SPATIAL_MU, SPATIAL_SIGMA)?, pool_features })
    }

    /// Writes the parts present, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut arrays: Vec<(&str, Tensor)> = Vec::new();
        for (stats, mu, sigma) in [(&self.statistics, MU, SIGMA), (&self.spatial_statistics, SPATIAL_MU, SPATIAL_SIGMA)]
        {
            if let Some(stats) = stats {
                let dims = stats.mu.len();
                arrays.push((mu, Tensor::from_slice(stats.mu.as_slice(), dims, &Device::Cpu)?));
                // nalgebra stores column-major: write the covariance row by row.
                let rows: Vec<f64> = stats.sigma.transpose().as_slice().to_vec();
                arrays.push((sigma, Tensor::from_vec(rows, (dims, dims), &Device::Cpu)?));
            }
        }
        if let Some(features) = &self.pool_features {
            let rows = features.len() / crate::FEATURE_DIMS;
            arrays.push((POOL_FEATURES, Tensor::from_slice(features, (rows, crate::FEATURE_DIMS), &Device::Cpu)?));
        }
        if arrays.is_empty() {
            return Err(Error::Input("an evaluation file needs statistics or features".into()));
        }
        let named: Vec<(&str, &Tensor)> = arrays.iter().map(|(n, t)| (*n, t)).collect();
        maskdit_io::replace_file(path, |tmp| Tensor::write_npz(&named, tmp).map_err(std::io::Error::other))?;
        Ok(())
    }
}

/// Reads the statistics pair `mu`, `sigma` of `path` (their sizes checked by the caller).
fn read_statistics_pair(path: &Path, mu: &str, sigma: &str) -> Result<Statistics> {
    let arrays = Tensor::read_npz_by_name(path, &[mu, sigma])
        .map_err(|e| npz_error(path, format!("has unreadable `{mu}`/`{sigma}` arrays ({e})")))?;
    let (mean, covariance) = (&arrays[0], &arrays[1]);
    let dims = mean.elem_count();
    if covariance.dims() != [dims, dims] {
        return Err(npz_error(
            path,
            format!("has `{mu}` of {dims} values but `{sigma}` of shape {:?}", covariance.dims()),
        ));
    }
    let values = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?) };
    let mean = DVector::from_vec(values(mean)?);
    let covariance = DMatrix::from_row_slice(dims, dims, &values(covariance)?);
    if mean.iter().chain(covariance.iter()).any(|v| !v.is_finite()) {
        return Err(npz_error(path, format!("holds NaN or infinite values in `{mu}`/`{sigma}`")));
    }
    Statistics::new(mean, covariance).map_err(|e| npz_error(path, format!("`{mu}`/`{sigma}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_image_batches_read_back() {
        let dir = std::env::temp_dir().join(format!("maskdit-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("images.npz");
        let pixel = |i: usize, j: usize| (i * 31 + j) as u8;
        write_images(&path, 3, (4, 5), &mut |i| Ok((0..60).map(|j| pixel(i, j)).collect())).unwrap();
        let images = NpzImages::open(&path).unwrap();
        assert_eq!(images.len(), 3);
        let mut seen = Vec::new();
        images
            .for_each_batch(2, &mut |batch| {
                // (n, 3, H, W) back to HWC bytes.
                let hwc = batch.permute((0, 2, 3, 1)).unwrap().flatten_all().unwrap().to_vec1::<u8>().unwrap();
                seen.extend(hwc);
                Ok(())
            })
            .unwrap();
        let want: Vec<u8> = (0..3).flat_map(|i| (0..60).map(move |j| pixel(i, j))).collect();
        assert_eq!(seen, want);
        // numpy's own reader (through candle) agrees on the shape.
        let arrays = Tensor::read_npz(&path).unwrap();
        assert_eq!(arrays[0].1.dims(), [3, 4, 5, 3]);
        // A wrong-sized image fails and leaves nothing behind.
        let bad = dir.join("bad.npz");
        assert!(write_images(&bad, 2, (4, 5), &mut |_| Ok(vec![0; 7])).is_err());
        assert!(!bad.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_header_promising_more_than_the_file_holds_is_refused() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("maskdit-npz-lie-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lie.npz");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        zip.start_file("arr_0.npy", zip::write::SimpleFileOptions::default()).unwrap();
        let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (4000000000, 4096, 4096, 3), }\n";
        zip.write_all(b"\x93NUMPY\x01\x00").unwrap();
        zip.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
        zip.write_all(header.as_bytes()).unwrap();
        zip.write_all(&[0u8; 48]).unwrap();
        zip.finish().unwrap();
        let error = NpzImages::open(&path).unwrap_err().to_string();
        assert!(error.contains("damaged"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An .npz whose arrays have the given headers and data bytes.
    fn npz_with(path: &Path, arrays: &[(&str, String, Vec<u8>)]) {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, header, data) in arrays {
            zip.start_file(format!("{name}.npy"), zip::write::SimpleFileOptions::default()).unwrap();
            zip.write_all(b"\x93NUMPY\x01\x00").unwrap();
            zip.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
            zip.write_all(header.as_bytes()).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }

    #[test]
    fn damaged_statistics_files_are_refused_without_allocating_or_a_negative_distance() {
        let dir = std::env::temp_dir().join(format!("maskdit-npz-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header = |shape: &str| format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}\n");
        let f64s = |values: &[f64]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        let write = |name: &str, sigma_shape: &str, sigma: &[f64]| {
            let path = dir.join(name);
            npz_with(&path, &[("mu", header("(2,)"), f64s(&[0.0, 1.0])), ("sigma", header(sigma_shape), f64s(sigma))]);
            path
        };
        // A header asking for 2^62 values: an error, not "capacity overflow".
        let huge = write("huge.npz", "(2147483648, 2147483648)", &[1.0, 0.0, 0.0, 1.0]);
        let err = EvaluationFile::read(&huge).unwrap_err().to_string();
        assert!(err.contains("promises shape"), "{err}");
        let asymmetric = write("asym.npz", "(2, 2)", &[1.0, 0.5, -0.5, 1.0]);
        let err = EvaluationFile::read(&asymmetric).unwrap_err().to_string();
        assert!(err.contains("not symmetric"), "{err}");
        let indefinite = write("indef.npz", "(2, 2)", &[1.0, 0.0, 0.0, -4.0]);
        let err = EvaluationFile::read(&indefinite).unwrap_err().to_string();
        assert!(err.contains("negative eigenvalue"), "{err}");
        let good = write("good.npz", "(2, 2)", &[2.0, 0.5, 0.5, 1.0]);
        let stats = EvaluationFile::read(&good).unwrap().statistics.unwrap();
        assert!(stats.frechet_distance(&stats).unwrap().abs() < 1e-12);
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
