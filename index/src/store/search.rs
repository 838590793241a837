//! Searching: graph walk over the f16 heads, the beam scored by sketches, the best candidates
//! re-ranked exactly from the stored tails; and the exact parallel scan.

use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;

use rayon::prelude::*;
use redb::ReadTransaction;

use super::schema::{unseal, TAILS, TAILS_NAME};
use super::state::State;
use super::Store;
use crate::error::{IndexError, Result};
use crate::vecmath::{self, F16};

/// Stores with at most this many live items are searched exactly (brute force) instead of through the graph.
pub const EXACT_SEARCH_BELOW: usize = 2048;

/// Standard deviations of sketch error a re-rank candidate may be below the k-th exact score and
/// still be read (see `Sketches::margin`).
const RERANK_Z: f32 = 4.0;

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

/// How many of [`Store::search_among`]'s ids, best by their graph vector, are scored by their
/// sketch: four times the graph's beam (and the re-rank's candidates), at least 256.
fn among_preselect(ef_search: usize, candidates: usize) -> usize {
    (4 * ef_search).max(4 * candidates).max(256)
}

/// A re-rank candidate: its sketch score and how far the exact score may plausibly lie above it.
struct Candidate {
    score: f32,
    margin: f32,
    node: u32,
}

type Filter<'a> = Option<&'a (dyn Fn(u64) -> bool + Sync)>;

impl Store {
    fn query16(&self, query: &[f32]) -> Result<(Vec<F16>, Vec<F16>)> {
        let norm = vecmath::validate(query, self.settings.dim, None)?;
        let q: Vec<f32> = query.iter().map(|x| x / norm).collect();
        let full = vecmath::to_f16(&q);
        let head = vecmath::truncate_normalize(&q, self.settings.ann_dim)
            .map_err(|e| IndexError::InvalidSettings(e.to_string()))?;
        let ann = vecmath::to_f16(&head);
        Ok((full, ann))
    }

