//! Photo formats bench: decode time per format (JPEG, HEIC, camera RAW by its embedded preview,
//! RAW sensor data through LibRaw)
//! and `jsearch index` throughput of a folder mixing them, beside the JPEG-only folder, on the toy
//! model and the real-size random-weight model.
//!
//! ```text
//! cargo run --release -p jsearch-benches --bin photos [-- --n 8 --size 3000x2000 --models toy,real]
//! ```
//! Needs `heif-enc` (Debian: libheif-examples) to make the HEIC files and libheif to read them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use jsearch_benches::checkpoint;
use jsearch_encoders::preprocess::{decode_rgb_named, DecodeOptions};

#[derive(Parser)]
struct Args {
    /// Pictures per format.
    #[arg(long, default_value_t = 8)]
    n: usize,
    /// Picture size, WxH.
    #[arg(long, default_value = "3000x2000")]
    size: String,
    /// Models: toy, real.
    #[arg(long, default_value = "toy,real")]
    models: String,
}

/// A synthetic photo: gradients, stripes and a disc, different per seed.
fn picture(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let (cx, cy) = (0.3 + 0.05 * (seed % 7) as f32, 0.5);
        let d = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt();
        if d < 0.2 {
            image::Rgb([220, 30 + (seed * 20 % 200) as u8, 40])
        } else {
            let stripe = (((x + y + seed * 13) / 40) % 2) as u8 * 30;
            image::Rgb([
                (fx * 200.0) as u8 + stripe,
                (fy * 180.0) as u8,
                (120 + seed * 17 % 100) as u8,
            ])
        }
    })
}

