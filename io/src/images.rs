//! Reading images whose headers are not trusted: the declared size is checked against a limit
//! before any pixel is decoded.

use std::path::Path;

use crate::{Error, Result};

/// The longest side accepted, in pixels (an 8192×8192 RGB image decodes to 192 MiB).
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// The most memory one decode may take.
const MAX_DECODE_BYTES: u64 = 512 << 20;

/// Decodes the PNG or JPEG at `path`; an image that declares a side over [`MAX_IMAGE_SIDE`]
/// is refused before it is decoded.
pub fn open_image(path: &Path) -> Result<image::DynamicImage> {
    use image::ImageDecoder;
    let unreadable = |e: image::ImageError| Error::Format {
        path: path.to_path_buf(),
        reason: format!("is not a readable image ({e})"),
    };
    let mut reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    // The header is read once; the limits apply to the decode that follows it, after the
    // declared size has been judged here (with a message that names it).
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(unreadable)?;
    let (width, height) = decoder.dimensions();
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(Error::Format {
            path: path.to_path_buf(),
            reason: format!(
                "declares {width}×{height} pixels, over the limit of {MAX_IMAGE_SIDE} per side; scale it down first"
            ),
        });
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder.set_limits(limits).map_err(unreadable)?;
    image::DynamicImage::from_decoder(decoder).map_err(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_file_declaring_a_huge_image_is_refused_before_decoding() {
        let dir = std::env::temp_dir().join(format!("maskdit-io-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small.png");
        image::RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3])).save(&small).unwrap();
        assert_eq!(open_image(&small).unwrap().to_rgb8().dimensions(), (3, 2));
        let huge = dir.join("huge.png");
        std::fs::write(&huge, maskdit_testkit::png_declaring(16000, 16000)).unwrap();
        let err = open_image(&huge).unwrap_err().to_string();
        assert!(err.contains("16000×16000") && err.contains("8192"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
