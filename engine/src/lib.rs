//! # jsearch
//!
//! Embedded multilingual text + image search in one file on disk. Index folders of images and text
//! files, and product catalogs (`.jsonl` / `.csv`); query in any language, by image, or both.
//! The jina-clip-v2 encoders run in-process (candle); vectors, metadata and the engine's own
//! bookkeeping live in one redb file (see `jsearch-index`).
//!
//! ```no_run
//! use jsearch::{Engine, IndexOptions, OpenOptions, Query};
//! # fn main() -> jsearch::Result<()> {
//! let mut engine = Engine::open(OpenOptions {
//!     db: "photos.jsearch".into(),
//!     model_dir: Some("datasets/toy-shapes/model".into()),
//!     ..OpenOptions::default()
//! })?;
//! let summary = engine.index(&["datasets/toy-shapes/corpus/images".into()], &IndexOptions::default(), &mut |_| {})?;
//! println!("indexed {} files", summary.indexed);
//! for hit in engine.query(&Query::text("roter Kreis").limit(5))? {
//!     println!("{:.2} {} {}", hit.score, hit.kind, hit.path);
//! }
//! # Ok(()) }
//! ```
//!
//! **Sharing.** Reading takes `&self` and an `Arc<Engine>` answers queries from many threads at
//! once; writing takes `&mut self` (one writer per store file). See [`Engine`].
//!
//! **Scores**: see [`search`] (per-modality calibrated cosine, so text and image results compare).
//!
//! | module | holds |
//! |---|---|
//! | `engine` | [`Engine`]: the store handles, the lazily loaded model, the public calls |
//! | `ingest` | an index run: plan, prepare per item kind, encode, commit |
//! | [`search`] | queries and how scores are calibrated |
//! | `walk`, `catalog`, `chunk` | finding files, reading catalogs, splitting text into passages |
//! | `item`, `keys` | what an item is, and the engine's key-value records in the store |
//! | `device` | choosing the compute device and precision |
//! | `auto_precision` | what `--precision auto` runs on this CPU for a workload (shipped measurements) |

pub mod attrs;
pub mod auto_precision;
mod catalog;
mod chunk;
mod device;
mod dupes;
mod engine;
mod error;
pub mod filter;
mod fsread;
mod ingest;
mod integrity;
mod item;
mod keys;
mod keyword;
mod lazy;
pub mod photo;
pub mod search;
mod thumbnail;
mod walk;

pub use auto_precision::Workload;
pub use jsearch_base::cpu::Tier as CpuTier;

/// The CPU tier this process's kernels run at (detected, capped by `JSEARCH_CPU_TIER`).
pub fn cpu_tier() -> CpuTier {
    jsearch_base::cpu::features().tier()
}
pub use attrs::{AttrType, Facet, FieldInfo};
pub use catalog::Record;
pub use device::{cuda_compiled, DeviceChoice, Precision, ResolvedDevice};
pub use dupes::{DupeItem, DupesOptions, Duplicates, DEFAULT_NEAR_THRESHOLD};
pub use engine::{
    default_db_path, Embeddings, Engine, ModelInfo, OpenOptions, Stats, DEFAULT_DB_NAME,
};
pub use error::{Error, ErrorClass, ModelMismatch, Result};
pub use filter::{CmpOp, Filter, Literal};
pub use ingest::{
    image_content_hash, text_content_hash, ContentHash, EncodedInput, IndexEvent, IndexOptions,
    IndexSummary, Precomputed, Removal, StageTimes,
};
pub use integrity::{CheckSummary, RepairSummary};
pub use item::{ItemMeta, Kind, Modality};

/// The key of the item a stored vector belongs to (a product's text and image vectors share
/// one; an image's or a passage's vector is its own item).
pub fn item_key_of(vector_key: u64) -> u64 {
    item::item_id(vector_key)
}
pub use jsearch_base::{normalize, truncate_normalize};
pub use search::{Adjust, AdjustPart, Fusion, Query, SearchHit, SearchMode, SearchResult, SortBy};
pub use thumbnail::MAX_THUMBNAIL_SIDE;
pub use walk::{CATALOG_EXTENSIONS, IMAGE_EXTENSIONS, TEXT_EXTENSIONS};

pub(crate) use jsearch_encoders as enc;
pub(crate) use jsearch_index as idx;

/// Hooks for the `catalog` bench: write products with given vectors as an index run would (item
/// record, modality key, keyword document), and search with a given query vector (no model).
/// Not part of the stable API.
#[doc(hidden)]
pub mod bench {
    use crate::error::Result;
    use crate::idx::{Batch, Store};
    use crate::item::{self, ItemMeta, Kind, Modality};
    use crate::keys::{self, NS_MOD};
    use crate::keyword::{KeywordDoc, KeywordWrites};
    use crate::Record;

    /// Writes products into batches.
    pub struct ProductWriter {
        kw: KeywordWrites,
        keywords: bool,
    }

    /// The text vector id of record `id` of catalog `catalog`.
    pub fn product_id(catalog: &str, id: &str) -> u64 {
        item::vector_id(format!("cat:{catalog}#{id}"), Kind::Product, Modality::Text)
    }

    impl ProductWriter {
        /// A writer for one batch; `keywords: false` leaves the keyword documents out (the
        /// baseline of the keyword index's size).
        pub fn new(keywords: bool) -> Self {
            ProductWriter {
                kw: KeywordWrites::default(),
                keywords,
            }
        }

        /// Adds `rec` with its text vector to `batch`.
        pub fn add(
            &mut self,
            batch: &mut Batch,
            catalog: &str,
            rec: &Record,
            vector: Vec<f32>,
        ) -> Result<()> {
            let id = product_id(catalog, &rec.id);
            let body = rec.description.clone().unwrap_or_default();
            let meta = ItemMeta {
                kind: Kind::Product,
                id: rec.id.clone(),
                path: catalog.to_string(),
                path_bytes: None,
                title: rec.title.clone(),
                part: None,
                chunk: None,
                chunks: None,
                lines: None,
                image: None,
                snippet: None,
                metadata: rec.metadata.clone(),
            };
            if self.keywords {
                self.kw.put(id, &KeywordDoc::of(&meta, Some(&body)));
            }
            batch.upsert(id, vector, meta.to_bytes());
            batch.kv_put(NS_MOD, keys::mod_key(Modality::Text, id), Vec::new());
            Ok(())
        }

        /// Adds the keyword statistics to `batch` (call once per batch, before committing it).
        pub fn finish(self, store: &Store, batch: &mut Batch) -> Result<()> {
            self.kw.finish(store, batch)
        }
    }
}

impl Engine {
    /// Searches with a given (text-side) query vector and optional keyword text, without the
    /// model: for the `catalog` bench. Not part of the stable API.
    #[doc(hidden)]
    pub fn search_vector(
        &self,
        vector: Vec<f32>,
        text: Option<&str>,
        q: &Query,
    ) -> Result<SearchResult> {
        search::run_with_vector(self, vector, text, q)
    }
}
