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
//!
//! **Keyword and hybrid search** ([`SearchMode`]): the store's keyword index scores items by
//! BM25; in hybrid mode (the default where the store has one) the keyword score is added to the
//! calibrated vector score ([`Fusion::Blend`]: `z + keyword_weight × 4 × BM25 / best possible
//! BM25`) or the two rankings are fused by reciprocal rank ([`Fusion::Rrf`]). An item whose
//! whole id, title or string attribute equals the query (case and accents aside) is an exact
//! match and ranks before the others. Filters, facets, sorting and paging: see `rank`.
//!
//! | module | holds |
//! |---|---|
//! | this one | [`Query`], [`SearchHit`], [`SearchResult`], calibration, the entry points |
//! | `rank` | candidates, the filtered walk or scan, fusion, facets, sorting, paging |

mod rank;
pub mod relevance;

pub use rank::KEYWORD_Z;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use crate::attrs::Facet;
use crate::enc::preprocess::{decode_rgb_named, DecodeOptions};
use crate::enc::{ClipModel, TextRole, Towers};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::idx::Store;
use crate::item::{self, ItemMeta, Kind, Modality};
use crate::keys::{self, NS_MOD, NS_OWN};
use crate::walk;
use crate::Engine;

/// How errors name an image given as bytes ([`Query::image_bytes`]).
pub const UPLOADED_IMAGE: &str = "<uploaded image>";

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
    /// An image to search by, given as its encoded bytes (an upload; JPEG, PNG, WebP, GIF, BMP
    /// or TIFF) instead of a file. Errors name it `<uploaded image>`.
    pub image_bytes: Option<std::sync::Arc<[u8]>>,
    /// Weight of the image when both are given (the text gets `1 - image_weight`). Default 0.5.
    pub image_weight: f32,
    /// Number of results. Default 10.
    pub limit: usize,
    /// Only these kinds (empty = all).
    pub kinds: Vec<Kind>,
    /// Only items whose file path starts with this (made absolute).
    pub path_prefix: Option<PathBuf>,
    /// Drop results scoring below this (the fused score, [`SearchHit::score`]).
    pub min_score: Option<f32>,
    /// Only items passing this filter ([`Filter`]; see [`crate::filter`] for the grammar).
    pub filter: Option<Filter>,
    /// The filter as the user wrote it, for error messages that point at a column (set by
    /// [`Query::filter_str`]).
    pub filter_text: Option<String>,
    /// Vector, keyword or both. Default [`SearchMode::Auto`].
    pub mode: SearchMode,
    /// How the keyword and vector sides are fused. Default [`Fusion::Blend`].
    pub fusion: Fusion,
    /// Weight of the keyword side in hybrid mode (0 = vector only). Default 0.5 (measured: `docs/catalog.md`).
    pub keyword_weight: f32,
    /// Fields to count over every passing item ([`SearchResult::facets`]).
    pub facets: Vec<String>,
    /// Hits to skip (paging). Default 0.
    pub offset: usize,
    /// Order the relevant hits by a field instead of by score.
    pub sort: Option<SortBy>,
    /// Query arithmetic: texts and images added to (positive weight) or taken from (negative)
    /// the query's vectors before the search, as rclip's `--add`/`--subtract`
    /// (`"beach" + img.jpg - "people"`). The images named here are left out of the results.
    pub adjust: Vec<Adjust>,
    /// Keep the query image's own item and its twins (items of the same content: byte-identical
    /// copies, the catalog record of the same image) in the results of an image query or
    /// [`crate::Engine::similar`]. Default `false`: they are left out.
    pub include_self: bool,
}

/// One term of query arithmetic ([`Query::adjust`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Adjust {
    /// A text (embedded as a query) or an image file.
    pub part: AdjustPart,
    /// Its weight: positive adds, negative subtracts (1 and -1 for a plain `+` / `-`).
    pub weight: f32,
}

/// What an [`Adjust`] term holds.
#[derive(Debug, Clone, PartialEq)]
pub enum AdjustPart {
    /// A text, any language.
    Text(String),
    /// An image file.
    Image(PathBuf),
}

