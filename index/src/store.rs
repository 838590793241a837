//! The store: one redb file holding settings, items, vectors (heads and tails), the graph and caller key-value tables.

use crate::error::{IndexError, Result};
use crate::graph::{AnnGraph, GraphParams, Hnsw};
use crate::packed;
use crate::settings::{v1_vectors_per_chunk, HnswParams, Layout, StoreSettings};
use crate::sketch::{Sketch, Sketches};
use crate::vecmath::{self, F16};
use rayon::prelude::*;
use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, TableDefinition, TableError, WriteTransaction,
};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Format version written into every store. Version 1 stores (whole f16 vectors, 7 per value)
/// are upgraded in place when opened for writing; other versions are refused.
pub const FORMAT_VERSION: u32 = 2;

/// Stores with at most this many live items are searched exactly (brute force) instead of through the graph.
pub const EXACT_SEARCH_BELOW: usize = 2048;

/// Standard deviations of sketch error a re-rank candidate may be below the k-th exact score and
/// still be read (see `Sketches::margin`).
const RERANK_Z: f32 = 4.0;

/// How many commits of graph changes are kept for readers in other processes to catch up
/// incrementally; a reader further behind reloads the whole graph.
const GRAPH_LOG_KEEP: u64 = 256;

/// redb page cache (MiB) of a writer unless `JSEARCH_STORE_CACHE_MIB` says otherwise (it also
/// buffers the pages of a commit).
const CACHE_MIB: usize = 256;
/// redb page cache (MiB) of a reader unless `JSEARCH_STORE_CACHE_MIB` says otherwise. A search
/// reads about `k'` tails from the file, at random: a cache that is a small part of the
/// vectors barely raises the hit rate, so keep it small and the serving memory the graph's.
const READ_CACHE_MIB: usize = 64;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// id -> node (u32 LE) + caller metadata blob.
const ITEMS: TableDefinition<u64, &[u8]> = TableDefinition::new("items");
/// node -> id (u64 LE) + flags (u8, bit 0 = tombstone) + links (see `Hnsw::encode_node`).
const NODES: TableDefinition<u32, &[u8]> = TableDefinition::new("nodes");
/// chunk -> `heads_per_chunk` heads packed by node number: the head's norm (f32 LE), then the
/// head normalised (the graph vector, `ann_dim` f16 LE).
const HEADS: TableDefinition<u32, &[u8]> = TableDefinition::new("heads");
/// chunk -> `tails_per_chunk` tails packed by node number: coordinates `ann_dim..dim` of the
/// normalised vector, f16 LE. A value fits one 4 KiB page: a re-rank read is one page.
const TAILS: TableDefinition<u32, &[u8]> = TableDefinition::new("tails");
/// Format version 1: chunk -> whole f16 vectors (read once, to upgrade).
const VECTORS_V1: TableDefinition<u32, &[u8]> = TableDefinition::new("vectors");
/// generation -> nodes (u32 LE) whose records that commit changed.
const GRAPH_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("graph_log");

const FLAG_DELETED: u8 = 1;

/// A search result: caller id and cosine similarity at full dimension.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// The caller's id.
    pub id: u64,
    /// Cosine similarity of the (normalised) query and the stored full vector: its head's norm
    /// times the dot product with the graph's f16 head, plus the dot product with its f16 tail.
    pub score: f32,
}

/// Search parameters.
#[derive(Clone, Copy, Default)]
pub struct SearchParams<'a> {
    /// Beam width of the graph search; 0 uses the store's `hnsw.ef_search`. Raised to the candidate count.
    pub ef: usize,
    /// Candidates re-ranked exactly at full dimension (k'): the best of the graph's beam by
    /// their in-memory sketch (head norm + 4-bit tail), whose tails are then read from
    /// the file. `None` uses [`default_candidates`]`(k)`. Raised to `k`.
    pub candidates: Option<usize>,
    /// Keep only ids for which this returns true. The graph search walks through rejected nodes,
    /// and falls back to an exact scan when the graph yields fewer than `k` accepted items.
    pub filter: Option<&'a (dyn Fn(u64) -> bool + Sync)>,
    /// Read every one of the `candidates` instead of skipping those whose sketch score cannot
    /// plausibly reach the top `k` (for checks and benchmarks; slower, same results but for rare
    /// near-ties).
    pub exhaustive_rerank: bool,
}

impl std::fmt::Debug for SearchParams<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchParams")
            .field("ef", &self.ef)
            .field("candidates", &self.candidates)
            .field("filter", &self.filter.map(|_| "<fn>"))
            .field("exhaustive_rerank", &self.exhaustive_rerank)
            .finish()
    }
}

/// Default cap on the candidates re-ranked at full dimension for a top-`k` search: the best of
/// the graph's beam by sketch score, of which only those that could still make the top `k` are
/// read from the file (about `k + 2` reads a query at 1M vectors; `docs/index.md`).
pub fn default_candidates(k: usize) -> usize {
    (4 * k).max(40)
}

enum KvOp {
    Put(String, Vec<u8>, Vec<u8>),
    Delete(String, Vec<u8>),
}

/// One atomic unit of writes: upserts, deletes and caller key-value changes, committed together.
#[derive(Default)]
pub struct Batch {
    upserts: Vec<(u64, Vec<f32>, Vec<u8>)>,
    deletes: Vec<u64>,
    kv: Vec<KvOp>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Insert or replace item `id` with a full-dimension vector (normalised by the store) and an
    /// opaque metadata blob. A replaced vector never appears in results again.
    pub fn upsert(&mut self, id: u64, vector: Vec<f32>, meta: Vec<u8>) {
        self.upserts.push((id, vector, meta));
    }
    /// Delete item `id` (no-op if absent).
    pub fn delete(&mut self, id: u64) {
        self.deletes.push(id);
    }
    /// Put `key -> value` into the caller namespace `ns`.
    pub fn kv_put(&mut self, ns: &str, key: Vec<u8>, value: Vec<u8>) {
        self.kv.push(KvOp::Put(ns.to_string(), key, value));
    }
    /// Delete `key` from the caller namespace `ns` (no-op if absent).
    pub fn kv_delete(&mut self, ns: &str, key: Vec<u8>) {
        self.kv.push(KvOp::Delete(ns.to_string(), key));
    }
    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len() + self.kv.len()
    }
    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A re-rank candidate: its sketch score and how far the exact score may plausibly lie above it.
struct Candidate {
    score: f32,
    margin: f32,
    node: u32,
}

/// Graph, id maps and tombstones as loaded in memory.
struct State {
    graph: Hnsw,
    /// Per node: head norm + 4-bit tail, to choose which candidates to re-rank from the file.
    sketches: Sketches,
    ids: Vec<u64>,
    deleted: Vec<bool>,
    by_id: HashMap<u64, u32>,
    tombstones: usize,
    generation: u64,
}

