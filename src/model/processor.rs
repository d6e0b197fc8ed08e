//! The CLIP image processor (`preprocessor_config.json`): RGB (transparency composited onto
//! white), shortest-edge bicubic resize, centre crop, rescale, normalise, channels first.
//!
//! The resize reproduces Pillow's `Image.resize(..., BICUBIC)` on 8-bit images, which
//! transformers calls: the same separable filter (a = -0.5, support widened by the scale when
//! shrinking), horizontal pass first, coefficients in 22-bit fixed point and rounding to 8 bits
//! after each pass. So processed pixels match transformers' up to float rounding.

use super::ModelError;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Settings of `CLIPImageProcessor`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipProcessor {
    /// Resize so that the shorter side has this length.
    #[serde(default = "yes")]
    pub do_resize: bool,
    /// Target of the resize.
    #[serde(default)]
    pub size: Size,
    /// Crop the centre to `crop_size`.
    #[serde(default = "yes")]
    pub do_center_crop: bool,
    /// Crop size.
    #[serde(default)]
    pub crop_size: Size,
    /// Multiply by `rescale_factor`.
    #[serde(default = "yes")]
    pub do_rescale: bool,
    /// Usually 1/255.
    #[serde(default = "inv255")]
    pub rescale_factor: f64,
    /// Subtract the mean and divide by the std.
    #[serde(default = "yes")]
    pub do_normalize: bool,
    /// Per-channel mean.
    #[serde(default = "clip_mean")]
    pub image_mean: [f32; 3],
    /// Per-channel std.
    #[serde(default = "clip_std")]
    pub image_std: [f32; 3],
}

/// A size as transformers writes it: `{"shortest_edge": n}`, `{"height": h, "width": w}` or `n`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// Shorter side.
    Shortest {
        /// Its length.
        shortest_edge: u32,
    },
    /// Height and width.
    HeightWidth {
        /// Height.
        height: u32,
        /// Width.
        width: u32,
    },
    /// One number for both.
    Square(u32),
}

impl Default for Size {
    fn default() -> Self {
        Size::Square(224)
    }
}

impl Size {
    /// Output `(w, h)` of the resize for an input of `(w, h)`: a bare number or `shortest_edge`
    /// scales the shorter side to it (transformers truncates the longer one), a height and width
    /// are exact.
    fn resize_target(self, (w, h): (u32, u32)) -> (u32, u32) {
        let short = match self {
            Size::Shortest { shortest_edge: n } | Size::Square(n) => n,
            Size::HeightWidth { height, width } => return (width, height),
        };
        let long = |l: u32, s: u32| (u64::from(short) * u64::from(l) / u64::from(s)) as u32;
        if w <= h { (short, long(h, w)) } else { (long(w, h), short) }
    }

    fn height_width(self) -> (u32, u32) {
        match self {
            Size::Shortest { shortest_edge: n } | Size::Square(n) => (n, n),
            Size::HeightWidth { height, width } => (height, width),
        }
    }
}

fn yes() -> bool {
    true
}
fn inv255() -> f64 {
    1.0 / 255.0
}
fn clip_mean() -> [f32; 3] {
    [0.48145466, 0.4578275, 0.40821073]
}
fn clip_std() -> [f32; 3] {
    [0.26862954, 0.261_302_6, 0.275_777_1]
}

impl ClipProcessor {
    /// CLIP's settings for square images of side `n`.
    pub fn square(n: u32) -> Self {
        serde_json::from_value(serde_json::json!({ "size": {"shortest_edge": n}, "crop_size": n }))
            .expect("a complete processor config")
    }

