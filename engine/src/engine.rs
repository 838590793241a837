//! [`Engine`]: a store file and, loaded on demand, the model.
//!
//! Reading (`query`, `similar`, `stats`, `embed`) takes `&self`: an `Arc<Engine>` serves many
//! threads at once (a server, a GUI). The store's read handle, the device, the model towers and
//! the score calibration are loaded by the first call that needs them, once, in cells that
//! concurrent first callers wait on.
//!
//! Writing (`index`, `index_records`, `remove`) takes `&mut self`. The store allows one writer
//! per file (redb's lock, across processes) and any number of readers, each of which sees every
//! commit; an `&mut` borrow makes "one writer" a compile-time fact inside a process instead of a
//! lock to wait on, and keeps the writer's batch state out of the shared reader. An application
//! that serves queries while it indexes opens two engines on the same file: one shared
//! (`Arc<Engine>`) for the queries, one owned by the indexing thread; the readers see each of
//! its commits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::auto_precision::{self, Workload};
use crate::device::{self, DeviceChoice, Precision, ResolvedDevice};
use crate::enc::preprocess::DecodeOptions;
use crate::enc::{self, hub, ClipModel, TextRole, Towers};
use crate::error::{self, Error, Result};
use crate::idx::{self, Store, StoreSettings};
use crate::ingest::{self, IndexEvent, IndexOptions, IndexSummary, Removal};
use crate::integrity::{self, CheckSummary, RepairSummary};
use crate::item::{self, ItemMeta, Kind, Modality};
use crate::keys;
use crate::lazy::Lazy;
use crate::search::{self, CalibrationSamples, Query, SearchHit, SearchResult};
use crate::walk;
use crate::Record;

/// The name the store records for the real jina-clip-v2 (the only model that is downloaded).
const REAL_MODEL_NAME: &str = "jina-clip-v2";

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
    /// Called with one line for each thing a user should hear about loading the model: the
    /// precision `auto` chose, a weight cache built or rebuilt. `None`: silent.
    pub notify: Option<fn(&str)>,
    /// Keep the model's packed weights in this process's memory instead of using the weight
    /// cache's mapping in place (`LoadOptions::resident`): a copy at load, faster forward passes
    /// after it. For long-lived processes (`jsearch serve`, an app); off for one-shot commands.
    pub resident_weights: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            db: default_db_path(),
            model_dir: None,
            device: DeviceChoice::Auto,
            precision: Precision::Auto,
            download_progress: false,
            notify: None,
            resident_weights: false,
        }
    }
}

/// The model an engine encodes with, read from its folder (no weights loaded):
/// [`Engine::model_info`]. What another system holding this store's vectors compares with
/// before it is queried with new ones.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ModelInfo {
    /// The model's name.
    pub name: String,
    /// Its fingerprint (what a store built with it records).
    pub fingerprint: String,
    /// The fingerprint stores written before the weights' content was hashed record.
    pub legacy_fingerprint: String,
    /// Embedding dimension.
    pub dim: usize,
}

