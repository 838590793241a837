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
//! Scores: see [`search`] (per-modality calibrated cosine, so text and image results compare).

pub mod catalog;
mod chunk;
pub mod device;
pub mod error;
mod ingest;
pub mod item;
mod keys;
pub mod search;
mod walk;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use catalog::Record;
pub use device::{DeviceChoice, Precision, ResolvedDevice};
pub use error::{Error, Result};
pub use ingest::{IndexEvent, IndexOptions, IndexSummary, StageTimes};
pub use item::{ItemMeta, Kind, Modality};
pub use search::{Query, SearchHit};
pub use walk::{CATALOG_EXTENSIONS, IMAGE_EXTENSIONS, TEXT_EXTENSIONS};

pub(crate) use enc::hub;
pub(crate) use jsearch_encoders as enc;
pub(crate) use jsearch_index as idx;

use enc::{ClipModel, Towers};
use idx::{Store, StoreSettings};

/// File name of the default store, inside [`default_db_path`]'s folder.
pub const DEFAULT_DB_NAME: &str = "index.jsearch";

/// Default store: `<data dir>/jsearch/index.jsearch` (e.g. `~/.local/share/jsearch/index.jsearch`
/// on Linux, `~/Library/Application Support/jsearch/...` on macOS), falling back to the current folder.
pub fn default_db_path() -> PathBuf {
    dirs::data_dir()
        .map(|d| d.join("jsearch").join(DEFAULT_DB_NAME))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DB_NAME))
}

/// How to open an [`Engine`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// The store file (created on the first `index`).
    pub db: PathBuf,
    /// Model folder; `None` resolves `$JSEARCH_MODEL`, the Hugging Face cache, then downloads.
    pub model_dir: Option<PathBuf>,
    /// Compute device.
    pub device: DeviceChoice,
    /// Compute precision (`Auto`: bf16 on a GPU, f32 on the CPU; `Int8` for the fastest CPU path).
    pub precision: Precision,
    /// Show a download progress bar if the model has to be downloaded.
    pub download_progress: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            db: default_db_path(),
            model_dir: None,
            device: DeviceChoice::Auto,
            precision: Precision::Auto,
            download_progress: false,
        }
    }
}

/// Counts and sizes of a store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    /// The store file.
    pub store: PathBuf,
    /// Its size in bytes.
    pub store_bytes: u64,
    /// Model name recorded in the store.
    pub model: String,
    /// Model fingerprint recorded in the store.
    pub model_fingerprint: String,
    /// Full vector dimension.
    pub dim: usize,
    /// Dimension of the ANN graph (Matryoshka truncation).
    pub ann_dim: usize,
    /// Items by kind (`image`, `text`, `product`); a product counts once.
    pub items: std::collections::BTreeMap<String, usize>,
    /// Vectors (a product with an image has two).
    pub vectors: usize,
    /// Indexed files (images, text files, catalogs).
    pub files: usize,
}

enum Handle {
    Reader(Store),
    Writer(Store),
}

impl Handle {
    fn store(&self) -> &Store {
        match self {
            Handle::Reader(s) | Handle::Writer(s) => s,
        }
    }
}

/// An open search engine: a store file plus (loaded on demand) the model.
pub struct Engine {
    db: PathBuf,
    model_dir: Option<PathBuf>,
    resolved_model_dir: Option<PathBuf>,
    device_choice: DeviceChoice,
    precision: Precision,
    device: Option<ResolvedDevice>,
    download_progress: bool,
    model: Option<(Towers, Arc<ClipModel>)>,
    handle: Option<Handle>,
    calibration: search::CalibrationCache,
}

impl Engine {
    /// Prepares an engine. Nothing is loaded yet: the model is loaded (only the towers needed) and
    /// the store opened by the first call that needs them. Fails only on an invalid device.
    pub fn open(opts: OpenOptions) -> Result<Engine> {
        Ok(Engine {
            db: opts.db,
            model_dir: opts.model_dir,
            resolved_model_dir: None,
            device_choice: opts.device,
            precision: opts.precision,
            device: None,
            download_progress: opts.download_progress,
            model: None,
            handle: None,
            calibration: Default::default(),
        })
    }