    /// Approximate top-`k` by cosine: the graph over the truncated f16 vectors yields a beam of
    /// `ef` accepted items; each is scored by its sketch (head norm + 4-bit tail), and the best
    /// `candidates` (k') are re-ranked exactly at full dimension from the stored vectors.
    /// Deleted or replaced items never appear. With a filter, `k` results come back whenever
    /// `k` items pass it (an exact scan backs the graph up). Small stores are searched exactly.
    pub fn search(&self, query: &[f32], k: usize, params: &SearchParams) -> Result<Vec<Hit>> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
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
                let accept = |n: u32| {
                    !st.deleted[n as usize] && filter.is_none_or(|f| f(st.ids[n as usize]))
                };
                // The whole beam, scored by sketch, best first; at most k' are re-ranked from the file.
                let all = filter.is_none() && st.tombstones == 0;
                let beam =
                    st.graph
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
                cands
                    .sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.node.cmp(&b.node)));
                cands.truncate(kp);
                let hits = self.rerank(st, txn, &q_full, &cands, k)?;
                if hits.len() < k && hits.len() < live {
                    return self.exact_inner(st, txn, &q_full, k, filter);
                }
                Ok(hits)
            })
        })
    }

    /// Top-`k` by cosine among the given `ids` only (ids that are not live items are skipped):
    /// every one is scored by its in-memory graph vector (the normalised head), the best few
    /// hundred of those (four times the graph's beam, at least 256) by their sketch (head norm +
    /// 4-bit tail), and the best `candidates` re-ranked exactly at full dimension from the file
    /// as in [`Store::search`]. The preselection is many times the beam, so the result equals an exact search
    /// over those ids up to the re-rank's error margin. Costs a head dot product an id (the
    /// vectors prefetched a few ids ahead, as they lie anywhere in memory) plus the re-rank
    /// reads: the way to search a selective filter's passing items without walking the graph
    /// through all the others. `candidates` as in [`SearchParams`] (`None`: the default).
    pub fn search_among(
        &self,
        query: &[f32],
        k: usize,
        ids: &[u64],
        candidates: Option<usize>,
    ) -> Result<Vec<Hit>> {
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            let (q_full, q_ann) = self.query16(query)?;
            if k == 0 || ids.is_empty() {
                return Ok(Vec::new());
            }
            let kp = candidates.unwrap_or_else(|| default_candidates(k)).max(k);
            let pre = among_preselect(self.settings.hnsw.ef_search, kp);
            self.with_state(|st, txn| {
                let nodes: Vec<u32> = ids
                    .iter()
                    .filter_map(|id| st.by_id.get(id).copied())
                    .collect();
                const AHEAD: usize = 8;
                let mut heads: Vec<(f32, u32)> = Vec::with_capacity(nodes.len());
                for (i, &node) in nodes.iter().enumerate() {
                    if let Some(&next) = nodes.get(i + AHEAD) {
                        vecmath::prefetch(st.graph.vector(next));
                    }
                    heads.push((vecmath::dot_f16(&q_ann, st.graph.vector(node)), node));
                }
                let by_score =
                    |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
                if heads.len() > pre {
                    heads.select_nth_unstable_by(pre, by_score);
                    heads.truncate(pre);
                }
                let sq = st.sketches.query(&q_full);
                let mut cands: Vec<Candidate> = heads
                    .iter()
                    .map(|&(cos, node)| Candidate {
                        score: st.sketches.score(&sq, node, cos),
                        margin: st.sketches.margin(&sq, node, RERANK_Z),
                        node,
                    })
                    .collect();
                if cands.len() > kp {
                    cands.select_nth_unstable_by(kp, |a, b| {
                        b.score.total_cmp(&a.score).then(a.node.cmp(&b.node))
                    });
                }
                cands.truncate(kp);
                cands
                    .sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.node.cmp(&b.node)));
                self.rerank(st, txn, &q_full, &cands, k)
            })
        })
    }

    /// Exact scores of `cands` (best sketch score first), reading as few tails as
    /// it can: the first `k` are read together (nodes sharing a chunk share a read), each later
    /// one only if its sketch score plus [`crate::sketch::Sketches::margin`] could still beat the
    /// k-th exact score found so far.
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
                self.rerank_reads.fetch_add(1, Ordering::Relaxed);
                Some(
                    tails
                        .get(c)?
                        .ok_or_else(|| self.corrupt(format!("tail chunk {c} missing")))?,
                )
            };
            let val = match &guard {
                Some(v) => unseal(&self.path, TAILS_NAME, &c.to_le_bytes(), v.value())?,
                None => &[][..],
            };
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
        let path = self.path.clone();
        crate::seal::guard(&path, || {
            let (q_full, _) = self.query16(query)?;
            self.with_state(|st, txn| self.exact_inner(st, txn, &q_full, k, filter))
        })
    }

    fn exact_inner(
        &self,
        st: &State,
        txn: &ReadTransaction,
        q: &[F16],
        k: usize,
        filter: Filter<'_>,
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
                    // Every chunk must be there: a missing one would silently drop items.
                    let mut want = chunks.start;
                    for r in tails.range(chunks.clone())? {
                        let (ck, cv) = r?;
                        let c = ck.value();
                        if c != want {
                            return Err(self.corrupt(format!("tails row {want} missing")));
                        }
                        want += 1;
                        let v = unseal(&self.path, TAILS_NAME, &c.to_le_bytes(), cv.value())?;
                        let base = c * per;
                        let rows = (n - base).min(per) as usize;
                        if v.len() != rows * tb {
                            return Err(self.corrupt(format!("tails row {c} is short")));
                        }
                        for (j, b) in v.chunks_exact(tb).enumerate() {
                            consider(base + j as u32, b);
                        }
                    }
                    if want != chunks.end {
                        return Err(self.corrupt(format!("tails row {want} missing")));
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
}

/// An f32 ordered by `total_cmp`, for the exact scan's heap.
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