    /// Sets `image_mean` and `image_std` to the per-channel statistics of `images` (after the
    /// rescale to [0, 1]). CLIP's constants are the statistics of CLIP's own training images; a
    /// new model normalises with those of its own, so that a uniform background maps near 0 and
    /// the objects carry the signal from the first step.
    pub fn fit_normalisation(&mut self, images: &[PathBuf]) -> Result<(), ModelError> {
        let (mut sum, mut sq, mut n) = ([0f64; 3], [0f64; 3], 0f64);
        for path in images {
            let rgb = image::open(path)
                .map_err(|e| ModelError::Image { path: path.clone(), problem: e.to_string() })?
                .to_rgb8();
            for px in rgb.pixels() {
                for c in 0..3 {
                    let v = f64::from(px[c]) * self.rescale_factor;
                    sum[c] += v;
                    sq[c] += v * v;
                }
            }
            n += f64::from(rgb.width() * rgb.height());
        }
        if n == 0.0 {
            return Err(ModelError::Input("no images to fit the normalisation on".into()));
        }
        for c in 0..3 {
            let mean = sum[c] / n;
            self.image_mean[c] = mean as f32;
            // A floor keeps a blank image set from dividing by zero.
            self.image_std[c] = (sq[c] / n - mean * mean).max(1e-6).sqrt().max(1e-3) as f32;
        }
        Ok(())
    }

    /// `(h, w)` of every processed image, if fixed (a centre crop, or an exact resize).
    pub fn output_size(&self) -> Option<(u32, u32)> {
        match (self.do_center_crop, self.do_resize, self.size) {
            (true, _, _) => Some(self.crop_size.height_width()),
            (false, true, Size::HeightWidth { height, width }) => Some((height, width)),
            _ => None,
        }
    }

    /// Reads `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| ModelError::json(path, e))
    }

    /// Writes `preprocessor_config.json` as transformers expects it.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let (ch, cw) = self.crop_size.height_width();
        let json = serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "processor_class": "LlavaProcessor",
            "do_resize": self.do_resize, "size": self.size,
            "resample": 3, "do_center_crop": self.do_center_crop, "crop_size": {"height": ch, "width": cw},
            "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize, "image_mean": self.image_mean, "image_std": self.image_std,
            "do_convert_rgb": true,
        });
        std::fs::write(path, format!("{json:#}")).map_err(|e| ModelError::io(path, e))
    }

    /// Reads and processes an image file: `[3, h, w]` values, channels first.
    pub fn process_file(&self, path: &Path) -> Result<Vec<f32>, ModelError> {
        let image = image::open(path)
            .map_err(|e| ModelError::Image { path: path.to_path_buf(), problem: e.to_string() })?;
        let rgb =
            if image.color().has_alpha() { composite_on_white(&image.to_rgba8()) } else { image.to_rgb8() };
        self.process(&rgb).map_err(|problem| ModelError::Image { path: path.to_path_buf(), problem })
    }

    /// Processes an RGB image: `[3, h, w]` values, channels first.
    pub fn process(&self, image: &RgbImage) -> Result<Vec<f32>, String> {
        let mut image = image.clone();
        if self.do_resize {
            let (nw, nh) = self.size.resize_target(image.dimensions());
            image = resize_bicubic(&image, nw, nh);
        }
        if self.do_center_crop {
            let (ch, cw) = self.crop_size.height_width();
            let (w, h) = image.dimensions();
            if w < cw || h < ch {
                return Err(format!("{w}x{h} is smaller than the {cw}x{ch} crop"));
            }
            image = image::imageops::crop_imm(&image, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
        }
        let (w, h) = image.dimensions();
        let mut out = vec![0.0f32; 3 * (w * h) as usize];
        for (x, y, pixel) in image.enumerate_pixels() {
            for c in 0..3 {
                let mut v = f32::from(pixel[c]);
                if self.do_rescale {
                    v = (f64::from(v) * self.rescale_factor) as f32;
                }
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                out[(c * h as usize + y as usize) * w as usize + x as usize] = v;
            }
        }
        Ok(out)
    }
}

/// Stacks processed images (each `[3, h, w]`, flattened) into a batch.
///
/// # Shapes
/// - -> `[n, 3, h, w]`
pub fn pixel_batch(images: Vec<Vec<f32>>, h: usize, w: usize, device: &Device) -> Tensor<4> {
    let n = images.len();
    Tensor::from_data(TensorData::new(images.concat(), [n, 3, h, w]), device)
}

