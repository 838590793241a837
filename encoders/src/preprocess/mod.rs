//! Image decoding and jina-clip-v2 preprocessing (spec §5), reproducing the reference
//! pipeline `PIL.Image.open → .convert('RGB') → Resize(size, bicubic) → CenterCrop(size) →
//! ToTensor → Normalize(mean, std)`.
//!
//! * [`decode_rgb`] decodes JPEG, PNG, WebP, GIF (first frame), BMP and TIFF and converts to RGB
//!   with Pillow's `.convert('RGB')` semantics (see [`decode`](self) notes below).
//! * [`resize_shortest_bicubic`] is Pillow's antialiased fixed-point bicubic resize, bit-exact
//!   for 8-bit input (0 LSB on every PNG fixture).
//! * [`center_crop`] uses Python's round-half-to-even for the offsets (16.5 → 16, 17.5 → 18).
//! * [`Preprocessor`] chains them and normalises to CHW `f32` ([`PixelValues`]). It only resizes
//!   the part of the image that survives the crop, which gives the same values for less work.
//!
//! ## `.convert('RGB')` semantics
//! * RGB: unchanged. L (grey): replicated. Palette: expanded through the palette.
//! * RGBA / LA / palette with transparency: the alpha channel is **dropped**, not composited
//!   (a fully transparent pixel keeps its stored colour), as Pillow does.
//! * 16-bit input, following how Pillow opens such files: 16-bit grey (Pillow mode `I;16`) is
//!   **clipped** to 0..=255 (Pillow's `I;16 → RGB` conversion clips, it does not rescale, so most
//!   16-bit grey images come out near white — reproduced on purpose); 16-bit RGB/RGBA/LA keep
//!   the **high byte** of each sample (Pillow unpacks them with `RGB;16B`/`RGBA;16B`/`LA;16B`).
//! * Float images (TIFF only): `clamp(round(v · 255))` — Pillow cannot open most of these.
//! * CMYK JPEGs are converted by the JPEG decoder; Pillow's own CMYK → RGB formula may differ
//!   by a few LSB.
//! * JPEG pixels come from `jpeg-decoder` (libjpeg-style IDCT and fancy upsampling), not
//!   libjpeg-turbo: on the fixture it is within 3 LSB of Pillow (91 % of samples exact); CMYK
//!   and 12-bit JPEGs fall back to `zune-jpeg` (through `image`).

mod decode;
mod dynlib;
pub mod heif;
pub mod libraw;
pub mod raw;
mod resize;

use std::path::Path;

use image::RgbImage;

use crate::config::PreprocessorConfig;
use crate::error::{EncoderError, Result};

pub use decode::{decode_rgb, decode_rgb_named, header_size, to_rgb_pillow, SUPPORTED_FORMATS};
pub use resize::{resize_bicubic, resize_region, Region};

/// Default ratio between the decoded short side and the model input size used by
/// [`DecodeOptions::with_fast_jpeg`]: the reduced-DCT JPEG decode keeps the short side at
/// least `2 × size` before the exact bicubic resize.
pub const FAST_JPEG_MIN_RATIO: u32 = 2;

/// Preprocessed image: `[3, size, size]` CHW, normalised with the model's mean/std.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    /// Side length of the square image.
    pub size: usize,
    /// `3 · size · size` values, channel-major (R plane, G plane, B plane).
    pub data: Vec<f32>,
}

/// How images are decoded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecodeOptions {
    /// Rotate/flip according to the EXIF orientation tag. `false` (default) is the reference
    /// behaviour (Pillow's `Image.open` ignores EXIF orientation); the engine turns it on.
    pub apply_exif_orientation: bool,
    /// Refuse images whose declared width × height exceeds this many megapixels. Checked from
    /// the file header **before** any pixel is decoded. `None`: only the decoder's own memory
    /// limit (512 MiB per image) applies.
    pub max_megapixels: Option<f64>,
    /// Opt-in fast path for large JPEGs (not bit-exact with the reference): decode at the
    /// smallest DCT scale (1/8, 1/4, 1/2) whose short side is still at least this many pixels,
    /// then apply the exact resize. `None` (default): always decode at full resolution.
    /// See [`DecodeOptions::with_fast_jpeg`].
    pub jpeg_reduced_min_side: Option<u32>,
}

impl DecodeOptions {
    /// Enables the reduced-DCT JPEG fast path for a model input of `size` pixels, keeping the
    /// decoded short side at least [`FAST_JPEG_MIN_RATIO`] `× size`.
    pub fn with_fast_jpeg(mut self, size: usize) -> Self {
        let side = u32::try_from(size).unwrap_or(u32::MAX);
        self.jpeg_reduced_min_side = Some(side.saturating_mul(FAST_JPEG_MIN_RATIO));
        self
    }
}

