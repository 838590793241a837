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
pub mod search;
mod walk;

pub use auto_precision::Workload;
pub use jsearch_base::cpu::Tier as CpuTier;

/// The CPU tier this process's kernels run at (detected, capped by `JSEARCH_CPU_TIER`).
pub fn cpu_tier() -> CpuTier {
    jsearch_base::cpu::features().tier()
}
pub use attrs::{AttrType, Facet};
pub use catalog::Record;
pub use device::{cuda_compiled, DeviceChoice, Precision, ResolvedDevice};
pub use engine::{default_db_path, Embeddings, Engine, OpenOptions, Stats, DEFAULT_DB_NAME};
pub use error::{Error, ModelMismatch, Result};
pub use filter::{CmpOp, Filter, Literal};
pub use ingest::{IndexEvent, IndexOptions, IndexSummary, Removal, StageTimes};
pub use integrity::{CheckSummary, RepairSummary};
pub use item::{ItemMeta, Kind, Modality};
pub use jsearch_base::{normalize, truncate_normalize};
pub use search::{Fusion, Query, SearchHit, SearchMode, SearchResult, SortBy};
pub use walk::{CATALOG_EXTENSIONS, IMAGE_EXTENSIONS, TEXT_EXTENSIONS};

pub(crate) use jsearch_encoders as enc;
pub(crate) use jsearch_index as idx;
