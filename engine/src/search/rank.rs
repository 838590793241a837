//! One ranking from the vector and the keyword side: which items may be hits (kinds, path,
//! filter), how the passing items are searched (graph walk, or an exact scan of the few that
//! pass), fusion, the exact-identifier rule, `--min-score`, sorting, paging and facets.

use std::collections::{HashMap, HashSet};

use super::relevance::{hubness, probability, Relevance};
use super::{
    calibrate, modalities_for, normalized, CalibrationSamples, Fusion, Query, QueryVector,
    SearchHit,
};
use super::{SearchMode, SearchResult};
use crate::attrs::{self, AttributeTable, Row, Val};
use crate::error::{Error, Result};
use crate::filter::Compiled;
use crate::idx::{SearchParams, Store};
use crate::item::{self, ItemMeta, Kind, Modality};
use crate::keys::{self, NS_OWN};
use crate::keyword::{KeywordIndex, KeywordScores};
use crate::walk;
use crate::Engine;

/// A keyword match at the top of the BM25 scale is worth this many calibrated vector units (z)
/// at `keyword_weight` 1 (a clearly relevant vector hit has a logit of about 2–3).
pub const KEYWORD_Z: f32 = 4.0;
/// The vector side's logit for a keyword candidate without a vector (relevance 0.02).
const NO_VECTOR_LOGIT: f32 = -4.0;
/// The least logit of an exact identifier match (relevance 0.95): a SKU or id typed whole is
/// relevant whatever its vector says.
const EXACT_LOGIT: f32 = 3.0;
/// RRF's rank constant.
const RRF_K: f32 = 60.0;
/// A filter passing at most a fifth of the items, and at most [`SCAN_MAX`] (at least
/// [`SCAN_MIN`]), is searched by an exact scan of the passing items instead of a filtered graph
/// walk. Measured with the `catalog` bench at 200k items (a scan costs ~1.2 ms plus ~0.1 µs a
/// passing item; a filtered walk testing a bitset of the passing rows 1.6x an unfiltered one at
/// 50 % passing, 3x at 10 %, 15x at 1 %): the two cross near 25 000 passing items, and the
/// walk's cost grows with the store's size far slower than a scan's. `JSEARCH_FILTER_SCAN_MAX`
/// overrides the item count (for tests and benches).
const SCAN_MAX: usize = 25_000;
const SCAN_MIN: usize = 1000;

fn scan_max(n: usize) -> usize {
    static OVERRIDE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let o = OVERRIDE.get_or_init(|| {
        std::env::var("JSEARCH_FILTER_SCAN_MAX")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    o.unwrap_or((n / 5).clamp(SCAN_MIN, SCAN_MAX))
}
/// Rows evaluated to estimate a filter's selectivity.
const SAMPLE_ROWS: usize = 1024;

/// What may be a hit: kinds, path prefix, excluded ids, the filter.
struct Gate<'a> {
    kinds: HashSet<Kind>,
    /// `kinds` as bits (`1 << kind code`): tested for every node a filtered walk visits.
    kind_bits: u8,
    exclude: &'a HashSet<u64>,
    path_ids: Option<HashSet<u64>>,
    table: Option<&'a AttributeTable>,
    filter: Option<&'a Compiled>,
    /// The rows passing the filter (a bit each), when few enough pass to list them: a bit test
    /// instead of the item's attributes (which are spread over memory) for every keyword
    /// posting. Bits, not a set of ids: setting 100k bits costs nothing next to hashing 100k ids.
    passing: Option<Vec<u64>>,
}

impl Gate<'_> {
    /// Whether vector `id` may be a hit.
    fn vector(&self, id: u64) -> bool {
        self.unfiltered(id) && self.passes(id)
    }
    /// Kinds, exclusions and path of vector (or item) `id`.
    #[inline]
    fn unfiltered(&self, id: u64) -> bool {
        item::kind_of(id).is_some_and(|k| self.kind_bits >> k.code() & 1 == 1)
            && (self.exclude.is_empty() || !self.exclude.contains(&id))
            && self.path_ids.as_ref().is_none_or(|s| s.contains(&id))
    }
    /// Whether item `item` (its item id) may be a hit.
    fn item(&self, item: u64) -> bool {
        self.item_unfiltered(item) && self.passes(item)
    }
    /// [`Gate::item`] without the filter.
    fn item_unfiltered(&self, item: u64) -> bool {
        self.unfiltered(item)
            || (item::kind_of(item) == Some(Kind::Product) && self.unfiltered(item::sibling(item)))
    }
    fn passes(&self, id: u64) -> bool {
        if let (Some(bits), Some(t)) = (&self.passing, self.table) {
            return t
                .row_of_vector(id)
                .is_some_and(|r| bits[r as usize / 64] >> (r % 64) & 1 == 1);
        }
        match (self.filter, self.table) {
            (Some(f), Some(t)) => t.row_of_vector(id).is_some_and(|r| f.matches(t, r)),
            _ => true,
        }
    }
}

