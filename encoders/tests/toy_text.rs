//! The trained toy model (`datasets/toy-shapes`): text embeddings of the corpus match the
//! official code's, and the text→title / text→description metrics are reproduced.

mod model_support;

use jsearch_encoders::{normalize, ClipModel, LoadOptions, TextRole, Towers};
use model_support::toy::*;
use model_support::*;

const RAW_TOL: f32 = 1e-4;
const NORM_TOL: f32 = 1e-5;
const KS: [usize; 3] = [1, 5, 10];

fn toy_text_model() -> ClipModel {
    let opts = LoadOptions {
        towers: Towers::Text,
        ..Default::default()
    };
    ClipModel::load(&toy_model_dir(), &opts).expect("toy model")
}

fn check(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    let d = max_abs_diff_rows(got, want);
    assert!(d <= RAW_TOL, "{what}: raw max abs diff {d:e}");
    let n = |v: &[Vec<f32>]| -> Vec<Vec<f32>> {
        v.iter()
            .map(|x| {
                let mut x = x.clone();
                normalize(&mut x);
                x
            })
            .collect()
    };
    let d = max_abs_diff_rows(&n(got), &n(want));
    assert!(d <= NORM_TOL, "{what}: normalised max abs diff {d:e}");
}

struct Encoded {
    titles: Vec<Vec<f32>>,
    descriptions: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
    queries_instr: Vec<Vec<f32>>,
}

fn encode(model: &ClipModel, c: &Corpus) -> Encoded {
    let enc = |list: &[serde_json::Value], field: &str, role| {
        let texts = Corpus::strings(list, field);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        model.encode_texts_raw(&refs, role).unwrap()
    };
    Encoded {
        titles: enc(&c.products, "title", TextRole::Document),
        descriptions: enc(&c.products, "description", TextRole::Document),
        queries: enc(&c.queries, "text", TextRole::Document),
        queries_instr: enc(&c.queries, "text", TextRole::Query),
    }
}

#[test]
fn toy_text_embeddings_and_metrics() {
    let model = toy_text_model();
    assert!(
        model.vision_model().is_none(),
        "text-only load must not build the vision tower"
    );
    let c = Corpus::load();
    let e = encode(&model, &c);
    check(
        "titles",
        &e.titles,
        &c.vectors("products", "title_embedding"),
    );
    check(
        "descriptions",
        &e.descriptions,
        &c.vectors("products", "description_embedding"),
    );
    check("queries", &e.queries, &c.vectors("queries", "embedding"));
    check(
        "queries + instruction",
        &e.queries_instr,
        &c.vectors("queries", "embedding_instruction"),
    );

    // text -> product title / description, every Matryoshka dim, plain and instruction queries.
    let ids = Corpus::strings(&c.products, "id");
    let relevant: Vec<Vec<usize>> = c
        .queries
        .iter()
        .map(|q| {
            q["relevant_products"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    ids.iter()
                        .position(|i| i == p.as_str().unwrap())
                        .expect("product id")
                })
                .collect()
        })
        .collect();
    let langs = Corpus::strings(&c.queries, "lang");
    let statuses = Corpus::strings(&c.queries, "status");
    let mut bad = Vec::new();
    let mut checked = 0;
    for dim in [8, 16, 32, 64, 128] {
        for (gallery, gname) in [(&e.titles, "title"), (&e.descriptions, "description")] {
            for (qs, qname) in [(&e.queries, "plain"), (&e.queries_instr, "instruction")] {
                let h = hits(qs, gallery, &relevant, dim, &KS);
                let agg = aggregate(&h, &langs, &statuses, &KS);
                let key = format!("text_to_product_{gname}.{qname}");
                bad.extend(compare_metrics(&c.expected, dim, &key, &agg, &KS));
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 20);
    assert!(bad.is_empty(), "metric mismatches:\n{}", bad.join("\n"));
}
