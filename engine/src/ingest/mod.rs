//! An index run, in its stages (one module each):
//!
//! 1. [`plan`] (calling thread): walk the roots, compare size + mtime with the `files` records,
//!    expand catalogs into records; files under the roots that are gone are scheduled for removal.
//! 2. [`prepare`] (a private rayon pool), per item kind: read, hash, decode + preprocess images,
//!    chunk text, assemble products. Content already in the store (hash) is not decoded at all.
//! 3. [`encode`] (calling thread): each batch's vectors come from the store (same content), from
//!    an earlier item of the batch, or from the model, while the pool prepares the next batches
//!    (a bounded channel, [`pipeline`]).
//! 4. [`commit`]: each batch is written in one transaction together with the engine's key-value
//!    records, so a kill loses at most the batch in flight; removals of deleted files go in the
//!    last transaction.

mod commit;
mod encode;
mod pipeline;
mod plan;
mod prepare;
mod shard;

pub use shard::{image_content_hash, text_content_hash, ContentHash, EncodedInput, Precomputed};

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::catalog::Record;
use crate::chunk::DEFAULT_MAX_TOKENS;
use crate::enc::ClipModel;
use crate::error::Result;
use crate::fsread;
use crate::idx::{Batch, Store};
use crate::item::{self, Kind, Modality};
use crate::keys::{self, NS_FILES, NS_OWN};
use crate::walk::{self, FileKind};
pub(crate) use plan::Plan;

pub(crate) use commit::delete_owned;

/// Options of an indexing run.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Extra gitignore-style patterns to skip (e.g. `*.tmp`, `drafts/`; `!pattern` re-includes
    /// what an earlier pattern excluded). Blank patterns, comments and a leading negation are
    /// refused with [`crate::Error::InvalidArgument`] before anything changes.
    pub excludes: Vec<String>,
    /// Allow a run to remove more than half (and at least 100) of the files indexed under a root
    /// because they are gone or excluded. Without it such a run changes nothing and fails with
    /// [`crate::Error::MassRemoval`], naming what would go. Default off.
    pub prune: bool,
    /// Index a camera RAW file also when a processed image of the same name sits beside it
    /// (`IMG_1234.CR2` + `IMG_1234.JPG`). Default off: only the processed image, as rclip does.
    pub raw_siblings: bool,
    /// Images larger than this many megapixels are skipped (checked before decoding). Default 100.
    pub max_megapixels: Option<f64>,
    /// Image files larger than this many bytes are skipped (before reading). Default 256 MiB.
    pub max_image_bytes: u64,
    /// Text files larger than this many bytes are skipped (before reading). Default 64 MiB.
    pub max_text_bytes: u64,
    /// Catalog lines (JSONL) and records (CSV) longer than this are skipped with a problem,
    /// without being held in memory. Default 1 MiB.
    pub max_record_bytes: usize,
    /// The folder a catalog's image paths must stay inside; `None` = each catalog's own folder.
    /// A record whose image lies outside (`../../etc/passwd`, an absolute path elsewhere, a
    /// symlink out) keeps its text and loses the image, with a problem naming it.
    pub catalog_root: Option<PathBuf>,
    /// Types of CSV columns, overriding the typing rule ([`crate::attrs::type_csv_cell`]) and
    /// the header's `name:type` suffix (CLI: `--csv-types price=number,sku=string`).
    pub csv_types: std::collections::HashMap<String, crate::AttrType>,
    /// Vectors per model batch and per commit. `0` (the default) means 32 on the CPU and 64 on a
    /// GPU, where a batch of 64 images at 512 px is what keeps the device busy.
    pub batch_size: usize,
    /// Threads that read, decode and preprocess (0 = one per core).
    pub threads: usize,
    /// Maximum tokens per text chunk (the encoder's window is 512). Default 480.
    pub max_tokens: usize,
    /// Sleep after each commit (testing interrupted runs; normally `None`).
    pub batch_pause: Option<Duration>,
    /// Decode large JPEGs at a reduced DCT scale (still ≥ 2× the model's input size) before the
    /// exact resize: several times faster on big photos, not bit-exact with the reference
    /// (`docs/gpu.md` measures the cost). `None` (the default) means on when the model runs on a
    /// GPU, whose encoder would otherwise wait for the CPU's decoding, and off on the CPU, where
    /// the encoder is the slow stage and the exact decode costs no time.
    pub fast_jpeg: Option<bool>,
    /// Vectors encoded elsewhere (`jsearch embed-shard`), by content hash: the run takes every
    /// vector from here or from the store and loads no model tower; an input that has none is
    /// an error naming how many and the first. They must come from the store's model.
    pub precomputed: Option<std::sync::Arc<Precomputed>>,
    /// With [`IndexOptions::precomputed`]: encode the inputs it has no vector for (loading the
    /// towers they need) instead of failing the run. What `embed-shard` over files resumes with.
    pub encode_missing: bool,
}