enum Db {
    Rw(Database),
    Ro(ReadOnlyDatabase),
}

impl Db {
    fn read(&self) -> Result<ReadTransaction> {
        Ok(match self {
            Db::Rw(d) => d.begin_read()?,
            Db::Ro(d) => d.begin_read()?,
        })
    }
}

/// Sizes of what a store holds, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreStats {
    /// Live items.
    pub live: usize,
    /// Graph nodes (live + tombstoned).
    pub nodes: usize,
    /// Tombstoned graph nodes.
    pub tombstones: usize,
    /// Bytes of the graph in memory (f16 vectors + links + id maps).
    pub graph_memory_bytes: usize,
    /// Bytes of the re-rank sketches in memory (head norm + 4-bit tail per node).
    pub sketch_memory_bytes: usize,
    /// Size of the file on disk.
    pub file_bytes: u64,
    /// Tail chunks read from the file by searches' re-ranks since the store was opened
    /// (one read, one 4 KiB page, serves every candidate in the chunk).
    pub rerank_reads: u64,
}

/// A vector store in one redb file. See the crate docs.
pub struct Store {
    path: PathBuf,
    db: Db,
    settings: StoreSettings,
    /// Packing of the heads and tails tables.
    layout: Layout,
    state: RwLock<State>,
    /// Vector chunks read by searches' re-ranks since the store was opened.
    rerank_reads: std::sync::atomic::AtomicU64,
}

fn is_busy(e: &DatabaseError) -> bool {
    matches!(
        e,
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch
    )
}