/// The vector ids of item `item` (a product's text and image ids; one id otherwise).
fn vectors_of(item: u64) -> impl Iterator<Item = u64> {
    let product = item::kind_of(item) == Some(Kind::Product);
    std::iter::once(item).chain(product.then(|| item::sibling(item)))
}

fn path_ids(store: &Store, q: &Query) -> Result<Option<HashSet<u64>>> {
    let Some(p) = &q.path_prefix else {
        return Ok(None);
    };
    // The file itself (`path ‖ 0`) or what lies under the folder (`path/`), never a sibling that
    // merely starts with the same bytes (`DIR2` for `DIR`).
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
    Ok(Some(ids))
}

/// What is known of the items passing a filter before searching.
struct Passing {
    /// The passing rows, ascending, when few enough pass to scan them exactly.
    rows: Option<Vec<Row>>,
    /// The passing rows as a bitset, when they are known (listed for a scan, or gathered exactly
    /// from the attribute index for a walk): a bit test per visited node instead of evaluating
    /// the filter on the row's attributes.
    bits: Option<Vec<u64>>,
}

fn bitset(n: usize, rows: &[Row]) -> Vec<u64> {
    let mut bits = vec![0u64; n.div_ceil(64)];
    for &r in rows {
        bits[r as usize / 64] |= 1 << (r % 64);
    }
    bits
}

/// The rows passing the filter: listed when few enough pass to scan them exactly, else (the
/// graph walk takes the filter) as a bitset when the attribute index yields them exactly.
fn passing_rows(table: &AttributeTable, f: &Compiled) -> Passing {
    let n = table.len();
    let max = scan_max(n);
    let listed = |rows: Vec<Row>| Passing {
        bits: Some(bitset(n, &rows)),
        rows: Some(rows),
    };
    if let Some((rows, exact)) = f.candidates(table, max) {
        return listed(if exact {
            rows
        } else {
            rows.into_iter().filter(|&r| f.matches(table, r)).collect()
        });
    }
    if n <= max {
        return listed((0..n as Row).filter(|&r| f.matches(table, r)).collect());
    }
    if let Some(rows) = f.exact_rows(table) {
        return Passing {
            rows: None,
            bits: Some(bitset(n, &rows)),
        };
    }
    // Estimate on evenly spaced rows (rows are in item-id order, and ids are hashes: a uniform
    // sample).
    let step = (n / SAMPLE_ROWS).max(1);
    let sample: Vec<Row> = (0..n).step_by(step).map(|r| r as Row).collect();
    let hits = sample.iter().filter(|&&r| f.matches(table, r)).count();
    let s = hits as f64 / sample.len().max(1) as f64;
    if s * (n as f64) <= max as f64 {
        return listed((0..n as Row).filter(|&r| f.matches(table, r)).collect());
    }
    Passing {
        rows: None,
        bits: None,
    }
}

/// One candidate item and the parts of its score.
#[derive(Debug, Clone)]
struct Scored {
    item: u64,
    /// The vector id whose metadata is shown (the best-scoring vector).
    shown: u64,
    vector: Option<(f32, f32)>,
    keyword: Option<f32>,
    exact: bool,
    fused: f32,
}

