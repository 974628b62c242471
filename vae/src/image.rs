//! Conversions between tensors in [−1, 1] and 8-bit images, and the ADM centre crop.

use candle_core::{DType, Device, Tensor};
use image::{imageops, DynamicImage, GrayImage, RgbImage};

use crate::{Error, Result};

/// `(N, C, H, W)` in [−1, 1] (C = 1 or 3) → 8-bit images, as `(x + 1)·127.5` clamped to
/// [0, 255] and truncated, like the reference's PNG writer.
pub fn to_images(x: &Tensor) -> Result<Vec<DynamicImage>> {
    let (n, c, h, w) = x.dims4()?;
    if c != 1 && c != 3 {
        return Err(Error::Input(format!("images need 1 or 3 channels, got {c}")));
    }
    let bytes = ((x.to_dtype(DType::F32)? + 1.0)? * 127.5)?
        .clamp(0f32, 255f32)?
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let per_image = h * w * c;
    (0..n)
        .map(|i| {
            let data: Vec<u8> = bytes[i * per_image..(i + 1) * per_image].iter().map(|&v| v as u8).collect();
            let (w, h) = (w as u32, h as u32);
            let image = if c == 1 {
                GrayImage::from_raw(w, h, data).map(DynamicImage::ImageLuma8)
            } else {
                RgbImage::from_raw(w, h, data).map(DynamicImage::ImageRgb8)
            };
            image.ok_or_else(|| Error::Input("image buffer has the wrong size".into()))
        })
        .collect()
}

/// An 8-bit RGB image → `(3, H, W)` f32 in [−1, 1].
pub fn from_image(image: &DynamicImage, device: &Device) -> Result<Tensor> {
    let rgb = image.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let data: Vec<f32> = rgb.into_raw().into_iter().map(|b| b as f32 / 127.5 - 1.0).collect();
    Ok(Tensor::from_vec(data, (h, w, 3), device)?.permute((2, 0, 1))?.contiguous()?)
}

/// Halves both sides by averaging 2×2 blocks (a box filter).
fn halve(image: &RgbImage) -> RgbImage {
    let (w, h) = (image.width() / 2, image.height() / 2);
    RgbImage::from_fn(w, h, |x, y| {
        let mut sum = [0u32; 3];
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let p = image.get_pixel(2 * x + dx, 2 * y + dy);
            for (s, v) in sum.iter_mut().zip(p.0) {
                *s += v as u32;
            }
        }
        image::Rgb(sum.map(|s| ((s + 2) / 4) as u8))
    })
}

/// The ADM centre crop used to prepare ImageNet: halve with a box filter while the short side
/// is at least twice `size`, resize bicubically so the short side is `size`, crop the centre.
pub fn center_crop_adm(image: &DynamicImage, size: u32) -> Result<RgbImage> {
    if size == 0 {
        return Err(Error::Input("crop size must be positive".into()));
    }
    let mut rgb = image.to_rgb8();
    while rgb.width().min(rgb.height()) >= 2 * size {
        rgb = halve(&rgb);
    }
    let scale = size as f64 / rgb.width().min(rgb.height()) as f64;
    let (w, h) = ((rgb.width() as f64 * scale).round() as u32, (rgb.height() as f64 * scale).round() as u32);
    let resized = imageops::resize(&rgb, w.max(size), h.max(size), imageops::FilterType::CatmullRom);
    let (x, y) = ((resized.width() - size) / 2, (resized.height() - size) / 2);
    Ok(imageops::crop_imm(&resized, x, y, size, size).to_image())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_image_round_trip_is_exact_on_the_byte_grid() {
        let bytes: Vec<u8> = (0..2 * 3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect();
        let image = RgbImage::from_raw(5, 4, bytes[..60].to_vec()).unwrap();
        let tensor = from_image(&DynamicImage::ImageRgb8(image.clone()), &Device::Cpu).unwrap();
        assert_eq!(tensor.dims(), &[3, 4, 5]);
        // +1e-4 keeps the truncating conversion on the right side of each integer.
        let back = to_images(&(tensor.unsqueeze(0).unwrap() + 1e-4).unwrap()).unwrap();
        assert_eq!(back[0].to_rgb8(), image);
    }

    #[test]
    fn values_are_clamped_and_grayscale_supported() {
        let t = Tensor::new(&[[[[-3f32, 0.0, 3.0]]]], &Device::Cpu).unwrap();
        let img = to_images(&t).unwrap();
        assert_eq!(img[0].to_luma8().into_raw(), vec![0, 127, 255]);
        assert!(to_images(&Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap()).is_err());
    }

    #[test]
    fn adm_crop_gives_the_requested_square() {
        for (w, h) in [(1000, 600), (300, 900), (256, 256), (100, 80)] {
            let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30])));
            let crop = center_crop_adm(&image, 256).unwrap();
            assert_eq!((crop.width(), crop.height()), (256, 256), "{w}x{h}");
            let p = crop.get_pixel(128, 128).0;
            assert!(p.iter().zip([10u8, 200, 30]).all(|(a, b)| a.abs_diff(b) <= 1), "{p:?}");
        }
    }
}
