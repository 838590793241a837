//! Loading: only the requested tower is read, f16/bf16 checkpoints are upcast, compute in
//! bf16 works, bad files give errors that name them, identity is stable.

mod model_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use jsearch_encoders::{ClipModel, EncoderError, LoadOptions, TextRole, Towers};
use model_support::*;

fn temp_model(tag: &str, weights: &HashMap<String, Tensor>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jsearch-load-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "preprocessor_config.json", "tokenizer.json"] {
        std::fs::copy(fixture_model_dir().join(f), dir.join(f)).unwrap();
    }
    candle_core::safetensors::save(weights, dir.join("model.safetensors")).unwrap();
    dir
}

fn texts() -> Vec<String> {
    Expected::load().texts()
}

fn encode_texts(m: &ClipModel) -> Vec<Vec<f32>> {
    let t = texts();
    let refs: Vec<&str> = t.iter().map(String::as_str).collect();
    m.encode_texts_raw(&refs, TextRole::Document).unwrap()
}

fn opts(towers: Towers) -> LoadOptions {
    LoadOptions {
        towers,
        ..Default::default()
    }
}

#[test]
fn only_the_requested_tower_is_read() {
    let all = fixture_weights();
    let text_only: HashMap<String, Tensor> = all
        .iter()
        .filter(|(k, _)| !k.starts_with("vision_model."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let vision_only: HashMap<String, Tensor> = all
        .iter()
        .filter(|(k, _)| !k.starts_with("text_model."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let dt = temp_model("text", &text_only);
    let dv = temp_model("vision", &vision_only);
    let exp = Expected::load();

    let m = ClipModel::load(&dt, &opts(Towers::Text)).expect("text tower alone");
    assert!(max_abs_diff_rows(&encode_texts(&m), &exp.rows("text.batch.embeds_raw")) <= 1e-4);
    assert!(matches!(
        m.encode_pixels_raw(&[]),
        Err(EncoderError::TowerNotLoaded("vision"))
    ));
    match ClipModel::load(&dt, &opts(Towers::Both)) {
        Err(EncoderError::Weights { path, message }) => {
            assert!(path.ends_with("model.safetensors"), "{path:?}");
            assert!(message.contains("vision_model"), "{message}");
        }
        other => panic!("expected a weights error, got {other:?}"),
    }

    let m = ClipModel::load(&dv, &opts(Towers::Vision)).expect("vision tower alone");
    assert!(m.tokenizer().is_none());
    let px = jsearch_encoders::preprocess::PixelValues {
        size: 56,
        data: exp.pixels(0),
    };
    let e = m.encode_pixels_raw(&[px]).unwrap();
    assert!(max_abs_diff(&e[0], &exp.f32s("image.0.embeds_raw")) <= 1e-4);
    assert!(matches!(
        m.encode_texts_raw(&["x"], TextRole::Document),
        Err(EncoderError::TowerNotLoaded("text"))
    ));
    let _ = std::fs::remove_dir_all(dt);
    let _ = std::fs::remove_dir_all(dv);
}

#[test]
fn half_precision_checkpoints_are_upcast() {
    let exp = Expected::load();
    let want = exp.rows("text.batch.embeds_normalized");
    for (tag, dt) in [("bf16", DType::BF16), ("f16", DType::F16)] {
        let w: HashMap<String, Tensor> = fixture_weights()
            .into_iter()
            .map(|(k, v)| (k, v.to_dtype(dt).unwrap()))
            .collect();
        let dir = temp_model(tag, &w);
        let m = ClipModel::load(&dir, &LoadOptions::default()).unwrap();
        let t = texts();
        let refs: Vec<&str> = t.iter().map(String::as_str).collect();
        let got = m.encode_texts(&refs, TextRole::Document).unwrap();
        let d = max_abs_diff_rows(&got, &want);
        eprintln!("{tag} weights, f32 compute: normalised diff {d:e}");
        assert!(d < 3e-2, "{tag}: {d:e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn bf16_compute() {
    let exp = Expected::load();
    let o = LoadOptions {
        dtype: DType::BF16,
        ..Default::default()
    };
    let m = ClipModel::load(&fixture_model_dir(), &o).unwrap();
    let t = texts();
    let refs: Vec<&str> = t.iter().map(String::as_str).collect();
    let got = m.encode_texts(&refs, TextRole::Document).unwrap();
    let d = max_abs_diff_rows(&got, &exp.rows("text.batch.embeds_normalized"));
    let px = jsearch_encoders::preprocess::PixelValues {
        size: 56,
        data: exp.pixels(0),
    };
    let img = m.encode_pixels(&[px]).unwrap();
    let di = max_abs_diff(&img[0], &exp.rows("image.batch.embeds_normalized")[0]);
    eprintln!("bf16 compute: text {d:e}, image {di:e}");
    assert!(d < 1e-1 && di < 1e-1);
}

fn write_broken(tag: &str, file: &str, bytes: &[u8]) -> PathBuf {
    let dir = temp_model(tag, &fixture_weights());
    std::fs::write(dir.join(file), bytes).unwrap();
    dir
}

fn load_err(dir: &Path) -> EncoderError {
    ClipModel::load(dir, &LoadOptions::default()).expect_err("must fail")
}

#[test]
fn broken_files_are_named() {
    let d = write_broken("cfg", "config.json", b"{ not json");
    let e = load_err(&d);
    assert!(
        matches!(&e, EncoderError::Config { path, .. } if path.ends_with("config.json")),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(d);

    let d = write_broken(
        "st",
        "model.safetensors",
        b"\x10\x00\x00\x00\x00\x00\x00\x00garbage",
    );
    let e = load_err(&d);
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    let _ = std::fs::remove_dir_all(d);

    let d = write_broken("tok", "tokenizer.json", b"[]");
    let e = load_err(&d);
    assert!(
        matches!(&e, EncoderError::Tokenizer { path, .. } if path.ends_with("tokenizer.json")),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(d);

    let e = load_err(Path::new("/nonexistent/jsearch-model"));
    assert!(e.to_string().contains("/nonexistent/jsearch-model"), "{e}");
}

#[test]
fn identity_is_stable_and_weight_sensitive() {
    let a = load_fixture_model();
    let b = load_fixture_model();
    assert_eq!(a.identity(), b.identity());
    assert_eq!(a.identity().fingerprint.len(), 64);
    assert_eq!(a.embed_dim(), 64);
    assert_eq!(a.image_size(), 56);
    let toy = ClipModel::load(&toy_model_dir(), &LoadOptions::default()).unwrap();
    assert_ne!(toy.identity().fingerprint, a.identity().fingerprint);
    assert_eq!(toy.embed_dim(), 128);
    assert_eq!(toy.image_size(), 84);
    // The fingerprint covers the config files, the tokenizer and the safetensors header +
    // size (cheap for a 1.7 GB file): a different tokenizer changes it.
    let mut tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture_model_dir().join("tokenizer.json")).unwrap())
            .unwrap();
    tok["truncation"] = serde_json::json!({"direction": "Right", "max_length": 77, "strategy": "LongestFirst", "stride": 0});
    let d = write_broken(
        "ident",
        "tokenizer.json",
        &serde_json::to_vec(&tok).unwrap(),
    );
    let c = ClipModel::load(&d, &LoadOptions::default()).unwrap();
    assert_eq!(c.identity().name, a.identity().name);
    assert_ne!(c.identity().fingerprint, a.identity().fingerprint);
    let _ = std::fs::remove_dir_all(d);
}

fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>())
        .fold(f32::INFINITY, f32::min)
}

/// A fast path on the trained toy model against f32: every text and image embedding stays
/// close (min cosine above `min_cos`), and the retrieval answer (best image per caption) is kept.
fn fast_path_stays_close_to_f32(label: &str, fast: &ClipModel, min_cos: f32) {
    let f = ClipModel::load(&toy_model_dir(), &LoadOptions::default()).unwrap();
    let q = fast;
    let captions = [
        "roter Kreis",
        "a yellow star",
        "синее сердце",
        "une lune verte",
        "黑色的鞋",
        "cuadrado blanco",
    ];
    let tf = f.encode_texts(&captions, TextRole::Query).unwrap();
    let tq = q.encode_texts(&captions, TextRole::Query).unwrap();
    let images: Vec<_> = (0..24)
        .map(|i| {
            let dir = datasets().join("toy-shapes/corpus/images");
            let p = ["jpg", "png"]
                .iter()
                .map(|e| dir.join(format!("img_{i:03}.{e}")))
                .find(|p| p.exists())
                .unwrap();
            f.preprocessor()
                .preprocess_path(&p, &Default::default())
                .unwrap()
        })
        .collect();
    let vf = f.encode_pixels(&images).unwrap();
    let vq = q.encode_pixels(&images).unwrap();
    let (ct, ci) = (min_cosine(&tf, &tq), min_cosine(&vf, &vq));
    eprintln!("{label} vs f32 on the toy model: min cosine text {ct:.5}, image {ci:.5}");
    assert!(ct > min_cos && ci > min_cos, "text {ct}, image {ci}");
    // The image the fast path ranks first for each caption scores (in f32) within 1e-3 of the
    // f32 best: the answer is the same, up to near-ties between equally relevant images.
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f32>();
    for (i, c) in captions.iter().enumerate() {
        let top = |t: &[Vec<f32>], v: &[Vec<f32>]| {
            (0..v.len())
                .max_by(|&a, &b| dot(&t[i], &v[a]).total_cmp(&dot(&t[i], &v[b])))
                .unwrap()
        };
        let (jf, jq) = (top(&tf, &vf), top(&tq, &vq));
        let gap = dot(&tf[i], &vf[jf]) - dot(&tf[i], &vf[jq]);
        assert!(
            gap < 1e-3,
            "{c}: {label} ranks image {jq} first, f32 image {jf} (gap {gap})"
        );
    }
}

/// The int8 (Q8_0) path on the trained toy model stays close to f32 and keeps the answers;
/// int8 with a non-f32 compute dtype is refused.
#[test]
fn int8_quantised_linears_stay_close_to_f32() {
    let q = ClipModel::load(
        &toy_model_dir(),
        &LoadOptions {
            int8: true,
            ..Default::default()
        },
    )
    .unwrap();
    fast_path_stays_close_to_f32("int8", &q, 0.99);
    let err = ClipModel::load(
        &toy_model_dir(),
        &LoadOptions {
            int8: true,
            dtype: DType::BF16,
            ..Default::default()
        },
    )
    .expect_err("int8 + bf16");
    assert!(err.to_string().contains("int8"), "{err}");
}

/// The AVX512-BF16 matmul path (bf16-rounded linear layers, f32 elsewhere) stays close to f32
/// and keeps the answers; on a CPU without AVX512-BF16 nothing is packed and the embeddings
/// are the f32 ones. Combined with int8 or a non-f32 dtype it is refused.
#[test]
fn bf16_matmul_linears_stay_close_to_f32() {
    let mut m = ClipModel::load(&toy_model_dir(), &LoadOptions::default()).unwrap();
    let packed = m.pack_bf16().unwrap();
    if jsearch_encoders::bf16_kernel_available() {
        // text: 4 per layer, vision: 4 per block
        assert!(packed >= 8, "{packed} layers packed");
        fast_path_stays_close_to_f32("bf16 matmul", &m, 0.995);
    } else {
        assert_eq!(packed, 0);
        eprintln!("no AVX512-BF16 on this CPU: the layers stay f32");
    }
    let loaded = ClipModel::load(
        &toy_model_dir(),
        &LoadOptions {
            bf16_matmul: true,
            ..Default::default()
        },
    )
    .unwrap();
    let t = ["ein blaues Dreieck"];
    assert_eq!(
        loaded.encode_texts(&t, TextRole::Query).unwrap(),
        m.encode_texts(&t, TextRole::Query).unwrap()
    );
    for bad in [
        LoadOptions {
            bf16_matmul: true,
            int8: true,
            ..Default::default()
        },
        LoadOptions {
            bf16_matmul: true,
            dtype: DType::BF16,
            ..Default::default()
        },
    ] {
        let err = ClipModel::load(&toy_model_dir(), &bad).expect_err("refused");
        assert!(err.to_string().contains("bf16 matmul"), "{err}");
    }
}