/// RGBA onto opaque white, as transformers 5 converts to RGB: Pillow's `alpha_composite`
/// arithmetic (7-bit fixed point, division by 255 through shifts).
fn composite_on_white(image: &image::RgbaImage) -> RgbImage {
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let [r, g, b, a] = image.get_pixel(x, y).0.map(u32::from);
        let (coef1, coef2) = (a << 7, (255 - a) << 7);
        let blend = |c: u32| {
            let t = c * coef1 + 255 * coef2 + (0x80 << 7);
            ((((t >> 8) + t) >> 8) >> 7) as u8
        };
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

/// Pillow's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    let (a, x) = (-0.5, x.abs());
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output index: first input index and fixed-point weights (Pillow's `precompute_coeffs`).
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i64>)> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|i| {
            let center = (f64::from(i) + 0.5) * scale;
            let min = ((center - support + 0.5) as i64).max(0) as usize;
            let max = ((center + support + 0.5) as i64).min(i64::from(in_size)) as usize;
            let w: Vec<f64> = (min..max).map(|x| bicubic((x as f64 - center + 0.5) / filter_scale)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k } * f64::from(1u32 << PRECISION_BITS);
                    (if k < 0.0 { k - 0.5 } else { k + 0.5 }) as i64
                })
                .collect();
            (min, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass along x (`horizontal`) or y.
fn pass(image: &RgbImage, out_w: u32, out_h: u32, horizontal: bool) -> RgbImage {
    let coeffs =
        if horizontal { coefficients(image.width(), out_w) } else { coefficients(image.height(), out_h) };
    RgbImage::from_fn(out_w, out_h, |x, y| {
        let (start, weights) = &coeffs[if horizontal { x } else { y } as usize];
        let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
        for (j, &k) in weights.iter().enumerate() {
            let src = (start + j) as u32;
            let p = if horizontal { image.get_pixel(src, y) } else { image.get_pixel(x, src) };
            for c in 0..3 {
                acc[c] += i64::from(p[c]) * k;
            }
        }
        image::Rgb(acc.map(clip8))
    })
}

/// Pillow-exact bicubic resize of an 8-bit RGB image.
fn resize_bicubic(image: &RgbImage, w: u32, h: u32) -> RgbImage {
    let mut out = image.clone();
    if w != out.width() {
        out = pass(&out, w, out.height(), true);
    }
    if h != out.height() {
        out = pass(&out, w, h, false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_fits_the_channel_statistics_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
        RgbImage::from_pixel(2, 2, image::Rgb([255, 51, 0])).save(&a).unwrap();
        RgbImage::from_pixel(2, 2, image::Rgb([0, 51, 0])).save(&b).unwrap();
        let mut p = ClipProcessor::square(2);
        p.fit_normalisation(&[a, b]).unwrap();
        // Red: half 1.0, half 0.0 -> mean 0.5, std 0.5; green constant 0.2; blue constant 0 (floored std).
        assert!((p.image_mean[0] - 0.5).abs() < 1e-6 && (p.image_std[0] - 0.5).abs() < 1e-6);
        assert!((p.image_mean[1] - 0.2).abs() < 1e-6 && (p.image_std[1] - 1e-3).abs() < 1e-6);
        assert_eq!(p.image_mean[2], 0.0);
        assert!(p.fit_normalisation(&[]).is_err());
    }

    #[test]
    fn resize_keeps_a_constant_image_and_the_aspect() {
        let image = RgbImage::from_pixel(40, 20, image::Rgb([10, 128, 250]));
        let out = resize_bicubic(&image, 24, 12);
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
        let processor = ClipProcessor::square(8);
        let pixels = processor.process(&image).unwrap();
        assert_eq!(pixels.len(), 3 * 8 * 8);
        // (10 / 255 - mean) / std for the red channel.
        let red = (10.0 / 255.0 - 0.48145466) / 0.26862954;
        assert!((pixels[0] - red).abs() < 1e-5);
    }

    #[test]
    fn bicubic_weights_sum_to_one_in_fixed_point() {
        for (_, w) in coefficients(37, 11).into_iter().chain(coefficients(5, 13)) {
            let sum: i64 = w.iter().sum();
            assert!((sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64);
        }
    }
}