    /// The store file.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// Resolves (once) and returns the compute device, with a description for the log.
    pub fn device(&mut self) -> Result<&ResolvedDevice> {
        if self.device.is_none() {
            self.device = Some(device::resolve(self.device_choice)?);
        }
        // Set just above.
        self.device
            .as_ref()
            .ok_or_else(|| Error::Internal("device not resolved".into()))
    }

    /// The model folder (resolving `$JSEARCH_MODEL`, the cache, or downloading, once).
    pub fn model_dir(&mut self) -> Result<PathBuf> {
        if let Some(d) = &self.resolved_model_dir {
            return Ok(d.clone());
        }
        let d = hub::resolve_model_dir(self.model_dir.as_deref(), self.download_progress)?;
        self.resolved_model_dir = Some(d.clone());
        Ok(d)
    }

    pub(crate) fn model(&mut self, need: Towers) -> Result<Arc<ClipModel>> {
        if let Some((have, m)) = &self.model {
            let enough = matches!(
                (have, need),
                (Towers::Both, _) | (Towers::Text, Towers::Text) | (Towers::Vision, Towers::Vision)
            );
            if enough {
                return Ok(m.clone());
            }
        }
        let towers = match (&self.model, need) {
            (Some(_), _) => Towers::Both,
            (None, t) => t,
        };
        let dir = self.model_dir()?;
        let device = self.device()?.device.clone();
        let opts = self.precision.load_options(device, towers);
        self.model = None;
        let m = Arc::new(ClipModel::load(&dir, &opts)?);
        self.model = Some((towers, m.clone()));
        Ok(m)
    }

    fn settings_for(model: &ClipModel) -> StoreSettings {
        let id = model.identity();
        StoreSettings::new(id.name.clone(), id.fingerprint.clone(), model.embed_dim())
    }

    pub(crate) fn check_model(&self, stored: &StoreSettings, model: &ClipModel) -> Result<()> {
        let id = model.identity();
        if stored.model_name != id.name
            || stored.model_fingerprint != id.fingerprint
            || stored.dim != model.embed_dim()
        {
            return Err(Error::ModelMismatch(Box::new(error::ModelMismatch {
                store: self.db.clone(),
                store_model: stored.model_name.clone(),
                store_fp: stored.model_fingerprint.clone(),
                store_dim: stored.dim,
                model: id.name.clone(),
                model_fp: id.fingerprint.clone(),
                model_dim: model.embed_dim(),
            })));
        }
        Ok(())
    }

    fn map_open_error(&self, e: idx::IndexError) -> Error {
        match e {
            idx::IndexError::Busy { path } => Error::Locked {
                detail: "only one writer at a time; queries still work".into(),
                path,
            },
            other => Error::Index(other),
        }
    }

    /// Opens the store for reading (queries, stats) unless a writer is already held.
    pub(crate) fn reader(&mut self) -> Result<&Store> {
        if self.handle.is_none() {
            if !self.db.exists() {
                return Err(Error::NoStore(self.db.clone()));
            }
            let s = match Store::open_read_only(&self.db) {
                Ok(s) => s,
                Err(e)
                    if e.to_string().to_lowercase().contains("repair")
                        || matches!(e, idx::IndexError::UpgradeNeeded { .. }) =>
                {
                    // A writer was killed (its last commit is intact but the file needs the
                    // recovery that only a writer can run), or the store has an older format
                    // that a writer upgrades in place. Do it, then read.
                    self.recover()?;
                    Store::open_read_only(&self.db).map_err(|e| self.map_open_error(e))?
                }
                Err(e) => return Err(self.map_open_error(e)),
            };
            self.handle = Some(Handle::Reader(s));
        }
        match &self.handle {
            Some(h) => Ok(h.store()),
            None => Err(Error::Internal("store not open".into())),
        }
    }

