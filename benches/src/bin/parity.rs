//! Parity of the encoders on a device against the golden fixtures of the official implementation
//! (`datasets/jina-clip-v2-tiny`), and of bf16 against f32 on the same device: the first step of
//! `scripts/gpu-check.sh`, and what `cargo test -p jsearch-encoders` checks on the CPU.
//!
//! ```text
//! cargo run --release -p jsearch-benches --bin parity -- --device cpu
//! parity --device cuda --json OUT/parity.json      # a `--features cuda` build on a GPU
//! ```
//!
//! Checks, each a row of the table, and the exit code 1 when any fails:
//! - fixture model, f32 on the device: every text's and image's raw embedding within 1e-4 of the
//!   official outputs (the fixture README's tolerance), normalised within 1e-5;
//! - fixture model and the trained toy model, bf16 on the device: cosine ≥ 0.999 to f32 on the
//!   same device for every input (fixture texts and images; the toy corpus's 120 images and its
//!   queries).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Parser;
use jsearch_benches::checkpoint::repo_root;
use jsearch_benches::{cosine, open_device};
use jsearch_encoders::preprocess::{DecodeOptions, PixelValues, Preprocessor};
use jsearch_encoders::{ClipModel, LoadOptions, TextRole, Towers, WeightCache};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "encoder parity on a device: f32 vs the official fixtures, bf16 vs f32")]
struct Args {
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Largest allowed |f32 − official| of a raw embedding element.
    #[arg(long, default_value_t = 1e-4)]
    raw_tol: f32,
    /// Smallest allowed cosine of bf16 to f32, per input.
    #[arg(long, default_value_t = 0.999)]
    bf16_min_cosine: f64,
}

/// One check: what, the measured value, the bound, and whether it holds.
struct Row {
    check: String,
    value: f64,
    bound: String,
    ok: bool,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let device = open_device(&a.device)?;
    let root = repo_root();
    let fixture = root.join("datasets/jina-clip-v2-tiny");
    let toy = root.join("datasets/toy-shapes");
    let mut rows = Vec::new();
    let t = Instant::now();

    // The official outputs.
    let exp = candle_core::safetensors::load(fixture.join("expected.safetensors"), &Device::Cpu)
        .with_context(|| format!("reading {}", fixture.join("expected.safetensors").display()))?;
    let meta: Value = serde_json::from_slice(&std::fs::read(fixture.join("expected.json"))?)?;
    let rows_of = |name: &str| -> Result<Vec<Vec<f32>>> {
        Ok(exp
            .get(name)
            .with_context(|| format!("expected tensor {name}"))?
            .to_dtype(DType::F32)?
            .to_vec2()?)
    };
    let texts: Vec<String> = meta["texts"]
        .as_array()
        .context("expected.json: texts")?
        .iter()
        .filter_map(|t| t["text"].as_str().map(str::to_string))
        .collect();
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let n_images = meta["images"].as_array().map_or(0, Vec::len);
    let model_dir = fixture.join("model");
    let f32_model = load(&model_dir, &device, DType::F32)?;
    let pixels: Vec<PixelValues> = (0..n_images)
        .map(|j| -> Result<PixelValues> {
            Ok(PixelValues {
                size: f32_model.image_size(),
                data: exp
                    .get(&format!("image.{j}.pixel_values"))
                    .context("pixel values")?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1()?,
            })
        })
        .collect::<Result<_>>()?;

    // f32 vs the official implementation.
    let text_f32 = f32_model.encode_texts_raw(&text_refs, TextRole::Document)?;
    let d = max_abs_diff(&text_f32, &rows_of("text.batch.embeds_raw")?)?;
    rows.push(bound_max(
        format!("fixture texts ({}), f32 raw vs official", texts.len()),
        d,
        a.raw_tol,
    ));
    let norm = f32_model.encode_texts(&text_refs, TextRole::Document)?;
    let d = max_abs_diff(&norm, &rows_of("text.batch.embeds_normalized")?)?;
    rows.push(bound_max(
        "fixture texts, f32 normalised vs official".into(),
        d,
        1e-5,
    ));
    let img_f32 = f32_model.encode_pixels_raw(&pixels)?;
    let d = max_abs_diff(&img_f32, &rows_of("image.batch.embeds_raw")?)?;
    rows.push(bound_max(
        format!("fixture images ({n_images}), f32 raw vs official"),
        d,
        a.raw_tol,
    ));
    let norm = f32_model.encode_pixels(&pixels)?;
    let d = max_abs_diff(&norm, &rows_of("image.batch.embeds_normalized")?)?;
    rows.push(bound_max(
        "fixture images, f32 normalised vs official".into(),
        d,
        1e-5,
    ));

