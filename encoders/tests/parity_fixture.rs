//! Parity against every model tensor of `datasets/jina-clip-v2-tiny/expected.safetensors`
//! (produced by the official jina-clip-v2 code), within the fixture README's tolerances.

mod model_support;

use jsearch_encoders::text::TextModel;
use jsearch_encoders::vision::VisionRopeParams;
use jsearch_encoders::{clip_logits, normalize, truncate_normalize, Adapter, ClipModel, TextRole};
use model_support::*;

const HIDDEN_TOL: f32 = 1e-4;
const RAW_TOL: f32 = 1e-4;
const NORM_TOL: f32 = 1e-5;

fn texts(exp: &Expected) -> Vec<String> {
    exp.texts()
}

#[test]
fn token_ids_are_exact() {
    let exp = Expected::load();
    let model = load_fixture_model();
    let texts = texts(&exp);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = model.tokenize(&refs, TextRole::Document).unwrap();
    for (i, got) in ids.iter().enumerate() {
        assert_eq!(
            got,
            &exp.ids(&format!("text.{i}.input_ids")),
            "text {i} ids"
        );
        let mask = exp.ids(&format!("text.{i}.attention_mask"));
        assert_eq!(mask.len(), got.len(), "text {i} mask length");
        assert!(mask.iter().all(|&m| m == 1));
    }
    // Long text 6 is truncated to exactly 512 ids ending in </s>; empty text is <s></s>.
    assert_eq!(ids[6].len(), 512);
    assert_eq!(*ids[6].last().unwrap(), 2);
    assert_eq!(ids[5], vec![0, 2]);
    // The padded batch of the reference = our ids right-padded with 1.
    let padded = exp
        .t("text.batch.input_ids_padded")
        .to_vec2::<i64>()
        .unwrap();
    let mask_padded = exp
        .t("text.batch.attention_mask_padded")
        .to_vec2::<i64>()
        .unwrap();
    for (i, row) in padded.iter().enumerate() {
        let n = ids[i].len();
        assert_eq!(row.len(), 512);
        for (p, &v) in row.iter().enumerate() {
            let want = if p < n { ids[i][p] as i64 } else { 1 };
            assert_eq!(v, want, "padded batch row {i} pos {p}");
            assert_eq!(mask_padded[i][p], (p < n) as i64);
        }
    }
}

#[test]
fn text_hidden_states_every_layer() {
    let exp = Expected::load();
    let model = load_fixture_model();
    let text = model.text_model().unwrap();
    let n_layers = model.config().text_config.num_hidden_layers;
    for i in 0..texts(&exp).len() {
        let ids = exp.ids(&format!("text.{i}.input_ids"));
        let (pooled, hidden) = text.forward_hidden(&[ids]).unwrap();
        let emb_name = format!("text.{i}.hidden.emb_ln");
        if exp.tensors.contains_key(&emb_name) {
            assert_close(
                &emb_name,
                &flat(&hidden.emb_ln),
                &exp.f32s(&emb_name),
                HIDDEN_TOL,
            );
        }
        for l in 0..n_layers {
            let name = format!("text.{i}.hidden.layer{l}");
            if exp.tensors.contains_key(&name) {
                assert_close(
                    &name,
                    &flat(&hidden.layers[l]),
                    &exp.f32s(&name),
                    HIDDEN_TOL,
                );
            }
        }
        let last = format!("text.{i}.hidden.last");
        assert_close(
            &last,
            &flat(hidden.layers.last().unwrap()),
            &exp.f32s(&last),
            HIDDEN_TOL,
        );
        let p = format!("text.{i}.pooled");
        assert_close(&p, &flat(&pooled), &exp.f32s(&p), RAW_TOL);
    }
}