    /// The open store (a reader unless a writer is held) and the calibration cache.
    pub(crate) fn store_and_cache(&mut self) -> Result<(&Store, &mut search::CalibrationCache)> {
        self.reader()?;
        match &self.handle {
            Some(h) => Ok((h.store(), &mut self.calibration)),
            None => Err(Error::Internal("store not open".into())),
        }
    }

    /// Opens the store once as a writer (with the model's identity, read from its files without
    /// loading weights) so that redb recovers a store left by a killed writer and an older
    /// store format is upgraded.
    fn recover(&mut self) -> Result<()> {
        let dir = self.model_dir()?;
        let config = enc::ClipConfig::load(&dir.join("config.json"))?;
        let id = enc::model::model_identity(&dir, &config)?;
        let settings = StoreSettings::new(id.name, id.fingerprint, config.embed_dim());
        if let Ok(ro) = Store::open_read_only(&self.db) {
            drop(ro);
        }
        let s = Store::open(&self.db, settings).map_err(|e| match e {
            idx::IndexError::ModelMismatch {
                stored, requested, ..
            } => Error::InvalidArgument(format!(
                "store {} was built with model {stored}, but the model in use is {requested}; \
                 use the same --model, or re-index into a new store",
                self.db.display()
            )),
            other => self.map_open_error(other),
        })?;
        drop(s);
        Ok(())
    }