impl AdjustPart {
    /// A command-line term: an existing file the indexer reads as an image (by extension, as
    /// `index` classifies files: RAW and HEIF included) is an image, anything else text.
    pub fn from_arg(arg: &str) -> AdjustPart {
        let path = Path::new(arg);
        if path.is_file() && walk::classify(path) == Some(walk::FileKind::Image) {
            AdjustPart::Image(path.to_path_buf())
        } else {
            AdjustPart::Text(arg.to_string())
        }
    }
}

/// Which sides of the index a query uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// Hybrid where the store has a keyword index and the query has text; vector otherwise.
    #[default]
    Auto,
    /// Vectors only.
    Vector,
    /// The keyword index only (BM25).
    Keyword,
    /// Both, fused into one ranking.
    Hybrid,
}

impl SearchMode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Auto => "auto",
            SearchMode::Vector => "vector",
            SearchMode::Keyword => "keyword",
            SearchMode::Hybrid => "hybrid",
        }
    }
}

impl FromStr for SearchMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(SearchMode::Auto),
            "vector" => Ok(SearchMode::Vector),
            "keyword" => Ok(SearchMode::Keyword),
            "hybrid" => Ok(SearchMode::Hybrid),
            _ => Err(Error::InvalidArgument(format!(
                "unknown mode {s:?}: expected auto, vector, keyword or hybrid"
            ))),
        }
    }
}

/// How hybrid mode fuses the keyword and the vector side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fusion {
    /// Calibrated-score blend: the vector z-score plus the weighted, normalised BM25 score.
    #[default]
    Blend,
    /// Reciprocal-rank fusion (k = 60).
    Rrf,
}

impl FromStr for Fusion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "blend" => Ok(Fusion::Blend),
            "rrf" => Ok(Fusion::Rrf),
            _ => Err(Error::InvalidArgument(format!(
                "unknown fusion {s:?}: expected blend or rrf"
            ))),
        }
    }
}

/// Sorting by a field: `price`, `price:asc`, `price:desc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortBy {
    /// The field.
    pub field: String,
    /// Largest first.
    pub descending: bool,
}

impl FromStr for SortBy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (field, dir) = match s.rsplit_once(':') {
            Some((f, d)) => (f, Some(d)),
            None => (s, None),
        };
        let descending = match dir.map(|d| d.to_ascii_lowercase()) {
            None => false,
            Some(d) if d == "asc" => false,
            Some(d) if d == "desc" => true,
            Some(d) => {
                return Err(Error::InvalidArgument(format!(
                    "sort {s:?}: unknown direction {d:?} (use FIELD, FIELD:asc or FIELD:desc)"
                )))
            }
        };
        if field.trim().is_empty() {
            return Err(Error::InvalidArgument(format!("sort {s:?}: no field")));
        }
        Ok(SortBy {
            field: field.trim().to_string(),
            descending,
        })
    }
}

/// What [`Engine::search`] returns: the page of hits and the requested facets (in the order
/// asked for).
#[derive(Debug, Clone)]
pub struct SearchResult {
    /// The hits.
    pub hits: Vec<SearchHit>,
    /// `(field, counts)` per requested facet.
    pub facets: Vec<(String, Facet)>,
    /// The mode that ran (auto resolved).
    pub mode: SearchMode,
    /// More hits follow this page (above the relevance cut, or within the candidates when there
    /// is none; a sorted page without a cut sorts the top `offset + limit` only, so has none).
    pub more: bool,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            text: None,
            image: None,
            image_bytes: None,
            image_weight: 0.5,
            limit: 10,
            kinds: Vec::new(),
            path_prefix: None,
            min_score: None,
            filter: None,
            filter_text: None,
            mode: SearchMode::Auto,
            fusion: Fusion::Blend,
            keyword_weight: 0.5,
            facets: Vec::new(),
            offset: 0,
            sort: None,
            include_self: false,
            adjust: Vec::new(),
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
    /// Only items passing `f`.
    pub fn filter(mut self, f: Filter) -> Self {
        self.filter = Some(f);
        self.filter_text = None;
        self
    }
    /// Only items passing the filter expression `expr` (parsed now: a malformed one is an
    /// error pointing at its column).
    pub fn filter_str(mut self, expr: &str) -> Result<Self> {
        self.filter = Some(Filter::parse(expr)?);
        self.filter_text = Some(expr.to_string());
        Ok(self)
    }
    /// Sets the mode.
    pub fn mode(mut self, mode: SearchMode) -> Self {
        self.mode = mode;
        self
    }
    /// Sets the keyword side's weight in hybrid mode.
    pub fn keyword_weight(mut self, w: f32) -> Self {
        self.keyword_weight = w;
        self
    }
    /// Adds a facet.
    pub fn facet(mut self, field: impl Into<String>) -> Self {
        self.facets.push(field.into());
        self
    }
    /// Skips the first `n` hits.
    pub fn offset(mut self, n: usize) -> Self {
        self.offset = n;
        self
    }
    /// Orders the relevant hits by a field.
    pub fn sort(mut self, by: SortBy) -> Self {
        self.sort = Some(by);
        self
    }
}