#[test]
fn text_batch_raw_normalized_truncated() {
    let exp = Expected::load();
    let model = load_fixture_model();
    let texts = texts(&exp);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let raw = model.encode_texts_raw(&refs, TextRole::Document).unwrap();
    let want_raw = exp.rows("text.batch.embeds_raw");
    assert!(max_abs_diff_rows(&raw, &want_raw) <= RAW_TOL);
    let norm = model.encode_texts(&refs, TextRole::Document).unwrap();
    let d = max_abs_diff_rows(&norm, &exp.rows("text.batch.embeds_normalized"));
    assert!(d <= NORM_TOL, "normalized {d:e}");
    let trunc: Vec<Vec<f32>> = raw
        .iter()
        .map(|v| truncate_normalize(v, 16).unwrap())
        .collect();
    let d = max_abs_diff_rows(
        &trunc,
        &exp.rows("text.batch.embeds_truncated16_normalized"),
    );
    assert!(d <= NORM_TOL, "truncated16 {d:e}");
}

#[test]
fn batched_text_equals_one_by_one() {
    let exp = Expected::load();
    let model = load_fixture_model();
    let texts = texts(&exp);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = model.encode_texts_raw(&refs, TextRole::Document).unwrap();
    let text = model.text_model().unwrap();
    // Force one padded batch (no length grouping) as well.
    let ids = model.tokenize(&refs, TextRole::Document).unwrap();
    let padded = text.forward(&ids).unwrap().to_vec2::<f32>().unwrap();
    for (i, r) in refs.iter().enumerate() {
        let single = model.encode_texts_raw(&[r], TextRole::Document).unwrap();
        let d = max_abs_diff(&single[0], &batch[i]);
        assert!(d <= 1e-5, "text {i}: batch vs single {d:e}");
        let d = max_abs_diff(&single[0], &padded[i]);
        assert!(d <= 1e-5, "text {i}: padded batch vs single {d:e}");
    }
}

#[test]
fn lora_adapter_matters_without_lora_fixture() {
    let exp = Expected::load();
    let cfg = fixture_config();
    let ids: Vec<Vec<u32>> = (0..8)
        .map(|i| exp.ids(&format!("text.{i}.input_ids")))
        .collect();
    let plain = TextModel::new(&cfg.text_config, fixture_vb(), Adapter::Ignored).unwrap();
    let got = plain.forward(&ids).unwrap().to_vec2::<f32>().unwrap();
    let want = exp.rows("text.batch.embeds_raw_without_lora");
    let d = max_abs_diff_rows(&got, &want);
    assert!(d <= RAW_TOL, "without LoRA {d:e}");
    // ... and it is far from the real (merged) output.
    let d = max_abs_diff_rows(&got, &exp.rows("text.batch.embeds_raw"));
    assert!(d > 1e-2, "LoRA should change embeddings, diff only {d:e}");
}

#[test]
fn instruction_variant() {
    let exp = Expected::load();
    let model = load_fixture_model();
    let texts = texts(&exp);
    let idx: Vec<usize> = exp.json["instruction"]["text_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(
        exp.json["instruction"]["prefix"].as_str().unwrap(),
        "Represent the query for retrieving evidence documents: "
    );
    let refs: Vec<&str> = idx.iter().map(|&i| texts[i].as_str()).collect();
    let ids = model.tokenize(&refs, TextRole::Query).unwrap();
    let padded = exp
        .t("text.instruction.input_ids_padded")
        .to_vec2::<i64>()
        .unwrap();
    for (row, got) in padded.iter().zip(&ids) {
        let unpadded: Vec<u32> = row.iter().take(got.len()).map(|&v| v as u32).collect();
        assert_eq!(&unpadded, got);
        assert!(row[got.len()..].iter().all(|&v| v == 1));
    }
    let raw = model.encode_texts_raw(&refs, TextRole::Query).unwrap();
    let d = max_abs_diff_rows(&raw, &exp.rows("text.instruction.embeds_raw"));
    assert!(d <= RAW_TOL, "instruction raw {d:e}");
}

