//! Opening a store: creating it, validating its settings against the caller's, and upgrading a
//! format version 1 file in place.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::RwLock;

use redb::{
    ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    TableError, TableHandle,
};

use super::schema::{
    self, meta, put_version, Meta, FORMAT_VERSION, HEADS, META, NODES, TAILS, VECTORS_V1,
};
use super::{Db, Store};
use crate::error::{IndexError, Result};
use crate::packed;
use crate::settings::{v1_vectors_per_chunk, HnswParams, Layout, StoreSettings};
use crate::sketch::Sketches;
use crate::vecmath;

/// Rows read and rewritten at a time by the sealing upgrade.
const SEAL_RUN: usize = 4096;

/// redb page cache (MiB) of a writer unless `JSEARCH_STORE_CACHE_MIB` says otherwise (it also
/// buffers the pages of a commit).
pub(super) const CACHE_MIB: usize = 256;
/// redb page cache (MiB) of a reader unless `JSEARCH_STORE_CACHE_MIB` says otherwise. A search
/// reads about `k'` tails from the file, at random: a cache that is a small part of the
/// vectors barely raises the hit rate, so keep it small and the serving memory the graph's.
const READ_CACHE_MIB: usize = 64;

pub(super) fn builder(default_mib: usize) -> redb::Builder {
    let mut b = redb::Builder::new();
    let mib = std::env::var("JSEARCH_STORE_CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default_mib);
    b.set_concurrency_mode(ConcurrencyMode::SingleWriter)
        .set_cache_size(mib << 20);
    b
}

/// The typed error for a failed `create` / `open_read_only` of the redb file.
pub(super) fn open_error(path: &Path, e: DatabaseError) -> IndexError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            IndexError::Busy {
                path: path.to_path_buf(),
            }
        }
        // A read-only open of a file that a killed writer left needing repair.
        DatabaseError::RepairAborted => IndexError::NeedsRecovery {
            path: path.to_path_buf(),
        },
        other => other.into(),
    }
}

/// [`IndexError::NotAStore`] when there is no file at `path` (so that opening a store never
/// creates one where the caller expected an existing one).
fn require_file(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    Err(IndexError::NotAStore {
        path: path.to_path_buf(),
        reason: "file does not exist".into(),
    })
}

/// Opens an existing store file for writing (redb recovers a file a killed writer left).
pub(super) fn open_existing(path: &Path) -> Result<Database> {
    require_file(path)?;
    builder(CACHE_MIB)
        .create(path)
        .map_err(|e| open_error(path, e))
}

