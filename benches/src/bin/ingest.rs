//! Indexing throughput of the whole pipeline (walk, read, decode, preprocess, encode, commit) on a
//! folder of generated photos, with the share of time per stage.
//!
//! ```text
//! cargo run --release -p jsearch-benches --bin ingest -- --model toy  --photos 200
//! cargo run --release -p jsearch-benches --bin ingest -- --model real --photos 16
//! ```
//! `real` is the real-size jina-clip-v2 architecture with random weights (generated once, 1.7 GB).
//! Photos are 4000x3000 JPEGs (smooth gradients + noise + shapes), generated once and cached.
//! Extra flags: `--width W --height H --batch-size N --threads N --device cpu|cuda|auto
//! --precision auto|f32|bf16|f16|int8 --fast-jpeg|--exact-jpeg` (default: reduced-DCT decode on a GPU
//! only, as `jsearch index`) --decode-cosine N` (the reduced decode's cosine to the full one, f32, on
//! the first N photos).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use jsearch::{DeviceChoice, Engine, IndexEvent, IndexOptions, OpenOptions};
use jsearch_benches::checkpoint;
use rayon::prelude::*;

struct Args {
    model: String,
    photos: usize,
    width: u32,
    height: u32,
    batch_size: usize,
    threads: usize,
    device: String,
    precision: String,
    fast_jpeg: Option<bool>,
    decode_cosine: usize,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        model: "toy".into(),
        photos: 0,
        width: 4000,
        height: 3000,
        batch_size: 32,
        threads: 0,
        device: "auto".into(),
        precision: "auto".into(),
        fast_jpeg: None,
        decode_cosine: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--model" => a.model = v()?,
            "--photos" => a.photos = v()?.parse()?,
            "--width" => a.width = v()?.parse()?,
            "--height" => a.height = v()?.parse()?,
            "--batch-size" => a.batch_size = v()?.parse()?,
            "--threads" => a.threads = v()?.parse()?,
            "--device" => a.device = v()?,
            "--precision" => a.precision = v()?,
            "--fast-jpeg" => a.fast_jpeg = Some(true),
            "--exact-jpeg" => a.fast_jpeg = Some(false),
            "--decode-cosine" => a.decode_cosine = v()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    if a.photos == 0 {
        a.photos = if a.model == "toy" { 200 } else { 16 };
    }
    Ok(a)
}

/// A deterministic "photo": gradients, a few discs and per-pixel noise (so JPEG has real work).
fn photo(i: usize, w: u32, h: u32) -> image::RgbImage {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let discs: Vec<(f32, f32, f32, [u8; 3])> = (0..6)
        .map(|_| {
            let r = rnd();
            (
                (r % w as u64) as f32,
                ((r >> 20) % h as u64) as f32,
                (h as f32) * (0.05 + ((r >> 40) % 100) as f32 / 500.0),
                [(r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8],
            )
        })
        .collect();
    let base = [
        (rnd() % 200) as f32,
        (rnd() % 200) as f32,
        (rnd() % 200) as f32,
    ];
    let mut img = image::RgbImage::new(w, h);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let n = (rnd() % 24) as f32 - 12.0;
        let mut c = [
            base[0] + 55.0 * x as f32 / w as f32 + n,
            base[1] + 55.0 * y as f32 / h as f32 + n,
            base[2] + 30.0 + n,
        ];
        for (cx, cy, r, col) in &discs {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            if dx * dx + dy * dy < r * r {
                c = [col[0] as f32 + n, col[1] as f32 + n, col[2] as f32 + n];
            }
        }
        *px = image::Rgb(c.map(|v| v.clamp(0.0, 255.0) as u8));
    }
    img
}

fn ensure_photos(n: usize, w: u32, h: u32) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("jsearch-bench-photos-{w}x{h}"));
    std::fs::create_dir_all(&dir)?;
    let t = Instant::now();
    (0..n).into_par_iter().try_for_each(|i| -> Result<()> {
        let p = dir.join(format!("photo_{i:05}.jpg"));
        if !p.exists() {
            let tmp = dir.join(format!(".photo_{i:05}.tmp.jpg"));
            photo(i, w, h).save(&tmp)?;
            std::fs::rename(&tmp, &p)?;
        }
        Ok(())
    })?;
    eprintln!(
        "photos ready in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        dir.display()
    );
    // Only the first n photos are indexed.
    let sub = std::env::temp_dir().join(format!("jsearch-bench-set-{w}x{h}-{n}"));
    if !sub.exists() {
        std::fs::create_dir_all(&sub)?;
        for i in 0..n {
            let name = format!("photo_{i:05}.jpg");
            std::fs::hard_link(dir.join(&name), sub.join(&name))
                .or_else(|_| std::fs::copy(dir.join(&name), sub.join(&name)).map(|_| ()))?;
        }
    }
    Ok(sub)
}

fn model_dir(name: &str) -> Result<PathBuf> {
    Ok(match name {
        "toy" => checkpoint::repo_root().join("datasets/toy-shapes/model"),
        "real" => checkpoint::ensure_random_checkpoint(&checkpoint::default_checkpoint_dir())?,
        dir => Path::new(dir).to_path_buf(),
    })
}

