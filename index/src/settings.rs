//! Store settings: model identity, dimensions and graph parameters, fixed when a store is created.

use crate::error::{IndexError, Result};

/// Graph parameters, fixed at store creation (the graph was built with them).
#[derive(Clone, Debug, PartialEq)]
pub struct HnswParams {
    /// Links per node on upper levels; level 0 keeps `2 * m`. Default 16.
    pub m: usize,
    /// Beam width while inserting. Default 200.
    pub ef_construction: usize,
    /// Default beam width of a search when [`crate::SearchParams::ef`] is 0. Default 64.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

/// What a store is: which model made its vectors, their dimensions, and how the graph is built.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreSettings {
    /// Model name supplied by the caller (e.g. `jina-clip-v2`).
    pub model_name: String,
    /// Model fingerprint supplied by the caller (e.g. a sha256 hex of the weights' headers).
    pub model_fingerprint: String,
    /// Full vector dimension (1024 for the real model, 128 for the toy one).
    pub dim: usize,
    /// Matryoshka dimension of the graph (the first `ann_dim` coordinates, re-normalised).
    pub ann_dim: usize,
    /// Graph parameters.
    pub hnsw: HnswParams,
    /// Compaction runs automatically after a commit when tombstoned nodes exceed this
    /// fraction of all graph nodes (default 0.25). Not persisted: a policy of the opener.
    pub compact_threshold: f32,
    /// The model folder the store was last written with ([`crate::Store::set_model_dir`]): a
    /// hint for finding the model again, never checked against the identity above. `None` in
    /// stores that never recorded one.
    pub model_dir: Option<std::path::PathBuf>,
}

impl StoreSettings {
    /// Settings with the default graph parameters and `ann_dim = default_ann_dim(dim)`.
    pub fn new(
        model_name: impl Into<String>,
        model_fingerprint: impl Into<String>,
        dim: usize,
    ) -> Self {
        StoreSettings {
            model_name: model_name.into(),
            model_fingerprint: model_fingerprint.into(),
            dim,
            ann_dim: default_ann_dim(dim),
            hnsw: HnswParams::default(),
            compact_threshold: 0.25,
            model_dir: None,
        }
    }

    /// `name@fingerprint`, as printed in errors.
    pub fn model_identity(&self) -> String {
        format!("{}@{}", self.model_name, self.model_fingerprint)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |s: &str| Err(IndexError::InvalidSettings(s.to_string()));
        if self.dim == 0 || self.dim > 65536 {
            return bad("dim must be in 1..=65536");
        }
        if self.ann_dim == 0 || self.ann_dim > self.dim {
            return bad("ann_dim must be in 1..=dim");
        }
        if self.hnsw.m < 2 || self.hnsw.m > 127 {
            return bad("hnsw.m must be in 2..=127");
        }
        if self.hnsw.ef_construction == 0 || self.hnsw.ef_search == 0 {
            return bad("hnsw.ef_construction and hnsw.ef_search must be > 0");
        }
        if self.model_name.is_empty() {
            return bad("model_name must not be empty");
        }
        if self.compact_threshold.is_nan() || self.compact_threshold <= 0.0 {
            return bad("compact_threshold must be > 0");
        }
        Ok(())
    }
}

/// Graph dimension for a full dimension: a quarter (256 for 1024-d, 32 for the 128-d toy model),
/// never below 32 (or `dim` itself when smaller).
pub fn default_ann_dim(dim: usize) -> usize {
    (dim / 4).max(32).min(dim)
}

/// How the heads and tails tables pack their rows into redb values (derived from the dimensions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Layout {
    /// Heads per value: as many as fit one 4 KiB page with the key (7 for a 256-d graph).
    pub heads_per_chunk: u32,
    /// Bytes of one head: its norm (f32), then the head normalised (the graph vector, f16).
    pub head_bytes: usize,
    /// Tails (the `dim - ann_dim` coordinates the graph does not hold, f16) per value: as many
    /// as fit in 3 KiB, so that the value and its key fit one 4 KiB page, which is what redb
    /// reads for a `get` (a re-rank read is one page; two 1024-d vectors' 768-d tails per page).
    pub tails_per_chunk: u32,
    /// Bytes of one tail.
    pub tail_bytes: usize,
}

impl Layout {
    /// The layout for `dim`-dimensional vectors with an `ann_dim`-dimensional graph.
    pub fn new(dim: usize, ann_dim: usize) -> Layout {
        let head_bytes = 4 + 2 * ann_dim;
        let tail_bytes = 2 * dim.saturating_sub(ann_dim);
        Layout {
            heads_per_chunk: ((4096 - 256) / head_bytes).clamp(1, 4096) as u32,
            head_bytes,
            tails_per_chunk: match tail_bytes {
                0 => 4096,
                b => (3072 / b).clamp(1, 4096) as u32,
            },
            tail_bytes,
        }
    }
}

/// The chunk size of format version 1, whose values held whole f16 vectors (read to upgrade).
pub(crate) fn v1_vectors_per_chunk(dim: usize) -> u32 {
    ((16384 - 64) / (2 * dim)).clamp(1, 4096) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_format_of_version_2() {
        // These numbers are in every version 2 file (meta `heads_per_chunk`, `tails_per_chunk`);
        // changing them needs a new format version.
        let l = |dim, ann| {
            let l = Layout::new(dim, ann);
            (
                l.heads_per_chunk,
                l.head_bytes,
                l.tails_per_chunk,
                l.tail_bytes,
            )
        };
        assert_eq!(l(1024, 256), (7, 516, 2, 1536));
        assert_eq!(l(128, 32), (56, 68, 16, 192));
        assert_eq!(l(32, 32), (56, 68, 4096, 0));
        assert_eq!(v1_vectors_per_chunk(1024), 7);
    }
}