fn builder(default_mib: usize) -> redb::Builder {
    let mut b = redb::Builder::new();
    let mib = std::env::var("JSEARCH_STORE_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default_mib);
    b.set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .set_cache_size(mib << 20);
    b
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).map(|s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

fn kv_table(ns: &str) -> Result<String> {
    if ns.is_empty()
        || ns.len() > 64
        || !ns
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
    {
        return Err(IndexError::InvalidNamespace(ns.to_string()));
    }
    Ok(format!("kv:{ns}"))
}

/// Read-side view of the meta table (works on read and write transactions).
struct Meta(HashMap<String, Vec<u8>>);

impl Meta {
    fn read<T: ReadableTable<&'static str, &'static [u8]>>(t: &T) -> Result<Self> {
        let mut m = HashMap::new();
        for r in t.iter()? {
            let (k, v) = r?;
            m.insert(k.value().to_string(), v.value().to_vec());
        }
        Ok(Meta(m))
    }
    fn u64(&self, k: &str) -> Option<u64> {
        self.0.get(k).and_then(|v| u64_at(v, 0))
    }
    fn str(&self, k: &str) -> Option<String> {
        self.0
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    fn entry(&self) -> Option<(u32, u8)> {
        self.0
            .get("entry")
            .and_then(|v| Some((u32_at(v, 0)?, *v.get(4)?)))
    }
}

fn put_u64(t: &mut redb::Table<&str, &[u8]>, k: &str, v: u64) -> Result<()> {
    t.insert(k, v.to_le_bytes().as_slice())?;
    Ok(())
}

/// A row of the heads table: the head's norm (f32 LE), then the graph vector (f16 LE).
fn head_row(norm: f32, ann: &[F16], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&norm.to_le_bytes());
    vecmath::f16_to_bytes(ann, out);
}

/// The graph vector and the sketch of a node, from its rows of the heads and tails tables.
fn from_rows(sketcher: &Sketches, head: &[u8], tail: &[u8]) -> (Vec<F16>, Sketch) {
    let mut ann = Vec::with_capacity(head.len().saturating_sub(4) / 2);
    vecmath::f16_from_bytes(head.get(4..).unwrap_or(&[]), &mut ann);
    let norm = head
        .get(..4)
        .map_or(0.0, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut t = Vec::with_capacity(tail.len() / 2);
    vecmath::f16_from_bytes(tail, &mut t);
    (ann, sketcher.encode_tail(norm, &vecmath::from_f16(&t)))
}

/// Writers appending heads and tails at node `start`.
fn packed_writers(
    heads: &redb::Table<u32, &[u8]>,
    tails: &redb::Table<u32, &[u8]>,
    start: u32,
    l: Layout,
    path: &Path,
) -> Result<(packed::Writer, packed::Writer)> {
    Ok((
        packed::Writer::resume(heads, start, l.heads_per_chunk, l.head_bytes, path)?,
        packed::Writer::resume(tails, start, l.tails_per_chunk, l.tail_bytes, path)?,
    ))
}

/// Validated, converted upsert.
struct Prepared {
    id: u64,
    /// Coordinates `ann_dim..` of the normalised vector in f16 (its head is `ann` times the
    /// sketch's head norm).
    tail: Vec<F16>,
    ann: Vec<F16>,
    sketch: Sketch,
    meta: Vec<u8>,
}

impl Store {
    /// Open the store at `path` for reading and writing, creating it if absent.
    ///
    /// An existing store must have this crate's format version, the same model identity
    /// (name and fingerprint) and the same dimensions; its stored graph parameters are kept.
    /// Fails with [`IndexError::Busy`] when another process (or handle) has it open for writing.
    pub fn open(path: &Path, settings: StoreSettings) -> Result<Store> {
        settings.validate()?;
        let db = builder(CACHE_MIB).create(path).map_err(|e| {
            if is_busy(&e) {
                IndexError::Busy {
                    path: path.to_path_buf(),
                }
            } else {
                e.into()
            }
        })?;
        Self::upgrade_v1(&db, path, &settings)?;
        let txn = db.begin_write()?;
        let existing = {
            let t = txn.open_table(META)?;
            Meta::read(&t)?
        };
        let settings = if existing.0.is_empty() {
            Self::init_tables(&txn, &settings)?;
            txn.commit()?;
            settings
        } else {
            drop(txn);
            let stored = Self::settings_from_meta(path, &existing)?;
            Self::check_same_model(path, &stored, &settings)?;
            StoreSettings {
                compact_threshold: settings.compact_threshold,
                ..stored
            }
        };
        Self::finish_open(path, Db::Rw(db), settings)
    }

    /// Open an existing store for reading only. Several readers (in any processes) may run beside
    /// one writer; each search sees the latest committed state (the graph catches up with the
    /// writer's commits incrementally).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        if !path.exists() {
            return Err(IndexError::NotAStore {
                path: path.to_path_buf(),
                reason: "file does not exist".into(),
            });
        }
        let db = builder(READ_CACHE_MIB).open_read_only(path).map_err(|e| {
            if is_busy(&e) {
                IndexError::Busy {
                    path: path.to_path_buf(),
                }
            } else {
                e.into()
            }
        })?;
        let txn = db.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(t) => Meta::read(&t)?,
            Err(TableError::TableDoesNotExist(_)) => Meta(HashMap::new()),
            Err(e) => return Err(e.into()),
        };
        drop(txn);
        let settings = Self::settings_from_meta(path, &meta)?;
        Self::finish_open(path, Db::Ro(db), settings)
    }

    fn finish_open(path: &Path, db: Db, settings: StoreSettings) -> Result<Store> {
        let layout = Layout::new(settings.dim, settings.ann_dim);
        let empty = Self::empty_state(&settings);
        let store = Store {
            path: path.to_path_buf(),
            db,
            settings,
            layout,
            state: RwLock::new(empty),
            rerank_reads: Default::default(),
        };
        let txn = store.db.read()?;
        let st = store.load_state(&txn)?;
        drop(txn);
        *store.state.write().unwrap_or_else(|e| e.into_inner()) = st;
        Ok(store)
    }

    fn graph_params(s: &StoreSettings) -> GraphParams {
        GraphParams {
            m: s.hnsw.m,
            ef_construction: s.hnsw.ef_construction,
            seed: 0x6a73_6561_7263_6821,
        }
    }

    fn empty_state(s: &StoreSettings) -> State {
        State {
            graph: Hnsw::new(s.ann_dim, Self::graph_params(s)),
            sketches: Sketches::new(s.dim, s.ann_dim),
            ids: Vec::new(),
            deleted: Vec::new(),
            by_id: HashMap::new(),
            tombstones: 0,
            generation: 0,
        }
    }

    fn init_tables(txn: &WriteTransaction, s: &StoreSettings) -> Result<()> {
        {
            let mut m = txn.open_table(META)?;
            m.insert(
                "format_version",
                (FORMAT_VERSION as u64).to_le_bytes().as_slice(),
            )?;
            m.insert("model_name", s.model_name.as_bytes())?;
            m.insert("model_fingerprint", s.model_fingerprint.as_bytes())?;
            put_u64(&mut m, "dim", s.dim as u64)?;
            put_u64(&mut m, "ann_dim", s.ann_dim as u64)?;
            put_u64(&mut m, "hnsw_m", s.hnsw.m as u64)?;
            put_u64(
                &mut m,
                "hnsw_ef_construction",
                s.hnsw.ef_construction as u64,
            )?;
            put_u64(&mut m, "hnsw_ef_search", s.hnsw.ef_search as u64)?;
            let layout = Layout::new(s.dim, s.ann_dim);
            put_u64(&mut m, "heads_per_chunk", layout.heads_per_chunk as u64)?;
            put_u64(&mut m, "tails_per_chunk", layout.tails_per_chunk as u64)?;
            put_u64(&mut m, "next_node", 0)?;
            put_u64(&mut m, "generation", 0)?;
            put_u64(&mut m, "live", 0)?;
            put_u64(&mut m, "tombstones", 0)?;
        }
        txn.open_table(ITEMS)?;
        txn.open_table(NODES)?;
        txn.open_table(HEADS)?;
        txn.open_table(TAILS)?;
        txn.open_table(GRAPH_LOG)?;
        Ok(())
    }

    /// Rewrite a format version 1 store (whole f16 vectors, several per value) as version 2
    /// (heads and tails tables) in one write transaction: if it is interrupted, the file is
    /// still the version 1 store it was. A no-op for any other store.
    fn upgrade_v1(db: &Database, path: &Path, requested: &StoreSettings) -> Result<()> {
        let txn = db.begin_write()?;
        let meta = Meta::read(&txn.open_table(META)?)?;
        if meta.u64("format_version") != Some(1) {
            return Ok(());
        }
        // Only for the model that made it: another model's caller gets the same refusal as
        // with a current store, and the file stays as it was.
        let stored = Self::settings_fields(path, &meta)?;
        Self::check_same_model(path, &stored, requested)?;
        let not_store = |reason: String| IndexError::NotAStore {
            path: path.to_path_buf(),
            reason,
        };
        let get = |k: &str| {
            meta.u64(k)
                .ok_or_else(|| not_store(format!("meta key {k} missing")))
        };
        let (dim, ann_dim) = (stored.dim, stored.ann_dim);
        let per_v1 = v1_vectors_per_chunk(dim);
        if get("vectors_per_chunk")? != per_v1 as u64 {
            return Err(not_store("unexpected vector chunk size".into()));
        }
        let next = get("next_node")? as u32;
        let sketcher = Sketches::new(dim, ann_dim);
        let layout = Layout::new(dim, ann_dim);
        {
            let old = txn.open_table(VECTORS_V1)?;
            let mut rows = packed::Reader::new(&old, per_v1, 2 * dim, "vector")?;
            let mut heads = txn.open_table(HEADS)?;
            let mut tails = txn.open_table(TAILS)?;
            let (mut hw, mut tw) = packed_writers(&heads, &tails, 0, layout, path)?;
            let (mut raw, mut full, mut head) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..next {
                raw.clear();
                rows.take(1, &mut raw, path)?;
                vecmath::f16_from_bytes(&raw, &mut full);
                let (ann, sketch) = sketcher.derive(&full);
                head_row(sketch.head_norm(), &ann, &mut head);
                hw.push(&mut heads, &head)?;
                tw.push(&mut tails, &raw[2 * ann_dim..])?;
            }
            hw.finish(&mut heads)?;
            tw.finish(&mut tails)?;
        }
        txn.delete_table(VECTORS_V1)?;
        {
            let mut m = txn.open_table(META)?;
            m.remove("vectors_per_chunk")?;
            put_u64(&mut m, "heads_per_chunk", layout.heads_per_chunk as u64)?;
            put_u64(&mut m, "tails_per_chunk", layout.tails_per_chunk as u64)?;
            put_u64(&mut m, "format_version", FORMAT_VERSION as u64)?;
        }
        txn.commit()?;
        Ok(())
    }

    fn settings_from_meta(path: &Path, m: &Meta) -> Result<StoreSettings> {
        let not_store = |reason: &str| IndexError::NotAStore {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let Some(v) = m.u64("format_version") else {
            return Err(not_store("no jsearch format version in the file"));
        };
        if v == 1 {
            return Err(IndexError::UpgradeNeeded {
                path: path.to_path_buf(),
                found: 1,
                supported: FORMAT_VERSION,
            });
        }
        if v != FORMAT_VERSION as u64 {
            return Err(IndexError::UnsupportedFormat {
                path: path.to_path_buf(),
                found: v.min(u32::MAX as u64) as u32,
                supported: FORMAT_VERSION,
            });
        }
        let s = Self::settings_fields(path, m)?;
        let chunks = |k: &str| m.u64(k).unwrap_or(0);
        let layout = Layout::new(s.dim, s.ann_dim);
        if chunks("heads_per_chunk") != layout.heads_per_chunk as u64
            || chunks("tails_per_chunk") != layout.tails_per_chunk as u64
        {
            return Err(not_store("unexpected vector chunk size"));
        }
        Ok(s)
    }

    /// The settings recorded in the meta table (any format version), validated.
    fn settings_fields(path: &Path, m: &Meta) -> Result<StoreSettings> {
        let not_store = |reason: &str| IndexError::NotAStore {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let get = |k: &str| {
            m.u64(k)
                .ok_or_else(|| not_store(&format!("meta key {k} missing")))
        };
        let s = StoreSettings {
            model_name: m.str("model_name").unwrap_or_default(),
            model_fingerprint: m.str("model_fingerprint").unwrap_or_default(),
            dim: get("dim")? as usize,
            ann_dim: get("ann_dim")? as usize,
            hnsw: HnswParams {
                m: get("hnsw_m")? as usize,
                ef_construction: get("hnsw_ef_construction")? as usize,
                ef_search: get("hnsw_ef_search")? as usize,
            },
            compact_threshold: 0.25,
        };
        s.validate()?;
        Ok(s)
    }

    /// The caller's model identity and dimensions must be the store's.
    fn check_same_model(
        path: &Path,
        stored: &StoreSettings,
        requested: &StoreSettings,
    ) -> Result<()> {
        if stored.model_name != requested.model_name
            || stored.model_fingerprint != requested.model_fingerprint
        {
            return Err(IndexError::ModelMismatch {
                path: path.to_path_buf(),
                stored: stored.model_identity(),
                requested: requested.model_identity(),
            });
        }
        for (what, a, b) in [
            ("dim", stored.dim, requested.dim),
            ("ann_dim", stored.ann_dim, requested.ann_dim),
        ] {
            if a != b {
                return Err(IndexError::SettingsMismatch {
                    path: path.to_path_buf(),
                    what: format!("{what}: store has {a}, caller asks {b}"),
                });
            }
        }
        Ok(())
    }

    fn corrupt(&self, what: impl Into<String>) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    /// Load graph, ids and tombstones from the committed state of `txn`.
    fn load_state(&self, txn: &ReadTransaction) -> Result<State> {
        let meta = Meta::read(&txn.open_table(META)?)?;
        let next = meta.u64("next_node").unwrap_or(0) as u32;
        let mut st = Self::empty_state(&self.settings);
        st.generation = meta.u64("generation").unwrap_or(0);
        let Layout {
            heads_per_chunk,
            head_bytes: hb,
            tails_per_chunk,
            tail_bytes: tb,
        } = self.layout;
        let nodes = txn.open_table(NODES)?;
        let heads_t = txn.open_table(HEADS)?;
        let tails_t = txn.open_table(TAILS)?;
        let mut heads = packed::Reader::new(&heads_t, heads_per_chunk, hb, "head")?;
        let mut tails = packed::Reader::new(&tails_t, tails_per_chunk, tb, "tail")?;
        let mut node_iter = nodes.range(0..next)?;
        st.graph.reserve(next as usize);
        st.sketches.reserve(next as usize);
        // Heads and tails are read in runs and the sketches derived in parallel per run (per
        // chunk, the parallel section would be too short to pay).
        const RUN: usize = 4096;
        let (mut hraw, mut traw) = (Vec::new(), Vec::new());
        let mut node = 0u32;
        while node < next {
            let run = RUN.min((next - node) as usize);
            hraw.clear();
            traw.clear();
            heads.take(run, &mut hraw, &self.path)?;
            tails.take(run, &mut traw, &self.path)?;
            let derived: Vec<(Vec<F16>, _)> = (0..run)
                .into_par_iter()
                .map(|i| {
                    from_rows(
                        &st.sketches,
                        &hraw[i * hb..(i + 1) * hb],
                        &traw[i * tb..(i + 1) * tb],
                    )
                })
                .collect();
            for (ann, sketch) in derived {
                let Some(r) = node_iter.next() else {
                    return Err(self.corrupt(format!("node record {node} missing")));
                };
                let (nk, nv) = r?;
                let rec = nv.value();
                if nk.value() != node || rec.len() < 10 {
                    return Err(self.corrupt(format!("node record {node} missing or short")));
                }
                let (id, flags) = (u64_at(rec, 0).unwrap_or(0), rec[8]);
                if !st.graph.load_node(node, Some(&ann), &rec[9..], next) {
                    return Err(self.corrupt(format!("node record {node} does not decode")));
                }
                st.ids.push(id);
                st.sketches.push(sketch);
                let del = flags & FLAG_DELETED != 0;
                st.deleted.push(del);
                if del {
                    st.tombstones += 1;
                } else {
                    st.by_id.insert(id, node);
                }
                node += 1;
            }
        }
        st.graph.set_entry(meta.entry());
        st.graph.clear_dirty();
        Ok(st)
    }

    /// Bring a reader's in-memory graph to the generation committed in `txn`.
    fn refresh(&self, st: &mut State, txn: &ReadTransaction) -> Result<()> {
        let meta = Meta::read(&txn.open_table(META)?)?;
        let gen = meta.u64("generation").unwrap_or(0);
        if gen == st.generation {
            return Ok(());
        }
        let log = txn.open_table(GRAPH_LOG)?;
        let mut changed: Vec<u32> = Vec::new();
        let mut complete = gen > st.generation;
        if complete {
            for g in st.generation + 1..=gen {
                match log.get(g)? {
                    Some(v) => {
                        changed.extend(v.value().chunks_exact(4).filter_map(|c| u32_at(c, 0)))
                    }
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
        }
        if !complete {
            *st = self.load_state(txn)?;
            return Ok(());
        }
        changed.sort_unstable();
        changed.dedup();
        let next = meta.u64("next_node").unwrap_or(0) as u32;
        let nodes = txn.open_table(NODES)?;
        let heads = txn.open_table(HEADS)?;
        let tails = txn.open_table(TAILS)?;
        for &n in &changed {
            let rec = nodes
                .get(n)?
                .ok_or_else(|| self.corrupt(format!("node record {n} missing")))?;
            let rec = rec.value();
            if rec.len() < 10 {
                return Err(self.corrupt(format!("node record {n} short")));
            }
            let (id, flags) = (u64_at(rec, 0).unwrap_or(0), rec[8]);
            let is_new = n as usize >= st.ids.len();
            let ann = if is_new {
                if n as usize != st.ids.len() {
                    return Err(self.corrupt(format!("node {n} appended out of order")));
                }
                let (ann, sketch) = self.read_head_tail(&heads, &tails, n, &st.sketches)?;
                st.sketches.push(sketch);
                Some(ann)
            } else {
                None
            };
            if !st.graph.load_node(n, ann.as_deref(), &rec[9..], next) {
                return Err(self.corrupt(format!("node record {n} does not decode")));
            }
            if is_new {
                st.ids.push(id);
                st.deleted.push(false);
            }
            let del = flags & FLAG_DELETED != 0;
            st.deleted[n as usize] = del;
            if del {
                if st.by_id.get(&id) == Some(&n) {
                    st.by_id.remove(&id);
                }
            } else {
                st.by_id.insert(id, n);
            }
        }
        st.tombstones = meta.u64("tombstones").unwrap_or(0) as usize;
        st.graph.set_entry(meta.entry());
        st.graph.clear_dirty();
        st.generation = gen;
        Ok(())
    }

    /// Graph vector and sketch of node `n`, from its stored head and tail.
    fn read_head_tail<T: ReadableTable<u32, &'static [u8]>>(
        &self,
        heads: &T,
        tails: &T,
        n: u32,
        sketcher: &Sketches,
    ) -> Result<(Vec<F16>, Sketch)> {
        let l = self.layout;
        let h = packed::get(heads, n, l.heads_per_chunk, l.head_bytes)?
            .ok_or_else(|| self.corrupt(format!("head of node {n} missing")))?;
        let t = self.read_tail(tails, n)?;
        Ok(from_rows(sketcher, &h, &t))
    }

    /// The stored tail of node `n` (bytes).
    fn read_tail<T: ReadableTable<u32, &'static [u8]>>(
        &self,
        tails: &T,
        n: u32,
    ) -> Result<Vec<u8>> {
        let l = self.layout;
        packed::get(tails, n, l.tails_per_chunk, l.tail_bytes)?
            .ok_or_else(|| self.corrupt(format!("tail of node {n} missing")))
    }

    /// Run `f` on the in-memory state at the generation of a fresh read transaction.
    fn with_state<R>(&self, f: impl Fn(&State, &ReadTransaction) -> Result<R>) -> Result<R> {
        loop {
            let txn = self.db.read()?;
            let gen = {
                let m = txn.open_table(META)?;
                m.get("generation")?
                    .and_then(|v| u64_at(v.value(), 0))
                    .unwrap_or(0)
            };
            {
                let st = self.state.read().unwrap_or_else(|e| e.into_inner());
                if st.generation == gen {
                    return f(&st, &txn);
                }
            }
            {
                let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
                if st.generation != gen {
                    self.refresh(&mut st, &txn)?;
                }
            }
            let st = self.state.read().unwrap_or_else(|e| e.into_inner());
            if st.generation == gen {
                return f(&st, &txn);
            }
        }
    }

    /// The settings the store was created with (model identity, dimensions, graph parameters).
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of live items (for a read-only store: as of the latest commit).
    pub fn len(&self) -> usize {
        if let Db::Ro(_) = self.db {
            if let Ok(n) = self.with_state(|st, _| Ok(st.by_id.len())) {
                return n;
            }
        }
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .len()
    }

    /// True when the store holds no live item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sizes, for reports.
    pub fn stats(&self) -> Result<StoreStats> {
        let file_bytes = std::fs::metadata(&self.path)
            .map_err(|source| IndexError::Io {
                path: self.path.clone(),
                source,
            })?
            .len();
        self.with_state(|st, _| {
            Ok(StoreStats {
                live: st.by_id.len(),
                nodes: st.ids.len(),
                tombstones: st.tombstones,
                graph_memory_bytes: st.graph.memory_bytes()
                    + st.ids.len() * 9
                    + st.by_id.capacity() * 16,
                sketch_memory_bytes: st.sketches.memory_bytes(),
                file_bytes,
                rerank_reads: self.rerank_reads.load(std::sync::atomic::Ordering::Relaxed),
            })
        })
    }

    fn prepare(&self, batch: &Batch) -> Result<Vec<Prepared>> {
        let mut seen = HashSet::with_capacity(batch.upserts.len() + batch.deletes.len());
        for id in batch
            .upserts
            .iter()
            .map(|u| u.0)
            .chain(batch.deletes.iter().copied())
        {
            if !seen.insert(id) {
                return Err(IndexError::DuplicateId(id));
            }
        }
        for op in &batch.kv {
            match op {
                KvOp::Put(ns, ..) | KvOp::Delete(ns, _) => {
                    kv_table(ns)?;
                }
            }
        }
        let (dim, ann_dim) = (self.settings.dim, self.settings.ann_dim);
        let sketcher = Sketches::new(dim, ann_dim);
        batch
            .upserts
            .par_iter()
            .map(|(id, v, meta)| {
                let norm = vecmath::validate(v, dim, Some(*id))?;
                let full = vecmath::to_f16(&v.iter().map(|x| x / norm).collect::<Vec<_>>());
                let (ann, sketch) = sketcher.derive(&full);
                if ann.iter().all(|x| x.0 & 0x7fff == 0) {
                    return Err(IndexError::ZeroVector {
                        id: Some(*id),
                        norm: 0.0,
                    });
                }
                Ok(Prepared {
                    id: *id,
                    sketch,
                    tail: full[ann_dim..].to_vec(),
                    ann,
                    meta: meta.clone(),
                })
            })
            .collect()
    }

    fn writable(&self) -> Result<&Database> {
        match &self.db {
            Db::Rw(d) => Ok(d),
            Db::Ro(_) => Err(IndexError::ReadOnly {
                path: self.path.clone(),
            }),
        }
    }

    /// Commit a batch in one redb transaction: either all of it is in the file afterwards, or
    /// nothing (also when the process dies mid-commit). Vectors are validated first: wrong
    /// dimension, NaN/inf, zero vectors, duplicate ids and bad namespaces fail with nothing written.
    /// New vectors are linked into the graph in parallel (rayon). Afterwards, if tombstones exceed
    /// `compact_threshold`, the store is compacted.
    pub fn commit(&mut self, batch: Batch) -> Result<()> {
        self.writable()?;
        let prepared = self.prepare(&batch)?;
        let res = self.commit_inner(batch, prepared);
        if res.is_err() {
            // The in-memory graph may be ahead of the file: reload what is committed.
            let txn = self.db.read()?;
            let st = self.load_state(&txn)?;
            drop(txn);
            *self.state.get_mut().unwrap_or_else(|e| e.into_inner()) = st;
            return res;
        }
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if !st.ids.is_empty()
            && st.tombstones as f32 > self.settings.compact_threshold * st.ids.len() as f32
        {
            self.compact()?;
        }
        Ok(())
    }

    fn commit_inner(&mut self, batch: Batch, prepared: Vec<Prepared>) -> Result<()> {
        let layout = self.layout;
        let Db::Rw(db) = &self.db else {
            return Err(IndexError::ReadOnly {
                path: self.path.clone(),
            });
        };
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let txn = db.begin_write()?;
        let mut flagged: Vec<u32> = Vec::new();
        {
            let mut items = txn.open_table(ITEMS)?;
            for id in batch.deletes.iter().chain(prepared.iter().map(|p| &p.id)) {
                if let Some(n) = st.by_id.remove(id) {
                    st.deleted[n as usize] = true;
                    st.tombstones += 1;
                    flagged.push(n);
                    items.remove(*id)?;
                }
            }
            // Heads and tails, appended at node numbers start.. in packed chunks.
            let start = st.ids.len() as u32;
            let mut heads = txn.open_table(HEADS)?;
            let mut tails = txn.open_table(TAILS)?;
            let (mut hw, mut tw) = packed_writers(&heads, &tails, start, layout, &self.path)?;
            let (mut head, mut tail) = (Vec::new(), Vec::new());
            for p in &prepared {
                head_row(p.sketch.head_norm(), &p.ann, &mut head);
                hw.push(&mut heads, &head)?;
                tail.clear();
                vecmath::f16_to_bytes(&p.tail, &mut tail);
                tw.push(&mut tails, &tail)?;
            }
            hw.finish(&mut heads)?;
            tw.finish(&mut tails)?;
            // Graph (parallel insertion), then the records of every node it touched.
            let ann: Vec<F16> = prepared
                .iter()
                .flat_map(|p| p.ann.iter().copied())
                .collect();
            st.graph.add_batch(&ann);
            st.sketches.reserve(prepared.len());
            for (j, p) in prepared.iter().enumerate() {
                let node = start + j as u32;
                st.sketches.push(p.sketch.clone());
                st.ids.push(p.id);
                st.deleted.push(false);
                st.by_id.insert(p.id, node);
                let mut v = Vec::with_capacity(4 + p.meta.len());
                v.extend_from_slice(&node.to_le_bytes());
                v.extend_from_slice(&p.meta);
                items.insert(p.id, v.as_slice())?;
            }
            let mut changed = st.graph.take_dirty();
            changed.extend(flagged);
            changed.sort_unstable();
            changed.dedup();
            let mut nodes = txn.open_table(NODES)?;
            let mut rec = Vec::new();
            for &n in &changed {
                rec.clear();
                rec.extend_from_slice(&st.ids[n as usize].to_le_bytes());
                rec.push(if st.deleted[n as usize] {
                    FLAG_DELETED
                } else {
                    0
                });
                st.graph.encode_node(n, &mut rec);
                nodes.insert(n, rec.as_slice())?;
            }
            // Caller key-value tables.
            for op in &batch.kv {
                match op {
                    KvOp::Put(ns, k, v) => {
                        let name = kv_table(ns)?;
                        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
                        txn.open_table(def)?.insert(k.as_slice(), v.as_slice())?;
                    }
                    KvOp::Delete(ns, k) => {
                        let name = kv_table(ns)?;
                        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
                        txn.open_table(def)?.remove(k.as_slice())?;
                    }
                }
            }
            let gen = st.generation + 1;
            let mut log = txn.open_table(GRAPH_LOG)?;
            let bytes: Vec<u8> = changed.iter().flat_map(|n| n.to_le_bytes()).collect();
            log.insert(gen, bytes.as_slice())?;
            if gen > GRAPH_LOG_KEEP {
                log.remove(gen - GRAPH_LOG_KEEP)?;
            }
            let mut m = txn.open_table(META)?;
            put_u64(&mut m, "generation", gen)?;
            put_u64(&mut m, "next_node", st.ids.len() as u64)?;
            put_u64(&mut m, "live", st.by_id.len() as u64)?;
            put_u64(&mut m, "tombstones", st.tombstones as u64)?;
            match st.graph.entry() {
                Some((n, l)) => {
                    let mut e = n.to_le_bytes().to_vec();
                    e.push(l);
                    m.insert("entry", e.as_slice())?;
                }
                None => {
                    m.remove("entry")?;
                }
            }
        }
        txn.commit()?;
        st.generation += 1;
        Ok(())
    }

    /// Drop tombstones and renumber the nodes in graph-locality order, then rewrite vectors,
    /// nodes and items in one transaction and let redb reclaim the free space.
    ///
    /// With tombstones the graph is rebuilt from the live items; without, the existing graph
    /// is kept and only renumbered ([`Hnsw::locality_order`]): near neighbours then share
    /// vector chunks, so a search's re-rank reads fewer pages. Worth running after a large
    /// index run (items arrive in whatever order the caller had them).
    pub fn compact(&mut self) -> Result<()> {
        self.writable()?;
        let ann_dim = self.settings.ann_dim;
        let layout = self.layout;
        let path = self.path.clone();
        let Db::Rw(db) = &mut self.db else {
            return Err(IndexError::ReadOnly { path });
        };
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let txn = db.begin_write()?;
        {
            let live: Vec<u32> = (0..st.ids.len() as u32)
                .filter(|&n| !st.deleted[n as usize])
                .collect();
            // Tails of the live nodes, in node order (their heads are in memory: the graph's
            // vectors and the sketches' norms).
            let tb = layout.tail_bytes;
            let mut tails_raw: Vec<u8> = Vec::with_capacity(live.len() * tb);
            {
                let tails = txn.open_table(TAILS)?;
                let mut rows = packed::Reader::new(&tails, layout.tails_per_chunk, tb, "tail")?;
                let mut row = Vec::with_capacity(tb);
                for n in 0..st.ids.len() {
                    row.clear();
                    rows.take(1, &mut row, &path)?;
                    if !st.deleted[n] {
                        tails_raw.extend_from_slice(&row);
                    }
                }
            }
            // Graph over the live items, numbered as `live` (node i = live[i]).
            let rebuilt = if live.len() == st.ids.len() {
                None
            } else {
                let ann: Vec<F16> = live
                    .iter()
                    .flat_map(|&n| st.graph.vector(n).iter().copied())
                    .collect();
                let mut g = Hnsw::new(ann_dim, Self::graph_params(&self.settings));
                g.add_batch(&ann);
                Some(g)
            };
            let source = rebuilt.as_ref().unwrap_or(&st.graph);
            let order = source.locality_order();
            let mut graph = source.reordered(&order);
            drop(rebuilt);
            // New node j was old node live[order[j]].
            let old: Vec<u32> = order.iter().map(|&i| live[i as usize]).collect();
            let sketches = st.sketches.reordered(&old);
            let ids: Vec<u64> = old.iter().map(|&n| st.ids[n as usize]).collect();
            txn.delete_table(HEADS)?;
            txn.delete_table(TAILS)?;
            txn.delete_table(NODES)?;
            txn.delete_table(GRAPH_LOG)?;
            {
                let mut heads = txn.open_table(HEADS)?;
                let mut tails = txn.open_table(TAILS)?;
                let (mut hw, mut tw) = packed_writers(&heads, &tails, 0, layout, &path)?;
                let mut head = Vec::with_capacity(layout.head_bytes);
                for (j, &i) in order.iter().enumerate() {
                    let j = j as u32;
                    head_row(sketches.head_norm(j), graph.vector(j), &mut head);
                    hw.push(&mut heads, &head)?;
                    let i = i as usize;
                    tw.push(&mut tails, &tails_raw[i * tb..(i + 1) * tb])?;
                }
                hw.finish(&mut heads)?;
                tw.finish(&mut tails)?;
            }
            let mut nodes = txn.open_table(NODES)?;
            let mut items = txn.open_table(ITEMS)?;
            let mut rec = Vec::new();
            for (n, &id) in ids.iter().enumerate() {
                rec.clear();
                rec.extend_from_slice(&id.to_le_bytes());
                rec.push(0);
                graph.encode_node(n as u32, &mut rec);
                nodes.insert(n as u32, rec.as_slice())?;
                let old = items
                    .get(id)?
                    .map(|v| v.value().to_vec())
                    .unwrap_or_default();
                let mut v = (n as u32).to_le_bytes().to_vec();
                v.extend_from_slice(old.get(4..).unwrap_or(&[]));
                items.insert(id, v.as_slice())?;
            }
            txn.open_table(GRAPH_LOG)?;
            graph.clear_dirty();
            let gen = st.generation + 1;
            let mut m = txn.open_table(META)?;
            put_u64(&mut m, "generation", gen)?;
            put_u64(&mut m, "next_node", ids.len() as u64)?;
            put_u64(&mut m, "live", ids.len() as u64)?;
            put_u64(&mut m, "tombstones", 0)?;
            match graph.entry() {
                Some((n, l)) => {
                    let mut e = n.to_le_bytes().to_vec();
                    e.push(l);
                    m.insert("entry", e.as_slice())?;
                }
                None => {
                    m.remove("entry")?;
                }
            }
            *st = State {
                by_id: ids
                    .iter()
                    .enumerate()
                    .map(|(n, &id)| (id, n as u32))
                    .collect(),
                deleted: vec![false; ids.len()],
                ids,
                graph,
                sketches,
                tombstones: 0,
                generation: gen,
            };
        }
        txn.commit()?;
        // Give freed pages back to the file system (best effort: fails while readers hold old snapshots).
        let _ = db.compact();
        Ok(())
    }

    /// Give the file's free pages back to the file system (redb compaction; no graph rebuild).
    /// Commits are copy-on-write, so after a large index run the file holds freed pages; call this
    /// at the end of such a run. Returns false when it could not run (e.g. readers hold snapshots).
    pub fn vacuum(&mut self) -> Result<bool> {
        self.writable()?;
        let Db::Rw(db) = &mut self.db else {
            return Ok(false);
        };
        Ok(db.compact().unwrap_or(false))
    }

    /// Metadata blob of item `id`.
    pub fn get_meta(&self, id: u64) -> Result<Option<Vec<u8>>> {
        let txn = self.db.read()?;
        let items = txn.open_table(ITEMS)?;
        Ok(items
            .get(id)?
            .map(|v| v.value().get(4..).unwrap_or(&[]).to_vec()))
    }

    /// Stored full vector of item `id` (normalised; the head's norm times the graph's f16 head,
    /// then the f16 tail; as f32).
    pub fn get_vector(&self, id: u64) -> Result<Option<Vec<f32>>> {
        self.with_state(|st, txn| {
            let Some(&node) = st.by_id.get(&id) else {
                return Ok(None);
            };
            let t = self.read_tail(&txn.open_table(TAILS)?, node)?;
            let norm = st.sketches.head_norm(node);
            let mut v: Vec<f32> = st
                .graph
                .vector(node)
                .iter()
                .map(|x| x.to_f32() * norm)
                .collect();
            let mut tail = Vec::new();
            vecmath::f16_from_bytes(&t, &mut tail);
            v.extend(vecmath::from_f16(&tail));
            Ok(Some(v))
        })
    }

    /// Ids of all live items, ascending.
    pub fn ids(&self) -> Result<Vec<u64>> {
        let txn = self.db.read()?;
        let items = txn.open_table(ITEMS)?;
        let mut out = Vec::new();
        for r in items.iter()? {
            out.push(r?.0.value());
        }
        Ok(out)
    }

    fn query16(&self, query: &[f32]) -> Result<(Vec<F16>, Vec<F16>)> {
        let norm = vecmath::validate(query, self.settings.dim, None)?;
        let q: Vec<f32> = query.iter().map(|x| x / norm).collect();
        let full = vecmath::to_f16(&q);
        let ann = vecmath::to_f16(&vecmath::truncate_normalize(&q, self.settings.ann_dim));
        Ok((full, ann))
    }

    /// Approximate top-`k` by cosine: the graph over the truncated f16 vectors yields a beam of
    /// `ef` accepted items; each is scored by its sketch (see [`crate::sketch`]), and the best
    /// `candidates` (k') are re-ranked exactly at full dimension from the stored vectors.
    /// Deleted or replaced items never appear. With a filter, `k` results come back whenever
    /// `k` items pass it (an exact scan backs the graph up). Small stores are searched exactly.
    pub fn search(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        let (q_full, q_ann) = self.query16(query)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let kp = params
            .candidates
            .unwrap_or_else(|| default_candidates(k))
            .max(k);
        let ef = if params.ef == 0 {
            self.settings.hnsw.ef_search
        } else {
            params.ef
        }
        .max(kp);
        let filter = params.filter;
        self.with_state(|st, txn| {
            let live = st.by_id.len();
            if live <= EXACT_SEARCH_BELOW {
                return self.exact_inner(st, txn, &q_full, k, filter);
            }
            let accept =
                |n: u32| !st.deleted[n as usize] && filter.is_none_or(|f| f(st.ids[n as usize]));
            // The whole beam, scored by sketch, best first; at most k' are re-ranked from the file.
            let all = filter.is_none() && st.tombstones == 0;
            let beam = st
                .graph
                .search_with(&q_ann, ef, ef, if all { None } else { Some(&accept) });
            let sq = st.sketches.query(&q_full);
            let mut cands: Vec<Candidate> = beam
                .iter()
                .map(|&(d, node)| Candidate {
                    score: st.sketches.score(&sq, node, 1.0 - d),
                    margin: if params.exhaustive_rerank {
                        f32::INFINITY
                    } else {
                        st.sketches.margin(&sq, node, RERANK_Z)
                    },
                    node,
                })
                .collect();
            cands.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.node.cmp(&b.node)));
            cands.truncate(kp);
            let hits = self.rerank(st, txn, &q_full, &cands, k)?;
            if hits.len() < k && hits.len() < live {
                return self.exact_inner(st, txn, &q_full, k, filter);
            }
            Ok(hits)
        })
    }

    /// Exact scores of `cands` (best sketch score first), reading as few tails as
    /// it can: the first `k` are read together (nodes sharing a chunk share a read), each later
    /// one only if its sketch score plus [`Sketches::margin`] could still beat the k-th exact
    /// score found so far.
    fn rerank(
        &self,
        st: &State,
        txn: &ReadTransaction,
        q: &[F16],
        cands: &[Candidate],
        k: usize,
    ) -> Result<Vec<Hit>> {
        let tails = txn.open_table(TAILS)?;
        let first = k.min(cands.len());
        let mut nodes: Vec<u32> = cands[..first].iter().map(|c| c.node).collect();
        nodes.sort_unstable();
        let mut hits: Vec<Hit> = Vec::with_capacity(k + 1);
        self.read_scores(st, &tails, q, &nodes, &mut hits)?;
        let order = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id));
        hits.sort_by(order);
        for c in &cands[first..] {
            if hits.len() >= k && c.score + c.margin < hits[k - 1].score {
                continue;
            }
            self.read_scores(st, &tails, q, &[c.node], &mut hits)?;
            hits.sort_by(order);
            hits.truncate(k);
        }
        hits.truncate(k);
        Ok(hits)
    }

    /// Exact score of the (normalised, f16) query `q` and node `n` with tail `tail` (bytes of
    /// the tails table): the head's norm times the dot product with the graph's f16 head, plus
    /// the dot product with the f16 tail.
    #[inline]
    fn exact_score(&self, st: &State, q: &[F16], n: u32, tail: &[u8]) -> f32 {
        let (qh, qt) = q.split_at(self.settings.ann_dim);
        st.sketches.head_norm(n) * vecmath::dot_f16(qh, st.graph.vector(n))
            + vecmath::dot_f16_le_bytes(qt, tail)
    }

    /// Push the exact score of each of `nodes` (sorted) onto `hits`, one read per tail chunk.
    fn read_scores(
        &self,
        st: &State,
        tails: &redb::ReadOnlyTable<u32, &'static [u8]>,
        q: &[F16],
        nodes: &[u32],
        hits: &mut Vec<Hit>,
    ) -> Result<()> {
        let (per, tb) = (self.layout.tails_per_chunk, self.layout.tail_bytes);
        let mut i = 0;
        while i < nodes.len() {
            let c = nodes[i] / per;
            let guard = if tb == 0 {
                None
            } else {
                self.rerank_reads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(
                    tails
                        .get(c)?
                        .ok_or_else(|| self.corrupt(format!("tail chunk {c} missing")))?,
                )
            };
            let val = guard.as_ref().map_or(&[][..], |v| v.value());
            while i < nodes.len() && nodes[i] / per == c {
                let j = (nodes[i] % per) as usize;
                let b = val
                    .get(j * tb..(j + 1) * tb)
                    .ok_or_else(|| self.corrupt(format!("tail of node {} missing", nodes[i])))?;
                hits.push(Hit {
                    id: st.ids[nodes[i] as usize],
                    score: self.exact_score(st, q, nodes[i], b),
                });
                i += 1;
            }
        }
        Ok(())
    }

    /// Exact top-`k` by cosine at full dimension: a parallel (rayon) SIMD scan over every stored
    /// vector. Serves small stores and is the ground truth for recall.
    pub fn exact_search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<Hit>> {
        let (q_full, _) = self.query16(query)?;
        self.with_state(|st, txn| self.exact_inner(st, txn, &q_full, k, filter))
    }

    fn exact_inner(
        &self,
        st: &State,
        txn: &ReadTransaction,
        q: &[F16],
        k: usize,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<Hit>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let n = st.ids.len() as u32;
        let (per, tb) = (self.layout.tails_per_chunk, self.layout.tail_bytes);
        let nchunks = n.div_ceil(per);
        let tails = txn.open_table(TAILS)?;
        let span = 64u32;
        let parts: Vec<Result<Vec<Hit>>> = (0..nchunks.div_ceil(span))
            .into_par_iter()
            .map(|p| {
                let mut heap: BinaryHeap<std::cmp::Reverse<(OrdF32, u64)>> = BinaryHeap::new();
                let mut consider = |node: u32, tail: &[u8]| {
                    if node >= n || st.deleted[node as usize] {
                        return;
                    }
                    let id = st.ids[node as usize];
                    if filter.is_some_and(|f| !f(id)) {
                        return;
                    }
                    let s = self.exact_score(st, q, node, tail);
                    if heap.len() < k {
                        heap.push(std::cmp::Reverse((OrdF32(s), id)));
                    } else if heap.peek().is_some_and(|w| s > w.0 .0 .0) {
                        heap.pop();
                        heap.push(std::cmp::Reverse((OrdF32(s), id)));
                    }
                };
                let chunks = p * span..((p + 1) * span).min(nchunks);
                if tb == 0 {
                    (chunks.start * per..chunks.end * per).for_each(|node| consider(node, &[]));
                } else {
                    for r in tails.range(chunks)? {
                        let (ck, cv) = r?;
                        let base = ck.value() * per;
                        for (j, b) in cv.value().chunks_exact(tb).enumerate() {
                            consider(base + j as u32, b);
                        }
                    }
                }
                Ok(heap
                    .into_iter()
                    .map(|std::cmp::Reverse((s, id))| Hit { id, score: s.0 })
                    .collect())
            })
            .collect();
        let mut all = Vec::new();
        for p in parts {
            all.extend(p?);
        }
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        all.truncate(k);
        Ok(all)
    }

    /// Value of `key` in the caller namespace `ns`.
    pub fn kv_get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let name = kv_table(ns)?;
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        let txn = self.db.read()?;
        let t = match txn.open_table(def) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    /// All `(key, value)` pairs of namespace `ns` whose key starts with `prefix`, in key order.
    pub fn kv_scan_prefix(&self, ns: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let name = kv_table(ns)?;
        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
        let txn = self.db.read()?;
        let t = match txn.open_table(def) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for r in t.range(prefix..)? {
            let (k, v) = r?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }
}

#[derive(Clone, Copy)]
struct OrdF32(f32);
impl PartialEq for OrdF32 {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}