impl IndexOptions {
    pub(crate) fn image_limit(&self) -> fsread::Limit {
        fsread::Limit {
            bytes: self.max_image_bytes,
            what: "image files",
            flag: Some("--max-image-mb"),
        }
    }

    pub(crate) fn text_limit(&self) -> fsread::Limit {
        fsread::Limit {
            bytes: self.max_text_bytes,
            what: "text files",
            flag: Some("--max-text-mb"),
        }
    }
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            excludes: Vec::new(),
            prune: false,
            raw_siblings: false,
            max_megapixels: Some(100.0),
            max_image_bytes: fsread::DEFAULT_MAX_IMAGE_BYTES,
            max_text_bytes: fsread::DEFAULT_MAX_TEXT_BYTES,
            max_record_bytes: fsread::DEFAULT_MAX_RECORD_BYTES,
            catalog_root: None,
            csv_types: Default::default(),
            batch_size: 0,
            threads: 0,
            max_tokens: DEFAULT_MAX_TOKENS,
            batch_pause: None,
            fast_jpeg: None,
            precomputed: None,
            encode_missing: false,
        }
    }
}

/// What happens during a run, for progress bars and logs.
#[derive(Debug, Clone)]
pub enum IndexEvent {
    /// Planning done: `units` work units (files, catalog records) to process.
    Planned {
        /// Files to (re-)index.
        files: usize,
        /// Work units (a catalog contributes one per record).
        units: usize,
        /// Unchanged files skipped.
        unchanged: usize,
        /// Files to remove (deleted under the roots).
        to_remove: usize,
    },
    /// A batch was committed.
    Progress {
        /// Units done so far.
        done: usize,
        /// Units in total.
        total: usize,
        /// Vectors run through the model so far.
        encoded: usize,
        /// Vectors reused from the store so far.
        reused: usize,
    },
    /// A file (or a record of a catalog) could not be used; the run goes on.
    Problem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Time spent per stage, in seconds. `read`, `decode` and `preprocess` are summed over the worker
/// threads (CPU time); `encode`, `store` and `wait` are wall time of the encoding thread.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    /// Reading files and hashing them.
    pub read: f64,
    /// Image decoding (incl. EXIF orientation), text reading and chunking.
    pub decode: f64,
    /// Resize, crop, normalise.
    pub preprocess: f64,
    /// The model.
    pub encode: f64,
    /// Look-ups and commits.
    pub store: f64,
    /// The encoding thread waiting for prepared inputs (the pipeline starving the model).
    pub wait: f64,
}

/// Summary of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexSummary {
    /// New files indexed.
    pub indexed: usize,
    /// Changed files re-indexed.
    pub updated: usize,
    /// Unchanged files skipped.
    pub skipped: usize,
    /// Files removed (deleted under the roots).
    pub removed: usize,
    /// Files that failed (reported through [`IndexEvent::Problem`]).
    pub failed: usize,
    /// Items written (images, passages, products).
    pub items: usize,
    /// Vectors computed by the model.
    pub encoded: usize,
    /// Vectors reused from the store (same content: renamed, duplicate or unchanged record).
    pub reused: usize,
    /// Vectors taken from [`IndexOptions::precomputed`].
    pub precomputed: usize,
    /// Problems reported (files and catalog records).
    pub problems: usize,
    /// Wall time of the run in seconds.
    pub elapsed: f64,
    /// Time per stage.
    pub times: StageTimes,
}