#[test]
fn image_hidden_states_every_block() {
    let exp = Expected::load();
    let model = load_fixture_model();
    let vision = model.vision_model().unwrap();
    let layers = model.config().vision_config.layers;
    for j in 0..exp.n_images() {
        let px = exp.pixels(j);
        let t = vision.pixels_tensor(&[&px]).unwrap();
        let (emb, hidden) = vision.forward_hidden(&t).unwrap();
        let name = format!("image.{j}.hidden.patch_embed");
        assert_close(
            &name,
            &flat(&hidden.patch_embed),
            &exp.f32s(&name),
            HIDDEN_TOL,
        );
        for b in 0..layers {
            let name = format!("image.{j}.hidden.block{b}");
            assert_close(
                &name,
                &flat(&hidden.blocks[b]),
                &exp.f32s(&name),
                HIDDEN_TOL,
            );
        }
        let name = format!("image.{j}.hidden.final_norm");
        assert_close(
            &name,
            &flat(&hidden.final_norm),
            &exp.f32s(&name),
            HIDDEN_TOL,
        );
        let name = format!("image.{j}.embeds_raw");
        assert_close(&name, &flat(&emb), &exp.f32s(&name), RAW_TOL);
    }
}

fn fixture_pixels(
    exp: &Expected,
    model: &ClipModel,
) -> Vec<jsearch_encoders::preprocess::PixelValues> {
    (0..exp.n_images())
        .map(|j| jsearch_encoders::preprocess::PixelValues {
            size: model.image_size(),
            data: exp.pixels(j),
        })
        .collect()
}

#[test]
fn image_batch_raw_normalized_truncated() {
    let exp = Expected::load();
    let model = load_fixture_model();
    let pixels = fixture_pixels(&exp, &model);
    let raw = model.encode_pixels_raw(&pixels).unwrap();
    let d = max_abs_diff_rows(&raw, &exp.rows("image.batch.embeds_raw"));
    assert!(d <= RAW_TOL, "image raw {d:e}");
    let norm = model.encode_pixels(&pixels).unwrap();
    let d = max_abs_diff_rows(&norm, &exp.rows("image.batch.embeds_normalized"));
    assert!(d <= NORM_TOL, "image normalized {d:e}");
    let trunc: Vec<Vec<f32>> = raw
        .iter()
        .map(|v| truncate_normalize(v, 16).unwrap())
        .collect();
    let d = max_abs_diff_rows(
        &trunc,
        &exp.rows("image.batch.embeds_truncated16_normalized"),
    );
    assert!(d <= NORM_TOL, "image truncated16 {d:e}");
    // One-by-one equals batched.
    for (j, p) in pixels.iter().enumerate() {
        let single = model.encode_pixels_raw(std::slice::from_ref(p)).unwrap();
        let d = max_abs_diff(&single[0], &raw[j]);
        assert!(d <= 1e-5, "image {j} single vs batch {d:e}");
    }
}

#[test]
fn vision_rope_tables() {
    let exp = Expected::load();
    let cfg = fixture_config();
    let (cos, sin) = VisionRopeParams::from_config(&cfg.vision_config).full_tables();
    assert_close("freqs_cos", &cos, &exp.f32s("vision.rope.freqs_cos"), 1e-6);
    assert_close("freqs_sin", &sin, &exp.f32s("vision.rope.freqs_sin"), 1e-6);
}

#[test]
fn clip_logits_with_logit_scale() {
    let exp = Expected::load();
    let model = load_fixture_model();
    let scale = model.logit_scale().expect("logit_scale tensor");
    let want_exp = exp.f32s("clip.logit_scale_exp")[0];
    assert!(
        (scale.exp() - want_exp).abs() <= 1e-4 * want_exp,
        "{} vs {want_exp}",
        scale.exp()
    );
    let texts = texts(&exp);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let t = model.encode_texts_raw(&refs, TextRole::Document).unwrap();
    let i = model
        .encode_pixels_raw(&fixture_pixels(&exp, &model))
        .unwrap();
    let logits = clip_logits(&t, &i, scale);
    let d = max_abs_diff_rows(&logits, &exp.rows("clip.logits_per_text"));
    assert!(d <= 1e-3, "logits {d:e}");
}

#[test]
fn normalize_matches_reference_eps() {
    let mut v = vec![3.0f32, 4.0];
    normalize(&mut v);
    assert_eq!(v, vec![0.6, 0.8]);
}
