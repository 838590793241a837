//! Stage 3 of a run: a batch's vectors, each from the store (content already embedded), from an
//! earlier vector of the same batch (duplicate content), or from the model.

use std::collections::HashMap;
use std::time::Instant;

use super::pipeline::Consumer;
use super::prepare::{Input, Prepared};
use super::IndexEvent;
use crate::enc::preprocess::PixelValues;
use crate::enc::TextRole;
use crate::error::Result;
use crate::keys::{self, Hash, NS_HASH};
use crate::walk::FileKind;

impl Consumer<'_> {
    /// The vector of every input of `pending`, in order (items, then their vectors); `None`
    /// where an input could not be had (reported, its file marked failed).
    pub(super) fn resolve_vectors(
        &mut self,
        pending: &mut [Prepared],
        on_event: &mut dyn FnMut(IndexEvent),
    ) -> Result<Vec<Option<Vec<f32>>>> {
        let t_store = Instant::now();
        let mut flat: Vec<(usize, usize, usize)> = Vec::new();
        for (pi, p) in pending.iter().enumerate() {
            for (ii, it) in p.items.iter().enumerate() {
                for vi in 0..it.vecs.len() {
                    flat.push((pi, ii, vi));
                }
            }
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; flat.len()];
        let mut dup_of: Vec<Option<usize>> = vec![None; flat.len()];
        let mut first: HashMap<Hash, usize> = HashMap::new();
        let mut text_idx: Vec<usize> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut pixels_idx: Vec<usize> = Vec::new();
        let mut pixels: Vec<PixelValues> = Vec::new();
        let (mut missing, mut first_missing) = (0usize, None::<String>);
        for (fi, &(pi, ii, vi)) in flat.iter().enumerate() {
            let file = pending[pi].file;
            let v = &mut pending[pi].items[ii].vecs[vi];
            if let Some(&j) = first.get(&v.hash) {
                dup_of[fi] = Some(j);
                continue;
            }
            if let Some(vec) = self.stored_vector_for(&v.hash)? {
                vectors[fi] = Some(vec);
                self.summary.reused += 1;
                first.insert(v.hash, fi);
                continue;
            }
            if let Some(vec) = self.opts.precomputed.as_ref().and_then(|p| p.get(&v.hash)) {
                vectors[fi] = Some(vec);
                self.summary.precomputed += 1;
                first.insert(v.hash, fi);
                continue;
            }
            if self.opts.precomputed.is_some() && !self.opts.encode_missing {
                missing += 1;
                if first_missing.is_none() {
                    let f = &self.ctx.files[file];
                    first_missing = Some(f.path.display().to_string());
                }
                first.insert(v.hash, fi);
                continue;
            }
            first.insert(v.hash, fi);
            match std::mem::replace(&mut v.input, Input::Text(String::new())) {
                Input::Text(s) => {
                    text_idx.push(fi);
                    texts.push(s);
                }
                Input::Pixels(px) => {
                    pixels_idx.push(fi);
                    pixels.push(px);
                }
                Input::Known(path) => {
                    // The stored copy vanished (its file changed in this run): decode here.
                    match self.ctx.decode_file(&path) {
                        Ok(px) => {
                            pixels_idx.push(fi);
                            pixels.push(px);
                        }
                        Err(problem) => {
                            first.remove(&v.hash);
                            on_event(IndexEvent::Problem {
                                path,
                                message: problem.to_string(),
                            });
                            self.summary.problems += 1;
                            if self.ctx.files[file].kind != FileKind::Catalog {
                                self.failed.insert(file);
                            }
                        }
                    }
                }
            }
        }
        self.store_time += t_store.elapsed();
        if missing > 0 {
            return Err(crate::error::Error::InvalidArgument(format!(
                "{missing} vector(s) of this batch are not in the given Parquet shards (first in {}): encode them with `jsearch embed-shard`, or index without --from-parquet",
                first_missing.unwrap_or_default()
            )));
        }
        let t_enc = Instant::now();
        if !texts.is_empty() {
            let strs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let out = self.model.encode_texts(&strs, TextRole::Document)?;
            for (fi, v) in text_idx.iter().zip(out) {
                vectors[*fi] = Some(v);
            }
            self.summary.encoded += texts.len();
        }
        if !pixels.is_empty() {
            let out = self.model.encode_pixels(&pixels)?;
            for (fi, v) in pixels_idx.iter().zip(out) {
                vectors[*fi] = Some(v);
            }
            self.summary.encoded += pixels.len();
        }
        self.encode_time += t_enc.elapsed();
        for fi in 0..flat.len() {
            if let Some(j) = dup_of[fi] {
                vectors[fi] = vectors[j].clone();
                self.summary.reused += 1;
            }
        }
        Ok(vectors)
    }

    /// A stored vector with this content hash, if any.
    fn stored_vector_for(&self, hash: &Hash) -> Result<Option<Vec<f32>>> {
        for (k, _) in self.store.kv_scan_prefix(NS_HASH, hash)? {
            if let Some(id) = keys::id_suffix(&k) {
                if let Some(v) = self.store.get_vector(id)? {
                    return Ok(Some(v));
                }
            }
        }
        Ok(None)
    }
}
