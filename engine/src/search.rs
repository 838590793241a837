//! Queries, and how scores are computed.
//!
//! Raw cosines are not comparable across modalities: with CLIP-style models a text query is much
//! closer to *any* text than to any image (text–text cosines of unrelated texts can exceed the
//! text–image cosine of a perfect match — the "modality gap"). Ranking a mixed store by raw cosine
//! would bury every image under the texts. So each cosine is **calibrated per modality**:
//!
//! ```text
//! z(q, v) = (cos(q, v) − μ(q, M)) / σ(q, M)
//! ```
//!
//! where `M` is the modality of the stored vector `v` (text tower or vision tower) and `μ`, `σ` are
//! the mean and standard deviation of the cosines between the query `q` and a fixed sample of up to
//! 256 stored vectors of that modality (`σ` is shrunk towards 0.1 for tiny samples). A score is
//! thus "how many standard deviations above a typical item of its kind" — comparable between an
//! image and a passage. With several query vectors (`--image` and `--text`), the score of a vector is
//! the weighted mean of its z-scores. An item with several vectors (a product's text and image)
//! scores as its best vector. Within one modality the ranking is exactly the cosine ranking.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::enc::preprocess::{decode_rgb_named, DecodeOptions};
use crate::enc::{TextRole, Towers};
use crate::error::{Error, Result};
use crate::idx::{SearchParams, Store};
use crate::item::{self, ItemMeta, Kind, Modality};
use crate::keys::{self, NS_MOD, NS_OWN};
use crate::walk;
use crate::Engine;

/// Vectors per modality used to calibrate scores.
pub const CALIBRATION_SAMPLE: usize = 256;
const PRIOR_SIGMA: f32 = 0.1;
const PRIOR_WEIGHT: f32 = 4.0;

/// A search request.
#[derive(Debug, Clone)]
pub struct Query {
    /// Text (any language; the model's query instruction is applied).
    pub text: Option<String>,
    /// Image file to search by.
    pub image: Option<PathBuf>,
    /// Weight of the image when both are given (the text gets `1 - image_weight`). Default 0.5.
    pub image_weight: f32,
    /// Number of results. Default 10.
    pub limit: usize,
    /// Only these kinds (empty = all).
    pub kinds: Vec<Kind>,
    /// Only items whose file path starts with this (made absolute).
    pub path_prefix: Option<PathBuf>,
    /// Drop results scoring below this (calibrated score).
    pub min_score: Option<f32>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            text: None,
            image: None,
            image_weight: 0.5,
            limit: 10,
            kinds: Vec::new(),
            path_prefix: None,
            min_score: None,
        }
    }
}

impl Query {
    /// A text query.
    pub fn text(text: impl Into<String>) -> Self {
        Query {
            text: Some(text.into()),
            ..Default::default()
        }
    }
    /// An image query.
    pub fn image(path: impl Into<PathBuf>) -> Self {
        Query {
            image: Some(path.into()),
            ..Default::default()
        }
    }
    /// Sets the number of results.
    pub fn limit(mut self, k: usize) -> Self {
        self.limit = k;
        self
    }
    /// Restricts to some kinds.
    pub fn kinds(mut self, kinds: &[Kind]) -> Self {
        self.kinds = kinds.to_vec();
        self
    }
}

/// One result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// 1-based rank.
    pub rank: usize,
    /// Calibrated score (see the module docs): higher is better, comparable across kinds.
    pub score: f32,
    /// Raw cosine of the best-matching vector (weighted over the query vectors).
    pub cosine: f32,
    /// Image, text or product.
    pub kind: Kind,
    /// Path for images, `path#chunk` for passages, record id for products.
    pub id: String,
    /// The file (the catalog for products); U+FFFD stands for bytes of a name that are not UTF-8.
    pub path: String,
    /// The path's exact bytes, only when it is not UTF-8 (the CLI's JSON: `path_bytes`, an array
    /// of byte values; `--paths` prints these bytes).
    pub path_bytes: Option<Vec<u8>>,
    /// Title, if any.
    pub title: Option<String>,
    /// Part of a big text file (over 4 MiB, read in parts) the passage comes from.
    pub part: Option<u32>,
    /// Chunk number of a passage (within its part for a big file).
    pub chunk: Option<u32>,
    /// A product's image.
    pub image: Option<String>,
    /// Start of the passage / product text.
    pub snippet: Option<String>,
    /// Catalog fields.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Per-modality calibration samples of a store: up to [`CALIBRATION_SAMPLE`] stored vectors of