/// A file of the run (an image, a text file or a catalog) and what the store will record of it.
struct FileJob {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    kind: FileKind,
    /// The file was indexed before (changed since).
    update: bool,
    /// Images a catalog refers to, with their size and mtime (a change re-indexes the catalog).
    deps: Vec<(String, u64, i128)>,
}

/// What one unit of work prepares.
enum Work {
    Image,
    /// A whole text file.
    Text,
    /// Bytes `start..end` of a text file larger than [`TEXT_PART_BYTES`] (cut after a line
    /// break), part number `part`: big files are prepared part by part, so memory follows the
    /// part, not the file.
    TextPart {
        start: u64,
        end: u64,
        part: u32,
    },
    Record(Box<Record>),
}

/// Text files above this size are split into parts of about this size (after a line break).
pub(crate) const TEXT_PART_BYTES: u64 = 4 << 20;

/// One unit of work: a file, or one record of a catalog.
struct Unit {
    /// Index into the run's files.
    file: usize,
    work: Work,
}

/// What an index run over `roots` will do (nothing is encoded or written yet).
pub(crate) fn plan_paths(
    store: &mut Store,
    roots: &[PathBuf],
    opts: &IndexOptions,
    on_event: &mut dyn FnMut(IndexEvent),
) -> Result<Plan> {
    plan::plan(store, roots, opts, on_event)
}

/// The plan of indexing `records` as the catalog `source`.
pub(crate) fn plan_records(store: &Store, source: &str, records: Vec<Record>) -> Result<Plan> {
    let path = PathBuf::from(source);
    let update = store.kv_get(NS_FILES, &keys::path_bytes(&path))?.is_some();
    let job = FileJob {
        path,
        size: 0,
        mtime_ns: 0,
        kind: FileKind::Catalog,
        update,
        deps: Vec::new(),
    };
    let units = records
        .into_iter()
        .map(|r| Unit {
            file: 0,
            work: Work::Record(Box::new(r)),
        })
        .collect();
    Ok(Plan {
        files: vec![job],
        units,
        remove: Vec::new(),
        skipped: 0,
        failed: 0,
        problems: 0,
    })
}

/// Encodes and writes what `plan` lists (`model` must have the towers of [`Plan::towers`]).
pub(crate) fn run_plan(
    store: &mut Store,
    model: &ClipModel,
    model_dir: &std::path::Path,
    plan: Plan,
    opts: &IndexOptions,
    on_event: &mut dyn FnMut(IndexEvent),
) -> Result<IndexSummary> {
    pipeline::run(store, model, model_dir, plan, opts, on_event)
}

impl Plan {
    /// The towers this plan's units need: text for text files and records with text, vision
    /// for images and records with an image (none when there is nothing to encode).
    pub(crate) fn towers(&self) -> jsearch_encoders::Towers {
        use jsearch_encoders::Towers;
        let text = self.units.iter().any(|u| match &u.work {
            Work::Text | Work::TextPart { .. } => true,
            Work::Record(r) => r.embed_text().is_some(),
            Work::Image => false,
        });
        let vision = self.units.iter().any(|u| match &u.work {
            Work::Image => true,
            Work::Record(r) => r.image.is_some(),
            _ => false,
        });
        match (text, vision) {
            (true, true) => Towers::Both,
            (false, true) => Towers::Vision,
            (true, false) => Towers::Text,
            (false, false) => Towers::None,
        }
    }
}

/// What [`crate::Engine::remove`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Removal {
    /// Files removed from the store.
    pub removed: usize,
    /// Products removed by their id (from catalogs that stay indexed; the next index run of a
    /// changed catalog adds them again if they are still in it).
    pub products: usize,
    /// Paths given that are not (or no longer) in the store: reported and skipped, so a killed
    /// `rm` run again finishes what it started.
    pub not_indexed: Vec<PathBuf>,
}

