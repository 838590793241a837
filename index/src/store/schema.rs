//! The file format, in one place: every table of the redb file, every meta key, and the byte
//! layout of each record. Nothing outside this module spells a table name, a meta key or a
//! record offset.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `&str` (the `meta::*` keys) | u64 LE, or UTF-8 for the model identity, or the entry record |
//! | `items` | id (u64) | node (u32 LE) + caller metadata blob ([`item_row`]) |
//! | `nodes` | node (u32) | [`NodeRecord`]: id (u64 LE) + flags (u8) + graph links |
//! | `heads` | chunk (u32) | `heads_per_chunk` rows of [`head_row`]: norm (f32 LE) + graph vector (f16 LE) |
//! | `tails` | chunk (u32) | `tails_per_chunk` tails: coordinates `ann_dim..dim`, f16 LE (one 4 KiB page) |
//! | `graph_log` | generation (u64) | nodes (u32 LE) whose records that commit changed |
//! | `kv:<ns>` | bytes | bytes (caller namespaces, [`kv_table`]) |
//! | `vectors` | chunk (u32) | format version 1 only: whole f16 vectors (read once, to upgrade) |
//!
//! **Seals** (format version 3): every value of every table, except the `format_version` meta
//! value itself, ends in a 4-byte seal: CRC-32 (LE) of the table's name, the key's bytes and the
//! value ([`seal`]). Every read checks it ([`unseal`]), so a damaged row is an error naming the
//! table and key, never a wrong answer; a row moved under another key or table fails too.
//! Versions 1 and 2 (unsealed) are upgraded in place by the first writer.

use std::collections::HashMap;
use std::path::Path;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::error::{IndexError, Result};
use crate::graph::Hnsw;
use crate::packed;
use crate::settings::{Layout, StoreSettings};
use crate::sketch::{Sketch, Sketches};
use crate::vecmath::{self, F16};

/// Format version written into every store. Version 1 stores (whole f16 vectors, 7 per value)
/// and version 2 stores (no seals) are upgraded in place when opened for writing; other versions
/// are refused.
pub const FORMAT_VERSION: u32 = 3;

pub(super) use crate::seal::{append_seal, seal, u32_at, u64_at, unseal};

pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// id -> node (u32 LE) + caller metadata blob.
pub(super) const ITEMS: TableDefinition<u64, &[u8]> = TableDefinition::new("items");
/// node -> [`NodeRecord`].
pub(super) const NODES: TableDefinition<u32, &[u8]> = TableDefinition::new("nodes");
/// chunk -> `heads_per_chunk` heads packed by node number: the head's norm (f32 LE), then the
/// head normalised (the graph vector, `ann_dim` f16 LE).
pub(super) const HEADS: TableDefinition<u32, &[u8]> = TableDefinition::new("heads");
/// chunk -> `tails_per_chunk` tails packed by node number: coordinates `ann_dim..dim` of the
/// normalised vector, f16 LE. A value fits one 4 KiB page: a re-rank read is one page.
pub(super) const TAILS: TableDefinition<u32, &[u8]> = TableDefinition::new("tails");
/// Format version 1: chunk -> whole f16 vectors (read once, to upgrade).
pub(super) const VECTORS_V1: TableDefinition<u32, &[u8]> = TableDefinition::new("vectors");
/// generation -> nodes (u32 LE) whose records that commit changed.
pub(super) const GRAPH_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("graph_log");