/// One result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// 1-based rank.
    pub rank: usize,
    /// The relevance (see [`relevance`]): the probability that the hit is relevant, 0 to 1, of
    /// the vector side's logit plus the keyword part in hybrid mode (the keyword part alone in
    /// keyword mode; the fused rank score with RRF). Higher is better, comparable across kinds.
    pub score: f32,
    /// Raw cosine of the best-matching vector (weighted over the query vectors); 0 in keyword
    /// mode.
    pub cosine: f32,
    /// The vector side's relevance (0 to 1), when it ran.
    pub vector_score: Option<f32>,
    /// BM25 divided by the query's best possible BM25 (about 0–1), when the item matched a
    /// query term.
    pub keyword_score: Option<f32>,
    /// The query equals the item's whole id, title or a string attribute (ranked first).
    pub exact: bool,
    /// The item's key: a number naming it in the store, stable while the item stays (derived
    /// from its id), for [`Engine::item`], [`Engine::similar_item`] and [`Engine::thumbnail`].
    /// Not part of the serialised hit (JSON numbers above 2^53 lose digits; a server spells it
    /// as hex).
    #[serde(skip)]
    pub key: u64,
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
    /// A passage's first and last line in its file (1-based), when known (stores written before
    /// lines were recorded, and big files read in parts, have none).
    pub lines: Option<(u32, u32)>,
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

