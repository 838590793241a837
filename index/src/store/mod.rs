//! The store: one redb file holding settings, items, vectors (heads and tails), the graph and
//! caller key-value tables.
//!
//! | module | holds |
//! |---|---|
//! | [`schema`] | the file format: tables, meta keys, the byte layout of every record |
//! | `open` | opening, creating, validating settings, upgrading format version 1 |
//! | `state` | the in-memory graph, id maps and sketches; loading them and catching up with commits |
//! | `write` | commits and compaction |
//! | `search` | graph walk, sketch shortlist, exact re-rank, exact scan |

mod open;
mod overlay;
mod repair;
mod schema;
mod search;
mod state;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    TableError,
};

use crate::error::{IndexError, Result};
use crate::settings::{Layout, StoreSettings};
use crate::vecmath;

pub use repair::{CheckReport, RepairReport};
pub use schema::FORMAT_VERSION;
pub use search::{default_candidates, Hit, SearchParams, EXACT_SEARCH_BELOW};
pub use write::Batch;

use schema::{kv_table, unseal, ITEMS, TAILS};
use state::State;

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

enum Db {
    Rw(Database),
    Ro(ReadOnlyDatabase),
    /// A store that needed recovery, recovered in memory over the untouched file
    /// ([`overlay`]): read-only, as of its last commit.
    Recovered(Database),
}

impl Db {
    fn read(&self) -> Result<ReadTransaction> {
        Ok(match self {
            Db::Rw(d) | Db::Recovered(d) => d.begin_read()?,
            Db::Ro(d) => d.begin_read()?,
        })
    }
}

/// A vector store in one redb file. See the crate docs.
///
/// `Store` is `Send + Sync`: searches and reads take `&self` and run concurrently (each in its
/// own read transaction); writes take `&mut self`.
pub struct Store {
    path: PathBuf,
    db: Db,
    settings: StoreSettings,
    /// Packing of the heads and tails tables.
    layout: Layout,
    state: RwLock<State>,
    /// Vector chunks read by searches' re-ranks since the store was opened.
    rerank_reads: AtomicU64,
}