/// Keys of the `meta` table.
pub(super) mod meta {
    /// u64: [`super::FORMAT_VERSION`] of the file.
    pub const FORMAT_VERSION: &str = "format_version";
    /// UTF-8: the model's name.
    pub const MODEL_NAME: &str = "model_name";
    /// UTF-8: the model's fingerprint.
    pub const MODEL_FINGERPRINT: &str = "model_fingerprint";
    /// Path bytes (as the OS gives them), optional: the model folder the store was last
    /// written with (a hint, not part of the identity).
    pub const MODEL_DIR: &str = "model_dir";
    /// u64: full vector dimension.
    pub const DIM: &str = "dim";
    /// u64: dimension of the graph's vectors (Matryoshka head).
    pub const ANN_DIM: &str = "ann_dim";
    /// u64: HNSW links per node.
    pub const HNSW_M: &str = "hnsw_m";
    /// u64: HNSW beam width while building.
    pub const HNSW_EF_CONSTRUCTION: &str = "hnsw_ef_construction";
    /// u64: default HNSW beam width of a search.
    pub const HNSW_EF_SEARCH: &str = "hnsw_ef_search";
    /// u64: rows per value of the heads table.
    pub const HEADS_PER_CHUNK: &str = "heads_per_chunk";
    /// u64: rows per value of the tails table.
    pub const TAILS_PER_CHUNK: &str = "tails_per_chunk";
    /// u64: format version 1 only, whole vectors per value.
    pub const VECTORS_PER_CHUNK_V1: &str = "vectors_per_chunk";
    /// u64: the node number the next vector gets (nodes, heads and tails hold `0..next_node`).
    pub const NEXT_NODE: &str = "next_node";
    /// u64: bumped by every commit; readers compare it with theirs to catch up.
    pub const GENERATION: &str = "generation";
    /// u64: live items.
    pub const LIVE: &str = "live";
    /// u64: tombstoned nodes.
    pub const TOMBSTONES: &str = "tombstones";
    /// The graph's entry point: node (u32 LE) + level (u8); absent for an empty graph.
    pub const ENTRY: &str = "entry";
}

