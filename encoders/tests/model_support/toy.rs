//! The trained toy model's corpus (`datasets/toy-shapes/corpus`) and its retrieval metrics.
#![allow(dead_code)]

use std::collections::BTreeMap;

use jsearch_encoders::truncate_normalize;
use serde_json::Value;

use super::datasets;

pub struct Corpus {
    pub expected: Value,
    pub products: Vec<Value>,
    pub queries: Vec<Value>,
}

fn jsonl(name: &str) -> Vec<Value> {
    let path = datasets().join("toy-shapes/corpus").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("jsonl line"))
        .collect()
}

impl Corpus {
    pub fn load() -> Self {
        let path = datasets().join("toy-shapes/corpus/expected.json");
        let expected = serde_json::from_slice(&std::fs::read(&path).expect("expected.json"))
            .expect("expected.json parses");
        Self {
            expected,
            products: jsonl("products.jsonl"),
            queries: jsonl("queries.jsonl"),
        }
    }

    pub fn vectors(&self, list: &str, field: &str) -> Vec<Vec<f32>> {
        self.expected[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e[field]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    }

    pub fn strings(list: &[Value], field: &str) -> Vec<String> {
        list.iter()
            .map(|e| e[field].as_str().unwrap().to_string())
            .collect()
    }
}

/// Hit@k per query: does any relevant gallery item rank in the top k (cosine after
/// truncate-then-normalise to `dim`)?
pub fn hits(
    queries: &[Vec<f32>],
    gallery: &[Vec<f32>],
    relevant: &[Vec<usize>],
    dim: usize,
    ks: &[usize],
) -> Vec<Vec<bool>> {
    let g: Vec<Vec<f32>> = gallery
        .iter()
        .map(|v| truncate_normalize(v, dim).unwrap())
        .collect();
    queries
        .iter()
        .zip(relevant)
        .map(|(q, rel)| {
            let q = truncate_normalize(q, dim).unwrap();
            let mut scored: Vec<(f32, usize)> = g
                .iter()
                .enumerate()
                .map(|(i, v)| (q.iter().zip(v).map(|(a, b)| a * b).sum::<f32>(), i))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            ks.iter()
                .map(|&k| scored.iter().take(k).any(|(_, i)| rel.contains(i)))
                .collect()
        })
        .collect()
}

/// Aggregates hits into `{lang: {status: {R@k: value, n}}}` plus `all`, like expected.json.
pub fn aggregate(
    hits: &[Vec<bool>],
    langs: &[String],
    statuses: &[String],
    ks: &[usize],
) -> BTreeMap<(String, String), (Vec<f64>, usize)> {
    let mut out: BTreeMap<(String, String), (Vec<f64>, usize)> = BTreeMap::new();
    for ((h, lang), status) in hits.iter().zip(langs).zip(statuses) {
        for l in [lang.clone(), "all".to_string()] {
            let e = out
                .entry((l, status.clone()))
                .or_insert((vec![0.0; ks.len()], 0));
            for (i, &hit) in h.iter().enumerate() {
                e.0[i] += hit as u8 as f64;
            }
            e.1 += 1;
        }
    }
    for (sums, n) in out.values_mut() {
        sums.iter_mut().for_each(|s| *s /= *n as f64);
    }
    out
}

/// Compares aggregated metrics with `expected.json`'s `metrics[dim][key]`; returns mismatches.
pub fn compare_metrics(
    expected: &Value,
    dim: usize,
    key: &str,
    got: &BTreeMap<(String, String), (Vec<f64>, usize)>,
    ks: &[usize],
) -> Vec<String> {
    let mut bad = Vec::new();
    let want = &expected["metrics"][dim.to_string()][key];
    let langs = want
        .as_object()
        .unwrap_or_else(|| panic!("metrics {dim} {key}"));
    for (lang, per_status) in langs {
        for (status, m) in per_status.as_object().unwrap() {
            let n = m["n"].as_u64().unwrap() as usize;
            let Some((vals, gn)) = got.get(&(lang.clone(), status.clone())) else {
                if n != 0 {
                    bad.push(format!("{dim} {key} {lang} {status}: missing"));
                }
                continue;
            };
            if *gn != n {
                bad.push(format!("{dim} {key} {lang} {status}: n {gn} != {n}"));
            }
            for (i, k) in ks.iter().enumerate() {
                let w = m[format!("R@{k}")].as_f64().unwrap();
                if (vals[i] - w).abs() > 6e-5 {
                    bad.push(format!(
                        "{dim} {key} {lang} {status} R@{k}: {:.4} != {w}",
                        vals[i]
                    ));
                }
            }
        }
    }
    bad
}