    // bf16 vs f32 on the same device, fixture model.
    let bf16_model = load(&model_dir, &device, DType::BF16)?;
    let c = min_cosine(
        &bf16_model.encode_texts_raw(&text_refs, TextRole::Document)?,
        &text_f32,
    )?;
    rows.push(bound_min(
        "fixture texts, bf16 vs f32 (min cosine)".into(),
        c,
        a.bf16_min_cosine,
    ));
    let c = min_cosine(&bf16_model.encode_pixels_raw(&pixels)?, &img_f32)?;
    rows.push(bound_min(
        "fixture images, bf16 vs f32 (min cosine)".into(),
        c,
        a.bf16_min_cosine,
    ));
    drop((f32_model, bf16_model));

    // bf16 vs f32 on the trained toy model: its corpus's images and queries.
    let toy_model = toy.join("model");
    let pre = Preprocessor::load(&toy_model.join("preprocessor_config.json"))?;
    let mut images: Vec<PathBuf> = std::fs::read_dir(toy.join("corpus/images"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    images.sort();
    let toy_pixels: Vec<PixelValues> = images
        .iter()
        .map(|p| {
            pre.preprocess_path(p, &DecodeOptions::default())
                .with_context(|| format!("preprocessing {}", p.display()))
        })
        .collect::<Result<_>>()?;
    let queries: Vec<String> = std::fs::read_to_string(toy.join("corpus/queries.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    let query_refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let (f, b) = (
        load(&toy_model, &device, DType::F32)?,
        load(&toy_model, &device, DType::BF16)?,
    );
    let mut pair = |what: String, x: Vec<Vec<f32>>, y: Vec<Vec<f32>>| -> Result<()> {
        rows.push(bound_min(what, min_cosine(&x, &y)?, a.bf16_min_cosine));
        Ok(())
    };
    for chunk in [0usize, 1] {
        // Two batches of 60: the toy corpus in the batch size an index run would use.
        let part = &toy_pixels[chunk * toy_pixels.len() / 2..(chunk + 1) * toy_pixels.len() / 2];
        pair(
            format!(
                "toy images {}-{}, bf16 vs f32 (min cosine)",
                chunk * toy_pixels.len() / 2,
                (chunk + 1) * toy_pixels.len() / 2 - 1
            ),
            b.encode_pixels_raw(part)?,
            f.encode_pixels_raw(part)?,
        )?;
    }
    pair(
        format!("toy queries ({}), bf16 vs f32 (min cosine)", queries.len()),
        b.encode_texts_raw(&query_refs, TextRole::Query)?,
        f.encode_texts_raw(&query_refs, TextRole::Query)?,
    )?;

    let failed = rows.iter().filter(|r| !r.ok).count();
    println!(
        "\nencoder parity on {} ({:.1} s)\n",
        a.device,
        t.elapsed().as_secs_f64()
    );
    println!("| check | value | bound | holds |");
    println!("|---|---|---|---|");
    for r in &rows {
        let value = if r.bound.starts_with('≥') {
            format!("{:.6}", r.value)
        } else {
            format!("{:.3e}", r.value)
        };
        println!(
            "| {} | {value} | {} | {} |",
            r.check,
            r.bound,
            if r.ok { "yes" } else { "**NO**" }
        );
    }
    if let Some(path) = &a.json {
        let v: Vec<Value> = rows
            .iter()
            .map(|r| json!({"check": r.check, "value": r.value, "bound": r.bound, "ok": r.ok}))
            .collect();
        std::fs::write(
            path,
            serde_json::to_string_pretty(&json!({"device": a.device, "rows": v}))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    if failed > 0 {
        bail!("{failed} of {} parity checks failed", rows.len());
    }
    Ok(())
}

fn load(dir: &Path, device: &Device, dtype: DType) -> Result<ClipModel> {
    let opts = LoadOptions {
        device: device.clone(),
        dtype,
        towers: Towers::Both,
        cache: WeightCache::Off,
        ..LoadOptions::default()
    };
    ClipModel::load(dir, &opts).with_context(|| format!("loading {} as {dtype:?}", dir.display()))
}

fn bound_max(check: String, value: f32, bound: f32) -> Row {
    Row {
        check,
        value: value as f64,
        bound: format!("≤ {bound:e}"),
        ok: value <= bound,
    }
}

fn bound_min(check: String, value: f64, bound: f64) -> Row {
    Row {
        check,
        value,
        bound: format!("≥ {bound}"),
        ok: value >= bound,
    }
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<f32> {
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.len() != y.len()) {
        bail!("shape mismatch: {} rows vs {}", a.len(), b.len());
    }
    Ok(a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(u, v)| (u - v).abs()))
        .fold(
            0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        ))
}

fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<f64> {
    if a.len() != b.len() || a.is_empty() {
        bail!("cannot compare {} rows with {}", a.len(), b.len());
    }
    Ok(a.iter()
        .zip(b)
        .map(|(x, y)| {
            let c = cosine(x, y);
            if c.is_nan() {
                -1.0
            } else {
                c
            }
        })
        .fold(f64::INFINITY, f64::min))
}