    /// Opens the store for writing with `settings` (or the store's own when `None`).
    pub(crate) fn writer(&mut self, settings: Option<StoreSettings>) -> Result<&mut Store> {
        if !matches!(self.handle, Some(Handle::Writer(_))) {
            self.handle = None;
            let settings = match settings {
                Some(s) => {
                    if self.db.exists() {
                        // Check the model first for a clear message (also while another process writes).
                        if let Ok(ro) = Store::open_read_only(&self.db) {
                            let stored = ro.settings().clone();
                            drop(ro);
                            if stored.model_name != s.model_name
                                || stored.model_fingerprint != s.model_fingerprint
                                || stored.dim != s.dim
                            {
                                return Err(Error::ModelMismatch(Box::new(error::ModelMismatch {
                                    store: self.db.clone(),
                                    store_model: stored.model_name,
                                    store_fp: stored.model_fingerprint,
                                    store_dim: stored.dim,
                                    model: s.model_name,
                                    model_fp: s.model_fingerprint,
                                    model_dim: s.dim,
                                })));
                            }
                        }
                    }
                    s
                }
                None => {
                    if !self.db.exists() {
                        return Err(Error::NoStore(self.db.clone()));
                    }
                    let ro = Store::open_read_only(&self.db).map_err(|e| self.map_open_error(e))?;
                    ro.settings().clone()
                }
            };
            if let Some(parent) = self.db.parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
            }
            let s = Store::open(&self.db, settings).map_err(|e| self.map_open_error(e))?;
            self.handle = Some(Handle::Writer(s));
        }
        self.calibration.clear();
        match &mut self.handle {
            Some(Handle::Writer(s)) => Ok(s),
            _ => Err(Error::Internal("store not open for writing".into())),
        }
    }

    /// Indexes folders (recursively), files and catalogs. Incremental: unchanged files are
    /// skipped, changed ones re-embedded, files deleted under the given roots removed; renamed or
    /// duplicate content reuses stored vectors. Commits after every batch. `on_event` receives
    /// progress and problems (unreadable files are reported and skipped; the run goes on).
    pub fn index(
        &mut self,
        paths: &[PathBuf],
        opts: &IndexOptions,
        on_event: &mut dyn FnMut(IndexEvent),
    ) -> Result<IndexSummary> {
        if paths.is_empty() {
            return Err(Error::InvalidArgument(
                "nothing to index: give at least one path".into(),
            ));
        }
        let model = self.model(Towers::Both)?;
        let model_dir = self.model_dir()?;
        let settings = Self::settings_for(&model);
        let db = self.db.clone();
        let store = self.writer(Some(settings))?;
        let summary = ingest::index_paths(store, &model, &model_dir, paths, opts, on_event)?;
        tidy_after_run(store, &db, &summary, on_event);
        Ok(summary)
    }

    /// Indexes records given in code (as if read from a catalog named `source`, which need not
    /// exist on disk). Records of `source` not in `records` are removed.
    pub fn index_records(
        &mut self,
        source: &str,
        records: Vec<Record>,
        opts: &IndexOptions,
        on_event: &mut dyn FnMut(IndexEvent),
    ) -> Result<IndexSummary> {
        let model = self.model(Towers::Both)?;
        let model_dir = self.model_dir()?;
        let settings = Self::settings_for(&model);
        let db = self.db.clone();
        let store = self.writer(Some(settings))?;
        let summary =
            ingest::index_records(store, &model, &model_dir, source, records, opts, on_event)?;
        tidy_after_run(store, &db, &summary, on_event);
        Ok(summary)
    }

    /// Removes files (or everything under folders) from the store; returns the number of files removed.
    pub fn remove(&mut self, paths: &[PathBuf]) -> Result<usize> {
        let store = self.writer(None)?;
        ingest::remove_paths(store, paths)
    }

    /// Searches by text, image, or both. See [`search`] for how scores are computed.
    pub fn query(&mut self, q: &Query) -> Result<Vec<SearchHit>> {
        search::run_query(self, q)
    }

    /// Items similar to an indexed file (its stored vectors are the query; the file itself is excluded).
    pub fn similar(&mut self, path: &Path, q: &Query) -> Result<Vec<SearchHit>> {
        search::run_similar(self, path, q)
    }

    /// Counts by kind, model identity, dimensions and file size of the store.
    pub fn stats(&mut self) -> Result<Stats> {
        let db = self.db.clone();
        let store = self.reader()?;
        let settings = store.settings().clone();
        let store_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        let mut items: std::collections::BTreeMap<String, usize> = Kind::ALL
            .iter()
            .map(|k| (k.as_str().to_string(), 0))
            .collect();
        let mut vectors = 0;
        let mut item_ids = std::collections::HashSet::new();
        for m in Modality::ALL {
            for (k, _) in store.kv_scan_prefix(keys::NS_MOD, &[m.byte()])? {
                if let Some(id) = keys::id_suffix(&k) {
                    vectors += 1;
                    if item_ids.insert(item::item_id(id)) {
                        if let Some(kind) = item::kind_of(id) {
                            *items.entry(kind.as_str().to_string()).or_default() += 1;
                        }
                    }
                }
            }
        }
        let files = store.kv_scan_prefix(keys::NS_FILES, b"")?.len();
        Ok(Stats {
            store: db,
            store_bytes,
            model: settings.model_name,
            model_fingerprint: settings.model_fingerprint,
            dim: settings.dim,
            ann_dim: settings.ann_dim,
            items,
            vectors,
            files,
        })
    }
}

/// Items a run must write (and at least a tenth of the store) before it ends with a compaction.
const COMPACT_AFTER_ITEMS: usize = 1024;

/// After a run that wrote many items, renumber the graph for re-rank locality and give the
/// copy-on-write pages of its commits back ([`Store::compact`]: at 1M vectors the file shrinks
/// from 4.0 to 2.4 GiB, in about an eighth of the build time). Best effort: everything is already
/// committed, so a failure is reported as a problem of the store file, not as an error.
fn tidy_after_run(
    store: &mut Store,
    db: &Path,
    summary: &IndexSummary,
    on_event: &mut dyn FnMut(IndexEvent),
) {
    if summary.items >= COMPACT_AFTER_ITEMS && summary.items * 10 >= store.len() {
        if let Err(e) = store.compact() {
            on_event(IndexEvent::Problem {
                path: db.to_path_buf(),
                message: format!("compaction after the run failed (the index is intact): {e}"),
            });
        }
    }
}