/// One query vector: its weight and the tower that made it.
pub(crate) struct QueryVector {
    pub(crate) v: Vec<f32>,
    pub(crate) w: f32,
    pub(crate) modality: Modality,
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
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

pub(crate) fn run_query(engine: &Engine, q: &Query) -> Result<SearchResult> {
    let text = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let has_image = q.image.is_some() || q.image_bytes.is_some();
    if text.is_none() && !has_image {
        return Err(Error::InvalidArgument(
            "empty query: give a text, an image, or both".into(),
        ));
    }
    let adjust_text = q
        .adjust
        .iter()
        .any(|a| matches!(a.part, AdjustPart::Text(_)));
    let adjust_image = q
        .adjust
        .iter()
        .any(|a| matches!(a.part, AdjustPart::Image(_)));
    let towers = match (text.is_some() || adjust_text, has_image || adjust_image) {
        (true, true) => Towers::Both,
        (true, false) => Towers::Text,
        _ => Towers::Vision,
    };
    if let Some(a) = q
        .adjust
        .iter()
        .find(|a| !a.weight.is_finite() || a.weight == 0.0)
    {
        return Err(Error::InvalidArgument(format!(
            "query arithmetic: weight {} of {:?} must be a non-zero number",
            a.weight, a.part
        )));
    }
    if !(q.keyword_weight.is_finite() && q.keyword_weight >= 0.0) {
        return Err(Error::InvalidArgument(format!(
            "keyword weight must be 0 or more, got {}",
            q.keyword_weight
        )));
    }
    if !(0.0..=1.0).contains(&q.image_weight) {
        return Err(Error::InvalidArgument(format!(
            "image weight must be between 0 and 1, got {}",
            q.image_weight
        )));
    }
    // Check the store before loading the model (fast, clear error when there is none), and the
    // filter against the store's fields.
    let store = engine.store()?;
    if let Some(f) = &q.filter {
        let table = engine.attributes(store)?;
        crate::filter::Compiled::new(f, &table, q.filter_text.as_deref().unwrap_or(""))?;
    }
    if q.mode == SearchMode::Keyword && !has_image {
        let samples = CalibrationSamples(vec![Vec::new(), Vec::new()]);
        let scoring = rank::Scoring {
            samples: &samples,
            background: None,
        };
        return rank::run(engine, store, &scoring, &[], text, q, &HashSet::new());
    }
    let model = engine.model(towers, crate::Workload::Query)?;
    engine.check_model(store.settings(), &model)?;
    let mut queries = Vec::new();
    let both = text.is_some() && has_image;
    if let Some(t) = text {
        let v = model
            .encode_texts(&[t], TextRole::Query)?
            .pop()
            .ok_or_else(|| Error::Internal("no text embedding".into()))?;
        let w = if both { 1.0 - q.image_weight } else { 1.0 };
        queries.push(QueryVector {
            v: normalized(v),
            w,
            modality: Modality::Text,
        });
    }
    let mut exclude = HashSet::new();
    let image = match (&q.image_bytes, &q.image) {
        (Some(b), _) => Some((b.to_vec(), None)),
        (None, Some(path)) => Some((crate::fsread::read_image_arg(path)?, Some(path))),
        (None, None) => None,
    };
    if let Some((bytes, path)) = image {
        if !q.include_self {
            exclude_query_image(store, &bytes, path.map(PathBuf::as_path), &mut exclude)?;
        }
        let name = path.map_or(Path::new(UPLOADED_IMAGE), PathBuf::as_path);
        let v = embed_image(&model, &bytes, name)?;
        let w = if both { q.image_weight } else { 1.0 };
        queries.push(QueryVector {
            v: normalized(v),
            w,
            modality: Modality::Image,
        });
    }
    apply_adjustments(&model, store, q, &mut queries, &mut exclude)?;
    let samples = engine.calibration(store)?;
    // The background queries (embedded once per process) only serve a text query's cosines
    // to the stored modalities the model corrects: not asked for when the store holds none of
    // them or the query excludes them.
    let relevance = relevance::Relevance::for_model(&store.settings().model_fingerprint);
    let wanted: Vec<Modality> = if q.kinds.is_empty() {
        vec![Modality::Text, Modality::Image]
    } else {
        modalities_for(&q.kinds.iter().copied().collect())
    };
    let corrected = wanted
        .iter()
        .any(|m| relevance.hub_weight(*m) > 0.0 && !samples.0[m.byte() as usize].is_empty());
    let background = if text.is_some() && corrected {
        Some(engine.background(&model)?)
    } else {
        None
    };
    let scoring = rank::Scoring {
        samples: &samples,
        background: background.as_deref().map(Vec::as_slice),
    };
    rank::run(engine, store, &scoring, &queries, text, q, &exclude)
}

pub(crate) fn run_with_vector(
    engine: &Engine,
    vector: Vec<f32>,
    text: Option<&str>,
    q: &Query,
) -> Result<SearchResult> {
    let store = engine.store()?;
    let samples = engine.calibration(store)?;
    let queries = if q.mode == SearchMode::Keyword {
        Vec::new()
    } else {
        // A vector from outside: scored as a text query.
        vec![QueryVector {
            v: normalized(vector),
            w: 1.0,
            modality: Modality::Text,
        }]
    };
    let scoring = rank::Scoring {
        samples: &samples,
        background: None,
    };
    rank::run(engine, store, &scoring, &queries, text, q, &HashSet::new())
}

/// The vectors `path` owns in the store: `(vector id, content hash)`.
fn owned_by(store: &Store, path: &Path) -> Result<Vec<(u64, Option<keys::Hash>)>> {
    Ok(store
        .kv_scan_prefix(NS_OWN, &keys::own_prefix(path))?
        .iter()
        .filter_map(|(k, v)| keys::split_own_key(k).map(|(_, id)| (id, keys::to_hash(v))))
        .collect())
}

/// Leaves a query image out of its results: every item of the same content (its twins) and,
/// for a file, the items it owns in the store.
fn exclude_query_image(
    store: &Store,
    bytes: &[u8],
    path: Option<&Path>,
    exclude: &mut HashSet<u64>,
) -> Result<()> {
    exclude.extend(twins(store, &[keys::content_hash(bytes)])?);
    if let Some(path) = path {
        exclude.extend(
            owned_by(store, &walk::absolute_lenient(path))?
                .into_iter()
                .flat_map(|(id, _)| [id, item::sibling(id)]),
        );
    }
    Ok(())
}

/// Every stored vector holding one of these contents, and its item's other vector (a product
/// whose image is a twin goes as a whole).
fn twins(store: &Store, hashes: &[keys::Hash]) -> Result<HashSet<u64>> {
    let mut out = HashSet::new();
    for h in hashes {
        for (k, _) in store.kv_scan_prefix(keys::NS_HASH, h)? {
            if let Some(id) = keys::id_suffix(&k) {
                out.insert(id);
                out.insert(item::sibling(id));
            }
        }
    }
    Ok(out)
}

/// `similar`: to an indexed file, else a product id, else a file not in the store (embedded on
/// the fly). The query's own items are always left out; their twins (the same content: copies
/// of the file, the catalog record of the same image) too unless [`Query::include_self`].
pub(crate) fn run_similar(engine: &Engine, path: &Path, q: &Query) -> Result<SearchResult> {
    let abs = walk::absolute_lenient(path);
    let store = engine.store()?;
    let mut owned = owned_by(store, &abs)?;
    if owned.is_empty() {
        if let Some(id) = path.to_str() {
            for (catalog, vid) in crate::ingest::product_vectors(store, id)? {
                let hash = store
                    .kv_get(NS_OWN, &keys::own_key(&catalog, vid))?
                    .and_then(|v| keys::to_hash(&v));
                owned.push((vid, hash));
            }
        }
    }
    if owned.is_empty() {
        if abs.is_file() {
            let mut q = q.clone();
            if q.mode == SearchMode::Auto {
                q.mode = SearchMode::Vector;
            }
            return similar_to_file(engine, store, &abs, &q);
        }
        // Neither indexed, nor a product id, nor a file: the typed "not in the store".
        return Err(Error::NotIndexed(abs));
    }
    similar_to_owned(engine, store, &owned, q)?.ok_or(Error::NotIndexed(abs))
}

/// `similar` to one stored item, named by its key ([`SearchHit::key`]): its own vectors are
/// the query (a passage's, not its whole file's; one product record's, not every record of its
/// id). `None` when no item has that key.
pub(crate) fn run_similar_item(
    engine: &Engine,
    key: u64,
    q: &Query,
) -> Result<Option<SearchResult>> {
    let store = engine.store()?;
    let mut owned = Vec::new();
    for id in [key, item::sibling(key)] {
        let Some(bytes) = store.get_meta(id)? else {
            continue;
        };
        if item::item_id(id) != key {
            continue;
        }
        let meta = ItemMeta::from_bytes(id, &bytes)?;
        let file = meta.file();
        let hash = store
            .kv_get(NS_OWN, &keys::own_key(&file, id))?
            .and_then(|v| keys::to_hash(&v));
        owned.push((id, hash));
    }
    if owned.is_empty() {
        return Ok(None);
    }
    similar_to_owned(engine, store, &owned, q)
}

/// `similar` to stored vectors `(id, content hash)`: their sum per modality is the query; they
/// and their items are left out, their twins too unless [`Query::include_self`]. `None` when none
/// of them has a vector any more.
fn similar_to_owned(
    engine: &Engine,
    store: &Store,
    owned: &[(u64, Option<keys::Hash>)],
    q: &Query,
) -> Result<Option<SearchResult>> {
    let mut q = q.clone();
    if q.mode == SearchMode::Auto {
        q.mode = SearchMode::Vector;
    }
    let mut sums: Vec<Option<Vec<f32>>> = vec![None, None];
    let mut exclude = HashSet::new();
    for (id, _) in owned {
        exclude.insert(*id);
        exclude.insert(item::sibling(*id));
        if let Some(v) = store.get_vector(*id)? {
            let slot = &mut sums[item::modality_of(*id).byte() as usize];
            match slot {
                Some(s) => s.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
                None => *slot = Some(v),
            }
        }
    }
    if !q.include_self {
        let hashes: Vec<keys::Hash> = owned.iter().filter_map(|(_, h)| *h).collect();
        exclude.extend(twins(store, &hashes)?);
    }
    let queries: Vec<QueryVector> = Modality::ALL
        .into_iter()
        .zip(sums)
        .filter_map(|(modality, v)| {
            v.map(|v| QueryVector {
                v: normalized(v),
                w: 1.0,
                modality,
            })
        })
        .collect();
    if queries.is_empty() {
        return Ok(None);
    }
    let samples = engine.calibration(store)?;
    let scoring = rank::Scoring {
        samples: &samples,
        background: None,
    };
    rank::run(engine, store, &scoring, &queries, None, &q, &exclude).map(Some)
}

/// Query arithmetic: each term's normalised embedding times its weight is added to every query
/// vector, which is then normalised again (rclip's way). The term images and their twins are
/// left out of the results (unless [`Query::include_self`]).
fn apply_adjustments(
    model: &ClipModel,
    store: &Store,
    q: &Query,
    queries: &mut [QueryVector],
    exclude: &mut HashSet<u64>,
) -> Result<()> {
    if q.adjust.is_empty() {
        return Ok(());
    }
    let mut delta: Option<Vec<f32>> = None;
    for a in &q.adjust {
        let v = match &a.part {
            AdjustPart::Text(t) => model
                .encode_texts(&[t.as_str()], TextRole::Query)?
                .pop()
                .ok_or_else(|| Error::Internal("no text embedding".into()))?,
            AdjustPart::Image(path) => {
                let bytes = crate::fsread::read_image_arg(path)?;
                if !q.include_self {
                    exclude_query_image(store, &bytes, Some(path), exclude)?;
                }
                embed_image(model, &bytes, path)?
            }
        };
        let v = normalized(v);
        let d = delta.get_or_insert_with(|| vec![0.0; v.len()]);
        d.iter_mut().zip(&v).for_each(|(d, x)| *d += a.weight * x);
    }
    if let Some(d) = delta {
        for qv in queries.iter_mut() {
            let sum: Vec<f32> = qv.v.iter().zip(&d).map(|(a, b)| a + b).collect();
            qv.v = normalized(sum);
        }
    }
    Ok(())
}

/// The embedding of a query image's bytes (EXIF orientation applied, as at indexing).
fn embed_image(model: &ClipModel, bytes: &[u8], path: &Path) -> Result<Vec<f32>> {
    let opts = DecodeOptions {
        apply_exif_orientation: true,
        ..Default::default()
    };
    let img = decode_rgb_named(bytes, path, &opts)?;
    let px = model.preprocessor().preprocess_rgb(&img);
    model
        .encode_pixels(&[px])?
        .pop()
        .ok_or_else(|| Error::Internal("no image embedding".into()))
}

/// `similar` to a file that is not in the store: an image, or a text file (its start, as the
/// encoder's window holds it, embedded as a passage).
fn similar_to_file(engine: &Engine, store: &Store, path: &Path, q: &Query) -> Result<SearchResult> {
    let (v, modality, hash) = match walk::classify(path) {
        Some(walk::FileKind::Image) => {
            let bytes = crate::fsread::read_image_arg(path)?;
            let model = engine.model(Towers::Vision, crate::Workload::Query)?;
            engine.check_model(store.settings(), &model)?;
            let v = embed_image(&model, &bytes, path)?;
            (v, Modality::Image, Some(keys::content_hash(&bytes)))
        }
        Some(walk::FileKind::Text) => {
            let bytes = crate::fsread::read_text_arg(path)?;
            let text = String::from_utf8_lossy(&bytes);
            let model = engine.model(Towers::Text, crate::Workload::Query)?;
            engine.check_model(store.settings(), &model)?;
            let v = model
                .encode_texts(&[text.trim()], TextRole::Document)?
                .pop()
                .ok_or_else(|| Error::Internal("no text embedding".into()))?;
            (v, Modality::Text, None)
        }
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{}: not in the store, and not an image or text file jsearch reads",
                path.display()
            )))
        }
    };
    let exclude = match hash {
        Some(h) if !q.include_self => twins(store, &[h])?,
        _ => HashSet::new(),
    };
    let queries = [QueryVector {
        v: normalized(v),
        w: 1.0,
        modality,
    }];
    let samples = engine.calibration(store)?;
    let scoring = rank::Scoring {
        samples: &samples,
        background: None,
    };
    rank::run(engine, store, &scoring, &queries, None, q, &exclude)
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