impl Store {
    fn corrupt(&self, what: impl Into<String>) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
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
        if let Db::Ro(_) | Db::Recovered(_) = self.db {
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
        let path = self.path.clone();
        crate::seal::guard(&path, || {
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
                    rerank_reads: self.rerank_reads.load(Ordering::Relaxed),
                })
            })
        })
    }

    /// Metadata blob of item `id`. A row that fails its checksum is an error, and so is a live
    /// item (one the graph holds) whose row is missing.
    pub fn get_meta(&self, id: u64) -> Result<Option<Vec<u8>>> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            self.with_state(|st, txn| {
                let items = txn.open_table(ITEMS)?;
                match items.get(id)? {
                    Some(v) => Ok(Some(
                        schema::item_parts(&self.path, id, v.value())?.1.to_vec(),
                    )),
                    None if st.by_id.contains_key(&id) => {
                        Err(self.corrupt(format!("items row {id} missing")))
                    }
                    None => Ok(None),
                }
            })
        })
    }

    /// Stored full vector of item `id` (normalised; the head's norm times the graph's f16 head,
    /// then the f16 tail; as f32).
    pub fn get_vector(&self, id: u64) -> Result<Option<Vec<f32>>> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            self.with_state(|st, txn| {
                let Some(&node) = st.by_id.get(&id) else {
                    return Ok(None);
                };
                self.full_vector(st, &txn.open_table(TAILS)?, node)
                    .map(Some)
            })
        })
    }

    /// Up to `limit` items after id `after` (from the first when `None`), ascending, each with
    /// its metadata blob and its full vector as [`Store::get_vector`] gives it, read in one
    /// transaction: how an export walks the whole store a page at a time. Items whose vector is
    /// not in the graph are left out; a row that fails its checksum is an error.
    #[allow(clippy::type_complexity)]
    pub fn items_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>, Vec<f32>)>> {
        use std::ops::Bound;
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            self.with_state(|st, txn| {
                let items = txn.open_table(ITEMS)?;
                let tails = txn.open_table(TAILS)?;
                let start = after.map_or(Bound::Unbounded, Bound::Excluded);
                let mut out = Vec::with_capacity(limit.min(4096));
                for r in items.range::<u64>((start, Bound::Unbounded))? {
                    if out.len() >= limit {
                        break;
                    }
                    let (k, v) = r?;
                    let id = k.value();
                    let Some(&node) = st.by_id.get(&id) else {
                        continue;
                    };
                    let meta = schema::item_parts(&self.path, id, v.value())?.1.to_vec();
                    out.push((id, meta, self.full_vector(st, &tails, node)?));
                }
                Ok(out)
            })
        })
    }

    /// Graph node `node`'s full vector: the head's norm times the graph's f16 head, then the
    /// f16 tail from `tails`, as f32.
    fn full_vector<T: ReadableTable<u32, &'static [u8]>>(
        &self,
        st: &State,
        tails: &T,
        node: u32,
    ) -> Result<Vec<f32>> {
        let t = self.read_tail(tails, node)?;
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
        Ok(v)
    }

    /// Ids of all live items, ascending.
    pub fn ids(&self) -> Result<Vec<u64>> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            let txn = self.db.read()?;
            let items = txn.open_table(ITEMS)?;
            let mut out = Vec::new();
            for r in items.iter()? {
                out.push(r?.0.value());
            }
            Ok(out)
        })
    }

    /// Runs `f` on the table of namespace `ns` (and its redb name) in a fresh read transaction;
    /// `absent` when the namespace has no table yet.
    fn with_kv<R>(
        &self,
        ns: &str,
        absent: R,
        f: impl FnOnce(&str, &redb::ReadOnlyTable<&'static [u8], &'static [u8]>) -> Result<R>,
    ) -> Result<R> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            let name = kv_table(ns)?;
            let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
            let txn = self.db.read()?;
            match txn.open_table(def) {
                Ok(t) => f(&name, &t),
                Err(TableError::TableDoesNotExist(_)) => Ok(absent),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Value of `key` in the caller namespace `ns`.
    pub fn kv_get(&self, ns: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_kv(ns, None, |name, t| match t.get(key)? {
            Some(v) => Ok(Some(unseal(&self.path, name, key, v.value())?.to_vec())),
            None => Ok(None),
        })
    }

    /// For each of `keys`, the greatest key of namespace `ns` that is `<=` it (`None` when
    /// there is none), read in one transaction: how a caller finds the block of a sorted layout
    /// (keyed by its first entry) that holds a given entry.
    pub fn kv_floor_keys(&self, ns: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.with_kv(ns, vec![None; keys.len()], |_, t| {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                out.push(match t.range(..=k.as_slice())?.next_back() {
                    Some(r) => Some(r?.0.value().to_vec()),
                    None => None,
                });
            }
            Ok(out)
        })
    }

    /// Calls `f(key, value)` for every pair of namespace `ns` whose key starts with `prefix`, in
    /// key order and in one transaction, without collecting them (for scans of large tables).
    pub fn kv_for_each(
        &self,
        ns: &str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.with_kv(ns, (), |name, t| {
            for r in t.range(prefix..)? {
                let (k, v) = r?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                f(k.value(), unseal(&self.path, name, k.value(), v.value())?)?;
            }
            Ok(())
        })
    }

    /// All `(key, value)` pairs of namespace `ns` whose key starts with `prefix`, in key order.
    pub fn kv_scan_prefix(&self, ns: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with_kv(ns, Vec::new(), |name, t| {
            let mut out = Vec::new();
            for r in t.range(prefix..)? {
                let (k, v) = r?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                let value = unseal(&self.path, name, k.value(), v.value())?;
                out.push((k.value().to_vec(), value.to_vec()));
            }
            Ok(out)
        })
    }
}

impl Store {
    /// The generation of the latest commit (bumped by every commit and compaction, also by other
    /// processes): caches built from the store's contents are valid while it is unchanged.
    pub fn generation(&self) -> Result<u64> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            let txn = self.db.read()?;
            schema::committed_generation(&txn, &self.path)
        })
    }

    /// Calls `f(id, metadata)` for every live item, in id order, in one read transaction (one
    /// consistent snapshot). Stops at the first error `f` returns.
    pub fn for_each_meta(&self, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            let txn = self.db.read()?;
            let items = txn.open_table(ITEMS)?;
            for r in items.iter()? {
                let (k, v) = r?;
                let id = k.value();
                let (_, meta) = schema::item_parts(&self.path, id, v.value())?;
                f(id, meta)?;
            }
            Ok(())
        })
    }
}
