//! Preprocessing against the golden fixtures in `datasets/jina-clip-v2-tiny` and edge cases.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageFormat, Rgb, RgbImage};
use jsearch_encoders::preprocess::{
    center_crop, center_crop_offsets, decode_rgb, decode_rgb_named, resize_shortest_bicubic,
    shortest_side_dims, DecodeOptions, Preprocessor,
};
use jsearch_encoders::{EncoderError, PreprocessorConfig};
use jsearch_tests::with_exif_orientation;
use safetensors::{Dtype, SafeTensors};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/jina-clip-v2-tiny")
}

struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    fn load() -> Self {
        let bytes = std::fs::read(fixture_dir().join("expected.safetensors")).expect("fixture");
        Expected { bytes }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("safetensors")
    }
    fn u8(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
        assert_eq!(t.dtype(), Dtype::U8);
        (t.shape().to_vec(), t.data().to_vec())
    }
    fn f32(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
        assert_eq!(t.dtype(), Dtype::F32);
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
    /// An `[H, W, 3]` u8 tensor as an image.
    fn rgb(&self, name: &str) -> RgbImage {
        let (shape, data) = self.u8(name);
        assert_eq!(shape.len(), 3);
        RgbImage::from_raw(shape[1] as u32, shape[0] as u32, data).expect("shape")
    }
}

const FILES: [&str; 7] = [
    "gradient_80x60.png",
    "portrait_40x100.png",
    "exact_56x56.png",
    "gray_123x77.png",
    "rgba_90x90.png",
    "photo_100x75.jpg",
    "big_240x180.png",
];
const PNGS: [usize; 6] = [0, 1, 2, 3, 4, 6];

fn image_path(j: usize) -> PathBuf {
    fixture_dir().join("images").join(FILES[j])
}

fn preprocessor() -> Preprocessor {
    Preprocessor::load(&fixture_dir().join("model/preprocessor_config.json")).expect("config")
}