/// A minimal DNG: IFD0 holds `jpeg` as its preview strip, then `sensor` stand-in bytes.
fn dng(jpeg: &[u8], w: u32, h: u32, sensor: usize) -> Vec<u8> {
    let entries: Vec<(u16, u16, u32, u32)> = vec![
        (254, 4, 1, 1),
        (256, 4, 1, w),
        (257, 4, 1, h),
        (259, 3, 1, 7),
        (262, 3, 1, 6),
        (273, 4, 1, 0), // strip offset, patched below
        (277, 3, 1, 3),
        (278, 4, 1, h),
        (279, 4, 1, jpeg.len() as u32),
        (274, 3, 1, 1),
        (50706, 1, 4, u32::from_le_bytes([1, 4, 0, 0])),
    ];
    let ifd_len = 2 + 12 * entries.len() + 4;
    let data = 8 + ifd_len;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, typ, count, val) in entries {
        let val = if tag == 273 { data as u32 } else { val };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&typ.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        if typ == 3 {
            out.extend_from_slice(&(val as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&val.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(jpeg);
    out.extend((0..sensor).map(|i| (i * 31 % 251) as u8));
    out
}

/// A DNG with sensor data only (no preview): `img` as 16-bit RGGB Bayer samples in linear light,
/// uncompressed, with the colour matrix of a linear-sRGB "camera" (what LibRaw decodes for RAWs
/// without a preview; `tests/data/make_sensor_dng.py` writes the test fixture the same way).
fn sensor_dng(img: &image::RgbImage) -> Vec<u8> {
    let (w, h) = (img.width() & !1, img.height() & !1);
    let lin = |v: u8| -> u16 {
        let c = v as f32 / 255.0;
        let l = if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        };
        (l * 65535.0).round() as u16
    };
    let mut samples = Vec::with_capacity((w * h * 2) as usize);
    for y in 0..h {
        for x in 0..w {
            let p = img.get_pixel(x, y).0;
            let c = match (y % 2, x % 2) {
                (0, 0) => p[0],
                (1, 1) => p[2],
                _ => p[1],
            };
            samples.extend_from_slice(&lin(c).to_le_bytes());
        }
    }
    // XYZ (D65) to linear sRGB, as SRATIONALs over 10000.
    let m = [
        3.2406f32, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570,
    ];
    let matrix: Vec<u8> = m
        .iter()
        .flat_map(|v| {
            let mut b = ((v * 10000.0).round() as i32).to_le_bytes().to_vec();
            b.extend_from_slice(&10000i32.to_le_bytes());
            b
        })
        .collect();
    let model = b"jsearch bench sensor\0".to_vec();
    // (tag, type, count, inline value or external bytes)
    enum V {
        Inline(u32),
        Bytes(Vec<u8>),
    }
    let entries: Vec<(u16, u16, u32, V)> = vec![
        (254, 4, 1, V::Inline(0)),
        (256, 4, 1, V::Inline(w)),
        (257, 4, 1, V::Inline(h)),
        (258, 3, 1, V::Inline(16)),
        (259, 3, 1, V::Inline(1)),
        (262, 3, 1, V::Inline(32803)),
        (273, 4, 1, V::Inline(0)), // strip offset, patched below
        (274, 3, 1, V::Inline(1)),
        (277, 3, 1, V::Inline(1)),
        (278, 4, 1, V::Inline(h)),
        (279, 4, 1, V::Inline(samples.len() as u32)),
        (284, 3, 1, V::Inline(1)),
        (33421, 3, 2, V::Inline(2 | (2 << 16))),
        (33422, 1, 4, V::Inline(u32::from_le_bytes([0, 1, 1, 2]))),
        (50706, 1, 4, V::Inline(u32::from_le_bytes([1, 4, 0, 0]))),
        (50708, 2, model.len() as u32, V::Bytes(model)),
        (50717, 4, 1, V::Inline(65535)),
        (50721, 10, 9, V::Bytes(matrix)),
        (50778, 3, 1, V::Inline(21)),
    ];
    let ifd_len = 2 + 12 * entries.len() + 4;
    let mut extra = Vec::new();
    let extra_at = 8 + ifd_len;
    let mut ifd = Vec::new();
    ifd.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    let mut strip_field = 0;
    for (tag, typ, count, v) in &entries {
        ifd.extend_from_slice(&tag.to_le_bytes());
        ifd.extend_from_slice(&typ.to_le_bytes());
        ifd.extend_from_slice(&count.to_le_bytes());
        match v {
            V::Inline(val) if *typ == 3 && *count == 1 => {
                ifd.extend_from_slice(&(*val as u16).to_le_bytes());
                ifd.extend_from_slice(&[0, 0]);
            }
            V::Inline(val) => {
                if *tag == 273 {
                    strip_field = ifd.len();
                }
                ifd.extend_from_slice(&val.to_le_bytes());
            }
            V::Bytes(b) => {
                ifd.extend_from_slice(&((extra_at + extra.len()) as u32).to_le_bytes());
                extra.extend_from_slice(b);
                if extra.len() % 2 == 1 {
                    extra.push(0);
                }
            }
        }
    }
    ifd.extend_from_slice(&0u32.to_le_bytes());
    let strip_at = (extra_at + extra.len()) as u32;
    ifd[strip_field..strip_field + 4].copy_from_slice(&strip_at.to_le_bytes());
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&ifd);
    out.extend_from_slice(&extra);
    out.extend_from_slice(&samples);
    out
}

fn make_files(
    dir: &Path,
    n: usize,
    w: u32,
    h: u32,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut jpgs, mut heics, mut raws) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let img = picture(w, h, i as u32);
        let mut jpeg = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img)?;
        let jpeg = jpeg.into_inner();
        let j = dir.join(format!("photo_{i:03}.jpg"));
        std::fs::write(&j, &jpeg)?;
        jpgs.push(j.clone());
        // Other pictures for the other formats (no RAW + JPEG siblings, no duplicates).
        let other = picture(w, h, 1000 + i as u32);
        let mut oj = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut oj, 90).encode_image(&other)?;
        let oj = oj.into_inner();
        let src = dir.join(format!("src_{i:03}.jpg"));
        std::fs::write(&src, &oj)?;
        let heic = dir.join(format!("phone_{i:03}.heic"));
        let st = std::process::Command::new("heif-enc")
            .args(["-q", "80"])
            .arg(&src)
            .arg("-o")
            .arg(&heic)
            .output()
            .context("heif-enc (Debian: apt install libheif-examples)")?;
        if !st.status.success() {
            bail!("heif-enc: {}", String::from_utf8_lossy(&st.stderr));
        }
        std::fs::remove_file(&src)?;
        heics.push(heic);
        let third = picture(w, h, 2000 + i as u32);
        let mut tj = std::io::Cursor::new(Vec::new());
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut tj, 90).encode_image(&third)?;
        let raw = dir.join(format!("camera_{i:03}.dng"));
        // A 12-bit sensor dump is about 1.5 bytes a pixel.
        std::fs::write(&raw, dng(&tj.into_inner(), w, h, (w * h) as usize * 3 / 2))?;
        raws.push(raw);
    }
    Ok((jpgs, heics, raws))
}

/// Mean decode milliseconds per file (the engine's options: EXIF orientation, full size).
fn decode_ms(files: &[PathBuf]) -> Result<f64> {
    let opts = DecodeOptions {
        apply_exif_orientation: true,
        ..Default::default()
    };
    let t = Instant::now();
    for f in files {
        let bytes = std::fs::read(f)?;
        decode_rgb_named(&bytes, f, &opts)?;
    }
    Ok(t.elapsed().as_secs_f64() * 1e3 / files.len().max(1) as f64)
}