impl ModelInfo {
    /// Whether vectors recorded as made by `name` / `fingerprint` / `dim` came from this model.
    pub fn made(&self, name: &str, fingerprint: &str, dim: usize) -> bool {
        self.name == name
            && (self.fingerprint == fingerprint || self.legacy_fingerprint == fingerprint)
            && self.dim == dim
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
    /// Indexed files by kind (`image`, `text`, `catalog`).
    pub files_by_kind: std::collections::BTreeMap<String, usize>,
    /// The model folder the store was last written with, if it recorded one.
    pub model_dir: Option<PathBuf>,
}

/// Raw embeddings from [`Engine::embed`]: the pooled output of each tower, before the L2
/// normalisation (apply [`crate::normalize`] or [`crate::truncate_normalize`]).
#[derive(Debug, Clone, Default)]
pub struct Embeddings {
    /// One per text, in order.
    pub texts: Vec<Vec<f32>>,
    /// One per image, in order.
    pub images: Vec<Vec<f32>>,
}

/// What a store built with a model records, with the model's legacy fingerprint.
pub(crate) struct Wanted {
    settings: StoreSettings,
    legacy_fingerprint: String,
}

/// The background queries' embeddings (normalised), shared by the queries that use them.
type Background = Arc<Vec<Vec<f32>>>;

/// The towers loaded so far.
struct LoadedModel {
    towers: Towers,
    precision: Precision,
    model: Arc<ClipModel>,
}

impl LoadedModel {
    fn covers(&self, need: Towers) -> bool {
        matches!(
            (self.towers, need),
            (Towers::Both, _)
                | (Towers::Text, Towers::Text)
                | (Towers::Vision, Towers::Vision)
                | (_, Towers::None)
        )
    }
}

/// An open search engine: a store file plus (loaded on demand) the model. See the module docs
/// for sharing it between threads.
pub struct Engine {
    db: PathBuf,
    model_dir: Option<PathBuf>,
    device_choice: DeviceChoice,
    precision: Precision,
    download_progress: bool,
    notify: Option<fn(&str)>,
    resident_weights: bool,
    resolved_model_dir: Lazy<PathBuf>,
    device: Lazy<ResolvedDevice>,
    /// The towers loaded so far (replaced by both towers when the other one is needed).
    model: RwLock<Option<LoadedModel>>,
    /// Held while a tower loads, so that concurrent first queries load it once.
    model_load: Mutex<()>,
    /// The read handle (queries, stats), opened by the first read unless a writer is held.
    reader: Lazy<Store>,
    /// The write handle, held from the first write until the engine is dropped.
    writer: Option<Store>,
    /// Per-modality calibration samples, dropped by every write.
    calibration: Mutex<Option<Arc<CalibrationSamples>>>,
    /// The background queries' embeddings (relevance's hubness correction), per model fingerprint.
    background: Mutex<Option<(String, Background)>>,
    /// The attribute table and the keyword index's reader, with the store generation they
    /// were read at (rebuilt when the store has changed, also by another process).
    attributes: Mutex<Option<(u64, Arc<crate::attrs::AttributeTable>)>>,
    keywords: Mutex<Option<(u64, Arc<crate::keyword::KeywordIndex>)>>,
}

impl Engine {
    /// Prepares an engine. Nothing is loaded yet: the model is loaded (only the towers needed) and
    /// the store opened by the first call that needs them.
    pub fn open(opts: OpenOptions) -> Result<Engine> {
        Ok(Engine {
            db: opts.db,
            model_dir: opts.model_dir,
            device_choice: opts.device,
            precision: opts.precision,
            download_progress: opts.download_progress,
            notify: opts.notify,
            resident_weights: opts.resident_weights,
            resolved_model_dir: Lazy::default(),
            device: Lazy::default(),
            model: RwLock::new(None),
            model_load: Mutex::new(()),
            reader: Lazy::default(),
            writer: None,
            calibration: Mutex::new(None),
            background: Mutex::new(None),
            attributes: Mutex::new(None),
            keywords: Mutex::new(None),
        })
    }

    /// The store file.
    pub fn db_path(&self) -> &Path {
        &self.db
    }

    /// Resolves (once) and returns the compute device, with a description for the log.
    pub fn device(&self) -> Result<&ResolvedDevice> {
        self.device
            .get_or_try_init(|| device::resolve(self.device_choice))
    }

    /// The model folder, resolved once: the one given ([`OpenOptions::model_dir`], else
    /// `$JSEARCH_MODEL`), else the folder the store was last written with when it still holds
    /// the store's model, else the Hugging Face cache or a download of jina-clip-v2 — only for a
    /// store made with jina-clip-v2 (or no store yet): a store made with another model (the toy
    /// model, say) never triggers a download, it says which model it wants and where it looked.
    pub fn model_dir(&self) -> Result<PathBuf> {
        self.resolved_model_dir
            .get_or_try_init(|| self.resolve_model_dir())
            .cloned()
    }