/// What turns a cosine into a relevance: the store's calibration samples (store-relative
/// scores) and the background queries' embeddings (the hubness correction), when used.
#[derive(Clone, Copy)]
pub(super) struct Scoring<'a> {
    pub(super) samples: &'a CalibrationSamples,
    pub(super) background: Option<&'a [Vec<f32>]>,
}

/// Query vectors with weights (and the query text for the keyword side) → the result.
pub(super) fn run(
    engine: &Engine,
    store: &Store,
    scoring: &Scoring<'_>,
    queries: &[QueryVector],
    text: Option<&str>,
    q: &Query,
    exclude: &HashSet<u64>,
) -> Result<SearchResult> {
    let Scoring {
        samples,
        background,
    } = *scoring;
    let limit = q.limit.max(1);
    let kinds: HashSet<Kind> = if q.kinds.is_empty() {
        Kind::ALL.into_iter().collect()
    } else {
        q.kinds.iter().copied().collect()
    };
    // The attribute table is read only when something needs it.
    let needs_table = q.filter.is_some() || !q.facets.is_empty() || q.sort.is_some();
    let table = if needs_table {
        Some(engine.attributes(store)?)
    } else {
        None
    };
    let compiled = match (&q.filter, &table) {
        (Some(f), Some(t)) => Some(Compiled::new(f, t, q.filter_text.as_deref().unwrap_or(""))?),
        _ => None,
    };
    for f in &q.facets {
        if let Some(t) = &table {
            if t.field_of(f).is_none() && t.len() > 0 {
                return Err(Error::InvalidArgument(format!(
                    "--facet {f:?}: unknown field (the store's fields: {})",
                    t.field_names().join(", ")
                )));
            }
        }
    }
    let mut passing = match (&table, &compiled) {
        (Some(t), Some(f)) => Some(passing_rows(t, f)),
        _ => None,
    };
    let gate = Gate {
        kind_bits: kinds.iter().fold(0, |b, k| b | 1 << k.code()),
        kinds,
        exclude,
        path_ids: path_ids(store, q)?,
        table: table.as_deref(),
        filter: compiled.as_ref(),
        passing: passing.as_mut().and_then(|p| p.bits.take()),
    };
    let keywords = engine.keywords(store)?;
    let mode = resolve_mode(q.mode, text, &keywords)?;
    let exhaustive = q.min_score.is_some() && (q.sort.is_some() || !q.facets.is_empty());
    let want = if exhaustive {
        usize::MAX
    } else {
        (q.offset + limit).max(1)
    };
    // Vector side: candidates per modality and probe.
    let mut vec_cands: HashSet<u64> = HashSet::new();
    if mode != SearchMode::Keyword && !queries.is_empty() {
        let kc = if exhaustive {
            store.len().max(1)
        } else {
            (want * 4).max(40)
        };
        let mut probes: Vec<Vec<f32>> = queries.iter().map(|q| q.v.clone()).collect();
        if queries.len() > 1 {
            let dim = queries[0].v.len();
            let mut comb = vec![0.0f32; dim];
            for qv in queries {
                for (c, x) in comb.iter_mut().zip(&qv.v) {
                    *c += qv.w * x;
                }
            }
            probes.push(normalized(comb));
        }
        // A modality the store holds no vector of is skipped (a filtered walk would visit
        // every node looking for one).
        let held = |m: Modality| !samples.0[m.byte() as usize].is_empty();
        for m in modalities_for(&gate.kinds).into_iter().filter(|m| held(*m)) {
            let of_m = |id: u64| item::modality_of(id) == m && gate.vector(id);
            match (&passing, &table) {
                (
                    Some(Passing {
                        rows: Some(rows), ..
                    }),
                    Some(t),
                ) => {
                    // The rows pass the filter already: only kinds, path and exclusions remain.
                    let rest = |id: u64| item::modality_of(id) == m && gate.unfiltered(id);
                    let ids: Vec<u64> = rows
                        .iter()
                        .flat_map(|&r| vectors_of(t.item_ids[r as usize]))
                        .filter(|&id| rest(id))
                        .collect();
                    for p in &probes {
                        for h in store.search_among(p, kc.min(ids.len().max(1)), &ids, None)? {
                            vec_cands.insert(h.id);
                        }
                    }
                }
                _ => {
                    // Unfiltered, or a filter that passes many: the graph walk takes it (it walks
                    // through rejected nodes until its beam holds `ef` passing ones).
                    let params = SearchParams {
                        filter: Some(&of_m),
                        ..Default::default()
                    };
                    for p in &probes {
                        let hits = if exhaustive {
                            store.exact_search(p, kc, Some(&of_m))?
                        } else {
                            store.search(p, kc, &params)?
                        };
                        vec_cands.extend(hits.iter().map(|h| h.id));
                    }
                }
            }
        }
    }
    // Keyword side.
    // A listed passing set is checked on every posting (a set lookup); a filter that passes
    // many is checked only on the best-scoring postings, in order, until enough pass.
    let filter_late = gate.filter.is_some() && gate.passing.is_none();
    let mut kw: KeywordScores = match (mode, text) {
        (SearchMode::Keyword | SearchMode::Hybrid, Some(t)) if filter_late => {
            keywords.search(store, t, &|item| gate.item_unfiltered(item))?
        }
        (SearchMode::Keyword | SearchMode::Hybrid, Some(t)) => {
            keywords.search(store, t, &|item| gate.item(item))?
        }
        _ => KeywordScores::default(),
    };
    if filter_late {
        kw.exact.retain(|&it| gate.passes(it));
    }
    // Candidate items: the vector side's, and the keyword side's best (all of them when the
    // result must be exhaustive).
    let mut items: HashSet<u64> = vec_cands.iter().map(|&id| item::item_id(id)).collect();
    let mut kw_ranked: Vec<(u64, f32)> = kw.scores.iter().map(|(k, v)| (*k, *v)).collect();
    kw_ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let kw_take = if exhaustive {
        usize::MAX
    } else {
        (want * 4).max(40)
    };
    items.extend(
        kw_ranked
            .iter()
            .map(|x| x.0)
            .filter(|&it| !filter_late || gate.passes(it))
            .take(kw_take),
    );
    items.extend(kw.exact.iter().copied());
    // Relevance logits: absolute where the store's model has fitted constants, else relative to
    // the store (its calibration sample's mean and spread per query and modality).
    let relevance = Relevance::for_model(&store.settings().model_fingerprint);
    let stats: Vec<Vec<(f32, f32)>> = if relevance.is_absolute() {
        Vec::new()
    } else {
        queries
            .iter()
            .map(|qv| samples.0.iter().map(|s| calibrate(&qv.v, s)).collect())
            .collect()
    };
    let wsum: f32 = queries.iter().map(|q| q.w).sum::<f32>().max(1e-6);
    let scale = kw.scale.max(1e-6);
    let mut scored: Vec<Scored> = Vec::with_capacity(items.len());
    for it in items {
        let mut best: Option<(f32, f32, u64)> = None;
        let mut shown = None;
        for id in vectors_of(it) {
            if !gate.vector(id) {
                continue;
            }
            if mode == SearchMode::Keyword || queries.is_empty() {
                // No vector is read; the item's record is (under its text id, else its image id).
                if store.get_meta(id)?.is_some() {
                    shown.get_or_insert(id);
                }
                continue;
            }
            let Some(v) = store.get_vector(id)? else {
                continue;
            };
            shown.get_or_insert(id);
            let m = item::modality_of(id);
            let (mut z, mut cosine) = (0.0, 0.0);
            let mut hub: Option<Option<f32>> = None;
            for (j, qv) in queries.iter().enumerate() {
                let c = super::dot(&qv.v, &v);
                let hub = || *hub.get_or_insert_with(|| background.map(|b| hubness(&v, b)));
                z += qv.w
                    * relevance.logit(qv.modality, m, c, hub, || {
                        let (mu, sigma) = stats[j][m.byte() as usize];
                        (c - mu) / sigma
                    });
                cosine += qv.w * c;
            }
            let (z, cosine) = (z / wsum, cosine / wsum);
            if best.is_none_or(|b| z > b.0) {
                best = Some((z, cosine, id));
            }
        }
        let Some(shown) = best.map(|b| b.2).or(shown) else {
            continue;
        };
        let keyword = kw.scores.get(&it).map(|s| s / scale);
        scored.push(Scored {
            item: it,
            shown,
            vector: best.map(|b| (b.0, b.1)),
            keyword,
            exact: kw.exact.contains(&it),
            fused: 0.0,
        });
    }
    fuse(&mut scored, mode, q.fusion, q.keyword_weight);
    scored.sort_by(|a, b| {
        b.exact
            .cmp(&a.exact)
            .then(b.fused.total_cmp(&a.fused))
            .then(a.item.cmp(&b.item))
    });
    // The shown score: the relevance (0-1) of the fused logit; RRF's rank score as it is.
    let rrf = mode == SearchMode::Hybrid && q.fusion == Fusion::Rrf;
    let shown = |fused: f32| if rrf { fused } else { probability(fused) };
    if let Some(min) = q.min_score {
        scored.retain(|s| shown(s.fused) >= min);
    }
    // Facets: over every passing item, or over the relevant ones with --min-score.
    let mut facets = Vec::new();
    if let Some(t) = &table {
        if !q.facets.is_empty() {
            let rows: Vec<Row> = if q.min_score.is_some() {
                scored
                    .iter()
                    .filter_map(|s| t.row_of_item(s.item))
                    .collect()
            } else if let Some(Passing {
                rows: Some(rows), ..
            }) = &passing
            {
                // The filter's passing rows are listed already: only kinds and path remain.
                rows.iter()
                    .copied()
                    .filter(|&r| gate.item_unfiltered(t.item_ids[r as usize]))
                    .collect()
            } else {
                (0..t.len() as Row)
                    .filter(|&r| gate.item(t.item_ids[r as usize]))
                    .collect()
            };
            for f in &q.facets {
                let facet = match t.field_of(f) {
                    Some(fi) => attrs::facet(t, fi, &rows),
                    None => attrs::Facet::Values(Vec::new()),
                };
                facets.push((f.clone(), facet));
            }
        }
    }
    // Sorting: the relevant hits (above --min-score, or the top offset + limit) by a field.
    if let (Some(sort), Some(t)) = (&q.sort, &table) {
        if q.min_score.is_none() {
            scored.truncate(want);
        }
        let fi = t.field_of(&sort.field).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "--sort {:?}: unknown field (the store's fields: {})",
                sort.field,
                t.field_names().join(", ")
            ))
        })?;
        let key = |s: &Scored| t.row_of_item(s.item).and_then(|r| t.value(r, fi));
        scored.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            match (ka, kb) {
                (Some(x), Some(y)) => {
                    let o = cmp_vals(x, y);
                    if sort.descending {
                        o.reverse()
                    } else {
                        o
                    }
                }
                // Items without the field go last either way.
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
        });
    }
    let more = scored.len() > q.offset.saturating_add(limit);
    let page: Vec<Scored> = scored.into_iter().skip(q.offset).take(limit).collect();
    let mut hits = Vec::with_capacity(page.len());
    for s in page {
        let Some(bytes) = store.get_meta(s.shown)? else {
            continue;
        };
        let meta = ItemMeta::from_bytes(s.shown, &bytes)?;
        hits.push(SearchHit {
            rank: q.offset + hits.len() + 1,
            score: shown(s.fused),
            // f16 storage rounding can put a self-match a hair above 1.
            cosine: s.vector.map_or(0.0, |v| v.1).clamp(-1.0, 1.0),
            vector_score: s.vector.map(|v| probability(v.0)),
            keyword_score: s.keyword,
            exact: s.exact,
            key: crate::item::item_id(s.shown),
            kind: meta.kind,
            id: meta.id,
            path: meta.path,
            path_bytes: meta.path_bytes,
            title: meta.title,
            part: meta.part,
            chunk: meta.chunk,
            lines: meta.lines,
            image: meta.image,
            snippet: meta.snippet,
            metadata: meta.metadata,
        });
    }
    Ok(SearchResult {
        hits,
        facets,
        mode,
        more,
    })
}

