//! Previews of the denoised estimate while an image forms: the estimate itself for pixel
//! models; for latent models a cheap linear map of the four Stable Diffusion latent channels
//! to RGB instead of a VAE decode (colours and layout, at latent resolution).

use candle_core::{DType, Tensor};
use image::DynamicImage;

/// Rows: the latent channels; columns: their contribution to R, G, B. A least-squares fit of
/// SD-VAE latents to their decoded colours, as widely used for previews.
const LATENT_TO_RGB: [[f64; 3]; 4] =
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]];

/// A PNG strip of the estimates `denoised` `(N, C, H, W)` side by side.
pub fn preview_png(denoised: &Tensor, latent: bool) -> candle_core::Result<Vec<u8>> {
    let x = denoised.to_dtype(DType::F32)?;
    let pixels = if latent && x.dim(1)? == 4 {
        let map: Vec<f32> = LATENT_TO_RGB.iter().flatten().map(|&v| v as f32).collect();
        let map = Tensor::from_vec(map, (4, 3), x.device())?;
        // (N, 4, H, W) → (N, H, W, 4) · (4, 3) → (N, 3, H, W).
        let (n, _, h, w) = x.dims4()?;
        let rows = x.permute((0, 2, 3, 1))?.reshape((n * h * w, 4))?;
        rows.matmul(&map)?.reshape((n, h, w, 3))?.permute((0, 3, 1, 2))?
    } else {
        x
    };
    let images =
        maskdit_vae::image::to_images(&pixels).map_err(|e| candle_core::Error::Msg(format!("preview: {e}")))?;
    let (w, h) = images.first().map(|i| (i.width(), i.height())).unwrap_or((1, 1));
    let mut strip = image::RgbImage::new(w * images.len().max(1) as u32, h);
    for (i, img) in images.iter().enumerate() {
        image::imageops::replace(&mut strip, &img.to_rgb8(), (i as u32 * w) as i64, 0);
    }
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(strip)
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| candle_core::Error::Msg(format!("preview: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_strips_of_the_batch() {
        let device = candle_core::Device::Cpu;
        let pixels = Tensor::zeros((3, 1, 8, 8), DType::F64, &device).unwrap();
        let png = preview_png(&pixels, false).unwrap();
        let strip = image::load_from_memory(&png).unwrap();
        assert_eq!((strip.width(), strip.height()), (24, 8));
        let latents = Tensor::ones((2, 4, 4, 4), DType::F64, &device).unwrap();
        let strip = image::load_from_memory(&preview_png(&latents, true).unwrap()).unwrap();
        assert_eq!((strip.width(), strip.height()), (8, 4));
    }
}
