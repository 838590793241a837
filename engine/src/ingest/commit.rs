//! Stage 4 of a run: one transaction per batch with its vectors, their bookkeeping records and
//! the records of the files it completed; removals of files that are gone.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use super::pipeline::Consumer;
use super::prepare::Prepared;
use super::{FileJob, IndexEvent};
use crate::error::Result;
use crate::idx::{Batch, Store};
use crate::item;
use crate::keys::{self, FileRecord, Hash, NS_FILES, NS_HASH, NS_MOD, NS_OWN};
use crate::keyword::KeywordWrites;

/// The `files` record of a completed file.
fn file_record(job: &FileJob) -> Vec<u8> {
    let rec = FileRecord {
        size: job.size,
        mtime_ns: job.mtime_ns,
        kind: job.kind.as_str().to_string(),
        deps: job.deps.clone(),
    };
    serde_json::to_vec(&rec).unwrap_or_default()
}

/// Deletes every vector `path` owns that is not in `keep`, with its key-value entries.
pub(crate) fn delete_owned(
    store: &Store,
    batch: &mut Batch,
    kw: &mut KeywordWrites,
    path: &Path,
    keep: Option<&HashSet<u64>>,
) -> Result<usize> {
    let mut n = 0;
    for (k, v) in store.kv_scan_prefix(NS_OWN, &keys::own_prefix(path))? {
        let Some((_, id)) = keys::split_own_key(&k) else {
            continue;
        };
        if keep.is_some_and(|keep| keep.contains(&id)) {
            continue;
        }
        batch.delete(id);
        batch.kv_delete(NS_OWN, k.clone());
        if let Some(h) = keys::to_hash(&v) {
            batch.kv_delete(NS_HASH, keys::hash_key(&h, id));
        }
        batch.kv_delete(NS_MOD, keys::mod_key(item::modality_of(id), id));
        // The item's keyword document goes with its last vector (a product that only lost its
        // image keeps it).
        let kept = |x: u64| keep.is_some_and(|keep| keep.contains(&x));
        if !kept(item::item_id(id)) && !kept(item::sibling(id)) {
            kw.remove(item::item_id(id));
        }
        n += 1;
    }
    Ok(n)
}

/// Content hashes of every stored vector (images already stored are not decoded again).
pub(super) fn known_hashes(store: &Store) -> Result<HashSet<Hash>> {
    Ok(store
        .kv_scan_prefix(NS_HASH, b"")?
        .into_iter()
        .filter_map(|(k, _)| k.get(..32).and_then(keys::to_hash))
        .collect())
}

impl Consumer<'_> {
    /// Commits `pending` with its `vectors` (in [`Consumer::resolve_vectors`]'s order) and the
    /// records of the files it completes, in one transaction.
    pub(super) fn commit_batch(
        &mut self,
        pending: &[Prepared],
        mut vectors: Vec<Option<Vec<f32>>>,
        on_event: &mut dyn FnMut(IndexEvent),
    ) -> Result<()> {
        let t_store = Instant::now();
        let mut batch = Batch::new();
        let mut kw = KeywordWrites::default();
        let mut fi = 0;
        let mut finished = Vec::new();
        for p in pending {
            let job = &self.ctx.files[p.file];
            for problem in &p.problems {
                on_event(IndexEvent::Problem {
                    path: job.path.clone(),
                    message: problem.to_string(),
                });
                self.summary.problems += 1;
            }
            if p.fatal {
                self.failed.insert(p.file);
            }
            for it in &p.items {
                let meta = it.meta.to_bytes();
                let mut wrote = false;
                for v in &it.vecs {
                    let vec = vectors[fi].take();
                    fi += 1;
                    let Some(vec) = vec else { continue };
                    let own = keys::own_key(&job.path, v.id);
                    if let Some(old) = self.store.kv_get(NS_OWN, &own)? {
                        if old.as_slice() != v.hash.as_slice() {
                            if let Some(h) = keys::to_hash(&old) {
                                batch.kv_delete(NS_HASH, keys::hash_key(&h, v.id));
                            }
                        }
                    }
                    batch.upsert(v.id, vec, meta.clone());
                    batch.kv_put(NS_OWN, own, v.hash.to_vec());
                    batch.kv_put(NS_HASH, keys::hash_key(&v.hash, v.id), Vec::new());
                    batch.kv_put(
                        NS_MOD,
                        keys::mod_key(item::modality_of(v.id), v.id),
                        Vec::new(),
                    );
                    self.produced.entry(p.file).or_default().insert(v.id);
                    wrote = true;
                }
                if wrote {
                    self.summary.items += 1;
                    if let Some(v) = it.vecs.first() {
                        kw.put(item::item_id(v.id), &it.keywords);
                    }
                }
            }
            self.done_units += 1;
            if let Some(r) = self.remaining.get_mut(&p.file) {
                *r = r.saturating_sub(1);
                if *r == 0 {
                    finished.push(p.file);
                }
            }
        }
        for f in finished {
            self.remaining.remove(&f);
            let produced = self.produced.remove(&f).unwrap_or_default();
            self.finish_file(&mut batch, &mut kw, f, &produced)?;
        }
        kw.finish(self.store, &mut batch)?;
        self.store.commit(batch)?;
        self.store_time += t_store.elapsed();
        Ok(())
    }

    /// Writes the file's record and drops the vectors it no longer produces (a failed file keeps
    /// its old state and is retried next run).
    pub(super) fn finish_file(
        &mut self,
        batch: &mut Batch,
        kw: &mut KeywordWrites,
        f: usize,
        produced: &HashSet<u64>,
    ) -> Result<()> {
        let job = &self.ctx.files[f];
        if self.failed.contains(&f) {
            self.summary.failed += 1;
            return Ok(());
        }
        delete_owned(self.store, batch, kw, &job.path, Some(produced))?;
        batch.kv_put(NS_FILES, keys::path_bytes(&job.path), file_record(job));
        if job.update {
            self.summary.updated += 1;
        } else {
            self.summary.indexed += 1;
        }
        Ok(())
    }

    /// The last transaction of a run: files with nothing to embed, and files gone from the roots.
    pub(super) fn finish_run(
        &mut self,
        empty_files: &[usize],
        remove: &[std::path::PathBuf],
    ) -> Result<usize> {
        let t_store = Instant::now();
        let mut batch = Batch::new();
        let mut kw = KeywordWrites::default();
        for &f in empty_files {
            self.finish_file(&mut batch, &mut kw, f, &HashSet::new())?;
        }
        for p in remove {
            delete_owned(self.store, &mut batch, &mut kw, p, None)?;
            batch.kv_delete(NS_FILES, keys::path_bytes(p));
        }
        kw.finish(self.store, &mut batch)?;
        if !batch.is_empty() {
            self.store.commit(batch)?;
        }
        self.store_time += t_store.elapsed();
        Ok(remove.len())
    }
}