impl Store {
    /// Open the store at `path` for reading and writing, creating it if absent.
    ///
    /// An existing store must have this crate's format version, the same model identity
    /// (name and fingerprint) and the same dimensions; its stored graph parameters are kept.
    /// Fails with [`IndexError::Busy`] when another process (or handle) has it open for writing.
    pub fn open(path: &Path, settings: StoreSettings) -> Result<Store> {
        crate::seal::guard(path, || {
            settings.validate()?;
            if !path.exists() {
                Self::create_new(path, &settings)?;
            }
            let db = builder(CACHE_MIB)
                .create(path)
                .map_err(|e| open_error(path, e))?;
            Self::upgrade(&db, path, &settings)?;
            let txn = db.begin_write()?;
            let existing = {
                let t = txn.open_table(META)?;
                Meta::read(&t, path)?
            };
            let settings = if existing.is_empty() {
                schema::init_tables(&txn, &settings)?;
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
        })
    }

    /// Creates a new store at `path` atomically: written and committed under a temporary name,
    /// then linked into place (which fails if another process created it first; then that one
    /// is used). A kill while creating leaves no half-written file at `path`.
    fn create_new(path: &Path, settings: &StoreSettings) -> Result<()> {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".creating.{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let io = |p: &Path, source| IndexError::Io {
            path: p.to_path_buf(),
            source,
        };
        let _ = std::fs::remove_file(&tmp);
        {
            let db = builder(CACHE_MIB)
                .create(&tmp)
                .map_err(|e| open_error(&tmp, e))?;
            let txn = db.begin_write()?;
            schema::init_tables(&txn, settings)?;
            txn.commit()?;
        }
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io(path, e)),
        }
    }

    /// Open an existing store for reading only. Several readers (in any processes) may run beside
    /// one writer; each search sees the latest committed state (the graph catches up with the
    /// writer's commits incrementally). A file left by a killed writer fails with
    /// [`IndexError::NeedsRecovery`] (a writer's [`Store::open`] recovers it).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        crate::seal::guard(path, || {
            let (db, settings) = Self::open_settings(path)?;
            Self::finish_open(path, Db::Ro(db), settings)
        })
    }

    /// Recovers a store a killed writer left ([`IndexError::NeedsRecovery`]) and upgrades an
    /// older format ([`IndexError::UpgradeNeeded`]), in place, with the store's own settings:
    /// what a reader runs before [`Store::open_read_only`]. Takes the writer lock for the moment
    /// it runs ([`IndexError::Busy`] if another process holds it); loads no graph.
    pub fn recover(path: &Path) -> Result<()> {
        crate::seal::guard(path, || {
            let db = open_existing(path)?;
            let txn = db.begin_read()?;
            let meta = Meta::read(&txn.open_table(META)?, path)?;
            drop(txn);
            if meta.is_empty() {
                return Err(IndexError::NotAStore {
                    path: path.to_path_buf(),
                    reason: "no jsearch format version in the file".into(),
                });
            }
            let stored = Self::settings_fields(path, &meta)?;
            Self::upgrade(&db, path, &stored)
        })
    }

    /// Opens a store that a killed writer left needing recovery ([`IndexError::NeedsRecovery`])
    /// for reading, as of its last commit, without writing to the file: the recovery runs in
    /// memory over the untouched file (costs a scan of the file and memory for the pages it
    /// rewrites). For readers that cannot or should not recover the file itself: a read-only
    /// file or folder, a full disk, another process holding the writer lock. The next writer
    /// recovers the file for real. Readers opened this way do not follow later commits.
    pub fn open_recovered(path: &Path) -> Result<Store> {
        crate::seal::guard(path, || {
            let file = std::fs::File::open(path).map_err(|source| IndexError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let overlay = super::overlay::Overlay::new(file).map_err(|source| IndexError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let db = redb::Database::builder()
                .set_cache_size(READ_CACHE_MIB << 20)
                .create_with_backend(overlay)
                .map_err(|e| open_error(path, e))?;
            let settings = Self::settings_of(&db, path)?;
            Self::finish_open(path, Db::Recovered(db), settings)
        })
    }

    /// The settings of the existing store at `path` (model identity, dimensions, graph
    /// parameters), read from its meta table without loading the graph: what a caller checks
    /// before it opens the store for writing. Fails as [`Store::open_read_only`] would.
    pub fn read_settings(path: &Path) -> Result<StoreSettings> {
        crate::seal::guard(path, || Ok(Self::open_settings(path)?.1))
    }

    /// Opens the file read-only and validates its settings.
    fn open_settings(path: &Path) -> Result<(ReadOnlyDatabase, StoreSettings)> {
        require_file(path)?;
        let db = builder(READ_CACHE_MIB)
            .open_read_only(path)
            .map_err(|e| open_error(path, e))?;
        let settings = Self::settings_of(&db, path)?;
        Ok((db, settings))
    }

    /// The validated settings in the meta table of an opened file.
    fn settings_of(db: &impl ReadableDatabase, path: &Path) -> Result<StoreSettings> {
        let txn = db.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(t) => Meta::read(&t, path)?,
            Err(TableError::TableDoesNotExist(_)) => Meta(HashMap::new()),
            Err(e) => return Err(e.into()),
        };
        Self::settings_from_meta(path, &meta)
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

    /// Upgrades an older store in place, in one write transaction (if it is interrupted, the
    /// file is still the store it was): format version 1 (whole f16 vectors, several per value)
    /// gets heads and tails tables, and versions 1 and 2 get their seals. A no-op for a current
    /// store.
    fn upgrade(db: &Database, path: &Path, requested: &StoreSettings) -> Result<()> {
        let txn = db.begin_write()?;
        let meta = Meta::read(&txn.open_table(META)?, path)?;
        let version = meta.u64(meta::FORMAT_VERSION);
        if !matches!(version, Some(1) | Some(2)) {
            return Ok(());
        }
        // Only for the model that made it: another model's caller gets the same refusal as
        // with a current store, and the file stays as it was.
        let stored = Self::settings_fields(path, &meta)?;
        Self::check_same_model(path, &stored, requested)?;
        if version == Some(1) {
            Self::upgrade_v1(&txn, path, &meta, &stored)?;
        }
        Self::seal_all(&txn, path)?;
        put_version(&mut txn.open_table(META)?)?;
        txn.commit()?;
        Ok(())
    }

    /// Format version 1 to 2: whole vectors become heads and tails (unsealed, like every
    /// version 2 row; [`Store::seal_all`] follows).
    fn upgrade_v1(
        txn: &redb::WriteTransaction,
        path: &Path,
        meta: &Meta,
        stored: &StoreSettings,
    ) -> Result<()> {
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
        if get(meta::VECTORS_PER_CHUNK_V1)? != per_v1 as u64 {
            return Err(not_store("unexpected vector chunk size".into()));
        }
        let next = get(meta::NEXT_NODE)? as u32;
        let sketcher = Sketches::new(dim, ann_dim);
        let layout = Layout::new(dim, ann_dim);
        {
            let old = txn.open_table(VECTORS_V1)?;
            let mut rows = packed::Reader::new(&old, per_v1, 2 * dim, "vector", None)?;
            let mut heads = txn.open_table(HEADS)?;
            let mut tails = txn.open_table(TAILS)?;
            let l = layout;
            let mut hw =
                packed::Writer::resume(&heads, 0, l.heads_per_chunk, l.head_bytes, path, None)?;
            let mut tw =
                packed::Writer::resume(&tails, 0, l.tails_per_chunk, l.tail_bytes, path, None)?;
            let (mut raw, mut full, mut head) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..next {
                raw.clear();
                rows.take(1, &mut raw, path)?;
                vecmath::f16_from_bytes(&raw, &mut full);
                let (ann, sketch) = sketcher.derive(&full);
                schema::head_row(sketch.head_norm(), &ann, &mut head);
                hw.push(&mut heads, &head)?;
                tw.push(&mut tails, &raw[2 * ann_dim..])?;
            }
            hw.finish(&mut heads)?;
            tw.finish(&mut tails)?;
        }
        txn.delete_table(VECTORS_V1)?;
        let mut m = txn.open_table(META)?;
        m.remove(meta::VECTORS_PER_CHUNK_V1)?;
        let raw_u64 = |m: &mut redb::Table<&str, &[u8]>, k: &str, v: u32| {
            m.insert(k, (v as u64).to_le_bytes().as_slice()).map(|_| ())
        };
        raw_u64(&mut m, meta::HEADS_PER_CHUNK, layout.heads_per_chunk)?;
        raw_u64(&mut m, meta::TAILS_PER_CHUNK, layout.tails_per_chunk)?;
        Ok(())
    }

    /// Seals every value of a version 2 store (all but the format version), table by table in
    /// runs of rows, so memory stays bounded on big stores.
    fn seal_all(txn: &redb::WriteTransaction, path: &Path) -> Result<()> {
        let _ = path;
        {
            let mut m = txn.open_table(META)?;
            let rows: Vec<(String, Vec<u8>)> = m
                .iter()?
                .map(|r| r.map(|(k, v)| (k.value().to_string(), v.value().to_vec())))
                .collect::<std::result::Result<_, _>>()?;
            for (k, v) in rows {
                if k != meta::FORMAT_VERSION {
                    schema::put_meta(&mut m, &k, &v)?;
                }
            }
        }
        macro_rules! seal_numbered {
            ($def:expr, $name:expr, $k:ty) => {{
                let mut t = txn.open_table($def)?;
                let mut from: Option<$k> = None;
                loop {
                    let run: Vec<($k, Vec<u8>)> = {
                        let range = match from {
                            None => t.range::<$k>(..)?,
                            Some(k) => t.range((Bound::Excluded(k), Bound::Unbounded))?,
                        };
                        range
                            .take(SEAL_RUN)
                            .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
                            .collect::<std::result::Result<_, _>>()?
                    };
                    let Some(last) = run.last().map(|r| r.0) else {
                        break;
                    };
                    for (k, v) in &run {
                        t.insert(*k, schema::seal($name, &k.to_le_bytes(), v).as_slice())?;
                    }
                    from = Some(last);
                }
            }};
        }
        seal_numbered!(schema::ITEMS, schema::ITEMS_NAME, u64);
        seal_numbered!(schema::GRAPH_LOG, schema::GRAPH_LOG_NAME, u64);
        seal_numbered!(NODES, schema::NODES_NAME, u32);
        seal_numbered!(HEADS, schema::HEADS_NAME, u32);
        seal_numbered!(TAILS, schema::TAILS_NAME, u32);
        let kv: Vec<String> = txn
            .list_tables()?
            .map(|h| h.name().to_string())
            .filter(|n| n.starts_with("kv:"))
            .collect();
        for name in kv {
            let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(&name);
            let mut t = txn.open_table(def)?;
            let mut from: Option<Vec<u8>> = None;
            loop {
                let run: Vec<(Vec<u8>, Vec<u8>)> = {
                    let range = match &from {
                        None => t.range::<&[u8]>(..)?,
                        Some(k) => {
                            t.range::<&[u8]>((Bound::Excluded(k.as_slice()), Bound::Unbounded))?
                        }
                    };
                    range
                        .take(SEAL_RUN)
                        .map(|r| r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
                        .collect::<std::result::Result<_, _>>()?
                };
                let Some(last) = run.last().map(|r| r.0.clone()) else {
                    break;
                };
                for (k, v) in &run {
                    t.insert(k.as_slice(), schema::seal(&name, k, v).as_slice())?;
                }
                from = Some(last);
            }
        }
        Ok(())
    }

    pub(super) fn settings_from_meta(path: &Path, m: &Meta) -> Result<StoreSettings> {
        let not_store = |reason: &str| IndexError::NotAStore {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let Some(v) = m.u64(meta::FORMAT_VERSION) else {
            return Err(not_store("no jsearch format version in the file"));
        };
        if v == 1 || v == 2 {
            return Err(IndexError::UpgradeNeeded {
                path: path.to_path_buf(),
                found: v as u32,
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
        if chunks(meta::HEADS_PER_CHUNK) != layout.heads_per_chunk as u64
            || chunks(meta::TAILS_PER_CHUNK) != layout.tails_per_chunk as u64
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
            model_name: m.str(meta::MODEL_NAME).unwrap_or_default(),
            model_fingerprint: m.str(meta::MODEL_FINGERPRINT).unwrap_or_default(),
            dim: get(meta::DIM)? as usize,
            ann_dim: get(meta::ANN_DIM)? as usize,
            hnsw: HnswParams {
                m: get(meta::HNSW_M)? as usize,
                ef_construction: get(meta::HNSW_EF_CONSTRUCTION)? as usize,
                ef_search: get(meta::HNSW_EF_SEARCH)? as usize,
            },
            compact_threshold: 0.25,
            model_dir: m.path(meta::MODEL_DIR),
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
}
