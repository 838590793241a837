//! Decoding to 8-bit RGB with Pillow's `.convert('RGB')` semantics.

use std::io::Cursor;
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};

use super::DecodeOptions;
use crate::error::{EncoderError, Result};

/// Formats [`decode_rgb`] accepts.
pub const SUPPORTED_FORMATS: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// Decodes an encoded image (JPEG, PNG, WebP, GIF first frame, BMP, TIFF) to 8-bit RGB with
/// Pillow's `.convert('RGB')` semantics. Errors are reported for the pseudo-path `<memory>`;
/// use [`decode_rgb_named`] to name the source.
pub fn decode_rgb(bytes: &[u8], opts: &DecodeOptions) -> Result<RgbImage> {
    decode_rgb_named(bytes, Path::new("<memory>"), opts)
}

/// An image file's pixel size from its header, without decoding: `(width, height, oriented)`,
/// where `oriented` says the size is already as shown (HEIF applies its own rotation) rather than
/// as stored (EXIF orientation 5–8 still swaps it). A RAW's is its largest preview's.
pub fn header_size(bytes: &[u8], name: &Path) -> Option<(u32, u32, bool)> {
    if super::raw::is_raw_path(name) {
        let preview = super::raw::largest_preview(bytes)?;
        return header_size(preview, Path::new("preview.jpg"));
    }
    if super::heif::is_heif(bytes) {
        return super::heif::dimensions(bytes).map(|(w, h)| (w, h, true));
    }
    let (w, h) = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()?;
    Some((w, h, false))
}

/// [`decode_rgb`], with errors naming `name` (usually the file the bytes came from).
pub fn decode_rgb_named(bytes: &[u8], name: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    let err = |message: String| EncoderError::Image {
        path: name.to_path_buf(),
        message,
    };
    if bytes.is_empty() {
        return Err(err("empty file (0 bytes)".into()));
    }
    if super::raw::is_raw_path(name) {
        let Some(preview) = super::raw::largest_preview(bytes) else {
            // No preview: the sensor data, through LibRaw (which applies the orientation).
            return super::libraw::decode(bytes, Some(max_pixels(opts)))
                .map_err(|e| err(format!("camera RAW without an embedded JPEG preview: {e}")));
        };
        // The preview JPEG rarely carries an orientation: the RAW container's applies.
        let inner = DecodeOptions {
            apply_exif_orientation: false,
            ..opts.clone()
        };
        let img = decode_encoded(preview, name, &inner)?;
        let orientation = super::raw::tiff_orientation(bytes)
            .filter(|_| opts.apply_exif_orientation)
            .and_then(Orientation::from_exif)
            .unwrap_or(Orientation::NoTransforms);
        return Ok(apply_orientation(img, orientation));
    }
    decode_encoded(bytes, name, opts)
}

/// The most pixels a decoder that reads the size first (libheif, LibRaw) may produce: the
/// `--max-megapixels` limit, and never more than the RGB output the memory bound allows.
fn max_pixels(opts: &DecodeOptions) -> u64 {
    let by_memory = (MAX_DECODED_BYTES / 3) as u64;
    opts.max_megapixels
        .map(|m| (m * 1e6) as u64)
        .map_or(by_memory, |m| m.min(by_memory))
}