/// Removes files, or every file under folders. Paths that are not in the store are skipped and
/// listed; the rest is removed (in commits of 256 files, so a killed run resumes).
pub(crate) fn remove_paths(store: &mut Store, paths: &[PathBuf]) -> Result<Removal> {
    let mut targets: Vec<PathBuf> = Vec::new();
    let mut not_indexed = Vec::new();
    let mut products: Vec<(PathBuf, u64)> = Vec::new();
    let mut all_catalogs: Option<Vec<PathBuf>> = None;
    for p in paths {
        let abs = walk::absolute_lenient(p);
        let mut hits = Vec::new();
        if store.kv_get(NS_FILES, &keys::path_bytes(&abs))?.is_some() {
            hits.push(abs.clone());
        } else if store.kv_get(NS_FILES, &keys::path_bytes(p))?.is_some() {
            // Sources of `index_records` are stored as given.
            hits.push(p.clone());
        }
        let mut prefix = keys::path_bytes(&abs);
        prefix.push(std::path::MAIN_SEPARATOR as u8);
        for (k, _) in store.kv_scan_prefix(NS_FILES, &prefix)? {
            hits.push(keys::path_from_bytes(&k));
        }
        if hits.is_empty() {
            // A product id? (The catalogs are listed once per call.)
            if all_catalogs.is_none() {
                all_catalogs = Some(catalogs(store)?);
            }
            let found = match (p.to_str(), &all_catalogs) {
                (Some(id), Some(c)) => product_vectors_in(store, c, id)?,
                _ => Vec::new(),
            };
            if found.is_empty() {
                not_indexed.push(abs);
            }
            products.extend(found);
        }
        targets.extend(hits);
    }
    targets.sort();
    targets.dedup();
    // Products by id, unless their whole catalog goes too.
    products.retain(|(catalog, _)| targets.binary_search(catalog).is_err());
    let removed_products: HashSet<u64> =
        products.iter().map(|(_, id)| item::item_id(*id)).collect();
    if !products.is_empty() {
        let mut batch = Batch::new();
        let mut kw = crate::keyword::KeywordWrites::default();
        let mut catalogs: Vec<&PathBuf> = products.iter().map(|(c, _)| c).collect();
        catalogs.sort();
        catalogs.dedup();
        for catalog in catalogs {
            let keep: HashSet<u64> = store
                .kv_scan_prefix(NS_OWN, &keys::own_prefix(catalog))?
                .iter()
                .filter_map(|(k, _)| keys::split_own_key(k).map(|(_, id)| id))
                .filter(|id| !removed_products.contains(&item::item_id(*id)))
                .collect();
            commit::delete_owned(store, &mut batch, &mut kw, catalog, Some(&keep))?;
        }
        kw.finish(store, &mut batch)?;
        store.commit(batch)?;
    }
    for chunk in targets.chunks(256) {
        let mut batch = Batch::new();
        let mut kw = crate::keyword::KeywordWrites::default();
        for p in chunk {
            commit::delete_owned(store, &mut batch, &mut kw, p, None)?;
            batch.kv_delete(NS_FILES, keys::path_bytes(p));
        }
        kw.finish(store, &mut batch)?;
        store.commit(batch)?;
    }
    Ok(Removal {
        removed: targets.len(),
        products: removed_products.len(),
        not_indexed,
    })
}

/// The stored vectors of the product `id`, in every indexed catalog: `(catalog, vector id)`.
pub(crate) fn product_vectors(store: &Store, id: &str) -> Result<Vec<(PathBuf, u64)>> {
    product_vectors_in(store, &catalogs(store)?, id)
}

/// The indexed catalogs (one scan of the file records).
fn catalogs(store: &Store) -> Result<Vec<PathBuf>> {
    Ok(store
        .kv_scan_prefix(NS_FILES, b"")?
        .into_iter()
        .filter(|(_, v)| {
            serde_json::from_slice::<keys::FileRecord>(v).is_ok_and(|r| r.kind == "catalog")
        })
        .map(|(k, _)| keys::path_from_bytes(&k))
        .collect())
}

/// [`product_vectors`] among the given catalogs.
fn product_vectors_in(
    store: &Store,
    catalogs: &[PathBuf],
    id: &str,
) -> Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    if id.is_empty() {
        return Ok(out);
    }
    for catalog in catalogs {
        let key = item::path_key("cat:", catalog, &format!("#{id}"));
        for m in [Modality::Text, Modality::Image] {
            let vid = item::vector_id(&key, Kind::Product, m);
            if store
                .kv_get(NS_OWN, &keys::own_key(catalog, vid))?
                .is_some()
            {
                out.push((catalog.clone(), vid));
            }
        }
    }
    Ok(out)
}
