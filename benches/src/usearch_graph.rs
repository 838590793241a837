//! usearch (the C++ HNSW library) behind the index crate's [`AnnGraph`] trait: the peer graph of
//! the `ann` bench, and the filtered-search peer of the `catalog` bench (usearch's
//! `filtered_search` checks a predicate during the walk, as hnswlib's filter function does).

use anyhow::Result;
use jsearch_index::bench::AnnGraph;
use jsearch_index::vecmath::F16;
use rayon::prelude::*;

/// A usearch index keyed by insertion order.
pub struct USearch {
    idx: usearch::Index,
    dim: usize,
}

impl USearch {
    /// An empty index of `dim`-d f16 vectors (inner product), `m` links per node, beam `efc`
    /// while building.
    pub fn new(dim: usize, m: usize, efc: usize) -> Result<Self> {
        let opts = usearch::IndexOptions {
            dimensions: dim,
            metric: usearch::MetricKind::IP,
            quantization: usearch::ScalarKind::F16,
            connectivity: m,
            expansion_add: efc,
            expansion_search: 64,
            multi: false,
        };
        Ok(USearch {
            idx: usearch::Index::new(&opts)?,
            dim,
        })
    }
}

impl AnnGraph for USearch {
    fn len(&self) -> usize {
        self.idx.size()
    }
    fn add_batch(&mut self, vectors: &[F16]) {
        let start = self.idx.size();
        let n = vectors.len() / self.dim;
        let bits: Vec<i16> = vectors.iter().map(|x| x.0 as i16).collect();
        if let Err(e) = self
            .idx
            .reserve_capacity_and_threads(start + n, rayon::current_num_threads())
        {
            panic!("usearch reserve: {e}");
        }
        let idx = &self.idx;
        bits.par_chunks_exact(self.dim)
            .enumerate()
            .for_each(|(i, v)| {
                if let Err(e) =
                    idx.add::<usearch::f16>((start + i) as u64, usearch::f16::from_i16s(v))
                {
                    panic!("usearch add: {e}");
                }
            });
    }
    fn search(
        &self,
        q: &[F16],
        k: usize,
        ef: usize,
        accept: &(dyn Fn(u32) -> bool + Sync),
    ) -> Vec<(f32, u32)> {
        if self.idx.expansion_search() != ef {
            self.idx.change_expansion_search(ef);
        }
        let bits: Vec<i16> = q.iter().map(|x| x.0 as i16).collect();
        let r =
            self.idx
                .filtered_search::<usearch::f16, _>(usearch::f16::from_i16s(&bits), k, |key| {
                    accept(key as u32)
                });
        match r {
            Ok(m) => m
                .distances
                .iter()
                .zip(&m.keys)
                .map(|(d, k)| (*d, *k as u32))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}