fn decode_file(j: usize) -> RgbImage {
    let bytes = std::fs::read(image_path(j)).expect("image");
    decode_rgb(&bytes, &DecodeOptions::default()).expect("decode")
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_lsb(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

#[test]
fn png_fixtures_resize_crop_and_pixel_values_exact() {
    let exp = Expected::load();
    let pre = preprocessor();
    assert_eq!(pre.size(), 56);
    for j in PNGS {
        let img = decode_file(j);
        let resized = resize_shortest_bicubic(&img, 56);
        let want = exp.rgb(&format!("image.{j}.resized_rgb_u8"));
        assert_eq!(
            resized.dimensions(),
            want.dimensions(),
            "image {j} resized dims"
        );
        assert_eq!(max_lsb(&resized, &want), 0, "image {j} resized_rgb_u8");

        let cropped = center_crop(&resized, 56);
        let want_c = exp.rgb(&format!("image.{j}.cropped_rgb_u8"));
        assert_eq!(max_lsb(&cropped, &want_c), 0, "image {j} cropped_rgb_u8");
        // The region-only resize gives the same crop.
        assert_eq!(pre.resize_crop(&img), want_c, "image {j} resize_crop");

        let pv = pre
            .preprocess_path(&image_path(j), &DecodeOptions::default())
            .expect("preprocess");
        assert_eq!(pv.size, 56);
        let want_pv = exp.f32(&format!("image.{j}.pixel_values"));
        let d = max_abs(&pv.data, &want_pv);
        assert!(d <= 1e-6, "image {j} pixel_values max diff {d}");
    }
}

#[test]
fn gray_and_rgba_convert_like_pillow() {
    let exp = Expected::load();
    for j in [3, 4] {
        let img = decode_file(j);
        let want = exp.rgb(&format!("image.{j}.decoded_rgb_u8"));
        assert_eq!(max_lsb(&img, &want), 0, "image {j} decoded_rgb_u8");
    }
}

#[test]
fn jpeg_fixture_within_tolerance_and_exact_from_reference_decode() {
    let exp = Expected::load();
    let pre = preprocessor();
    let j = 5;
    let reference = exp.rgb("image.5.decoded_rgb_u8");
    let ours = decode_file(j);
    let lsb = max_lsb(&ours, &reference);
    println!("JPEG decode vs libjpeg-turbo: max {lsb} LSB");
    assert!(lsb <= 8, "JPEG decode differs by {lsb} LSB");

    // Exact from the reference decode.
    let resized = resize_shortest_bicubic(&reference, 56);
    assert_eq!(resized, exp.rgb("image.5.resized_rgb_u8"));
    let want_pv = exp.f32("image.5.pixel_values");
    let d = max_abs(&pre.preprocess_rgb(&reference).data, &want_pv);
    assert!(d <= 1e-6, "from decoded_rgb_u8: {d}");

    // Within the README tolerance from our own decode.
    let pv = pre
        .preprocess_path(&image_path(j), &DecodeOptions::default())
        .expect("jpeg");
    let d = max_abs(&pv.data, &want_pv);
    println!("JPEG pixel_values max abs diff {d}");
    assert!(d <= 0.1, "JPEG pixel_values max diff {d}");
}

#[test]
fn rgba_trap_processor_on_original_mode_differs() {
    let exp = Expected::load();
    let pv = preprocessor()
        .preprocess_path(&image_path(4), &DecodeOptions::default())
        .expect("rgba");
    let trap = exp.f32("image.4.pixel_values_processor_on_original_mode");
    let good = exp.f32("image.4.pixel_values");
    assert!(max_abs(&pv.data, &good) <= 1e-6);
    let d = max_abs(&pv.data, &trap);
    assert!(
        d > 1e-2,
        "must not match the premultiplied-alpha trap (diff {d})"
    );
}

#[test]
fn resize_dims_floor_and_crop_banker_rounding() {
    assert_eq!(shortest_side_dims(80, 60, 56), (74, 56));
    assert_eq!(shortest_side_dims(40, 100, 56), (56, 140));
    assert_eq!(shortest_side_dims(4000, 3000, 512), (682, 512));
    assert_eq!(shortest_side_dims(3000, 4000, 512), (512, 682));
    // 16.5 → 16, 17.5 → 18, 0.5 → 0, 1.5 → 2, integers unchanged.
    assert_eq!(center_crop_offsets(56 + 33, 56, 56), Some((16, 0)));
    assert_eq!(center_crop_offsets(56, 56 + 35, 56), Some((0, 18)));
    assert_eq!(center_crop_offsets(57, 59, 56), Some((0, 2)));
    assert_eq!(center_crop_offsets(60, 56, 56), Some((2, 0)));
    assert_eq!(center_crop_offsets(55, 56, 56), None);
    let img = RgbImage::from_fn(56 + 33, 56 + 35, |x, y| Rgb([x as u8, y as u8, 0]));
    let c = center_crop(&img, 56);
    assert_eq!(c.get_pixel(0, 0), &Rgb([16, 18, 0]));
    // Padding branch (never used after a shortest-side resize) keeps the requested shape.
    assert_eq!(
        center_crop(&RgbImage::new(10, 80), 56).dimensions(),
        (56, 56)
    );
}

fn encode(img: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A ≤ 256-colour image (so GIF is lossless) with structure in both axes.
fn few_colour_image() -> RgbImage {
    RgbImage::from_fn(73, 41, |x, y| {
        let i = ((x / 5) * 7 + (y / 3) * 3) % 16;
        Rgb([
            (i * 16) as u8,
            (255 - i * 13) as u8,
            ((x * y) % 4 * 60) as u8,
        ])
    })
}

#[test]
fn every_format_decodes_to_the_same_pixels() {
    let src = decode_file(0);
    let few = few_colour_image();
    let opts = DecodeOptions::default();
    for (format, img) in [
        (ImageFormat::Png, &src),
        (ImageFormat::WebP, &src),
        (ImageFormat::Bmp, &src),
        (ImageFormat::Tiff, &src),
        (ImageFormat::Gif, &few),
    ] {
        let bytes = encode(&image::DynamicImage::ImageRgb8(img.clone()), format);
        let got = decode_rgb(&bytes, &opts).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(&got, img, "{format:?} round trip");
    }
    // JPEG is lossy: just close.
    let mut bytes = Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
        .encode_image(&src)
        .expect("jpeg");
    let bytes = bytes.into_inner();
    let got = decode_rgb(&bytes, &opts).expect("jpeg");
    assert_eq!(got.dimensions(), src.dimensions());
    let mean: f64 = got
        .as_raw()
        .iter()
        .zip(src.as_raw())
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / src.as_raw().len() as f64;
    assert!(mean < 4.0, "jpeg mean abs diff {mean}");
    // Grey and RGBA sources in other containers convert like the PNG ones.
    let rgba = image::open(image_path(4)).expect("rgba png");
    for format in [ImageFormat::WebP, ImageFormat::Tiff] {
        let got = decode_rgb(&encode(&rgba, format), &opts).expect("rgba");
        assert_eq!(got, decode_file(4), "RGBA via {format:?}");
    }
}

#[test]
fn sixteen_bit_follows_pillow() {
    use image::{ImageBuffer, Luma};
    let opts = DecodeOptions::default();
    let gray: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(20, 10, |x, y| Luma([(x * 37 + y * 11) as u16 * 10]));
    let got = decode_rgb(
        &encode(
            &image::DynamicImage::ImageLuma16(gray.clone()),
            ImageFormat::Png,
        ),
        &opts,
    )
    .expect("L16");
    for (x, y, p) in got.enumerate_pixels() {
        let v = gray.get_pixel(x, y)[0].min(255) as u8;
        assert_eq!(p, &Rgb([v, v, v]), "I;16 clips");
    }
    let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(20, 10, |x, y| {
        Rgb([
            x as u16 * 3000,
            y as u16 * 6000 + 255,
            65535 - x as u16 * 100,
        ])
    });
    let got = decode_rgb(
        &encode(
            &image::DynamicImage::ImageRgb16(rgb16.clone()),
            ImageFormat::Png,
        ),
        &opts,
    )
    .expect("RGB16");
    for (x, y, p) in got.enumerate_pixels() {
        let s = rgb16.get_pixel(x, y);
        assert_eq!(
            p,
            &Rgb([(s[0] >> 8) as u8, (s[1] >> 8) as u8, (s[2] >> 8) as u8])
        );
    }
}

#[test]
fn exif_orientation_only_when_asked() {
    // 32×16: left half red, right half blue.
    let img = RgbImage::from_fn(32, 16, |x, _| {
        if x < 16 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    });
    let jpeg = encode(&image::DynamicImage::ImageRgb8(img), ImageFormat::Jpeg);
    let tagged = with_exif_orientation(&jpeg, 6); // rotate 90° clockwise to display
    let plain = decode_rgb(&tagged, &DecodeOptions::default()).expect("plain");
    assert_eq!(plain.dimensions(), (32, 16), "reference ignores EXIF");
    let opts = DecodeOptions {
        apply_exif_orientation: true,
        ..DecodeOptions::default()
    };
    let rotated = decode_rgb(&tagged, &opts).expect("rotated");
    assert_eq!(rotated.dimensions(), (16, 32));
    // After a clockwise quarter turn the left (red) half is on top.
    let top = rotated.get_pixel(8, 4);
    let bottom = rotated.get_pixel(8, 28);
    assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
    assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
    // Orientation 3 (180°): red ends up on the right.
    let r180 = decode_rgb(&with_exif_orientation(&jpeg, 3), &opts).expect("180");
    assert_eq!(r180.dimensions(), (32, 16));
    assert!(r180.get_pixel(28, 8)[0] > 200);
}

fn expect_image_error(res: jsearch_encoders::Result<RgbImage>, needle: &str) -> String {
    match res {
        Err(e @ EncoderError::Image { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.to_lowercase().contains(needle),
                "error {msg:?} should mention {needle:?}"
            );
            msg
        }
        Err(e) => panic!("wrong error kind: {e}"),
        Ok(img) => panic!("expected an error, decoded {:?}", img.dimensions()),
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header declares `w × h` RGB pixels, with one tiny (wrong-size) IDAT.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn bad_inputs_give_clear_errors_never_panics() {
    let opts = DecodeOptions::default();
    let name = Path::new("/photos/broken.jpg");
    let msg = expect_image_error(decode_rgb_named(&[], name, &opts), "empty");
    assert!(msg.contains("/photos/broken.jpg"), "{msg}");
    // The message never quotes the file (a catalog could point at /etc/passwd).
    let msg = expect_image_error(decode_rgb(b"root:x:0:0:root", &opts), "unrecognised");
    assert!(
        !msg.contains("72 6f") && !msg.contains("root"),
        "message echoes the file's bytes: {msg}"
    );
    let msg = expect_image_error(decode_rgb(&[0xAB; 4096], &opts), "unrecognised");
    assert!(!msg.contains("ab ab"), "{msg}");

    let png = std::fs::read(image_path(6)).expect("png");
    let jpg = std::fs::read(image_path(5)).expect("jpg");
    for (bytes, what) in [(&png, "png"), (&jpg, "jpeg")] {
        for cut in [bytes.len() / 2, bytes.len() - 100, 40, 9] {
            let res = decode_rgb(&bytes[..cut], &opts);
            assert!(res.is_err(), "{what} truncated at {cut} decoded");
        }
    }
    expect_image_error(decode_rgb(&jpg[..jpg.len() / 2], &opts), "truncated");
    // Corrupt body with an intact header.
    let mut corrupt = png.clone();
    for b in corrupt.iter_mut().skip(200).take(2000) {
        *b ^= 0x5A;
    }
    assert!(decode_rgb(&corrupt, &opts).is_err());

    // Huge declared dimensions: refused before allocating.
    let huge = png_declaring(100_000, 100_000);
    expect_image_error(decode_rgb(&huge, &opts), "too large");
    let limited = DecodeOptions {
        max_megapixels: Some(50.0),
        ..DecodeOptions::default()
    };
    let msg = expect_image_error(
        decode_rgb(&png_declaring(10_000, 8_000), &limited),
        "too large",
    );
    assert!(msg.contains("80.0 megapixels"), "{msg}");
    // The limit applies to real images too, and a generous one lets them through.
    let small_limit = DecodeOptions {
        max_megapixels: Some(0.01),
        ..DecodeOptions::default()
    };
    expect_image_error(decode_rgb(&png, &small_limit), "too large");
    assert!(decode_rgb(&png, &limited).is_ok());

    // Unsupported but recognised format (ICO header).
    let ico = [0u8, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0, 0, 0];
    assert!(decode_rgb(&ico, &opts).is_err());

    // Path-based API names the file in I/O and decode errors.
    let pre = preprocessor();
    let missing = fixture_dir().join("images/does_not_exist.png");
    let e = pre
        .preprocess_path(&missing, &opts)
        .expect_err("missing file");
    assert!(e.to_string().contains("does_not_exist.png"), "{e}");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("zero.png");
    std::fs::write(&bad, b"").expect("write");
    let e = pre.preprocess_path(&bad, &opts).expect_err("zero-byte");
    assert!(
        e.to_string().contains("zero.png") && e.to_string().contains("empty"),
        "{e}"
    );
}

/// "Real-ish" photo content: smooth gradients, texture, edges and sensor noise.
fn synthetic_photo(w: u32, h: u32, seed: u32) -> RgbImage {
    let hash = |x: u32, y: u32| {
        let mut v = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ seed;
        v ^= v >> 15;
        v = v.wrapping_mul(0x2C1B_3C6D);
        v ^= v >> 12;
        (v & 0xFF) as f32 / 255.0
    };
    let s = seed as f32;
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let sky = 0.6 - 0.4 * fy;
        let texture = ((fx * (37.0 + s) + (fy * 11.0).sin() * 3.0).sin() * 0.5 + 0.5)
            * ((fy * (23.0 + s)).cos() * 0.5 + 0.5);
        let cx = fx - 0.3 - 0.1 * s;
        let cy = fy - 0.55;
        let disc = if cx * cx + cy * cy < 0.04 { 0.35 } else { 0.0 };
        let stripes = if ((x / 40 + y / 60) % 2 == 0) && fy > 0.7 {
            0.2
        } else {
            0.0
        };
        let n = hash(x, y) * 0.08;
        let r = sky * 0.8 + texture * 0.3 + disc + n;
        let g = sky * 0.9 + texture * 0.2 + stripes + n;
        let b = sky + 0.1 * fx + stripes * 0.5 + n;
        Rgb([
            (r.clamp(0.0, 1.0) * 255.0) as u8,
            (g.clamp(0.0, 1.0) * 255.0) as u8,
            (b.clamp(0.0, 1.0) * 255.0) as u8,
        ])
    })
}

/// Accuracy of the reduced-DCT JPEG fast path on 4000×3000 JPEGs at model size 512, against the
/// full decode followed by the same exact resize. Prints the numbers and asserts a bound.
#[test]
fn reduced_dct_jpeg_fast_path_accuracy() {
    let pre = Preprocessor::from_config(&PreprocessorConfig::default());
    let full = DecodeOptions::default();
    for ratio in [2u32, 1] {
        let fast = DecodeOptions {
            jpeg_reduced_min_side: Some(512 * ratio),
            ..DecodeOptions::default()
        };
        let (mut worst_max, mut worst_mean) = (0f32, 0f64);
        for seed in 0..3 {
            let img = synthetic_photo(4000, 3000, seed);
            let mut jpeg = Cursor::new(Vec::new());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
                .encode_image(&img)
                .expect("encode");
            let jpeg = jpeg.into_inner();
            let a = pre.preprocess_bytes(&jpeg, &full).expect("full");
            let b = pre.preprocess_bytes(&jpeg, &fast).expect("fast");
            let max = max_abs(&a.data, &b.data);
            let mean = a
                .data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| f64::from((x - y).abs()))
                .sum::<f64>()
                / a.data.len() as f64;
            println!(
                "reduced DCT (short side >= {ratio}x512), seed {seed}: pixel_values max abs {max:.4}, mean abs {mean:.5}"
            );
            worst_max = worst_max.max(max);
            worst_mean = worst_mean.max(mean);
        }
        // One LSB is ~0.0146 in pixel_values units (1 / 255 / std). Measured: 2x → max 0.030
        // (2 LSB), mean 0.0027; 1x → max 0.088 (6 LSB), mean 0.0057.
        let (max_bound, mean_bound) = if ratio == 2 {
            (0.06, 0.006)
        } else {
            (0.15, 0.012)
        };
        assert!(
            worst_mean < mean_bound,
            "reduced DCT {ratio}x: mean abs {worst_mean} over {mean_bound}"
        );
        assert!(
            worst_max < max_bound,
            "reduced DCT {ratio}x: max abs {worst_max} over {max_bound}"
        );
    }
}