/// each modality (indexed by [`Modality::byte`]). The engine caches them until the next write.
pub(crate) struct CalibrationSamples(Vec<Vec<Vec<f32>>>);

impl CalibrationSamples {
    pub(crate) fn load(store: &Store) -> Result<Self> {
        let mut all = Vec::new();
        for m in Modality::ALL {
            let mut vs = Vec::new();
            // Ids are hashes, so the first ids in key order are a uniform sample.
            for (k, _) in store.kv_scan_prefix(NS_MOD, &[m.byte()])? {
                if vs.len() >= CALIBRATION_SAMPLE {
                    break;
                }
                if let Some(id) = keys::id_suffix(&k) {
                    if let Some(v) = store.get_vector(id)? {
                        vs.push(v);
                    }
                }
            }
            all.push(vs);
        }
        Ok(CalibrationSamples(all))
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    crate::normalize(&mut v);
    v
}

/// Mean and (shrunk) standard deviation of the query's cosines with a sample.
fn calibrate(q: &[f32], sample: &[Vec<f32>]) -> (f32, f32) {
    let n = sample.len() as f32;
    if sample.is_empty() {
        return (0.0, PRIOR_SIGMA);
    }
    let cos: Vec<f32> = sample.iter().map(|v| dot(q, v)).collect();
    let mean = cos.iter().sum::<f32>() / n;
    let var = cos.iter().map(|c| (c - mean) * (c - mean)).sum::<f32>() / n;
    let sigma = ((n * var + PRIOR_WEIGHT * PRIOR_SIGMA * PRIOR_SIGMA) / (n + PRIOR_WEIGHT)).sqrt();
    (mean, sigma.max(1e-4))
}

fn modalities_for(kinds: &HashSet<Kind>) -> Vec<Modality> {
    let mut out = Vec::new();
    if kinds.contains(&Kind::Text) || kinds.contains(&Kind::Product) {
        out.push(Modality::Text);
    }
    if kinds.contains(&Kind::Image) || kinds.contains(&Kind::Product) {
        out.push(Modality::Image);
    }
    out
}

/// Query vectors with weights → ranked hits.
fn search_vectors(
    store: &Store,
    samples: &CalibrationSamples,
    queries: &[(Vec<f32>, f32)],
    q: &Query,
    exclude: &HashSet<u64>,
) -> Result<Vec<SearchHit>> {
    let limit = q.limit.max(1);
    let kinds: HashSet<Kind> = if q.kinds.is_empty() {
        Kind::ALL.into_iter().collect()
    } else {
        q.kinds.iter().copied().collect()
    };
    let path_ids: Option<HashSet<u64>> = match &q.path_prefix {
        None => None,
        Some(p) => {
            // The file itself (`path ‖ 0`) or what lies under the folder (`path/`), never a
            // sibling that merely starts with the same bytes (`DIR2` for `DIR`).
            let abs = walk::absolute_lenient(p);
            let base = keys::path_bytes(&abs);
            let sep = std::path::MAIN_SEPARATOR as u8;
            let mut prefixes = vec![keys::own_prefix(&abs)];
            if base.last() == Some(&sep) {
                prefixes.push(base);
            } else {
                let mut dir = base;
                dir.push(sep);
                prefixes.push(dir);
            }
            let mut ids = HashSet::new();
            for prefix in prefixes {
                for (k, _) in store.kv_scan_prefix(NS_OWN, &prefix)? {
                    ids.extend(keys::split_own_key(&k).map(|(_, id)| id));
                }
            }
            Some(ids)
        }
    };
    // stats[j][m]: calibration of query j against modality m.
    let stats: Vec<Vec<(f32, f32)>> = queries
        .iter()
        .map(|(qv, _)| samples.0.iter().map(|s| calibrate(qv, s)).collect())
        .collect();
    let wsum: f32 = queries.iter().map(|(_, w)| w).sum::<f32>().max(1e-6);
    let accept = |id: u64| -> bool {
        item::kind_of(id).is_some_and(|k| kinds.contains(&k))
            && !exclude.contains(&id)
            && path_ids.as_ref().is_none_or(|s| s.contains(&id))
    };
    let kc = (limit * 4).max(40);
    let mut candidates: HashSet<u64> = HashSet::new();
    let mut probes: Vec<Vec<f32>> = queries.iter().map(|(v, _)| v.clone()).collect();
    if queries.len() > 1 {
        let dim = queries[0].0.len();
        let mut comb = vec![0.0f32; dim];
        for (v, w) in queries {
            for (c, x) in comb.iter_mut().zip(v) {
                *c += w * x;
            }
        }
        probes.push(normalized(comb));
    }
    for m in modalities_for(&kinds) {
        let filter = |id: u64| item::modality_of(id) == m && accept(id);
        let params = SearchParams {
            filter: Some(&filter),
            ..Default::default()
        };
        for p in &probes {
            for h in store.search(p, kc, &params)? {
                candidates.insert(h.id);
            }
        }
    }
    // A product is scored by its best vector: consider both.
    let siblings: Vec<u64> = candidates
        .iter()
        .filter(|id| item::kind_of(**id) == Some(Kind::Product))
        .map(|id| item::sibling(*id))
        .filter(|id| accept(*id))
        .collect();
    candidates.extend(siblings);
    // Best vector per item.
    let mut best: HashMap<u64, (f32, f32, u64)> = HashMap::new();
    for id in candidates {
        let Some(v) = store.get_vector(id)? else {
            continue;
        };
        let m = item::modality_of(id).byte() as usize;
        let mut score = 0.0;
        let mut cosine = 0.0;
        for (j, (qv, w)) in queries.iter().enumerate() {
            let c = dot(qv, &v);
            let (mu, sigma) = stats[j][m];
            score += w * (c - mu) / sigma;
            cosine += w * c;
        }
        score /= wsum;
        cosine /= wsum;
        let key = item::item_id(id);
        let e = best.entry(key).or_insert((f32::NEG_INFINITY, 0.0, id));
        if score > e.0 {
            *e = (score, cosine, id);
        }
    }
    let mut ranked: Vec<(f32, f32, u64)> = best.into_values().collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
    if let Some(min) = q.min_score {
        ranked.retain(|r| r.0 >= min);
    }
    ranked.truncate(limit);
    let mut hits = Vec::with_capacity(ranked.len());
    for (i, (score, cosine, id)) in ranked.into_iter().enumerate() {
        let Some(bytes) = store.get_meta(id)? else {
            continue;
        };
        let meta = ItemMeta::from_bytes(id, &bytes)?;
        hits.push(SearchHit {
            rank: i + 1,
            score,
            // f16 storage rounding can put a self-match a hair above 1.
            cosine: cosine.clamp(-1.0, 1.0),
            kind: meta.kind,
            id: meta.id,
            path: meta.path,
            path_bytes: meta.path_bytes,
            title: meta.title,
            part: meta.part,
            chunk: meta.chunk,
            image: meta.image,
            snippet: meta.snippet,
            metadata: meta.metadata,
        });
    }
    for (i, h) in hits.iter_mut().enumerate() {
        h.rank = i + 1;
    }
    Ok(hits)
}

pub(crate) fn run_query(engine: &Engine, q: &Query) -> Result<Vec<SearchHit>> {
    let text = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let towers = match (text.is_some(), q.image.is_some()) {
        (true, true) => Towers::Both,
        (true, false) => Towers::Text,
        (false, true) => Towers::Vision,
        (false, false) => {
            return Err(Error::InvalidArgument(
                "empty query: give a text, an image, or both".into(),
            ))
        }
    };
    if !(0.0..=1.0).contains(&q.image_weight) {
        return Err(Error::InvalidArgument(format!(
            "image weight must be between 0 and 1, got {}",
            q.image_weight
        )));
    }
    // Check the store before loading the model (fast, clear error when there is none).
    let store = engine.store()?;
    let model = engine.model(towers, crate::Workload::Query)?;
    engine.check_model(store.settings(), &model)?;
    let mut queries = Vec::new();
    let both = text.is_some() && q.image.is_some();
    if let Some(t) = text {
        let v = model
            .encode_texts(&[t], TextRole::Query)?
            .pop()
            .ok_or_else(|| Error::Internal("no text embedding".into()))?;
        let w = if both { 1.0 - q.image_weight } else { 1.0 };
        queries.push((normalized(v), w));
    }
    if let Some(path) = &q.image {
        let bytes = crate::fsread::read_image_arg(path)?;
        let opts = DecodeOptions {
            apply_exif_orientation: true,
            ..Default::default()
        };
        let img = decode_rgb_named(&bytes, path, &opts)?;
        let px = model.preprocessor().preprocess_rgb(&img);
        let v = model
            .encode_pixels(&[px])?
            .pop()
            .ok_or_else(|| Error::Internal("no image embedding".into()))?;
        let w = if both { q.image_weight } else { 1.0 };
        queries.push((normalized(v), w));
    }
    let samples = engine.calibration(store)?;
    search_vectors(store, &samples, &queries, q, &HashSet::new())
}

pub(crate) fn run_similar(engine: &Engine, path: &Path, q: &Query) -> Result<Vec<SearchHit>> {
    let abs = walk::absolute_lenient(path);
    let store = engine.store()?;
    let owned = store.kv_scan_prefix(NS_OWN, &keys::own_prefix(&abs))?;
    if owned.is_empty() {
        return Err(Error::NotIndexed(abs));
    }
    let mut sums: Vec<Option<Vec<f32>>> = vec![None, None];
    let mut exclude = HashSet::new();
    for (k, _) in &owned {
        let Some((_, id)) = keys::split_own_key(k) else {
            continue;
        };
        exclude.insert(id);
        exclude.insert(item::sibling(id));
        if let Some(v) = store.get_vector(id)? {
            let slot = &mut sums[item::modality_of(id).byte() as usize];
            match slot {
                Some(s) => s.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
                None => *slot = Some(v),
            }
        }
    }
    let queries: Vec<(Vec<f32>, f32)> = sums
        .into_iter()
        .flatten()
        .map(|v| (normalized(v), 1.0))
        .collect();
    if queries.is_empty() {
        return Err(Error::NotIndexed(abs));
    }
    let samples = engine.calibration(store)?;
    search_vectors(store, &samples, &queries, q, &exclude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_removes_the_modality_offset() {
        // Two "modalities": cosines around 0.8 ± 0.05 and around 0.2 ± 0.05.
        let mk = |c: f32| vec![c, (1.0 - c * c).sqrt()];
        let q = vec![1.0, 0.0];
        let texts: Vec<Vec<f32>> = [0.75, 0.8, 0.85, 0.8].iter().map(|c| mk(*c)).collect();
        let images: Vec<Vec<f32>> = [0.15, 0.2, 0.25, 0.2].iter().map(|c| mk(*c)).collect();
        let (mt, st) = calibrate(&q, &texts);
        let (mi, si) = calibrate(&q, &images);
        assert!((mt - 0.8).abs() < 1e-5 && (mi - 0.2).abs() < 1e-5);
        // The best image (0.3) beats an average text (0.8) after calibration.
        let z_img = (0.3 - mi) / si;
        let z_txt = (0.8 - mt) / st;
        assert!(z_img > z_txt);
        // Empty sample: prior only.
        assert_eq!(calibrate(&q, &[]), (0.0, PRIOR_SIGMA));
    }

    #[test]
    fn modalities_follow_kinds() {
        let k: HashSet<Kind> = [Kind::Image].into_iter().collect();
        assert_eq!(modalities_for(&k), vec![Modality::Image]);
        let k: HashSet<Kind> = [Kind::Product].into_iter().collect();
        assert_eq!(modalities_for(&k), vec![Modality::Text, Modality::Image]);
    }
}