    fn resolve_model_dir(&self) -> Result<PathBuf> {
        let env = hub::HubEnv::from_process();
        let given = self.model_dir.is_some() || env.jsearch_model.is_some();
        if !given {
            if let Some(stored) = self.stored_settings()? {
                let looked = stored.model_dir.clone();
                let why = match &looked {
                    None => "it recorded no model folder".to_string(),
                    Some(dir) => match Self::settings_for_dir(dir) {
                        Ok(w) if self.mismatch(&stored, &w).is_none() => return Ok(dir.clone()),
                        Ok(w) => format!(
                            "that folder now holds {} (fingerprint {})",
                            w.settings.model_name, w.settings.model_fingerprint
                        ),
                        Err(e) => format!("it cannot be used ({e})"),
                    },
                };
                if stored.model_name != REAL_MODEL_NAME {
                    return Err(Error::StoreModelMissing(Box::new(
                        error::StoreModelMissing {
                            store: self.db.clone(),
                            model: stored.model_name,
                            fingerprint: stored.model_fingerprint,
                            looked,
                            why,
                        },
                    )));
                }
            }
        }
        hub::resolve_model_dir_with(self.model_dir.as_deref(), &env, self.download_progress)
            .map_err(Error::from)
    }

    /// The model with at least the towers `need`, in the precision `workload` runs at (for
    /// `--precision auto` see [`crate::Workload`]); loading what is missing, once. A model in
    /// another precision is replaced (a load from the weight cache).
    pub(crate) fn model(&self, need: Towers, workload: Workload) -> Result<Arc<ClipModel>> {
        let device = self.device()?.device.clone();
        let (precision, why) = match self.precision {
            // Nothing to run: any loaded model will do, else one without towers.
            _ if need == Towers::None => {
                let g = self.model.read().unwrap_or_else(|e| e.into_inner());
                if let Some(l) = g.as_ref() {
                    return Ok(l.model.clone());
                }
                (Precision::F32, None)
            }
            Precision::Auto if device.is_cpu() => {
                let tier = jsearch_base::cpu::features().tier();
                let choice = auto_precision::choose(tier, workload, need);
                (choice.precision, Some(choice))
            }
            p => (p, None),
        };
        let loaded = |m: &RwLock<Option<LoadedModel>>| {
            let g = m.read().unwrap_or_else(|e| e.into_inner());
            g.as_ref()
                .filter(|l| l.covers(need) && l.precision == precision)
                .map(|l| l.model.clone())
        };
        if let Some(m) = loaded(&self.model) {
            return Ok(m);
        }
        let _loading = self.model_load.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = loaded(&self.model) {
            return Ok(m);
        }
        // The other tower is loaded in this precision: load both (one model object serves
        // every caller).
        let have_other = self
            .model
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|l| l.precision == precision);
        let towers = if have_other { Towers::Both } else { need };
        let dir = self.model_dir()?;
        if let Some(why) = why {
            self.say(&format!("precision: auto: {why}"));
        }
        let mut opts = precision.load_options(device, towers);
        opts.notify = self.notify;
        opts.resident = self.resident_weights;
        let m = Arc::new(ClipModel::load(&dir, &opts)?);
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = Some(LoadedModel {
            towers,
            precision,
            model: m.clone(),
        });
        Ok(m)
    }

    fn say(&self, line: &str) {
        if let Some(f) = self.notify {
            f(line)
        }
    }

    /// The settings a store built with `model` records, and the model's legacy fingerprint
    /// (what stores written before the weights' content was hashed record).
    fn settings_for(model: &ClipModel) -> Wanted {
        Self::wanted(model.identity(), model.embed_dim())
    }

    fn wanted(id: &enc::ModelIdentity, dim: usize) -> Wanted {
        Wanted {
            settings: StoreSettings::new(id.name.clone(), id.fingerprint.clone(), dim),
            legacy_fingerprint: id.legacy_fingerprint.clone(),
        }
    }

    /// [`Self::settings_for`] the model folder, without loading any weights (configs and the
    /// weights' cached content hash only).
    fn settings_for_dir(dir: &Path) -> Result<Wanted> {
        let config = model_config(dir)?;
        let id = enc::model_identity(dir, &config)?;
        Ok(Self::wanted(&id, config.embed_dim()))
    }

    fn mismatch(&self, stored: &StoreSettings, wanted: &Wanted) -> Option<Error> {
        let w = &wanted.settings;
        let same = stored.model_name == w.model_name
            && (stored.model_fingerprint == w.model_fingerprint
                || stored.model_fingerprint == wanted.legacy_fingerprint)
            && stored.dim == w.dim;
        (!same).then(|| {
            Error::ModelMismatch(Box::new(error::ModelMismatch {
                store: self.db.clone(),
                store_model: stored.model_name.clone(),
                store_fp: stored.model_fingerprint.clone(),
                store_dim: stored.dim,
                model: w.model_name.clone(),
                model_fp: w.model_fingerprint.clone(),
                model_dim: w.dim,
            }))
        })
    }

