//! The in-memory side of a store: graph, id maps, tombstones and re-rank sketches; loading them
//! from a read transaction and catching up with later commits (readers in other processes).

use rayon::prelude::*;
use redb::{ReadTransaction, ReadableTable};

use super::schema::{
    committed_generation, from_rows, log_nodes, meta, unseal, Meta, NodeRecord, GRAPH_LOG,
    GRAPH_LOG_NAME, HEADS, HEADS_NAME, META, NODES, TAILS, TAILS_NAME,
};
use super::Store;
use crate::error::Result;
use crate::graph::{GraphParams, Hnsw};
use crate::packed;
use crate::settings::{Layout, StoreSettings};
use crate::sketch::{Sketch, Sketches};
use crate::vecmath::F16;

/// Graph, id maps and tombstones as loaded in memory.
pub(super) struct State {
    pub(super) graph: Hnsw,
    /// Per node: head norm + 4-bit tail, to choose which candidates to re-rank from the file.
    pub(super) sketches: Sketches,
    pub(super) ids: Vec<u64>,
    pub(super) deleted: Vec<bool>,
    pub(super) by_id: jsearch_base::ids::IdMap<u32>,
    pub(super) tombstones: usize,
    pub(super) generation: u64,
}

impl Store {
    pub(super) fn graph_params(s: &StoreSettings) -> GraphParams {
        GraphParams {
            m: s.hnsw.m,
            ef_construction: s.hnsw.ef_construction,
            seed: 0x6a73_6561_7263_6821,
        }
    }

    pub(super) fn empty_state(s: &StoreSettings) -> State {
        State {
            graph: Hnsw::new(s.ann_dim, Self::graph_params(s)),
            sketches: Sketches::new(s.dim, s.ann_dim),
            ids: Vec::new(),
            deleted: Vec::new(),
            by_id: Default::default(),
            tombstones: 0,
            generation: 0,
        }
    }

    /// Load graph, ids and tombstones from the committed state of `txn`.
    pub(super) fn load_state(&self, txn: &ReadTransaction) -> Result<State> {
        let meta = Meta::read(&txn.open_table(META)?, &self.path)?;
        let next = meta.next_node();
        let mut st = Self::empty_state(&self.settings);
        st.generation = meta.generation();
        let Layout {
            heads_per_chunk,
            head_bytes: hb,
            tails_per_chunk,
            tail_bytes: tb,
        } = self.layout;
        let nodes = txn.open_table(NODES)?;
        let heads_t = txn.open_table(HEADS)?;
        let tails_t = txn.open_table(TAILS)?;
        let mut heads = packed::Reader::new(
            &heads_t,
            heads_per_chunk,
            hb,
            "head",
            Some((&self.path, HEADS_NAME)),
        )?;
        let mut tails = packed::Reader::new(
            &tails_t,
            tails_per_chunk,
            tb,
            "tail",
            Some((&self.path, TAILS_NAME)),
        )?;
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
                if nk.value() != node {
                    return Err(self.corrupt(format!("node record {node} missing")));
                }
                let rec = NodeRecord::open(&self.path, node, nv.value())?;
                if !st.graph.load_node(node, Some(&ann), rec.links, next) {
                    return Err(self.corrupt(format!("node record {node} does not decode")));
                }
                st.ids.push(rec.id);
                st.sketches.push(sketch);
                st.deleted.push(rec.deleted);
                if rec.deleted {
                    st.tombstones += 1;
                } else {
                    st.by_id.insert(rec.id, node);
                }
                node += 1;
            }
        }
        st.graph.set_entry(meta.entry());
        st.graph.clear_dirty();
        Ok(st)
    }

    /// Bring a reader's in-memory graph to the generation committed in `txn`.
    pub(super) fn refresh(&self, st: &mut State, txn: &ReadTransaction) -> Result<()> {
        let meta = Meta::read(&txn.open_table(META)?, &self.path)?;
        let gen = meta.generation();
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
                        let key = g.to_le_bytes();
                        let row = unseal(&self.path, GRAPH_LOG_NAME, &key, v.value())?;
                        changed.extend(log_nodes(row));
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
        let next = meta.next_node();
        let nodes = txn.open_table(NODES)?;
        let heads = txn.open_table(HEADS)?;
        let tails = txn.open_table(TAILS)?;
        for &n in &changed {
            let row = nodes
                .get(n)?
                .ok_or_else(|| self.corrupt(format!("node record {n} missing")))?;
            let rec = NodeRecord::open(&self.path, n, row.value())?;
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
            if !st.graph.load_node(n, ann.as_deref(), rec.links, next) {
                return Err(self.corrupt(format!("node record {n} does not decode")));
            }
            if is_new {
                st.ids.push(rec.id);
                st.deleted.push(false);
            }
            st.deleted[n as usize] = rec.deleted;
            if rec.deleted {
                if st.by_id.get(&rec.id) == Some(&n) {
                    st.by_id.remove(&rec.id);
                }
            } else {
                st.by_id.insert(rec.id, n);
            }
        }
        st.tombstones = meta.u64(meta::TOMBSTONES).unwrap_or(0) as usize;
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
        let h = packed::get(
            heads,
            n,
            l.heads_per_chunk,
            l.head_bytes,
            &self.path,
            HEADS_NAME,
        )?
        .ok_or_else(|| self.corrupt(format!("head of node {n} missing")))?;
        let t = self.read_tail(tails, n)?;
        Ok(from_rows(sketcher, &h, &t))
    }

    /// The stored tail of node `n` (bytes).
    pub(super) fn read_tail<T: ReadableTable<u32, &'static [u8]>>(
        &self,
        tails: &T,
        n: u32,
    ) -> Result<Vec<u8>> {
        let l = self.layout;
        packed::get(
            tails,
            n,
            l.tails_per_chunk,
            l.tail_bytes,
            &self.path,
            TAILS_NAME,
        )?
        .ok_or_else(|| self.corrupt(format!("tail of node {n} missing")))
    }

    /// Run `f` on the in-memory state at the generation of a fresh read transaction.
    pub(super) fn with_state<R>(
        &self,
        f: impl Fn(&State, &ReadTransaction) -> Result<R>,
    ) -> Result<R> {
        loop {
            let txn = self.db.read()?;
            let gen = committed_generation(&txn, &self.path)?;
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
}