/// Size after torchvision's `Resize(size)` with an int size: the short side becomes `size`,
/// the long side `int(size · long / short)` (Python float division, truncated).
pub fn shortest_side_dims(width: u32, height: u32, size: u32) -> (u32, u32) {
    if width == 0 || height == 0 {
        return (width, height);
    }
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (f64::from(size) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// Python's `int(round(x / 2))` for an integer `x ≥ 0` (round half to even).
fn half_round_even(x: u32) -> u32 {
    let q = x / 2;
    if x % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// torchvision `CenterCrop` offsets `(left, top)` for an image of `width × height`:
/// `int(round((W − size) / 2))` with Python's round-half-to-even (16.5 → 16, 17.5 → 18).
/// Returns `None` when the image is smaller than `size` on one side.
pub fn center_crop_offsets(width: u32, height: u32, size: u32) -> Option<(u32, u32)> {
    if width < size || height < size {
        return None;
    }
    Some((
        half_round_even(width - size),
        half_round_even(height - size),
    ))
}

/// Pillow-exact shortest-side bicubic resize (spec §5.2): the short side becomes `size`, the
/// long side `floor(size · long / short)`. An image already at the target size is returned
/// unchanged (copied).
pub fn resize_shortest_bicubic(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = shortest_side_dims(img.width(), img.height(), size);
    if (w, h) == img.dimensions() {
        return img.clone();
    }
    resize_bicubic(img, w, h)
}

/// Centre crop to `size × size` with torchvision's offsets ([`center_crop_offsets`]).
/// An image smaller than `size` on a side is zero-padded there, like torchvision
/// (this never happens after [`resize_shortest_bicubic`]).
pub fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if let Some((left, top)) = center_crop_offsets(w, h, size) {
        return image::imageops::crop_imm(img, left, top, size, size).to_image();
    }
    // torchvision pads with (W < size) → left pad (size − W) // 2, then crops centrally.
    let mut out = RgbImage::new(size, size);
    let pad_l = size.saturating_sub(w) / 2;
    let pad_t = size.saturating_sub(h) / 2;
    let (src_l, src_t) = (
        half_round_even(w.saturating_sub(size)),
        half_round_even(h.saturating_sub(size)),
    );
    for y in 0..h.min(size) {
        for x in 0..w.min(size) {
            out.put_pixel(x + pad_l, y + pad_t, *img.get_pixel(x + src_l, y + src_t));
        }
    }
    out
}

/// The jina-clip-v2 image processor: shortest-side bicubic resize, centre crop, normalise.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessor {
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    /// `lut[c][v] = (v / 255 − mean[c]) / std[c]` in f32, exactly as torch computes it.
    lut: Box<[[f32; 256]; 3]>,
}

impl Preprocessor {
    /// Builds a preprocessor from explicit values.
    pub fn new(size: usize, mean: [f32; 3], std: [f32; 3]) -> Self {
        let mut lut = Box::new([[0f32; 256]; 3]);
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                // ToTensor: u8 → f32 / 255; Normalize: (x − mean) / std, all in f32.
                *out = (v as f32 / 255.0 - mean[c]) / std[c];
            }
        }
        Preprocessor {
            size,
            mean,
            std,
            lut,
        }
    }

    /// From a parsed `preprocessor_config.json`.
    pub fn from_config(cfg: &PreprocessorConfig) -> Self {
        Self::new(cfg.size, cfg.mean, cfg.std)
    }

    /// Reads `preprocessor_config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        Ok(Self::from_config(&PreprocessorConfig::load(path)?))
    }

    /// Output side length.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Per-channel mean.
    pub fn mean(&self) -> [f32; 3] {
        self.mean
    }

    /// Per-channel standard deviation.
    pub fn std(&self) -> [f32; 3] {
        self.std
    }

    /// Reads, decodes and preprocesses an image file. Errors name the file.
    pub fn preprocess_path(&self, path: &Path, opts: &DecodeOptions) -> Result<PixelValues> {
        let bytes = std::fs::read(path).map_err(|source| EncoderError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let img = decode_rgb_named(&bytes, path, opts)?;
        Ok(self.preprocess_rgb(&img))
    }

    /// Decodes and preprocesses an encoded image held in memory.
    pub fn preprocess_bytes(&self, bytes: &[u8], opts: &DecodeOptions) -> Result<PixelValues> {
        let img = decode_rgb(bytes, opts)?;
        Ok(self.preprocess_rgb(&img))
    }

    /// Resize + crop of an RGB image, as `size × size` 8-bit RGB (before normalisation).
    pub fn resize_crop(&self, img: &RgbImage) -> RgbImage {
        let size = u32::try_from(self.size).unwrap_or(u32::MAX);
        let (w, h) = shortest_side_dims(img.width(), img.height(), size);
        if (w, h) == img.dimensions() {
            return center_crop(img, size);
        }
        match center_crop_offsets(w, h, size) {
            Some((left, top)) => resize_region(
                img,
                w,
                h,
                Region {
                    x0: left,
                    y0: top,
                    w: size,
                    h: size,
                },
            ),
            // Degenerate (empty) input: keep the documented shape.
            None => center_crop(&resize_bicubic(img, w, h), size),
        }
    }

    /// Normalises an already cropped `size × size` RGB image to CHW `f32`.
    ///
    /// An image of another size is centre-cropped/padded to `size` first.
    pub fn normalize(&self, cropped: &RgbImage) -> PixelValues {
        let s = self.size;
        let owned;
        let img = if cropped.dimensions() == (s as u32, s as u32) {
            cropped
        } else {
            owned = center_crop(cropped, s as u32);
            &owned
        };
        let mut data = vec![0f32; 3 * s * s];
        let (r, rest) = data.split_at_mut(s * s);
        let (g, b) = rest.split_at_mut(s * s);
        for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
            r[i] = self.lut[0][usize::from(px[0])];
            g[i] = self.lut[1][usize::from(px[1])];
            b[i] = self.lut[2][usize::from(px[2])];
        }
        PixelValues { size: s, data }
    }

    /// Resize + crop + normalise an RGB image (the reference processor after `.convert('RGB')`).
    pub fn preprocess_rgb(&self, img: &RgbImage) -> PixelValues {
        self.normalize(&self.resize_crop(img))
    }
}
