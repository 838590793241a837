//! Thumbnails of stored images: what a server or a GUI shows for a hit.
//!
//! Made from the item's file as it is now (the image, or a product's image), EXIF orientation
//! applied, the long side at most `max_side` pixels, encoded as JPEG. Large JPEGs are decoded at
//! a reduced DCT scale first (a thumbnail needs a fraction of the pixels).

use std::io::Cursor;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;

use crate::enc::preprocess::{decode_rgb_named, DecodeOptions};
use crate::error::{Error, Result};

/// Largest thumbnail side a caller may ask for, in pixels.
pub const MAX_THUMBNAIL_SIDE: u32 = 1024;

/// JPEG quality of thumbnails.
const QUALITY: u8 = 82;

/// A JPEG of the image at `path` whose long side is at most `max_side` (clamped to
/// 16..=[`MAX_THUMBNAIL_SIDE`]) pixels; smaller images keep their size.
pub(crate) fn make(path: &Path, max_side: u32) -> Result<Vec<u8>> {
    let max_side = max_side.clamp(16, MAX_THUMBNAIL_SIDE);
    let bytes = crate::fsread::read_image_arg(path)?;
    let opts = DecodeOptions {
        apply_exif_orientation: true,
        // A thumbnail needs no more than its own side in pixels: 1/2, 1/4 or 1/8 DCT scale.
        jpeg_reduced_min_side: Some(max_side),
        ..Default::default()
    };
    let img = decode_rgb_named(&bytes, path, &opts)?;
    let (w, h) = img.dimensions();
    let img = if w.max(h) > max_side {
        let scale = f64::from(max_side) / f64::from(w.max(h));
        let tw = ((f64::from(w) * scale).round() as u32).max(1);
        let th = ((f64::from(h) * scale).round() as u32).max(1);
        image::imageops::resize(&img, tw, th, FilterType::Triangle)
    } else {
        img
    };
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(&img)
        .map_err(|e| Error::Internal(format!("{}: thumbnail encoding: {e}", path.display())))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_oriented_jpeg() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wide.png");
        image::RgbImage::from_pixel(900, 300, image::Rgb([200, 10, 10]))
            .save(&p)
            .unwrap();
        let jpg = make(&p, 256).unwrap();
        let t = image::load_from_memory(&jpg).unwrap();
        assert_eq!((t.width(), t.height()), (256, 85));
        // Small images keep their size; the side is clamped to the bound.
        let small = dir.path().join("small.png");
        image::RgbImage::from_pixel(40, 30, image::Rgb([0, 0, 0]))
            .save(&small)
            .unwrap();
        let t = image::load_from_memory(&make(&small, 100_000).unwrap()).unwrap();
        assert_eq!((t.width(), t.height()), (40, 30));
        // A file that is not an image: an error naming it.
        let bad = dir.path().join("bad.jpg");
        std::fs::write(&bad, b"not an image").unwrap();
        let e = make(&bad, 64).unwrap_err().to_string();
        assert!(e.contains("bad.jpg"), "{e}");
    }
}
