//! The approximate-nearest-neighbour graph over the truncated (Matryoshka) f16 vectors.
//!
//! [`AnnGraph`] is the small internal seam that lets the `ann` bench compare graph
//! implementations (this crate's [`Hnsw`], usearch, hnsw_rs) under identical conditions.
//! The store ships [`Hnsw`]: it is the only one whose nodes can be persisted record by record
//! inside the redb file (see `docs/index.md` for the decision and its numbers).
//!
//! Nodes are dense `u32` indices `0..len`. Vectors must be L2-normalised; the distance is
//! `1 - dot` computed with simsimd on f16.

use crate::vecmath::{dot_f16, prefetch, F16};
use rayon::prelude::*;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering as AtOrd};
use std::sync::Mutex;

/// A graph index over dense node numbers, as the store and the bench use it.
pub trait AnnGraph: Send + Sync {
    /// Number of nodes (including tombstoned ones, which the caller filters with `accept`).
    fn len(&self) -> usize;
    /// True when there are no nodes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Append `vectors.len() / dim` nodes numbered `len()..` and link them, in parallel (rayon).
    fn add_batch(&mut self, vectors: &[F16]);
    /// Up to `k` accepted nodes nearest to `query`, exploring with beam width `ef` (>= k),
    /// sorted by ascending distance `1 - dot`.
    fn search(
        &self,
        query: &[F16],
        k: usize,
        ef: usize,
        accept: &(dyn Fn(u32) -> bool + Sync),
    ) -> Vec<(f32, u32)>;
}

/// Graph construction and search parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphParams {
    /// Links per node on the upper levels (level 0 keeps `2 * m`).
    pub m: usize,
    /// Beam width while inserting.
    pub ef_construction: usize,
    /// Seed of the level assignment (levels are a pure function of seed and node number).
    pub seed: u64,
}

#[derive(Clone, Copy, Debug)]
struct Cand {
    d: f32,
    n: u32,
}
impl PartialEq for Cand {
    fn eq(&self, o: &Self) -> bool {
        self.d.total_cmp(&o.d) == Ordering::Equal && self.n == o.n
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.d.total_cmp(&o.d).then(self.n.cmp(&o.n))
    }
}
/// Min-heap adaptor.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rev(std::cmp::Reverse<Cand>);

/// Visited marks, one u16 epoch per node (2 MB at 1M nodes: half the cache footprint of u32).
struct Visited {
    marks: Vec<u16>,
    epoch: u16,
}
impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }
    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let m = &mut self.marks[i as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}
thread_local! {
    static VISITED: RefCell<Visited> = const { RefCell::new(Visited { marks: Vec::new(), epoch: 0 }) };
}

const LOCK_STRIPES: usize = 4096;
/// Neighbours whose vectors are being loaded ahead of the one being scored.
const PREFETCH_AHEAD: usize = 4;
const MAX_LEVEL: u8 = 16;

/// HNSW (Malkov & Yashunin) over f16 vectors with simsimd dot products: flat level-0 adjacency,
/// lock-striped parallel insertion, tombstone/filter-aware search (rejected nodes are traversed
/// but never returned), per-node dirty tracking so the store persists only what changed.
pub struct Hnsw {
    dim: usize,
    params: GraphParams,
    m0: usize,
    vecs: Vec<F16>,
    levels: Vec<u8>,
    /// `len * (m0 + 1)` slots: count, then neighbours.
    l0: Vec<AtomicU32>,
    /// Per node, `level * (m + 1)` slots for levels 1..=level.
    upper: Vec<Option<Box<[AtomicU32]>>>,
    dirty: Vec<AtomicBool>,
    entry: Mutex<Option<(u32, u8)>>,
    locks: Vec<Mutex<()>>,
    /// Writers only: the first node of each distinct vector (the head of its twins' ring, see
    /// [`Hnsw::join_twins`]), filled in for older nodes before the first insert.
    heads: Mutex<Heads>,
}