/// [`decode_rgb_named`] of an encoded image (HEIF or a format the `image` crate reads).
fn decode_encoded(bytes: &[u8], name: &Path, opts: &DecodeOptions) -> Result<RgbImage> {
    let err = |message: String| EncoderError::Image {
        path: name.to_path_buf(),
        message,
    };
    if super::heif::is_heif(bytes) {
        // libheif applies the file's own rotation (irot/imir); EXIF orientation in a HEIF file
        // is informational and must not be applied again.
        return super::heif::decode(bytes, Some(max_pixels(opts))).map_err(err);
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let format = match reader.format() {
        Some(f) => f,
        // The message never quotes the bytes: a file named as an image may hold anything.
        None => {
            return Err(err(format!(
                "unrecognised image format (not JPEG, PNG, WebP, GIF, BMP, TIFF or HEIF; {} bytes)",
                bytes.len()
            )));
        }
    };
    if !SUPPORTED_FORMATS.contains(&format) {
        return Err(err(format!(
            "unsupported image format {format:?} (supported: JPEG, PNG, WebP, GIF, BMP, TIFF)"
        )));
    }
    if format == ImageFormat::Jpeg && !jpeg_looks_complete(bytes) {
        return Err(err(
            "truncated JPEG (no end-of-image marker after the last scan)".into(),
        ));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| err(describe(&e, format)))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(err(format!("image has no pixels ({w}x{h})")));
    }
    if let Some(max) = opts.max_megapixels {
        let mp = f64::from(w) * f64::from(h) / 1e6;
        if mp > max {
            return Err(err(format!(
                "image too large: {w}x{h} = {mp:.1} megapixels (limit {max} megapixels)"
            )));
        }
    }
    let orientation = if opts.apply_exif_orientation {
        // A broken EXIF block must not make an otherwise fine image unusable.
        decoder.orientation().unwrap_or(Orientation::NoTransforms)
    } else {
        Orientation::NoTransforms
    };

    // JPEG pixels come from `jpeg-decoder`, whose IDCT and fancy upsampling follow libjpeg
    // closely (fixture: max 3 LSB from Pillow's libjpeg-turbo, 91 % of samples exact, versus
    // 14 LSB for zune-jpeg). It also provides the reduced-DCT fast path. Formats it cannot
    // handle (CMYK, 12-bit) fall back to the `image` crate's decoder (zune-jpeg).
    let mut rgb = None;
    let needed = decoder.total_bytes().max(u64::from(w) * u64::from(h) * 3);
    if needed > MAX_DECODED_BYTES as u64 {
        return Err(err(format!(
            "image too large: {w}x{h} needs {} MiB to decode (limit 512 MiB)",
            needed >> 20
        )));
    }
    if format == ImageFormat::Jpeg {
        let min_side = opts.jpeg_reduced_min_side.unwrap_or(u32::MAX);
        rgb = decode_jpeg_libjpeg_like(bytes, w, h, min_side);
    }
    let rgb = match rgb {
        Some(img) => img,
        None => {
            let dynimg =
                DynamicImage::from_decoder(decoder).map_err(|e| err(describe(&e, format)))?;
            to_rgb_pillow(dynimg)
        }
    };
    Ok(apply_orientation(rgb, orientation))
}

/// A JPEG whose last scan is not followed by an EOI marker was cut short. Pillow refuses such
/// files ("image file is truncated"), while `zune-jpeg` would silently fill the rest with grey.
/// In entropy-coded data every `0xFF` is followed by `0x00` or a restart marker, so `FF D9`
/// after the last `FF DA` (start of scan) can only be the real end-of-image marker; EXIF
/// thumbnails live in APP segments before the first scan and cannot fool this check.
fn jpeg_looks_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|m| m == [0xFF, 0xDA]);
    let last_eoi = bytes.windows(2).rposition(|m| m == [0xFF, 0xD9]);
    match (last_sos, last_eoi) {
        (Some(s), Some(e)) => e > s,
        // No scan at all: let the decoder produce its own (header) error.
        (None, _) => true,
        (Some(_), None) => false,
    }
}

fn describe(e: &ImageError, format: ImageFormat) -> String {
    match e {
        ImageError::Limits(l) => format!(
            "image too large to decode within the memory limit ({l}); declared size exceeds 512 MiB"
        ),
        ImageError::Unsupported(u) => format!("unsupported {format:?} variant: {u}"),
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated {format:?} file ({io})")
        }
        ImageError::IoError(io) => format!("truncated or unreadable {format:?} data: {io}"),
        ImageError::Decoding(d) => format!("corrupt {format:?} data: {d}"),
        other => format!("cannot decode {format:?}: {other}"),
    }
}

/// Largest decoded image accepted (same as the `image` crate's default allocation limit).
const MAX_DECODED_BYTES: usize = 512 * 1024 * 1024;

