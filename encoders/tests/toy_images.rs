//! The trained toy model, image side: images go through `preprocess` (decode, convert RGB,
//! Pillow-exact bicubic, centre crop) and the vision tower; embeddings match the official
//! code's (PNG within the f32 tolerances, JPEG within the README's decoder tolerance), and the
//! text→image and image→title metrics of `expected.json` are reproduced.

mod model_support;

use std::collections::BTreeSet;

use jsearch_encoders::preprocess::DecodeOptions;
use jsearch_encoders::{normalize, ClipModel, LoadOptions, TextRole};
use model_support::toy::*;
use model_support::*;

const KS: [usize; 3] = [1, 5, 10];

fn normed(v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    normalize(&mut v);
    v
}

fn objects(v: &serde_json::Value) -> BTreeSet<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o[0].as_str().unwrap().to_string(),
                o[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn toy_image_embeddings_and_metrics() {
    let model = ClipModel::load(&toy_model_dir(), &LoadOptions::default()).expect("toy model");
    let c = Corpus::load();
    let corpus_dir = datasets().join("toy-shapes/corpus");
    let files: Vec<String> = c.expected["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["file"].as_str().unwrap().to_string())
        .collect();
    let pixels: Vec<_> = files
        .iter()
        .map(|f| {
            model
                .preprocessor()
                .preprocess_path(&corpus_dir.join(f), &DecodeOptions::default())
                .unwrap_or_else(|e| panic!("{f}: {e}"))
        })
        .collect();
    let got = model.encode_pixels_raw(&pixels).unwrap();
    let want = c.vectors("images", "embedding");
    let (mut png_raw, mut png_norm, mut jpg_norm, mut jpg_cos) = (0f32, 0f32, 0f32, 1f32);
    for ((f, g), w) in files.iter().zip(&got).zip(&want) {
        let (gn, wn) = (normed(g), normed(w));
        let dn = max_abs_diff(&gn, &wn);
        if f.ends_with(".png") {
            png_raw = png_raw.max(max_abs_diff(g, w));
            png_norm = png_norm.max(dn);
        } else {
            jpg_norm = jpg_norm.max(dn);
            jpg_cos = jpg_cos.min(gn.iter().zip(&wn).map(|(a, b)| a * b).sum());
        }
    }
    eprintln!("PNG raw {png_raw:e} norm {png_norm:e}; JPEG norm {jpg_norm:e} min cos {jpg_cos}");
    assert!(png_raw <= 1e-4, "PNG raw {png_raw:e}");
    assert!(png_norm <= 1e-5, "PNG normalised {png_norm:e}");
    assert!(
        jpg_norm <= 1e-2 && jpg_cos >= 0.999,
        "JPEG {jpg_norm:e} / cos {jpg_cos}"
    );

    // text -> image, every dim, plain and instruction queries.
    let queries = Corpus::strings(&c.queries, "text");
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let plain = model.encode_texts_raw(&refs, TextRole::Document).unwrap();
    let instr = model.encode_texts_raw(&refs, TextRole::Query).unwrap();
    let relevant: Vec<Vec<usize>> = c
        .queries
        .iter()
        .map(|q| {
            q["relevant_images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let name = format!("images/{}", r.as_str().unwrap());
                    files.iter().position(|f| *f == name).expect("image file")
                })
                .collect()
        })
        .collect();
    let langs = Corpus::strings(&c.queries, "lang");
    let statuses = Corpus::strings(&c.queries, "status");
    // With the PNG embeddings from our pipeline and the JPEG ones from the reference (our JPEG
    // decoder is not libjpeg-turbo: ~1e-3 drift), every metric must be reproduced exactly.
    // With our JPEG embeddings as well, only outcomes that expected.json lists as fragile
    // (flippable by a 1e-4 score change) may differ.
    let hybrid: Vec<Vec<f32>> = files
        .iter()
        .zip(got.iter().zip(&want))
        .map(|(f, (g, w))| {
            if f.ends_with(".png") {
                g.clone()
            } else {
                w.clone()
            }
        })
        .collect();
    let fragile = &c.expected["fragile_outcomes"]["by_delta"]["0.0001"];
    let mut bad = Vec::new();
    let mut flips_total = 0;
    for dim in [8, 16, 32, 64, 128] {
        for (qs, name) in [(&plain, "plain"), (&instr, "instruction")] {
            let key = format!("text_to_image.{name}");
            let h_hybrid = hits(qs, &hybrid, &relevant, dim, &KS);
            let agg = aggregate(&h_hybrid, &langs, &statuses, &KS);
            bad.extend(compare_metrics(&c.expected, dim, &key, &agg, &KS));
            let h_ours = hits(qs, &got, &relevant, dim, &KS);
            let flips: usize = h_hybrid
                .iter()
                .zip(&h_ours)
                .map(|(a, b)| a.iter().zip(b).filter(|(x, y)| x != y).count())
                .sum();
            let allowed = fragile[format!("{dim}.{key}")].as_u64().unwrap_or(0) as usize;
            if flips > allowed {
                bad.push(format!("{dim} {key}: {flips} outcomes flipped by our JPEG decoding (fragile: {allowed})"));
            }
            flips_total += flips;
        }
    }
    eprintln!("t2i outcomes flipped by JPEG decoding (all fragile near-ties): {flips_total}");

    // image -> product titles (relevant = same object set).
    let labels: Vec<serde_json::Value> = std::fs::read_to_string(corpus_dir.join("labels.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let obj_of = |image: &str| {
        objects(&labels.iter().find(|l| l["image"] == image).expect("label")["objects"])
    };
    let titles = Corpus::strings(&c.products, "title");
    let title_refs: Vec<&str> = titles.iter().map(String::as_str).collect();
    let title_vecs = model
        .encode_texts_raw(&title_refs, TextRole::Document)
        .unwrap();
    let product_objs: Vec<_> = c
        .products
        .iter()
        .map(|p| obj_of(p["image"].as_str().unwrap()))
        .collect();
    let img_relevant: Vec<Vec<usize>> = files
        .iter()
        .map(|f| {
            let o = obj_of(f);
            (0..product_objs.len())
                .filter(|&i| product_objs[i] == o)
                .collect()
        })
        .collect();
    let all = vec!["-".to_string(); files.len()];
    let status = vec!["all".to_string(); files.len()];
    for dim in [8, 16, 32, 64, 128] {
        let h = hits(&got, &title_vecs, &img_relevant, dim, &[1, 5]);
        let agg = aggregate(&h, &all, &status, &[1, 5]);
        let (vals, n) = &agg[&("all".to_string(), "all".to_string())];
        let want = &c.expected["metrics"][dim.to_string()]["image_to_product_title"]["all"];
        assert_eq!(*n as u64, want["n"].as_u64().unwrap());
        for (i, k) in [1, 5].iter().enumerate() {
            let w = want[format!("R@{k}")].as_f64().unwrap();
            if (vals[i] - w).abs() > 6e-5 {
                bad.push(format!(
                    "{dim} image_to_product_title R@{k}: {:.4} != {w}",
                    vals[i]
                ));
            }
        }
    }
    assert!(bad.is_empty(), "metric mismatches:\n{}", bad.join("\n"));
}