/// Name of the redb table of caller namespace `ns`.
pub(super) fn kv_table(ns: &str) -> Result<String> {
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
pub(super) struct Meta(pub(super) HashMap<String, Vec<u8>>);

impl Meta {
    /// The meta table; values are unsealed when the file's format version has seals (3 on).
    pub(super) fn read<T: ReadableTable<&'static str, &'static [u8]>>(
        t: &T,
        path: &Path,
    ) -> Result<Self> {
        let mut m = HashMap::new();
        for r in t.iter()? {
            let (k, v) = r?;
            m.insert(k.value().to_string(), v.value().to_vec());
        }
        let version = m.get(meta::FORMAT_VERSION).and_then(|v| u64_at(v, 0));
        if version.is_some_and(|v| v >= 3) {
            for (k, v) in m.iter_mut() {
                if k != meta::FORMAT_VERSION {
                    *v = unseal(path, META_NAME, k.as_bytes(), v)?.to_vec();
                }
            }
        }
        Ok(Meta(m))
    }
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(super) fn u64(&self, k: &str) -> Option<u64> {
        self.0.get(k).and_then(|v| u64_at(v, 0))
    }
    /// A path recorded as its bytes.
    pub(super) fn path(&self, k: &str) -> Option<std::path::PathBuf> {
        let b = self.0.get(k)?;
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            Some(std::ffi::OsStr::from_bytes(b).into())
        }
        #[cfg(not(unix))]
        {
            Some(String::from_utf8_lossy(b).into_owned().into())
        }
    }
    pub(super) fn str(&self, k: &str) -> Option<String> {
        self.0
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    /// The graph's entry point (node, level).
    pub(super) fn entry(&self) -> Option<(u32, u8)> {
        self.0
            .get(meta::ENTRY)
            .and_then(|v| Some((u32_at(v, 0)?, *v.get(4)?)))
    }
    pub(super) fn generation(&self) -> u64 {
        self.u64(meta::GENERATION).unwrap_or(0)
    }
    pub(super) fn next_node(&self) -> u32 {
        self.u64(meta::NEXT_NODE).unwrap_or(0) as u32
    }
}

/// Name of the meta table (in seals).
pub(super) const META_NAME: &str = "meta";

/// Writes meta value `k`, sealed.
pub(super) fn put_meta(t: &mut redb::Table<&str, &[u8]>, k: &str, v: &[u8]) -> Result<()> {
    t.insert(k, seal(META_NAME, k.as_bytes(), v).as_slice())?;
    Ok(())
}

pub(super) fn put_u64(t: &mut redb::Table<&str, &[u8]>, k: &str, v: u64) -> Result<()> {
    put_meta(t, k, &v.to_le_bytes())
}

/// Writes the format version (the one value without a seal: it says whether there are seals).
pub(super) fn put_version(t: &mut redb::Table<&str, &[u8]>) -> Result<()> {
    t.insert(
        meta::FORMAT_VERSION,
        (FORMAT_VERSION as u64).to_le_bytes().as_slice(),
    )?;
    Ok(())
}

/// The generation committed in `txn`'s meta table (the one value every search reads).
pub(super) fn committed_generation(txn: &redb::ReadTransaction, path: &Path) -> Result<u64> {
    let m = txn.open_table(META)?;
    match m.get(meta::GENERATION)? {
        Some(v) => {
            let k = meta::GENERATION.as_bytes();
            Ok(u64_at(unseal(path, META_NAME, k, v.value())?, 0).unwrap_or(0))
        }
        None => Ok(0),
    }
}

/// What a commit leaves in the meta table besides the settings: the counters and the graph's
/// entry point. Written by every commit and by compaction.
pub(super) struct Counters {
    pub generation: u64,
    pub next_node: u32,
    pub live: usize,
    pub tombstones: usize,
    pub entry: Option<(u32, u8)>,
}

impl Counters {
    pub(super) fn write(&self, m: &mut redb::Table<&str, &[u8]>) -> Result<()> {
        put_u64(m, meta::GENERATION, self.generation)?;
        put_u64(m, meta::NEXT_NODE, self.next_node as u64)?;
        put_u64(m, meta::LIVE, self.live as u64)?;
        put_u64(m, meta::TOMBSTONES, self.tombstones as u64)?;
        match self.entry {
            Some((n, l)) => {
                let mut e = n.to_le_bytes().to_vec();
                e.push(l);
                put_meta(m, meta::ENTRY, &e)?;
            }
            None => {
                m.remove(meta::ENTRY)?;
            }
        }
        Ok(())
    }
}

/// Creates every table of a new store and writes its settings.
pub(super) fn init_tables(txn: &WriteTransaction, s: &StoreSettings) -> Result<()> {
    {
        let mut m = txn.open_table(META)?;
        put_version(&mut m)?;
        put_meta(&mut m, meta::MODEL_NAME, s.model_name.as_bytes())?;
        put_meta(
            &mut m,
            meta::MODEL_FINGERPRINT,
            s.model_fingerprint.as_bytes(),
        )?;
        if let Some(dir) = &s.model_dir {
            put_meta(&mut m, meta::MODEL_DIR, dir.as_os_str().as_encoded_bytes())?;
        }
        put_u64(&mut m, meta::DIM, s.dim as u64)?;
        put_u64(&mut m, meta::ANN_DIM, s.ann_dim as u64)?;
        put_u64(&mut m, meta::HNSW_M, s.hnsw.m as u64)?;
        put_u64(
            &mut m,
            meta::HNSW_EF_CONSTRUCTION,
            s.hnsw.ef_construction as u64,
        )?;
        put_u64(&mut m, meta::HNSW_EF_SEARCH, s.hnsw.ef_search as u64)?;
        write_layout(&mut m, Layout::new(s.dim, s.ann_dim))?;
        Counters {
            generation: 0,
            next_node: 0,
            live: 0,
            tombstones: 0,
            entry: None,
        }
        .write(&mut m)?;
    }
    txn.open_table(ITEMS)?;
    txn.open_table(NODES)?;
    txn.open_table(HEADS)?;
    txn.open_table(TAILS)?;
    txn.open_table(GRAPH_LOG)?;
    Ok(())
}

/// Records the packing of the heads and tails tables.
pub(super) fn write_layout(m: &mut redb::Table<&str, &[u8]>, layout: Layout) -> Result<()> {
    put_u64(m, meta::HEADS_PER_CHUNK, layout.heads_per_chunk as u64)?;
    put_u64(m, meta::TAILS_PER_CHUNK, layout.tails_per_chunk as u64)
}

const FLAG_DELETED: u8 = 1;

/// A row of the nodes table: id (u64 LE), flags (u8, bit 0 = tombstone), then the node's graph
/// links as [`Hnsw::encode_node`] writes them.
pub(super) struct NodeRecord<'a> {
    pub id: u64,
    pub deleted: bool,
    /// The links, for [`Hnsw::load_node`].
    pub links: &'a [u8],
}

