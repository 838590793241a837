//! Writing: a [`Batch`] committed in one transaction, and compaction.

use std::collections::HashSet;
use std::path::Path;

use rayon::prelude::*;
use redb::{Database, ReadableTable, TableDefinition};

use super::schema::{
    self, head_row, kv_table, packed_writers, Counters, NodeRecord, GRAPH_LOG, HEADS, ITEMS, META,
    NODES, TAILS,
};
use super::state::State;
use super::{Db, Store};
use crate::error::{IndexError, Result};
use crate::graph::{AnnGraph, Hnsw};
use crate::packed;
use crate::sketch::{Sketch, Sketches};
use crate::vecmath::{self, F16};

/// How many commits of graph changes are kept for readers in other processes to catch up
/// incrementally; a reader further behind reloads the whole graph.
const GRAPH_LOG_KEEP: u64 = 256;

enum KvOp {
    Put(String, Vec<u8>, Vec<u8>),
    Delete(String, Vec<u8>),
    Clear(String),
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
    /// Delete every key of the caller namespace `ns` (its table is dropped; later puts of this
    /// batch start it again).
    pub fn kv_clear(&mut self, ns: &str) {
        self.kv.push(KvOp::Clear(ns.to_string()));
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
                KvOp::Put(ns, ..) | KvOp::Delete(ns, _) | KvOp::Clear(ns) => {
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

    /// The writable database, or [`IndexError::ReadOnly`].
    fn writable(&mut self) -> Result<(&mut Database, &mut State)> {
        match &mut self.db {
            Db::Rw(d) => Ok((d, self.state.get_mut().unwrap_or_else(|e| e.into_inner()))),
            Db::Ro(_) | Db::Recovered(_) => Err(IndexError::ReadOnly {
                path: self.path.clone(),
            }),
        }
    }

    /// Records a new fingerprint of the model the store was built with (the same model,
    /// identified more exactly: e.g. by its weights' content as well as their layout).
    pub fn set_model_fingerprint(&mut self, fingerprint: &str) -> Result<()> {
        self.put_meta_now(schema::meta::MODEL_FINGERPRINT, fingerprint.as_bytes())?;
        self.settings.model_fingerprint = fingerprint.to_string();
        Ok(())
    }

    /// Records the model folder the store is written with (see
    /// [`crate::StoreSettings::model_dir`]); nothing is written when it is already recorded.
    pub fn set_model_dir(&mut self, dir: &Path) -> Result<()> {
        if self.settings.model_dir.as_deref() == Some(dir) {
            return Ok(());
        }
        self.put_meta_now(schema::meta::MODEL_DIR, dir.as_os_str().as_encoded_bytes())?;
        self.settings.model_dir = Some(dir.to_path_buf());
        Ok(())
    }

    /// Writes one meta key in a transaction of its own.
    fn put_meta_now(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            let (db, _) = self.writable()?;
            let txn = db.begin_write()?;
            schema::put_meta(&mut txn.open_table(schema::META)?, key, value)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Commit a batch in one redb transaction: either all of it is in the file afterwards, or
    /// nothing (also when the process dies mid-commit). Vectors are validated first: wrong
    /// dimension, NaN/inf, zero vectors, duplicate ids and bad namespaces fail with nothing written.
    /// New vectors are linked into the graph in parallel (rayon). Afterwards, if tombstones exceed
    /// `compact_threshold`, the store is compacted.
    pub fn commit(&mut self, batch: Batch) -> Result<()> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            self.writable()?;
            let prepared = self.prepare(&batch)?;
            let res = self.commit_inner(batch, prepared);
            if res.is_err() {
                // The in-memory graph may be ahead of the file: reload what is committed. The
                // first error is the one to report (after a failed write redb answers every
                // later call with "previous I/O error").
                let reloaded = self.db.read().and_then(|txn| self.load_state(&txn));
                if let Ok(st) = reloaded {
                    *self.state.get_mut().unwrap_or_else(|e| e.into_inner()) = st;
                }
                return res;
            }
            let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
            if !st.ids.is_empty()
                && st.tombstones as f32 > self.settings.compact_threshold * st.ids.len() as f32
            {
                self.compact()?;
            }
            Ok(())
        })
    }

    fn commit_inner(&mut self, batch: Batch, prepared: Vec<Prepared>) -> Result<()> {
        let layout = self.layout;
        let path = self.path.clone();
        let (db, st) = self.writable()?;
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
            let (mut hw, mut tw) = packed_writers(&heads, &tails, start, layout, &path)?;
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
                items.insert(p.id, schema::item_row(p.id, node, &p.meta).as_slice())?;
            }
            let mut changed = st.graph.take_dirty();
            changed.extend(flagged);
            changed.sort_unstable();
            changed.dedup();
            let mut nodes = txn.open_table(NODES)?;
            let mut rec = Vec::new();
            for &n in &changed {
                let i = n as usize;
                NodeRecord::encode(st.ids[i], st.deleted[i], &st.graph, n, &mut rec);
                nodes.insert(n, rec.as_slice())?;
            }
            // Caller key-value tables.
            for op in &batch.kv {
                match op {
                    KvOp::Put(ns, k, v) => {
                        let name = kv_table(ns)?;
                        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
                        let sealed = schema::seal(&name, k, v);
                        txn.open_table(def)?
                            .insert(k.as_slice(), sealed.as_slice())?;
                    }
                    KvOp::Delete(ns, k) => {
                        let name = kv_table(ns)?;
                        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
                        txn.open_table(def)?.remove(k.as_slice())?;
                    }
                    KvOp::Clear(ns) => {
                        let name = kv_table(ns)?;
                        let def: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
                        txn.delete_table(def)?;
                    }
                }
            }
            let gen = st.generation + 1;
            let mut log = txn.open_table(GRAPH_LOG)?;
            log.insert(gen, schema::log_row(gen, &changed).as_slice())?;
            if gen > GRAPH_LOG_KEEP {
                log.remove(gen - GRAPH_LOG_KEEP)?;
            }
            Counters {
                generation: gen,
                next_node: st.ids.len() as u32,
                live: st.by_id.len(),
                tombstones: st.tombstones,
                entry: st.graph.entry(),
            }
            .write(&mut txn.open_table(META)?)?;
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
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            let ann_dim = self.settings.ann_dim;
            let graph_params = Self::graph_params(&self.settings);
            let layout = self.layout;
            let path = self.path.clone();
            let (db, st) = self.writable()?;
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
                    let mut rows = packed::Reader::new(
                        &tails,
                        layout.tails_per_chunk,
                        tb,
                        "tail",
                        Some((&path, schema::TAILS_NAME)),
                    )?;
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
                    let mut g = Hnsw::new(ann_dim, graph_params);
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
                    let n = n as u32;
                    NodeRecord::encode(id, false, &graph, n, &mut rec);
                    nodes.insert(n, rec.as_slice())?;
                    let meta = match items.get(id)? {
                        Some(v) => schema::item_parts(&path, id, v.value())?.1.to_vec(),
                        None => {
                            return Err(IndexError::Corrupt {
                                path: path.clone(),
                                what: format!("items row {id} missing"),
                            })
                        }
                    };
                    items.insert(id, schema::item_row(id, n, &meta).as_slice())?;
                }
                txn.open_table(GRAPH_LOG)?;
                graph.clear_dirty();
                let gen = st.generation + 1;
                Counters {
                    generation: gen,
                    next_node: ids.len() as u32,
                    live: ids.len(),
                    tombstones: 0,
                    entry: graph.entry(),
                }
                .write(&mut txn.open_table(META)?)?;
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
        })
    }
}