/// Vector hash → head node, for the nodes below `upto`.
#[derive(Default)]
struct Heads {
    upto: u32,
    map: HashMap<u64, u32>,
}

/// A fast hash of a vector's bits (FxHash-style; collisions are checked against the vectors).
fn vector_hash(v: &[F16]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h.rotate_left(5) ^ u64::from(x.0)).wrapping_mul(0x517c_c1b7_2722_0a95)
    })
}

impl Hnsw {
    /// An empty graph for `dim`-dimensional vectors.
    pub fn new(dim: usize, params: GraphParams) -> Self {
        let m = params.m.max(2);
        Hnsw {
            dim,
            params: GraphParams { m, ..params },
            m0: 2 * m,
            vecs: Vec::new(),
            levels: Vec::new(),
            l0: Vec::new(),
            upper: Vec::new(),
            dirty: Vec::new(),
            entry: Mutex::new(None),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            heads: Mutex::new(Heads::default()),
        }
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Parameters.
    pub fn params(&self) -> GraphParams {
        self.params
    }

    /// Approximate heap bytes held (vectors + links), for reports.
    pub fn memory_bytes(&self) -> usize {
        self.vecs.len() * 2
            + self.l0.len() * 4
            + self.levels.len() * 17
            + self.dirty.len()
            + self
                .upper
                .iter()
                .map(|u| u.as_ref().map_or(0, |b| b.len() * 4))
                .sum::<usize>()
    }

    /// Entry point (node, level), if any node exists.
    pub fn entry(&self) -> Option<(u32, u8)> {
        *self.entry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Vector of a node.
    #[inline]
    pub fn vector(&self, n: u32) -> &[F16] {
        let s = n as usize * self.dim;
        &self.vecs[s..s + self.dim]
    }

    fn level_for(&self, node: u32) -> u8 {
        let mut z = self.params.seed ^ (node as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * ml).floor() as u64).min(MAX_LEVEL as u64) as u8
    }

    #[inline]
    fn dist(&self, q: &[F16], n: u32) -> f32 {
        1.0 - dot_f16(q, self.vector(n))
    }

    #[inline]
    fn slots(&self, n: u32, level: u8) -> &[AtomicU32] {
        if level == 0 {
            let s = n as usize * (self.m0 + 1);
            &self.l0[s..s + self.m0 + 1]
        } else {
            let m = self.params.m;
            match &self.upper[n as usize] {
                Some(b) => {
                    let s = (level as usize - 1) * (m + 1);
                    &b[s..s + m + 1]
                }
                None => &[],
            }
        }
    }

    /// Neighbours of `n` at `level` (copied; safe to call during insertion).
    pub fn neighbors(&self, n: u32, level: u8) -> Vec<u32> {
        let mut out = Vec::new();
        self.neighbors_into(n, level, &mut out);
        out
    }

    #[inline]
    fn prefetch_links(&self, n: u32, level: u8) {
        if level == 0 {
            let s = n as usize * (self.m0 + 1);
            if let Some(a) = self.l0.get(s..s + self.m0 + 1) {
                crate::vecmath::prefetch_lines(a, 4);
            }
        }
    }

    #[inline]
    fn neighbors_into(&self, n: u32, level: u8, out: &mut Vec<u32>) {
        out.clear();
        let s = self.slots(n, level);
        if s.is_empty() {
            return;
        }
        let cnt = (s[0].load(AtOrd::Relaxed) as usize).min(s.len() - 1);
        out.extend(s[1..=cnt].iter().map(|a| a.load(AtOrd::Relaxed)));
    }

    fn set_neighbors(&self, n: u32, level: u8, nb: &[u32]) {
        let s = self.slots(n, level);
        let cnt = nb.len().min(s.len().saturating_sub(1));
        for (slot, &v) in s[1..=cnt].iter().zip(nb) {
            slot.store(v, AtOrd::Relaxed);
        }
        s[0].store(cnt as u32, AtOrd::Relaxed);
        self.dirty[n as usize].store(true, AtOrd::Relaxed);
    }

    /// Room for `additional` more nodes, with huge pages asked for under the big arrays.
    pub fn reserve(&mut self, additional: usize) {
        crate::hugepages::reserve(&mut self.vecs, additional * self.dim);
        crate::hugepages::reserve(&mut self.l0, additional * (self.m0 + 1));
        self.levels.reserve(additional);
        self.upper.reserve(additional);
        self.dirty.reserve(additional);
    }

    /// Append nodes without linking them (used by `add_batch` and by loading).
    fn push_nodes(&mut self, vectors: &[F16], levels: Option<&[u8]>) -> (u32, u32) {
        let start = self.levels.len() as u32;
        let count = vectors.len() / self.dim;
        self.reserve(count);
        self.vecs.extend_from_slice(&vectors[..count * self.dim]);
        for i in 0..count {
            let node = start + i as u32;
            let lvl = levels.map_or_else(|| self.level_for(node), |l| l[i]);
            self.levels.push(lvl);
            self.upper.push(if lvl > 0 {
                Some(
                    (0..lvl as usize * (self.params.m + 1))
                        .map(|_| AtomicU32::new(0))
                        .collect(),
                )
            } else {
                None
            });
            self.dirty.push(AtomicBool::new(true));
        }
        self.l0
            .extend((0..count * (self.m0 + 1)).map(|_| AtomicU32::new(0)));
        (start, start + count as u32)
    }

    fn greedy(
        &self,
        q: &[F16],
        mut cur: u32,
        mut curd: f32,
        level: u8,
        buf: &mut Vec<u32>,
    ) -> (u32, f32) {
        loop {
            let mut changed = false;
            self.neighbors_into(cur, level, buf);
            for &nb in buf.iter() {
                let d = self.dist(q, nb);
                if d < curd {
                    curd = d;
                    cur = nb;
                    changed = true;
                }
            }
            if !changed {
                return (cur, curd);
            }
        }
    }

    /// Beam search on one level. Rejected nodes are traversed but not returned.
    fn search_layer(
        &self,
        q: &[F16],
        eps: &[Cand],
        ef: usize,
        level: u8,
        accept: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Vec<Cand> {
        VISITED.with(|v| {
            let mut vis = v.borrow_mut();
            vis.reset(self.levels.len());
            let mut top: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef + 1);
            let mut cands: BinaryHeap<Rev> = BinaryHeap::with_capacity(ef * 4);
            let ok = |n: u32| accept.is_none_or(|f| f(n));
            for &e in eps {
                if vis.insert(e.n) {
                    if ok(e.n) {
                        top.push(e);
                    }
                    cands.push(Rev(std::cmp::Reverse(e)));
                }
            }
            let mut lower = top.peek().map_or(f32::INFINITY, |c| c.d);
            let mut buf = Vec::with_capacity(self.m0);
            while let Some(Rev(std::cmp::Reverse(c))) = cands.pop() {
                if c.d > lower && top.len() >= ef {
                    break;
                }
                // The next candidate's neighbour list, while this one's are scored.
                if let Some(Rev(std::cmp::Reverse(next))) = cands.peek() {
                    self.prefetch_links(next.n, level);
                }
                self.neighbors_into(c.n, level, &mut buf);
                // Keep the memory loads of the unvisited neighbours' vectors a few nodes ahead of
                // the distance being computed (all at once would overrun the miss buffers).
                buf.retain(|&nb| vis.insert(nb));
                for &nb in buf.iter().take(PREFETCH_AHEAD) {
                    prefetch(self.vector(nb));
                }
                for (j, &nb) in buf.iter().enumerate() {
                    if let Some(&ahead) = buf.get(j + PREFETCH_AHEAD) {
                        prefetch(self.vector(ahead));
                    }
                    let d = self.dist(q, nb);
                    if top.len() < ef || d < lower {
                        let cd = Cand { d, n: nb };
                        cands.push(Rev(std::cmp::Reverse(cd)));
                        if ok(nb) {
                            top.push(cd);
                            if top.len() > ef {
                                top.pop();
                            }
                        }
                        if let Some(w) = top.peek() {
                            lower = w.d;
                        }
                    }
                }
            }
            top.into_sorted_vec()
        })
    }

    /// hnswlib's neighbour-selection heuristic: keep a candidate only if it is closer to the
    /// new node than to every neighbour already kept. `cands` sorted ascending.
    fn select(&self, cands: &[Cand], m: usize) -> Vec<u32> {
        if cands.len() <= m {
            return cands.iter().map(|c| c.n).collect();
        }
        let mut out: Vec<u32> = Vec::with_capacity(m);
        for c in cands {
            if out.len() >= m {
                break;
            }
            let v = self.vector(c.n);
            if out.iter().all(|&s| 1.0 - dot_f16(v, self.vector(s)) >= c.d) {
                out.push(c.n);
            }
        }
        out
    }

    fn lock(&self, n: u32) -> std::sync::MutexGuard<'_, ()> {
        self.locks[n as usize % LOCK_STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn connect(&self, s: u32, q: u32, level: u8) {
        let _g = self.lock(s);
        let cap = if level == 0 { self.m0 } else { self.params.m };
        let mut nb = self.neighbors(s, level);
        if nb.contains(&q) {
            return;
        }
        if nb.len() < cap {
            nb.push(q);
            self.set_neighbors(s, level, &nb);
            return;
        }
        // On level 0 the link to the next twin in `s`'s ring is never pruned (see `join_twins`).
        let ring = if level == 0 {
            nb.iter()
                .position(|&n| self.twins(n, s))
                .map(|i| nb.remove(i))
        } else {
            None
        };
        let v = self.vector(s);
        let mut c: Vec<Cand> = nb
            .iter()
            .chain(std::iter::once(&q))
            .map(|&n| Cand {
                d: 1.0 - dot_f16(v, self.vector(n)),
                n,
            })
            .collect();
        c.sort();
        let mut sel = self.select(&c, cap - usize::from(ring.is_some()));
        if let Some(r) = ring {
            sel.insert(0, r);
        }
        self.set_neighbors(s, level, &sel);
    }

    /// Whether two nodes hold the same vector (bit for bit): a catalog's variants sharing a
    /// title or an image, copies of one file.
    fn twins(&self, a: u32, b: u32) -> bool {
        a != b && self.vector(a) == self.vector(b)
    }

    /// The head of `q`'s twins (the first node inserted with its vector), or `None` when `q`
    /// is the first: it becomes the head.
    fn head_of(&self, q: u32) -> Option<u32> {
        let v = self.vector(q);
        let mut h = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        match h.map.entry(vector_hash(v)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let t = *e.get();
                (t != q && self.vector(t) == v).then_some(t)
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(q);
                None
            }
        }
    }

    /// Records the heads of the nodes below `end` that the head map has not seen (loaded or
    /// renumbered graphs), so that new twins of old vectors join the old ring.
    fn catch_up_heads(&mut self, end: u32) {
        let h = self.heads.get_mut().unwrap_or_else(|e| e.into_inner());
        if h.upto >= end {
            return;
        }
        let (dim, vecs) = (self.dim, &self.vecs);
        for n in h.upto..end {
            let s = n as usize * dim;
            h.map.entry(vector_hash(&vecs[s..s + dim])).or_insert(n);
        }
        h.upto = end;
    }

    /// Level 0 for a node `q` whose vector the head `t` has too: twins form a ring, each linking
    /// to the next, and `q` is spliced in after `t`. Without it the neighbour heuristic keeps one
    /// twin per list (the others are "covered" by it), and a group of twins larger than a list
    /// ended up partly unreachable: searches, filtered ones most of all, came back without some
    /// of the equally best items (a catalog's variants sharing a title or an image).
    fn join_twins(&self, t: u32, q: u32) {
        // Both locks, in stripe order (two splices never wait on each other crosswise).
        let (a, b) = {
            let (x, y) = (t as usize % LOCK_STRIPES, q as usize % LOCK_STRIPES);
            (x.min(y), x.max(y))
        };
        let _ga = self.locks[a].lock().unwrap_or_else(|e| e.into_inner());
        let _gb = (b != a).then(|| self.locks[b].lock().unwrap_or_else(|e| e.into_inner()));
        let mut tn = self.neighbors(t, 0);
        let next = match tn.iter().position(|&n| self.twins(n, t)) {
            Some(i) => std::mem::replace(&mut tn[i], q),
            None => {
                tn.insert(0, q);
                t
            }
        };
        let mut qn = self.neighbors(q, 0);
        qn.retain(|&n| n != next);
        qn.insert(0, next);
        // Full lists drop their last (farthest-kept) link, never the ring's.
        qn.truncate(self.m0);
        tn.truncate(self.m0);
        // `q` first, so that a walk reaching `q` through `t` finds its links.
        self.set_neighbors(q, 0, &qn);
        self.set_neighbors(t, 0, &tn);
    }

    fn insert(&self, q: u32) {
        let lvl = self.levels[q as usize];
        let start = {
            let mut e = self.entry.lock().unwrap_or_else(|e| e.into_inner());
            match *e {
                None => {
                    *e = Some((q, lvl));
                    drop(e);
                    self.head_of(q);
                    return;
                }
                Some(x) => x,
            }
        };
        let (ep, maxl) = start;
        let qv = self.vector(q);
        let mut cur = ep;
        let mut curd = self.dist(qv, ep);
        let mut buf = Vec::new();
        let mut l = maxl;
        while l > lvl {
            (cur, curd) = self.greedy(qv, cur, curd, l, &mut buf);
            l -= 1;
        }
        let mut eps = vec![Cand { d: curd, n: cur }];
        for l in (0..=lvl.min(maxl)).rev() {
            let w = self.search_layer(qv, &eps, self.params.ef_construction, l, None);
            let w: Vec<Cand> = w.into_iter().filter(|c| c.n != q).collect();
            // On level 0 `q`'s own links go to distinct vectors; its twins, if any, are joined
            // through their ring once those links are in place.
            let sel = if l == 0 {
                let others: Vec<Cand> = w.iter().copied().filter(|c| !self.twins(c.n, q)).collect();
                self.select(&others, self.params.m)
            } else {
                self.select(&w, self.params.m)
            };
            {
                let _g = self.lock(q);
                self.set_neighbors(q, l, &sel);
            }
            for &s in &sel {
                self.connect(s, q, l);
            }
            if l == 0 {
                if let Some(t) = self.head_of(q) {
                    self.join_twins(t, q);
                }
            }
            if !w.is_empty() {
                eps = w;
            }
        }
        if lvl > maxl {
            let mut e = self.entry.lock().unwrap_or_else(|e| e.into_inner());
            if e.is_none_or(|(_, ml)| lvl > ml) {
                *e = Some((q, lvl));
            }
        }
    }

    /// Nodes changed since the last call (new nodes and nodes whose links changed); clears the marks.
    pub fn take_dirty(&self) -> Vec<u32> {
        self.dirty
            .iter()
            .enumerate()
            .filter(|(_, d)| d.swap(false, AtOrd::Relaxed))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Serialise a node's links: `level u8`, then per level 0..=level `count u8` + `count` u32 LE.
    pub fn encode_node(&self, n: u32, out: &mut Vec<u8>) {
        let lvl = self.levels[n as usize];
        out.push(lvl);
        let mut buf = Vec::new();
        for l in 0..=lvl {
            self.neighbors_into(n, l, &mut buf);
            out.push(buf.len() as u8);
            for &x in &buf {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }

    /// Append node `n` (must equal `len()`) with its vector and serialised links
    /// (as written by [`Hnsw::encode_node`]), or overwrite the links of an existing node.
    /// Returns false if the record does not decode or links point past `limit`.
    pub fn load_node(&mut self, n: u32, vector: Option<&[F16]>, rec: &[u8], limit: u32) -> bool {
        let Some(&lvl) = rec.first() else {
            return false;
        };
        if lvl > MAX_LEVEL {
            return false;
        }
        if n as usize == self.levels.len() {
            let Some(v) = vector else { return false };
            if v.len() != self.dim {
                return false;
            }
            self.push_nodes(v, Some(&[lvl]));
        } else if (n as usize) > self.levels.len() || self.levels[n as usize] != lvl {
            return false;
        }
        let mut p = 1usize;
        for l in 0..=lvl {
            let Some(&cnt) = rec.get(p) else { return false };
            p += 1;
            let end = p + cnt as usize * 4;
            let Some(bytes) = rec.get(p..end) else {
                return false;
            };
            let nb: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            if nb.iter().any(|&x| x >= limit) {
                return false;
            }
            self.set_neighbors(n, l, &nb);
            p = end;
        }
        true
    }

    /// Set the entry point (after loading).
    pub fn set_entry(&mut self, e: Option<(u32, u8)>) {
        *self.entry.get_mut().unwrap_or_else(|e| e.into_inner()) = e;
    }

    /// Forget which nodes changed (after loading or after everything was written).
    pub fn clear_dirty(&mut self) {
        self.dirty.iter_mut().for_each(|d| *d.get_mut() = false);
    }

    /// A node order in which near neighbours get near numbers: nodes are grouped by the
    /// level-2 node they descend to, then by their level-1 node, then by distance to it (every
    /// node walks down from the entry point as an insertion would, so this costs a few dozen
    /// distances per node, in parallel). Returned as `order[new] = old`. The store packs full
    /// vectors in node order, so after renumbering a query's candidates share vector chunks
    /// and the re-rank reads fewer redb pages; the graph walk touches nearer memory too.
    pub fn locality_order(&self) -> Vec<u32> {
        let n = self.levels.len() as u32;
        let Some((ep, maxl)) = self.entry() else {
            return (0..n).collect();
        };
        let mut keys: Vec<(u32, u32, u32, u32)> = (0..n)
            .into_par_iter()
            .map_init(Vec::new, |buf, node| {
                let q = self.vector(node);
                let (mut cur, mut curd) = (ep, self.dist(q, ep));
                let mut anchors = [ep, ep];
                for l in (1..=maxl).rev() {
                    (cur, curd) = self.greedy(q, cur, curd, l, buf);
                    if l <= 2 {
                        anchors[l as usize - 1] = cur;
                    }
                }
                // Distances are >= 0 here up to rounding; the bit pattern of a non-negative
                // f32 orders like the value.
                (anchors[1], anchors[0], curd.max(0.0).to_bits(), node)
            })
            .collect();
        keys.par_sort_unstable();
        keys.into_iter().map(|k| k.3).collect()
    }

    /// A copy of the graph with its nodes renumbered: `order[new] = old`, a permutation of
    /// `0..len()`. Links, levels, vectors and the entry point follow; every node is dirty.
    pub fn reordered(&self, order: &[u32]) -> Hnsw {
        let n = self.levels.len();
        assert_eq!(
            order.len(),
            n,
            "reordered: order must be a permutation of the nodes"
        );
        let mut new_of = vec![u32::MAX; n];
        for (new, &old) in order.iter().enumerate() {
            new_of[old as usize] = new as u32;
        }
        let mut g = Hnsw::new(self.dim, self.params);
        let mut vecs = Vec::with_capacity(self.vecs.len());
        let mut levels = Vec::with_capacity(n);
        for &old in order {
            vecs.extend_from_slice(self.vector(old));
            levels.push(self.levels[old as usize]);
        }
        g.push_nodes(&vecs, Some(&levels));
        let mut buf = Vec::new();
        for (new, &old) in order.iter().enumerate() {
            for l in 0..=self.levels[old as usize] {
                self.neighbors_into(old, l, &mut buf);
                let mapped: Vec<u32> = buf.iter().map(|&x| new_of[x as usize]).collect();
                g.set_neighbors(new as u32, l, &mapped);
            }
        }
        g.set_entry(self.entry().map(|(e, l)| (new_of[e as usize], l)));
        g
    }
}

impl AnnGraph for Hnsw {
    fn len(&self) -> usize {
        self.levels.len()
    }

    fn add_batch(&mut self, vectors: &[F16]) {
        let old = self.levels.len() as u32;
        self.catch_up_heads(old);
        let (start, end) = self.push_nodes(vectors, None);
        if start == end {
            return;
        }
        let mut first = start;
        if self.entry().is_none() {
            self.insert(start);
            first += 1;
        }
        let this = &*self;
        (first..end).into_par_iter().for_each(|q| this.insert(q));
        self.heads.get_mut().unwrap_or_else(|e| e.into_inner()).upto = end;
    }

    fn search(
        &self,
        query: &[F16],
        k: usize,
        ef: usize,
        accept: &(dyn Fn(u32) -> bool + Sync),
    ) -> Vec<(f32, u32)> {
        self.search_with(query, k, ef, Some(accept))
    }
}

impl Hnsw {
    /// [`AnnGraph::search`], with `accept = None` meaning every node (no per-node check).
    pub fn search_with(
        &self,
        query: &[F16],
        k: usize,
        ef: usize,
        accept: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Vec<(f32, u32)> {
        let Some((ep, maxl)) = self.entry() else {
            return Vec::new();
        };
        let mut cur = ep;
        let mut curd = self.dist(query, ep);
        let mut buf = Vec::new();
        for l in (1..=maxl).rev() {
            (cur, curd) = self.greedy(query, cur, curd, l, &mut buf);
        }
        let mut r = self.search_layer(query, &[Cand { d: curd, n: cur }], ef.max(k), 0, accept);
        r.truncate(k);
        r.into_iter().map(|c| (c.d, c.n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vecmath::{normalize, to_f16};

    fn data(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..d)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                    })
                    .collect();
                normalize(&mut v);
                v
            })
            .collect()
    }

    #[test]
    fn recall_vs_brute_force() {
        let d = 32;
        let base = data(3000, d, 1);
        let queries = data(50, d, 2);
        let mut g = Hnsw::new(
            d,
            GraphParams {
                m: 12,
                ef_construction: 100,
                seed: 7,
            },
        );
        let flat: Vec<F16> = base.iter().flat_map(|v| to_f16(v)).collect();
        g.add_batch(&flat[..1000 * d]);
        g.add_batch(&flat[1000 * d..]);
        assert_eq!(g.len(), 3000);
        let mut hit = 0;
        for q in &queries {
            let qh = to_f16(q);
            let mut exact: Vec<(f32, u32)> = (0..3000u32)
                .map(|n| (1.0 - dot_f16(&qh, g.vector(n)), n))
                .collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0));
            let got = g.search(&qh, 10, 64, &|_| true);
            hit += got
                .iter()
                .filter(|x| exact[..10].iter().any(|e| e.1 == x.1))
                .count();
        }
        let recall = hit as f64 / (50.0 * 10.0);
        assert!(recall > 0.9, "recall {recall}");
        // filtered: only even nodes
        let qh = to_f16(&queries[0]);
        let got = g.search(&qh, 10, 64, &|n| n % 2 == 0);
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|x| x.1 % 2 == 0));
        // round trip of node records
        let mut g2 = Hnsw::new(d, g.params());
        for n in 0..3000u32 {
            let mut rec = Vec::new();
            g.encode_node(n, &mut rec);
            assert!(g2.load_node(n, Some(g.vector(n)), &rec, 3000));
        }
        g2.set_entry(g.entry());
        assert_eq!(
            g2.search(&qh, 10, 64, &|_| true),
            g.search(&qh, 10, 64, &|_| true)
        );
        // locality renumbering: a permutation; the renumbered graph answers the same
        let order = g.locality_order();
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..3000).collect::<Vec<u32>>());
        assert_ne!(order, (0..3000).collect::<Vec<u32>>());
        let r = g.reordered(&order);
        for q in &queries {
            let qh = to_f16(q);
            let mapped: Vec<(f32, u32)> = r
                .search(&qh, 10, 64, &|_| true)
                .into_iter()
                .map(|(d, n)| (d, order[n as usize]))
                .collect();
            assert_eq!(mapped, g.search(&qh, 10, 64, &|_| true));
        }
        // neighbours end up closer in numbering than in insertion order (uniform random data
        // has little structure: 0.86 here; a random permutation would give about 1.0)
        let spread = |g: &Hnsw| -> f64 {
            let mut sum = 0.0;
            for n in 0..3000u32 {
                for nb in g.neighbors(n, 0) {
                    sum += (n as f64 - nb as f64).abs();
                }
            }
            sum
        };
        assert!(
            spread(&r) < 0.95 * spread(&g),
            "{} vs {}",
            spread(&r),
            spread(&g)
        );
    }

    /// Many items with one vector (a catalog's variants share a title): every twin stays
    /// reachable, unfiltered and through a filter, whatever the insertion order.
    #[test]
    fn exact_duplicates_stay_reachable() {
        let d = 32;
        let distinct = data(64, d, 3);
        let copies = 47;
        let mut g = Hnsw::new(
            d,
            GraphParams {
                m: 16,
                ef_construction: 200,
                seed: 11,
            },
        );
        // node n holds distinct[(n * 37) % 64]: twins spread over the insertion order
        let of = |n: usize| (n * 37) % 64;
        let flat: Vec<F16> = (0..64 * copies)
            .flat_map(|n| to_f16(&distinct[of(n)]))
            .collect();
        // Two batches, then the graph saved and loaded (as a store reopens it) takes the last
        // third: new twins of old vectors join the old rings.
        let total = 64 * copies;
        let cut = total * 2 / 3;
        g.add_batch(&flat[..d]);
        g.add_batch(&flat[d..cut * d]);
        let mut g2 = Hnsw::new(d, g.params());
        for n in 0..cut as u32 {
            let mut rec = Vec::new();
            g.encode_node(n, &mut rec);
            assert!(g2.load_node(n, Some(g.vector(n)), &rec, cut as u32));
        }
        g2.set_entry(g.entry());
        g2.add_batch(&flat[cut * d..]);
        let g = g2;
        let (ep, _) = g.entry().unwrap();
        let mut seen = vec![false; g.len()];
        let mut stack = vec![ep];
        seen[ep as usize] = true;
        while let Some(n) = stack.pop() {
            for nb in g.neighbors(n, 0) {
                if !seen[nb as usize] {
                    seen[nb as usize] = true;
                    stack.push(nb);
                }
            }
        }
        let lost = seen.iter().filter(|s| !**s).count();
        assert_eq!(lost, 0, "{lost} nodes unreachable on level 0");
        let mut worst = usize::MAX;
        for (t, v) in distinct.iter().enumerate() {
            let qh = to_f16(v);
            let want = (0..total).filter(|&n| of(n) == t).count();
            let got = g.search(&qh, want, 64.max(want), &|_| true);
            let twins = got.iter().filter(|x| of(x.1 as usize) == t).count();
            worst = worst.min(twins * 100 / want);
            let even = g.search(&qh, 10, 64, &|n| n % 2 == 0);
            let twins_even = even.iter().filter(|x| of(x.1 as usize) == t).count();
            let want_even = (0..total)
                .filter(|&n| of(n) == t && n % 2 == 0)
                .count()
                .min(10);
            assert_eq!(
                twins_even, want_even,
                "vector {t}: filtered walk found {twins_even}"
            );
        }
        assert_eq!(worst, 100, "some vector's twins were not all found");
    }
}
