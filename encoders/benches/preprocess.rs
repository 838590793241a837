#![allow(missing_docs)] // criterion_group! expands to an undocumented public fn
//! Preprocessing speed on a 12-megapixel (4000×3000) photo-like JPEG, model size 512.
//!
//! `cargo bench -p jsearch-encoders --bench preprocess`
//!
//! * `resize/*`: Pillow-exact bicubic (full resize, and the crop-only region the preprocessor
//!   uses) against the `image` crate's CatmullRom resize as a baseline.
//! * `decode/*`: full-resolution JPEG decode and the reduced-DCT fast path (short side ≥ 2×
//!   and ≥ 1× the model size).
//! * `pipeline/*`: decode + resize + crop + normalise, reference-exact vs fast JPEG path.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use image::{Rgb, RgbImage};
use jsearch_encoders::preprocess::{
    decode_rgb, resize_shortest_bicubic, DecodeOptions, Preprocessor,
};
use jsearch_encoders::PreprocessorConfig;

fn synthetic_photo(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let mut v = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77);
        v ^= v >> 15;
        v = v.wrapping_mul(0x2C1B_3C6D);
        v ^= v >> 12;
        let n = (v & 0xFF) as f32 / 255.0 * 0.08;
        let texture = ((fx * 37.0 + (fy * 11.0).sin() * 3.0).sin() * 0.5 + 0.5)
            * ((fy * 23.0).cos() * 0.5 + 0.5);
        let sky = 0.6 - 0.4 * fy;
        let px = |c: f32| (c.clamp(0.0, 1.0) * 255.0) as u8;
        Rgb([
            px(sky * 0.8 + texture * 0.3 + n),
            px(sky * 0.9 + texture * 0.2 + n),
            px(sky + 0.1 * fx + n),
        ])
    })
}

fn preprocessor() -> Preprocessor {
    Preprocessor::from_config(&PreprocessorConfig::default())
}

fn bench(c: &mut Criterion) {
    let img = synthetic_photo(4000, 3000);
    let mut jpeg = Cursor::new(Vec::new());
    if let Err(e) =
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90).encode_image(&img)
    {
        eprintln!("cannot encode the benchmark JPEG: {e}");
        return;
    }
    let jpeg = jpeg.into_inner();
    let pre = preprocessor();
    let full = DecodeOptions::default();
    let fast2 = DecodeOptions::default().with_fast_jpeg(512);
    let fast1 = DecodeOptions {
        jpeg_reduced_min_side: Some(512),
        ..DecodeOptions::default()
    };

    let mut g = c.benchmark_group("resize");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("pillow_exact_full_4000x3000_to_682x512", |b| {
        b.iter(|| resize_shortest_bicubic(black_box(&img), 512))
    });
    g.bench_function("pillow_exact_crop_region_512x512", |b| {
        b.iter(|| pre.resize_crop(black_box(&img)))
    });
    g.bench_function("image_crate_catmullrom_baseline", |b| {
        b.iter(|| {
            image::imageops::resize(
                black_box(&img),
                682,
                512,
                image::imageops::FilterType::CatmullRom,
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("decode");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, opts) in [
        ("jpeg_12mp_full", &full),
        ("jpeg_12mp_reduced_2x", &fast2),
        ("jpeg_12mp_reduced_1x", &fast1),
    ] {
        g.bench_function(name, |b| b.iter(|| decode_rgb(black_box(&jpeg), opts)));
    }
    g.bench_function("jpeg_12mp_full_zune_via_image_crate", |b| {
        b.iter(|| image::load_from_memory(black_box(&jpeg)))
    });
    g.finish();

    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, opts) in [
        ("jpeg_12mp_exact", &full),
        ("jpeg_12mp_fast_2x", &fast2),
        ("jpeg_12mp_fast_1x", &fast1),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| pre.preprocess_bytes(black_box(&jpeg), opts))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