fn main() -> Result<()> {
    let a = parse()?;
    let model = model_dir(&a.model)?;
    let photos = ensure_photos(a.photos, a.width, a.height)?;
    let db_dir = tempfile_dir()?;
    let db = db_dir.join("bench.jsearch");
    let device: DeviceChoice = a.device.parse()?;
    let mut engine = Engine::open(OpenOptions {
        db: db.clone(),
        model_dir: Some(model.clone()),
        device,
        precision: a.precision.parse()?,
        download_progress: false,
        notify: None,
        resident_weights: false,
    })?;
    let dev = engine.device()?.description.clone();
    let opts = IndexOptions {
        batch_size: a.batch_size,
        threads: a.threads,
        fast_jpeg: a.fast_jpeg,
        ..IndexOptions::default()
    };
    let t = Instant::now();
    let s = engine.index(std::slice::from_ref(&photos), &opts, &mut |ev| {
        if let IndexEvent::Problem { path, message } = ev {
            eprintln!("problem {}: {message}", path.display());
        }
    })?;
    let wall = t.elapsed().as_secs_f64();
    let tm = &s.times;
    let total = tm.read + tm.decode + tm.preprocess + tm.encode + tm.store;
    let pct = |x: f64| 100.0 * x / total.max(1e-9);
    println!(
        "model {} ({}), device {dev}, precision {}, {} photos {}x{}, batch {}, fast_jpeg {:?} (default: on a GPU): {:.2} items/s ({:.1}s wall incl. model load {:.1}s)",
        a.model,
        model.display(),
        a.precision,
        s.items,
        a.width,
        a.height,
        a.batch_size,
        a.fast_jpeg,
        s.items as f64 / s.elapsed.max(1e-9),
        wall,
        wall - s.elapsed,
    );
    println!(
        "time share: read {:.1}%  decode {:.1}%  preprocess {:.1}%  encode {:.1}%  store {:.1}%   \
         (read/decode/preprocess = CPU-s summed over {} worker threads: {:.1}/{:.1}/{:.1}s; encode {:.1}s, store {:.2}s, encoder idle waiting for input {:.1}s of {:.1}s)",
        pct(tm.read),
        pct(tm.decode),
        pct(tm.preprocess),
        pct(tm.encode),
        pct(tm.store),
        if a.threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { a.threads },
        tm.read,
        tm.decode,
        tm.preprocess,
        tm.encode,
        tm.store,
        tm.wait,
        s.elapsed,
    );
    let decode_cos = if a.decode_cosine > 0 {
        let cos = decode_cosine(&model, &photos, a.decode_cosine, engine.device()?)?;
        println!(
            "reduced-DCT vs full JPEG decode, f32 on {dev}: min cosine {:.6}, mean {:.6} over {} photos",
            cos.0, cos.1, cos.2
        );
        Some(serde_json::json!({"min": cos.0, "mean": cos.1, "photos": cos.2}))
    } else {
        None
    };
    println!(
        "{}",
        serde_json::json!({"model": a.model, "device": dev, "photos": s.items, "items_per_s": s.items as f64 / s.elapsed, "summary": s, "decode_cosine": decode_cos})
    );
    let _ = std::fs::remove_dir_all(&db_dir);
    Ok(())
}

/// The accuracy cost of the reduced-DCT decode: the first `n` photos embedded (f32, on the run's
/// device) after the full decode and after the reduced one; (min, mean cosine, photos).
fn decode_cosine(
    model_dir: &Path,
    photos: &Path,
    n: usize,
    device: &jsearch::ResolvedDevice,
) -> Result<(f64, f64, usize)> {
    use jsearch_encoders::preprocess::DecodeOptions;
    use jsearch_encoders::{ClipModel, LoadOptions, Towers, WeightCache};
    let model = ClipModel::load(
        model_dir,
        &LoadOptions {
            device: device.device.clone(),
            towers: Towers::Vision,
            cache: WeightCache::Off,
            ..LoadOptions::default()
        },
    )?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(photos)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files.truncate(n);
    let exact = DecodeOptions::default();
    let fast = DecodeOptions::default().with_fast_jpeg(model.image_size());
    let pre = model.preprocessor();
    let (mut min, mut sum) = (f64::INFINITY, 0.0);
    for chunk in files.chunks(8) {
        let px = |o: &DecodeOptions| -> Result<Vec<_>> {
            chunk
                .iter()
                .map(|p| Ok(pre.preprocess_path(p, o)?))
                .collect()
        };
        let a = model.encode_pixels_raw(&px(&exact)?)?;
        let b = model.encode_pixels_raw(&px(&fast)?)?;
        for (x, y) in a.iter().zip(&b) {
            let c = jsearch_benches::cosine(x, y);
            min = min.min(c);
            sum += c;
        }
    }
    Ok((min, sum / files.len().max(1) as f64, files.len()))
}

fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("jsearch-bench-db-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