    /// The store must have been built with `model`.
    pub(crate) fn check_model(&self, stored: &StoreSettings, model: &ClipModel) -> Result<()> {
        match self.mismatch(stored, &Self::settings_for(model)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
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

    /// The store to read from: the writer when one is held, else the shared read handle
    /// (opened once; a store left by a killed writer or in an older format is first recovered
    /// or upgraded by a short-lived writer).
    pub(crate) fn store(&self) -> Result<&Store> {
        if let Some(w) = &self.writer {
            return Ok(w);
        }
        self.reader.get_or_try_init(|| {
            if !self.db.exists() {
                return Err(Error::NoStore(self.db.clone()));
            }
            match Store::open_read_only(&self.db) {
                Ok(s) => Ok(s),
                // Left by a killed writer: recover the file if this process can (it takes the
                // writer lock for a moment); if it cannot (another process writes or recovers
                // it, the file or disk is read-only or full), read the last commit as it
                // stands, recovered in memory. Readers never fail because of recovery.
                Err(idx::IndexError::NeedsRecovery { .. }) => {
                    // A failed recovery only means this process cannot do it; the read below
                    // tells whether the file still needs it.
                    let _ = self.recover();
                    match Store::open_read_only(&self.db) {
                        Err(idx::IndexError::NeedsRecovery { .. }) => {
                            Store::open_recovered(&self.db)
                        }
                        other => other,
                    }
                    .map_err(|e| self.map_open_error(e))
                }
                Err(idx::IndexError::UpgradeNeeded { .. }) => {
                    self.recover()?;
                    Store::open_read_only(&self.db).map_err(|e| self.map_open_error(e))
                }
                Err(e) => Err(self.map_open_error(e)),
            }
        })
    }

    /// The background queries embedded by `model` (cached per model).
    pub(crate) fn background(&self, model: &ClipModel) -> Result<Arc<Vec<Vec<f32>>>> {
        let fp = &model.identity().fingerprint;
        let mut cached = self.background.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((f, b)) = cached.as_ref() {
            if f == fp {
                return Ok(b.clone());
            }
        }
        let texts = crate::search::relevance::background_queries();
        let b: Vec<Vec<f32>> = model
            .encode_texts(&texts, TextRole::Query)?
            .into_iter()
            .map(|mut v| {
                crate::normalize(&mut v);
                v
            })
            .collect();
        let b = Arc::new(b);
        *cached = Some((fp.clone(), b.clone()));
        Ok(b)
    }

    /// The calibration samples of the store (cached until the next write).
    pub(crate) fn calibration(&self, store: &Store) -> Result<Arc<CalibrationSamples>> {
        let mut cached = self.calibration.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cached.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(CalibrationSamples::load(store)?);
        *cached = Some(s.clone());
        Ok(s)
    }

    /// Every item's attributes (cached while the store is unchanged).
    pub(crate) fn attributes(&self, store: &Store) -> Result<Arc<crate::attrs::AttributeTable>> {
        cached_by_generation(&self.attributes, store, crate::attrs::AttributeTable::load)
    }

    /// The keyword index's reader (cached while the store is unchanged).
    pub(crate) fn keywords(&self, store: &Store) -> Result<Arc<crate::keyword::KeywordIndex>> {
        cached_by_generation(&self.keywords, store, crate::keyword::KeywordIndex::load)
    }

    /// Recovers a store left by a killed writer and upgrades an older format, in place (the
    /// writer lock for a moment; no model, no graph load).
    fn recover(&self) -> Result<()> {
        Store::recover(&self.db).map_err(|e| self.map_open_error(e))
    }

    /// The settings of an existing store (its meta table only, no graph load), for a clear
    /// model check before taking the writer lock; a store a killed writer left (or in an older
    /// format) is recovered first.
    fn stored_settings(&self) -> Result<Option<StoreSettings>> {
        if !self.db.exists() {
            return Ok(None);
        }
        match Store::read_settings(&self.db) {
            Ok(s) => Ok(Some(s)),
            Err(idx::IndexError::NeedsRecovery { .. })
            | Err(idx::IndexError::UpgradeNeeded { .. }) => {
                self.recover()?;
                Store::read_settings(&self.db)
                    .map(Some)
                    .map_err(|e| self.map_open_error(e))
            }
            Err(e) => Err(self.map_open_error(e)),
        }
    }

    /// Opens the store for writing with `settings` (or the store's own when `None`).
    pub(crate) fn writer(&mut self, settings: Option<Wanted>) -> Result<&mut Store> {
        let store = match self.writer.take() {
            Some(s) => s,
            None => self.open_writer(settings)?,
        };
        *self
            .calibration
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = None;
        Ok(self.writer.insert(store))
    }

    fn open_writer(&mut self, wanted: Option<Wanted>) -> Result<Store> {
        self.reader.take();
        // A store recorded with the model's legacy fingerprint is opened with it, then records
        // the new one.
        let mut upgrade_fp = None;
        let settings = match wanted {
            Some(w) => {
                // Check the model first for a clear message (also while another process writes).
                let mut s = w.settings.clone();
                if let Some(stored) = self.stored_settings()? {
                    if let Some(e) = self.mismatch(&stored, &w) {
                        return Err(e);
                    }
                    if stored.model_fingerprint != s.model_fingerprint {
                        upgrade_fp = Some(s.model_fingerprint.clone());
                        s.model_fingerprint = stored.model_fingerprint;
                    }
                }
                s
            }
            None => match self.stored_settings()? {
                Some(s) => s,
                None => return Err(Error::NoStore(self.db.clone())),
            },
        };
        if let Some(parent) = self.db.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
        }
        let mut store = Store::open(&self.db, settings).map_err(|e| self.map_open_error(e))?;
        if let Some(fp) = upgrade_fp {
            store.set_model_fingerprint(&fp)?;
        }
        // A keyword index of the first layout (a row per posting) becomes blocks, one commit.
        crate::keyword::upgrade(&mut store)?;
        Ok(store)
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
        // Plan first (the store is checked against the model's identity, no weights loaded),
        // then load only the towers the planned items need.
        let model_dir = self.model_dir()?;
        let db = self.db.clone();
        let plan = {
            let store = self.writer(Some(Self::settings_for_dir(&model_dir)?))?;
            store.set_model_dir(&walk::absolute_lenient(&model_dir))?;
            ingest::plan_paths(store, paths, opts, on_event)?
        };
        let model = self.model(self.towers_for(&plan, opts)?, Workload::Index)?;
        let store = self.writer(None)?;
        let summary = ingest::run_plan(store, &model, &model_dir, plan, opts, on_event)?;
        tidy_after_run(store, &db, &summary, on_event);
        Ok(summary)
    }

    /// The towers a run needs: none when its vectors come with it ([`IndexOptions::precomputed`],
    /// which must be of this engine's model).
    fn towers_for(&self, plan: &ingest::Plan, opts: &IndexOptions) -> Result<Towers> {
        let Some(p) = &opts.precomputed else {
            return Ok(plan.towers());
        };
        let towers = if opts.encode_missing {
            plan.towers()
        } else {
            Towers::None
        };
        let m = self.model_info()?;
        if !m.made(&p.model, &p.fingerprint, p.dim) {
            return Err(Error::InvalidArgument(format!(
                "the given vectors were made by {} ({}, {}-d), this run indexes with {} ({}, {}-d): encode them again with this model, or pass --model with theirs",
                p.model, p.fingerprint, p.dim, m.name, m.fingerprint, m.dim
            )));
        }
        Ok(towers)
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
        let model_dir = self.model_dir()?;
        let db = self.db.clone();
        let plan = {
            let store = self.writer(Some(Self::settings_for_dir(&model_dir)?))?;
            store.set_model_dir(&walk::absolute_lenient(&model_dir))?;
            ingest::plan_records(store, source, records)?
        };
        let model = self.model(self.towers_for(&plan, opts)?, Workload::Index)?;
        let store = self.writer(None)?;
        let summary = ingest::run_plan(store, &model, &model_dir, plan, opts, on_event)?;
        tidy_after_run(store, &db, &summary, on_event);
        Ok(summary)
    }

    /// Removes files (or everything under folders) from the store. Paths not in the store are
    /// skipped and listed in [`Removal::not_indexed`] (running a killed `remove` again finishes it).
    pub fn remove(&mut self, paths: &[PathBuf]) -> Result<Removal> {
        let store = self.writer(None)?;
        ingest::remove_paths(store, paths)
    }

    /// Searches by text, image, or both; the hits. See [`crate::search`] for how scores are
    /// computed, and [`Engine::search`] for the facets too.
    pub fn query(&self, q: &Query) -> Result<Vec<SearchHit>> {
        Ok(search::run_query(self, q)?.hits)
    }

    /// Searches as [`Engine::query`], returning the hits and the facets the query asked for.
    pub fn search(&self, q: &Query) -> Result<SearchResult> {
        search::run_query(self, q)
    }

    /// Items similar to an indexed file (its stored vectors are the query; the file itself is excluded).
    pub fn similar(&self, path: &Path, q: &Query) -> Result<Vec<SearchHit>> {
        Ok(search::run_similar(self, path, q)?.hits)
    }

    /// [`Engine::similar`] with the facets the query asked for.
    pub fn similar_search(&self, path: &Path, q: &Query) -> Result<SearchResult> {
        search::run_similar(self, path, q)
    }

    /// Gets ready to answer text queries at once (a server's start): opens the store, loads the
    /// text tower in the precision queries run at, checks it against the store's model and
    /// reads the score calibration. The vision tower still loads on the first image query.
    pub fn preload(&self) -> Result<()> {
        let store = self.store()?;
        let model = self.model(Towers::Text, Workload::Query)?;
        self.check_model(store.settings(), &model)?;
        self.calibration(store)?;
        Ok(())
    }

    /// The stored item with this key ([`SearchHit::key`]); `None` when there is none.
    pub fn item(&self, key: u64) -> Result<Option<ItemMeta>> {
        let store = self.store()?;
        for id in [key, item::sibling(key)] {
            if item::item_id(id) != key {
                continue;
            }
            if let Some(bytes) = store.get_meta(id)? {
                return ItemMeta::from_bytes(id, &bytes).map(Some);
            }
        }
        Ok(None)
    }

    /// The key of the stored item whose id ([`ItemMeta::id`]: an image's path, a passage's
    /// `path#chunk`, a product's record id) is `id`; the first catalog's record when several
    /// catalogs hold that product id. `None` when no item has it.
    pub fn item_key(&self, id: &str) -> Result<Option<u64>> {
        let store = self.store()?;
        if let Some((_, v)) = ingest::product_vectors(store, id)?.first() {
            return Ok(Some(item::item_id(*v)));
        }
        let file = id.rsplit_once('#').map_or(id, |(f, chunk)| {
            if chunk.bytes().all(|b| b.is_ascii_digit()) {
                f
            } else {
                id
            }
        });
        // The id as a file (an image), then the file of `path#chunk` (a passage).
        let mut candidates = vec![id];
        if file != id {
            candidates.push(file);
        }
        for candidate in candidates {
            for (k, _) in
                store.kv_scan_prefix(keys::NS_OWN, &keys::own_prefix(Path::new(candidate)))?
            {
                let Some((_, vid)) = keys::split_own_key(&k) else {
                    continue;
                };
                if let Some(bytes) = store.get_meta(vid)? {
                    if ItemMeta::from_bytes(vid, &bytes)?.id == id {
                        return Ok(Some(item::item_id(vid)));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Items similar to the stored item with this key: its own vectors are the query (a
    /// passage's, not its whole file's); the item and, unless [`Query::include_self`], its twins
    /// are left out. `None` when no item has the key.
    pub fn similar_item(&self, key: u64, q: &Query) -> Result<Option<SearchResult>> {
        search::run_similar_item(self, key, q)
    }

    /// A JPEG thumbnail of the stored item with this key (an image, or a product's image): EXIF
    /// orientation applied, the long side at most `max_side` pixels (at most
    /// [`crate::MAX_THUMBNAIL_SIDE`]), made from the file as it is now. `None` when no item has
    /// the key or the item has no picture (a passage, a product without an image). Only files
    /// the store names are read.
    pub fn thumbnail(&self, key: u64, max_side: u32) -> Result<Option<Vec<u8>>> {
        let Some(meta) = self.item(key)? else {
            return Ok(None);
        };
        let file = match (meta.kind, &meta.image) {
            (Kind::Image, _) => meta.file(),
            (Kind::Product, Some(img)) => PathBuf::from(img),
            _ => return Ok(None),
        };
        crate::thumbnail::make(&file, max_side).map(Some)
    }

    /// Groups of duplicate images in the store: byte-identical copies, and near-duplicates
    /// (image vectors at least `opts.threshold` apart by cosine; found with the ANN graph, a
    /// few neighbours per image, not all pairs). See [`crate::Duplicates`].
    pub fn duplicates(&self, opts: &crate::DupesOptions) -> Result<crate::Duplicates> {
        crate::dupes::find(self.store()?, opts)
    }

    /// The fields of the store's items (built-in `kind`, `path`, `id`, `title`, then the catalogs'
    /// and the images' attributes), with their types and counts: what filters, facets and
    /// sorting can name.
    pub fn fields(&self) -> Result<Vec<crate::FieldInfo>> {
        let store = self.store()?;
        Ok(self.attributes(store)?.field_infos())
    }

    /// Every stored vector, in key order, with its item and modality: `f(key, &item, modality,
    /// vector)`, the vector at full dimension as stored (f16, widened; L2-normalised). What an
    /// export to another system reads; `f` stops the walk by returning an error.
    pub fn for_each_vector(
        &self,
        mut f: impl FnMut(u64, &ItemMeta, Modality, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let store = self.store()?;
        let mut after = None;
        loop {
            let page = store.items_page(after, 4096)?;
            let Some(last) = page.last().map(|p| p.0) else {
                return Ok(());
            };
            for (id, bytes, vector) in page {
                let meta = ItemMeta::from_bytes(id, &bytes)?;
                f(id, &meta, item::modality_of(id), &vector)?;
            }
            after = Some(last);
        }
    }

    /// The content hash of every stored vector, by vector key: what an index run keys the
    /// reuse of a vector by ([`crate::text_content_hash`], [`crate::image_content_hash`] and
    /// the passages of text files), and what `embed-shard` writes beside each vector.
    pub fn content_hashes(&self) -> Result<std::collections::HashMap<u64, crate::ContentHash>> {
        let store = self.store()?;
        Ok(store
            .kv_scan_prefix(keys::NS_HASH, b"")?
            .into_iter()
            .filter_map(|(k, _)| Some((keys::id_suffix(&k)?, keys::to_hash(k.get(..32)?)?)))
            .collect())
    }

    /// An engine on the store `db` with this engine's model, device and precision (opened
    /// lazily, as [`Engine::open`] does): a scratch store beside a store-less job.
    pub fn with_store(&self, db: PathBuf) -> Result<Engine> {
        Engine::open(OpenOptions {
            db,
            model_dir: Some(self.model_dir()?),
            device: self.device_choice,
            precision: self.precision,
            download_progress: self.download_progress,
            notify: self.notify,
            resident_weights: self.resident_weights,
        })
    }

    /// Dimension of the model's embeddings, from its config (no weights loaded).
    pub fn embed_dim(&self) -> Result<usize> {
        Ok(model_config(&self.model_dir()?)?.embed_dim())
    }

    /// Raw embeddings of texts (as documents, or as search queries with the model's query
    /// instruction when `query`) and of image files, with only the towers they need loaded.
    /// Images are decoded as given (no EXIF orientation); a file that cannot be decoded fails the
    /// call, naming it, before anything is encoded.
    pub fn embed(&self, texts: &[&str], images: &[PathBuf], query: bool) -> Result<Embeddings> {
        let towers = match (texts.is_empty(), images.is_empty()) {
            (true, true) => return Ok(Embeddings::default()),
            (false, true) => Towers::Text,
            (true, false) => Towers::Vision,
            (false, false) => Towers::Both,
        };
        let model = self.model(towers, Workload::Embed)?;
        let decode = DecodeOptions::default();
        let mut pixels = Vec::with_capacity(images.len());
        for path in images {
            let bytes = crate::fsread::read_image_arg(path)?;
            let img = enc::preprocess::decode_rgb_named(&bytes, path, &decode)?;
            pixels.push(model.preprocessor().preprocess_rgb(&img));
        }
        let role = if query {
            TextRole::Query
        } else {
            TextRole::Document
        };
        let texts = if texts.is_empty() {
            Vec::new()
        } else {
            model.encode_texts_raw(texts, role)?
        };
        let images = if pixels.is_empty() {
            Vec::new()
        } else {
            model.encode_pixels_raw(&pixels)?
        };
        Ok(Embeddings { texts, images })
    }

    /// Verifies the whole store: every row's checksum, the graph, every item against its vector,
    /// the counts, and the engine's records (every vector owned by a file, every owned vector
    /// present). Takes the writer lock while it runs.
    pub fn check(&mut self) -> Result<CheckSummary> {
        self.release_store()?;
        integrity::check(&self.db).map_err(|e| self.map_index_error(e))
    }

    /// Rebuilds a damaged store from its intact rows (the damaged file is kept beside it as
    /// `FILE.damaged`). Files that lost an item are forgotten, so the next `index` of them
    /// encodes them again; the summary lists them.
    pub fn repair(&mut self) -> Result<RepairSummary> {
        self.release_store()?;
        *self
            .calibration
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = None;
        integrity::repair(&self.db).map_err(|e| self.map_index_error(e))
    }

    /// Closes this engine's handles on an existing store (for `check` and `repair`, which open
    /// the file themselves).
    fn release_store(&mut self) -> Result<()> {
        if !self.db.exists() {
            return Err(Error::NoStore(self.db.clone()));
        }
        self.writer = None;
        self.reader.take();
        Ok(())
    }

    fn map_index_error(&self, e: Error) -> Error {
        match e {
            Error::Index(i) => self.map_open_error(i),
            other => other,
        }
    }

    /// The model [`Self::embed`] and queries use (resolved as [`Self::model_dir`]), from its
    /// folder's config and cached content hash, without loading weights.
    pub fn model_info(&self) -> Result<ModelInfo> {
        let w = Self::settings_for_dir(&self.model_dir()?)?;
        Ok(ModelInfo {
            name: w.settings.model_name,
            fingerprint: w.settings.model_fingerprint,
            legacy_fingerprint: w.legacy_fingerprint,
            dim: w.settings.dim,
        })
    }

    /// Counts by kind, model identity, dimensions and file size of the store.
    pub fn stats(&self) -> Result<Stats> {
        let store = self.store()?;
        let settings = store.settings().clone();
        let store_bytes = std::fs::metadata(&self.db).map(|m| m.len()).unwrap_or(0);
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
        let file_rows = store.kv_scan_prefix(keys::NS_FILES, b"")?;
        let files = file_rows.len();
        let mut files_by_kind = std::collections::BTreeMap::new();
        for (_, v) in &file_rows {
            let kind = serde_json::from_slice::<keys::FileRecord>(v)
                .map(|r| r.kind)
                .unwrap_or_else(|_| "unknown".into());
            *files_by_kind.entry(kind).or_default() += 1;
        }
        Ok(Stats {
            model_dir: settings.model_dir,
            files_by_kind,
            store: self.db.clone(),
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

/// The model folder's `config.json`.
fn model_config(dir: &Path) -> Result<enc::ClipConfig> {
    Ok(enc::ClipConfig::load(&dir.join("config.json"))?)
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

/// `Engine` is shared across threads (`Arc<Engine>`): a compile-time check.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<Engine>();
};

/// The value in `cell` when it was built at the store's current generation, else a new one.
fn cached_by_generation<T>(
    cell: &Mutex<Option<(u64, Arc<T>)>>,
    store: &Store,
    load: impl FnOnce(&Store) -> Result<T>,
) -> Result<Arc<T>> {
    let gen = store.generation()?;
    let mut cached = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((g, t)) = cached.as_ref() {
        if *g == gen {
            return Ok(t.clone());
        }
    }
    let t = Arc::new(load(store)?);
    *cached = Some((gen, t.clone()));
    Ok(t)
}