impl<'a> NodeRecord<'a> {
    /// Encodes node `n` of `graph` with its id and tombstone flag, sealed, into `out`.
    pub(super) fn encode(id: u64, deleted: bool, graph: &Hnsw, n: u32, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&id.to_le_bytes());
        out.push(if deleted { FLAG_DELETED } else { 0 });
        graph.encode_node(n, out);
        append_seal(NODES_NAME, &n.to_le_bytes(), out);
    }

    /// Unseals and splits stored row `n`.
    pub(super) fn open(path: &Path, n: u32, row: &'a [u8]) -> Result<Self> {
        let v = unseal(path, NODES_NAME, &n.to_le_bytes(), row)?;
        Self::decode(v).ok_or_else(|| IndexError::Corrupt {
            path: path.to_path_buf(),
            what: format!("nodes row {n} is too short"),
        })
    }

    /// Splits an unsealed row; `None` when it is too short to be one.
    pub(super) fn decode(rec: &'a [u8]) -> Option<Self> {
        if rec.len() < 10 {
            return None;
        }
        Some(NodeRecord {
            id: u64_at(rec, 0)?,
            deleted: rec[8] & FLAG_DELETED != 0,
            links: &rec[9..],
        })
    }
}

/// Table names, for seals.
pub(super) const ITEMS_NAME: &str = "items";
pub(super) const NODES_NAME: &str = "nodes";
pub(super) const HEADS_NAME: &str = "heads";
pub(super) const TAILS_NAME: &str = "tails";
pub(super) const GRAPH_LOG_NAME: &str = "graph_log";

/// A row of the items table (sealed): the node (u32 LE), then the caller's metadata blob.
pub(super) fn item_row(id: u64, node: u32, meta: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + meta.len());
    v.extend_from_slice(&node.to_le_bytes());
    v.extend_from_slice(meta);
    seal(ITEMS_NAME, &id.to_le_bytes(), &v)
}

/// The node and the caller's metadata blob of item `id`'s row.
pub(super) fn item_parts<'a>(path: &Path, id: u64, row: &'a [u8]) -> Result<(u32, &'a [u8])> {
    let v = unseal(path, ITEMS_NAME, &id.to_le_bytes(), row)?;
    match u32_at(v, 0) {
        Some(node) => Ok((node, &v[4..])),
        None => Err(IndexError::Corrupt {
            path: path.to_path_buf(),
            what: format!("items row {id} is too short"),
        }),
    }
}

/// A row of the heads table: the head's norm (f32 LE), then the graph vector (f16 LE).
pub(super) fn head_row(norm: f32, ann: &[F16], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&norm.to_le_bytes());
    vecmath::f16_to_bytes(ann, out);
}

/// A row of the heads table split: the head's norm and the graph vector ([`head_row`]'s inverse).
pub(super) fn head_parts(head: &[u8]) -> (f32, Vec<F16>) {
    let mut ann = Vec::with_capacity(head.len().saturating_sub(4) / 2);
    vecmath::f16_from_bytes(head.get(4..).unwrap_or(&[]), &mut ann);
    let norm = head
        .get(..4)
        .map_or(0.0, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    (norm, ann)
}

/// The graph vector and the sketch of a node, from its rows of the heads and tails tables.
pub(super) fn from_rows(sketcher: &Sketches, head: &[u8], tail: &[u8]) -> (Vec<F16>, Sketch) {
    let (norm, ann) = head_parts(head);
    let mut t = Vec::with_capacity(tail.len() / 2);
    vecmath::f16_from_bytes(tail, &mut t);
    (ann, sketcher.encode_tail(norm, &vecmath::from_f16(&t)))
}

/// Writers appending heads and tails at node `start`.
pub(super) fn packed_writers(
    heads: &redb::Table<u32, &[u8]>,
    tails: &redb::Table<u32, &[u8]>,
    start: u32,
    l: Layout,
    path: &Path,
) -> Result<(packed::Writer, packed::Writer)> {
    Ok((
        packed::Writer::resume(
            heads,
            start,
            l.heads_per_chunk,
            l.head_bytes,
            path,
            Some(HEADS_NAME),
        )?,
        packed::Writer::resume(
            tails,
            start,
            l.tails_per_chunk,
            l.tail_bytes,
            path,
            Some(TAILS_NAME),
        )?,
    ))
}

/// A row of the graph log (sealed): the changed nodes, u32 LE each.
pub(super) fn log_row(gen: u64, nodes: &[u32]) -> Vec<u8> {
    let v: Vec<u8> = nodes.iter().flat_map(|n| n.to_le_bytes()).collect();
    seal(GRAPH_LOG_NAME, &gen.to_le_bytes(), &v)
}

/// The nodes of a graph log row.
pub(super) fn log_nodes(row: &[u8]) -> impl Iterator<Item = u32> + '_ {
    row.chunks_exact(4).filter_map(|c| u32_at(c, 0))
}