/// Decodes a JPEG with `jpeg-decoder`, at the smallest DCT scale (1/8, 1/4, 1/2, 1) whose short
/// side is still at least `min_side` (`u32::MAX`: full resolution). `None` when the pixel
/// format is not 8-bit grey/RGB (CMYK, 12-bit) or the decoder fails; the caller then falls
/// back to the `image` crate's decoder.
fn decode_jpeg_libjpeg_like(bytes: &[u8], w: u32, h: u32, min_side: u32) -> Option<RgbImage> {
    let scaled = |len: u32, s: u32| (len * s).div_ceil(8);
    let short = w.min(h);
    let scale = [1u32, 2, 4]
        .into_iter()
        .find(|&s| scaled(short, s) >= min_side.max(1))
        .unwrap_or(8);
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    dec.set_max_decoding_buffer_size(MAX_DECODED_BYTES);
    let (ow, oh) = if scale < 8 {
        let (sw, sh) = (scaled(w, scale), scaled(h, scale));
        dec.scale(u16::try_from(sw).ok()?, u16::try_from(sh).ok()?)
            .ok()?
    } else {
        dec.read_info().ok()?;
        let info = dec.info()?;
        (info.width, info.height)
    };
    let pixels = dec.decode().ok()?;
    let info = dec.info()?;
    let (ow, oh) = (u32::from(ow), u32::from(oh));
    let n = (ow as usize) * (oh as usize);
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 if pixels.len() == n * 3 => {
            RgbImage::from_raw(ow, oh, pixels)
        }
        jpeg_decoder::PixelFormat::L8 if pixels.len() == n => {
            let rgb = pixels.iter().flat_map(|&v| [v, v, v]).collect();
            RgbImage::from_raw(ow, oh, rgb)
        }
        _ => None,
    }
}

fn apply_orientation(img: RgbImage, o: Orientation) -> RgbImage {
    use image::imageops;
    match o {
        Orientation::NoTransforms => img,
        Orientation::Rotate90 => imageops::rotate90(&img),
        Orientation::Rotate180 => imageops::rotate180(&img),
        Orientation::Rotate270 => imageops::rotate270(&img),
        Orientation::FlipHorizontal => imageops::flip_horizontal(&img),
        Orientation::FlipVertical => imageops::flip_vertical(&img),
        Orientation::Rotate90FlipH => imageops::flip_horizontal(&imageops::rotate90(&img)),
        Orientation::Rotate270FlipH => imageops::flip_horizontal(&imageops::rotate270(&img)),
    }
}

fn from_fn_rgb<T: Copy>(
    w: u32,
    h: u32,
    raw: &[T],
    channels: usize,
    map: impl Fn(&[T]) -> [u8; 3],
) -> RgbImage {
    let data: Vec<u8> = raw.chunks_exact(channels).flat_map(map).collect();
    RgbImage::from_raw(w, h, data).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Pillow's `.convert('RGB')` on a decoded image (see the module documentation for the
/// 16-bit and float rules).
pub fn to_rgb_pillow(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let hi = |v: u16| (v >> 8) as u8;
    let clip16 = |v: u16| v.min(255) as u8;
    let f = |v: f32| (v * 255.0).round().clamp(0.0, 255.0) as u8;
    match img {
        DynamicImage::ImageRgb8(i) => i,
        DynamicImage::ImageLuma8(i) => from_fn_rgb(w, h, i.as_raw(), 1, |p| [p[0]; 3]),
        DynamicImage::ImageLumaA8(i) => from_fn_rgb(w, h, i.as_raw(), 2, |p| [p[0]; 3]),
        DynamicImage::ImageRgba8(i) => from_fn_rgb(w, h, i.as_raw(), 4, |p| [p[0], p[1], p[2]]),
        DynamicImage::ImageLuma16(i) => from_fn_rgb(w, h, i.as_raw(), 1, |p| [clip16(p[0]); 3]),
        DynamicImage::ImageLumaA16(i) => from_fn_rgb(w, h, i.as_raw(), 2, |p| [hi(p[0]); 3]),
        DynamicImage::ImageRgb16(i) => {
            from_fn_rgb(w, h, i.as_raw(), 3, |p| [hi(p[0]), hi(p[1]), hi(p[2])])
        }
        DynamicImage::ImageRgba16(i) => {
            from_fn_rgb(w, h, i.as_raw(), 4, |p| [hi(p[0]), hi(p[1]), hi(p[2])])
        }
        DynamicImage::ImageRgb32F(i) => {
            from_fn_rgb(w, h, i.as_raw(), 3, |p| [f(p[0]), f(p[1]), f(p[2])])
        }
        DynamicImage::ImageRgba32F(i) => {
            from_fn_rgb(w, h, i.as_raw(), 4, |p| [f(p[0]), f(p[1]), f(p[2])])
        }
        other => other.to_rgb8(),
    }
}
