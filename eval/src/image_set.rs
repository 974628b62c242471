//! A set of images to evaluate: folders of PNG/JPEG files and `.npz` batches, taken together.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::npz::NpzImages;
use crate::{Error, Result};

/// File extensions read from folders (case-insensitive).
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// One place images come from.
#[derive(Debug, Clone)]
enum Source {
    /// Image files, sorted by name.
    Files(Vec<PathBuf>),
    /// An ADM-layout `.npz` file.
    Npz(NpzImages),
}

/// Images from several folders and `.npz` files, read in the order given.
#[derive(Debug, Clone)]
pub struct ImageSet {
    sources: Vec<Source>,
}

fn data_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::Data { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads one image file as `(1, 3, H, W)` u8 RGB (see [`image_tensor`]).
pub fn read_image(path: &Path) -> Result<Tensor> {
    let image = maskdit_io::open_image(path).map_err(|e| match e {
        maskdit_io::Error::Format { reason, .. } => data_error(path, reason),
        e => data_error(path, e.to_string()),
    })?;
    image_tensor(&image)
}

/// An image as `(1, 3, H, W)` u8 RGB: grey replicated, alpha dropped, as PIL's
/// `convert("RGB")`.
pub fn image_tensor(image: &image::DynamicImage) -> Result<Tensor> {
    let image = image.to_rgb8();
    let (w, h) = (image.width() as usize, image.height() as usize);
    Ok(Tensor::from_vec(image.into_raw(), (1, h, w, 3), &Device::Cpu)?.permute((0, 3, 1, 2))?.contiguous()?)
}

impl ImageSet {
    /// Opens each path: a folder (its PNG and JPEG files, sorted by name; sub-folders are not
    /// searched) or an `.npz` file holding `arr_0`. An empty folder is an error.
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut sources = Vec::with_capacity(paths.len());
        for path in paths {
            if path.is_dir() {
                let entries =
                    std::fs::read_dir(path).map_err(|e| data_error(path, format!("cannot be listed ({e})")))?;
                let mut files = Vec::new();
                for entry in entries {
                    let file = entry.map_err(|e| data_error(path, format!("cannot be listed ({e})")))?.path();
                    let is_image = file
                        .extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|known| e.eq_ignore_ascii_case(known)));
                    if is_image && file.is_file() {
                        files.push(file);
                    }
                }
                if files.is_empty() {
                    return Err(data_error(path, "holds no PNG or JPEG images"));
                }
                files.sort();
                sources.push(Source::Files(files));
            } else if path.is_file() {
                sources.push(Source::Npz(NpzImages::open(path)?));
            } else {
                return Err(data_error(path, "is neither a folder of images nor an .npz file"));
            }
        }
        Ok(Self { sources })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.sources
            .iter()
            .map(|s| match s {
                Source::Files(files) => files.len(),
                Source::Npz(npz) => npz.len(),
            })
            .sum()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `each` with batches of at most `batch` images as `(n, 3, H, W)` u8 tensors (a
    /// folder's images may differ in size: each of its batches is split into runs of one size).
    pub fn for_each_batch(&self, batch: usize, each: &mut dyn FnMut(Tensor) -> Result<()>) -> Result<()> {
        let batch = batch.max(1);
        for source in &self.sources {
            match source {
                Source::Npz(npz) => npz.for_each_batch(batch, each)?,
                Source::Files(files) => {
                    for chunk in files.chunks(batch) {
                        let images = chunk.iter().map(|f| read_image(f)).collect::<Result<Vec<Tensor>>>()?;
                        let mut start = 0;
                        while start < images.len() {
                            let dims = images[start].dims();
                            let end = start + images[start..].iter().take_while(|t| t.dims() == dims).count();
                            each(Tensor::cat(&images[start..end], 0)?)?;
                            start = end;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