/// `jsearch index` of `folder` into a new store: items/s and the decode share of the stages.
fn index(bin: &Path, model: &Path, folder: &Path, db: &Path) -> Result<(f64, f64, usize)> {
    let t = Instant::now();
    let out = std::process::Command::new(bin)
        .arg("--db")
        .arg(db)
        .arg("--model")
        .arg(model)
        .args(["-q", "index", "--json"])
        .arg(folder)
        .output()?;
    let wall = t.elapsed().as_secs_f64();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let n = s["indexed"].as_u64().unwrap_or(0) as usize;
    let times = &s["times"];
    let f = |k: &str| times[k].as_f64().unwrap_or(0.0);
    let total = f("read") + f("decode") + f("preprocess") + f("encode") + f("store");
    Ok((n as f64 / wall, f("decode") / total.max(1e-9), n))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (w, h) = args
        .size
        .split_once('x')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .context("--size WxH")?;
    let root = checkpoint::repo_root();
    let bin = jsearch_benches::release_jsearch(&root)?;
    let dir = tempfile::tempdir()?;
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(&mixed)?;
    let (jpgs, heics, raws) = make_files(&mixed, args.n, w, h)?;
    // Preview-less RAWs: timed for decoding, kept out of the mixed folder (cameras write previews).
    let sensor_dir = dir.path().join("sensor");
    std::fs::create_dir_all(&sensor_dir)?;
    let sensor: Vec<PathBuf> = (0..args.n)
        .map(|i| -> Result<PathBuf> {
            let f = sensor_dir.join(format!("sensor_{i:03}.dng"));
            std::fs::write(&f, sensor_dng(&picture(w, h, 3000 + i as u32)))?;
            Ok(f)
        })
        .collect::<Result<_>>()?;
    let jpeg_only = dir.path().join("jpeg");
    std::fs::create_dir_all(&jpeg_only)?;
    for j in &jpgs {
        if let Some(name) = j.file_name() {
            std::fs::copy(j, jpeg_only.join(name))?;
        }
    }
    let size_mb = |fs: &[PathBuf]| {
        fs.iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len() as f64)
            .sum::<f64>()
            / fs.len().max(1) as f64
            / 1e6
    };
    println!(
        "photos bench · {} per format at {w}x{h} · CPU tier {:?}",
        args.n,
        jsearch::cpu_tier()
    );
    println!();
    println!("| format | MB per file | decode ms per file | vs JPEG |");
    println!("|---|---:|---:|---:|");
    let jpeg_ms = decode_ms(&jpgs)?;
    for (name, files, ms) in [
        ("JPEG (q90)", &jpgs, jpeg_ms),
        ("HEIC (heif-enc -q 80)", &heics, decode_ms(&heics)?),
        (
            "DNG (embedded full-size JPEG preview)",
            &raws,
            decode_ms(&raws)?,
        ),
        (
            "DNG (sensor data only: LibRaw, linear demosaic)",
            &sensor,
            decode_ms(&sensor)?,
        ),
    ] {
        println!(
            "| {name} | {:.2} | {ms:.1} | {:.2}x |",
            size_mb(files),
            ms / jpeg_ms
        );
    }
    println!();
    println!("| model | folder | items | items/s | decode share of stage time | mixed / JPEG-only items/s |");
    println!("|---|---|---:|---:|---:|---:|");
    for m in args.models.split(',') {
        let model = match m.trim() {
            "toy" => root.join("datasets/toy-shapes/model"),
            "real" => checkpoint::ensure_random_checkpoint(&checkpoint::default_checkpoint_dir())?,
            other => bail!("--models: toy or real, not {other}"),
        };
        let (jr, jd, jn) = index(
            &bin,
            &model,
            &jpeg_only,
            &dir.path().join(format!("{m}-j.jsearch")),
        )?;
        let (mr, md, mn) = index(
            &bin,
            &model,
            &mixed,
            &dir.path().join(format!("{m}-m.jsearch")),
        )?;
        println!(
            "| {m} | JPEG only | {jn} | {jr:.2} | {:.0} % | |",
            jd * 100.0
        );
        println!(
            "| {m} | JPEG + HEIC + DNG | {mn} | {mr:.2} | {:.0} % | {:.2} |",
            md * 100.0,
            mr / jr
        );
    }
    Ok(())
}