fn cmp_vals(a: &Val, b: &Val) -> std::cmp::Ordering {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.total_cmp(y),
        (Val::Str(_, x), Val::Str(_, y)) => x.cmp(y),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        (Val::List(x), Val::List(y)) => x.first().map(|v| &v.1).cmp(&y.first().map(|v| &v.1)),
        // Mixed types: numbers, then strings, then the rest.
        (x, y) => {
            let rank = |v: &Val| match v {
                Val::Num(_) => 0,
                Val::Str(..) => 1,
                Val::Bool(_) => 2,
                Val::List(_) => 3,
                Val::Other => 4,
            };
            rank(x).cmp(&rank(y))
        }
    }
}

/// `auto`: hybrid where the store has keyword-indexed items and there is query text.
fn resolve_mode(mode: SearchMode, text: Option<&str>, kw: &KeywordIndex) -> Result<SearchMode> {
    Ok(match mode {
        SearchMode::Auto => {
            if text.is_some() && !kw.is_empty() {
                SearchMode::Hybrid
            } else {
                SearchMode::Vector
            }
        }
        SearchMode::Keyword | SearchMode::Hybrid if text.is_none() => {
            return Err(Error::InvalidArgument(format!(
                "--mode {}: needs query text (an image query is vector-only)",
                mode.as_str()
            )))
        }
        SearchMode::Keyword | SearchMode::Hybrid if kw.is_empty() => {
            return Err(Error::InvalidArgument(format!(
                "--mode {}: this store has no keyword index (it was built before jsearch kept one, \
                 or holds nothing with text); re-index it (`jsearch rm PATH…`, then `jsearch \
                 index PATH…`), or use --mode vector",
                mode.as_str()
            )))
        }
        m => m,
    })
}

