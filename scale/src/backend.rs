//! What the backends (`postgres`, `milvus`) share: the sync's options and summary, the digest
//! that decides what a sync writes, the query and its hits.

use half::f16;
use jsearch::{Filter, ItemMeta, Kind};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The table (PostgreSQL) or collection (Milvus) `sync` writes when none is named.
pub const DEFAULT_TABLE: &str = "jsearch_items";

/// What a sync did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SyncSummary {
    /// The table.
    pub table: String,
    /// Whether this run created it.
    pub created: bool,
    /// Vectors new on the backend.
    pub inserted: usize,
    /// Vectors whose item or vector changed.
    pub updated: usize,
    /// Vectors the store no longer has, deleted from the backend.
    pub deleted: usize,
    /// Vectors already up to date.
    pub unchanged: usize,
    /// Rows in the table after the sync.
    pub rows: usize,
    /// Wall seconds.
    pub seconds: f64,
}

impl SyncSummary {
    /// Counts a row whose digest on the backend is `old` (none: not there) and in the store
    /// `new`; whether it must be written.
    pub(crate) fn count<T: PartialEq>(&mut self, old: Option<&T>, new: &T) -> bool {
        match old {
            Some(o) if o == new => {
                self.unchanged += 1;
                false
            }
            Some(_) => {
                self.updated += 1;
                true
            }
            None => {
                self.inserted += 1;
                true
            }
        }
    }
}

/// The URL with its password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// The vector's head (first `head_dim` coordinates) normalised, as the store's graph holds it.
pub(crate) fn head_of(v: &[f32], head_dim: usize) -> Vec<f32> {
    let mut h = v[..head_dim.min(v.len())].to_vec();
    jsearch::normalize(&mut h);
    h
}

/// How to sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The table ([`DEFAULT_TABLE`] by default).
    pub table: String,
    /// Drop the table first (another model's vectors, an altered table).
    pub replace: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            table: DEFAULT_TABLE.to_string(),
            replace: false,
        }
    }
}

/// The digest the next sync compares: the item's record and the vector's f16 bits.
pub(crate) fn digest(item: &ItemMeta, modality: &str, v16: &[f16]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(item).unwrap_or_default());
    h.update([0]);
    h.update(modality.as_bytes());
    h.update([0]);
    for x in v16 {
        h.update(x.to_bits().to_le_bytes());
    }
    h.finalize()[..16].to_vec()
}

/// What a synced table holds (its `jsearch_sync` row).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableInfo {
    /// The table.
    pub table: String,
    /// Model name.
    pub model: String,
    /// Model fingerprint.
    pub fingerprint: String,
    /// Full dimension.
    pub dim: usize,
    /// Head dimension (the HNSW's).
    pub head_dim: usize,
    /// The store it was synced from.
    pub store: String,
    /// Rows at the last sync.
    pub rows: usize,
}

/// A query against a synced table.
#[derive(Debug, Clone)]
pub struct BackendQuery {
    /// Items to return.
    pub limit: usize,
    /// Candidates the HNSW stage finds before the re-rank (at least `limit`; default:
    /// `max(10 × limit, 100)`, what the local store re-ranks too).
    pub candidates: Option<usize>,
    /// Only these kinds.
    pub kinds: Vec<Kind>,
    /// jsearch's filter, translated to SQL.
    pub filter: Option<Filter>,
}

impl BackendQuery {
    /// `limit` items, no filter.
    pub fn new(limit: usize) -> Self {
        BackendQuery {
            limit,
            candidates: None,
            kinds: Vec::new(),
            filter: None,
        }
    }

    pub(crate) fn candidates(&self) -> usize {
        self.candidates
            .unwrap_or((self.limit * 10).max(100))
            .max(self.limit)
    }
}

/// One hit from the backend: the best vector of an item.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendHit {
    /// 1-based rank.
    pub rank: usize,
    /// Cosine of the query and the item's best vector (full dimension).
    pub cosine: f32,
    /// The vector's key (as in the store).
    #[serde(skip)]
    pub key: u64,
    /// The item's key.
    #[serde(skip)]
    pub item_key: u64,
    /// Item id.
    pub id: String,
    /// Image, text or product.
    pub kind: String,
    /// Which tower made the matching vector.
    pub modality: String,
    /// The file (the catalog for products).
    pub path: String,
    /// Title.
    pub title: Option<String>,
    /// Attributes.
    pub metadata: Value,
}

/// The store's identity a backend records and checks: model, fingerprint, dimensions, file.
pub(crate) struct Identity {
    pub(crate) model: String,
    pub(crate) fingerprint: String,
    pub(crate) dim: usize,
    pub(crate) head_dim: usize,
    pub(crate) store: String,
}

impl Identity {
    /// The identity of `engine`'s store, after checking the table (collection) name.
    pub(crate) fn of(engine: &jsearch::Engine, table: &str) -> crate::Result<Self> {
        crate::postgres::check_table_name(table).map_err(crate::ScaleError::InvalidArgument)?;
        let stats = engine.stats()?;
        Ok(Identity {
            model: stats.model.clone(),
            fingerprint: stats.model_fingerprint.clone(),
            dim: stats.dim,
            head_dim: stats.ann_dim.min(stats.dim),
            store: stats.store.display().to_string(),
        })
    }
}