/// Sets each candidate's fused score.
///
/// * `blend` (default): `vector logit + keyword_weight × KEYWORD_Z × keyword`, where `keyword`
///   is BM25 divided by the query's best possible BM25 (about 0–1): keyword evidence adds to the
///   vector side's relevance logit, and the shown score is the relevance of the sum, so
///   `--min-score` keeps its meaning. Vector mode: the vector logit alone; keyword mode: the
///   keyword part alone. An exact identifier match scores at least [`EXACT_LOGIT`].
/// * `rrf`: `1 / (60 + vector rank) + keyword_weight / (60 + keyword rank)` over the candidates.
fn fuse(scored: &mut [Scored], mode: SearchMode, fusion: Fusion, w: f32) {
    match (mode, fusion) {
        (SearchMode::Vector, _) => {
            for s in scored.iter_mut() {
                s.fused = s.vector.map_or(f32::NEG_INFINITY, |v| v.0);
            }
        }
        (SearchMode::Keyword, _) => {
            for s in scored.iter_mut() {
                s.fused = KEYWORD_Z * s.keyword.unwrap_or(0.0);
                if s.exact {
                    s.fused = s.fused.max(EXACT_LOGIT);
                }
            }
        }
        (_, Fusion::Blend) => {
            for s in scored.iter_mut() {
                s.fused = s.vector.map_or(NO_VECTOR_LOGIT, |v| v.0)
                    + w * KEYWORD_Z * s.keyword.unwrap_or(0.0);
                if s.exact {
                    s.fused = s.fused.max(EXACT_LOGIT);
                }
            }
        }
        (_, Fusion::Rrf) => {
            let ranks = |key: &dyn Fn(&Scored) -> Option<f32>| -> HashMap<u64, usize> {
                let mut v: Vec<(u64, f32)> = scored
                    .iter()
                    .filter_map(|s| key(s).map(|k| (s.item, k)))
                    .collect();
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                v.into_iter()
                    .enumerate()
                    .map(|(i, (id, _))| (id, i + 1))
                    .collect()
            };
            let rv = ranks(&|s| s.vector.map(|v| v.0));
            let rk = ranks(&|s| s.keyword.filter(|k| *k > 0.0));
            for s in scored.iter_mut() {
                s.fused = rv.get(&s.item).map_or(0.0, |r| 1.0 / (RRF_K + *r as f32))
                    + rk.get(&s.item).map_or(0.0, |r| w / (RRF_K + *r as f32));
            }
        }
    }
}
