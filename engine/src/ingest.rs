//! The indexing pipeline.
//!
//! 1. **Plan** (calling thread): walk the roots, compare size + mtime with the `files` records,
//!    expand catalogs into records; files under the roots that are gone are scheduled for removal.
//! 2. **Prepare** (a private rayon pool): read, hash, decode + preprocess images, chunk text. Content
//!    already in the store (hash) is not decoded at all.
//! 3. **Encode + commit** (calling thread): a bounded channel feeds batches to the model while the
//!    pool prepares the next ones; each batch is committed in one transaction together with the
//!    engine's key-value records, so a kill loses at most the batch in flight.
//! 4. Removals of deleted files, in the last transaction.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::{read_catalog, Record};
use crate::chunk::{title_of, Chunker, DEFAULT_MAX_TOKENS};
use crate::enc::preprocess::{decode_rgb_named, DecodeOptions, PixelValues, Preprocessor};
use crate::enc::{ClipModel, TextRole};
use crate::error::{Error, Result};
use crate::idx::{Batch, Store};
use crate::item::{self, snippet, vector_id, ItemMeta, Kind, Modality};
use crate::keys::{self, FileRecord, Hash, NS_FILES, NS_HASH, NS_MOD, NS_OWN};
use crate::walk::{self, FileKind, Found};

/// Options of an indexing run.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Extra gitignore-style patterns to skip (e.g. `*.tmp`, `drafts/`).
    pub excludes: Vec<String>,
    /// Images larger than this many megapixels are skipped (checked before decoding). Default 100.
    pub max_megapixels: Option<f64>,
    /// Vectors per model batch and per commit. Default 32.
    pub batch_size: usize,
    /// Threads that read, decode and preprocess (0 = one per core).
    pub threads: usize,
    /// Maximum tokens per text chunk (the encoder's window is 512). Default 480.
    pub max_tokens: usize,
    /// Sleep after each commit (testing interrupted runs; normally `None`).
    pub batch_pause: Option<Duration>,
    /// Decode large JPEGs at a reduced DCT scale (still ≥ 2× the model's input size) before the
    /// exact resize: several times faster on big photos, not bit-exact with the reference. Default off.
    pub fast_jpeg: bool,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            excludes: Vec::new(),
            max_megapixels: Some(100.0),
            batch_size: 32,
            threads: 0,
            max_tokens: DEFAULT_MAX_TOKENS,
            batch_pause: None,
            fast_jpeg: false,
        }
    }
}

/// What happens during a run, for progress bars and logs.
#[derive(Debug, Clone)]
pub enum IndexEvent {
    /// Planning done: `units` work units (files, catalog records) to process.
    Planned {
        /// Files to (re-)index.
        files: usize,
        /// Work units (a catalog contributes one per record).
        units: usize,
        /// Unchanged files skipped.
        unchanged: usize,
        /// Files to remove (deleted under the roots).
        to_remove: usize,
    },
    /// A batch was committed.
    Progress {
        /// Units done so far.
        done: usize,
        /// Units in total.
        total: usize,
        /// Vectors run through the model so far.
        encoded: usize,
        /// Vectors reused from the store so far.
        reused: usize,
    },
    /// A file (or a record of a catalog) could not be used; the run goes on.
    Problem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Time spent per stage, in seconds. `read`, `decode` and `preprocess` are summed over the worker
/// threads (CPU time); `encode`, `store` and `wait` are wall time of the encoding thread.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    /// Reading files and hashing them.
    pub read: f64,
    /// Image decoding (incl. EXIF orientation), text reading and chunking.
    pub decode: f64,
    /// Resize, crop, normalise.
    pub preprocess: f64,
    /// The model.
    pub encode: f64,
    /// Look-ups and commits.
    pub store: f64,
    /// The encoding thread waiting for prepared inputs (the pipeline starving the model).
    pub wait: f64,
}

/// Summary of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexSummary {
    /// New files indexed.
    pub indexed: usize,
    /// Changed files re-indexed.
    pub updated: usize,
    /// Unchanged files skipped.
    pub skipped: usize,
    /// Files removed (deleted under the roots).
    pub removed: usize,
    /// Files that failed (reported through [`IndexEvent::Problem`]).
    pub failed: usize,
    /// Items written (images, passages, products).
    pub items: usize,
    /// Vectors computed by the model.
    pub encoded: usize,
    /// Vectors reused from the store (same content: renamed, duplicate or unchanged record).
    pub reused: usize,
    /// Problems reported (files and catalog records).
    pub problems: usize,
    /// Wall time of the run in seconds.
    pub elapsed: f64,
    /// Time per stage.
    pub times: StageTimes,
}

struct FileJob {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    kind: FileKind,
    update: bool,
    units: usize,
    deps: Vec<(String, u64, i128)>,
}

enum Work {
    Image,
    Text,
    Record(Box<Record>),
}

struct Unit {
    file: usize,
    work: Work,
}

enum Input {
    Pixels(PixelValues),
    Text(String),
    /// Content already in the store; the path lets the encoder decode it if the stored copy vanished.
    Known(PathBuf),
}

struct PVec {
    id: u64,
    hash: Hash,
    input: Input,
}

struct PItem {
    meta: ItemMeta,
    vecs: Vec<PVec>,
}

struct Prepared {
    file: usize,
    items: Vec<PItem>,
    problems: Vec<String>,
    fatal: bool,
}

#[derive(Default)]
struct Clock(AtomicU64);

impl Clock {
    fn add(&self, since: Instant) {
        self.0
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    fn secs(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1e9
    }
}

#[derive(Default)]
struct Clocks {
    read: Clock,
    decode: Clock,
    preprocess: Clock,
}

struct Ctx<'a> {
    files: &'a [FileJob],
    pre: &'a Preprocessor,
    chunker: Option<&'a Chunker>,
    known: &'a HashSet<Hash>,
    decode: DecodeOptions,
    clocks: &'a Clocks,
    cancel: &'a AtomicBool,
}

fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn text_hash(text: &str) -> Hash {
    sha(&[b"text\0", text.as_bytes()])
}

fn display(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Ctx<'_> {
    /// Reads and hashes an image; decodes + preprocesses it unless its content is already stored.
    fn image_input(&self, path: &Path) -> std::result::Result<(Hash, Input), String> {
        let t = Instant::now();
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        let hash = sha(&[&bytes]);
        self.clocks.read.add(t);
        if self.known.contains(&hash) {
            return Ok((hash, Input::Known(path.to_path_buf())));
        }
        Ok((hash, Input::Pixels(self.decode_bytes(&bytes, path)?)))
    }

    fn decode_bytes(&self, bytes: &[u8], path: &Path) -> std::result::Result<PixelValues, String> {
        let t = Instant::now();
        let img = decode_rgb_named(bytes, path, &self.decode).map_err(|e| e.to_string())?;
        self.clocks.decode.add(t);
        let t = Instant::now();
        let px = self.pre.preprocess_rgb(&img);
        self.clocks.preprocess.add(t);
        Ok(px)
    }

    fn prepare(&self, unit: Unit) -> Prepared {
        let job = &self.files[unit.file];
        let mut out = Prepared {
            file: unit.file,
            items: Vec::new(),
            problems: Vec::new(),
            fatal: false,
        };
        let path_s = display(&job.path);
        match unit.work {
            Work::Image => match self.image_input(&job.path) {
                Ok((hash, input)) => {
                    let id = vector_id(&format!("file:{path_s}"), Kind::Image, Modality::Image);
                    out.items.push(PItem {
                        meta: ItemMeta {
                            kind: Kind::Image,
                            id: path_s.clone(),
                            path: path_s,
                            title: job
                                .path
                                .file_name()
                                .map(|n| n.to_string_lossy().into_owned()),
                            chunk: None,
                            chunks: None,
                            image: None,
                            snippet: None,
                            metadata: Default::default(),
                        },
                        vecs: vec![PVec { id, hash, input }],
                    });
                }
                Err(msg) => {
                    out.problems.push(msg);
                    out.fatal = true;
                }
            },
            Work::Text => {
                let t = Instant::now();
                let bytes = match std::fs::read(&job.path) {
                    Ok(b) => b,
                    Err(e) => {
                        out.problems.push(format!("cannot read: {e}"));
                        out.fatal = true;
                        return out;
                    }
                };
                self.clocks.read.add(t);
                let t = Instant::now();
                let text = match String::from_utf8(bytes) {
                    Ok(s) => s,
                    Err(_) => {
                        out.problems.push("not UTF-8 text".into());
                        out.fatal = true;
                        return out;
                    }
                };
                let Some(chunker) = self.chunker else {
                    out.problems.push("internal: no tokenizer for text".into());
                    out.fatal = true;
                    return out;
                };
                let chunks = match chunker.chunk(&text) {
                    Ok(c) => c,
                    Err(e) => {
                        out.problems.push(e.to_string());
                        out.fatal = true;
                        return out;
                    }
                };
                self.clocks.decode.add(t);
                let title = title_of(&text).or_else(|| {
                    job.path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                });
                let n = chunks.len() as u32;
                for (i, ch) in chunks.into_iter().enumerate() {
                    let id = vector_id(&format!("file:{path_s}#{i}"), Kind::Text, Modality::Text);
                    out.items.push(PItem {
                        meta: ItemMeta {
                            kind: Kind::Text,
                            id: format!("{path_s}#{i}"),
                            path: path_s.clone(),
                            title: title.clone(),
                            chunk: Some(i as u32),
                            chunks: Some(n),
                            image: None,
                            snippet: Some(snippet(&ch.text, 300)),
                            metadata: Default::default(),
                        },
                        vecs: vec![PVec {
                            id,
                            hash: text_hash(&ch.text),
                            input: Input::Text(ch.text),
                        }],
                    });
                }
            }
            Work::Record(rec) => {
                let key = format!("cat:{path_s}#{}", rec.id);
                let mut vecs = Vec::new();
                let text = rec.embed_text();
                if let Some(t) = &text {
                    vecs.push(PVec {
                        id: vector_id(&key, Kind::Product, Modality::Text),
                        hash: text_hash(t),
                        input: Input::Text(t.clone()),
                    });
                }
                let mut image = None;
                if let Some(img) = &rec.image {
                    let abs = walk::absolute_lenient(img);
                    match self.image_input(&abs) {
                        Ok((hash, input)) => {
                            vecs.push(PVec {
                                id: vector_id(&key, Kind::Product, Modality::Image),
                                hash,
                                input,
                            });
                            image = Some(display(&abs));
                        }
                        Err(msg) => out.problems.push(format!(
                            "record {:?}: image {}: {msg}",
                            rec.id,
                            abs.display()
                        )),
                    }
                }
                if vecs.is_empty() {
                    out.problems
                        .push(format!("record {:?}: no text and no usable image", rec.id));
                    return out;
                }
                let title = rec
                    .title
                    .clone()
                    .or_else(|| text.as_deref().map(|t| snippet(t, 100)));
                let body = [&rec.description, &rec.text]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ");
                out.items.push(PItem {
                    meta: ItemMeta {
                        kind: Kind::Product,
                        id: rec.id.clone(),
                        path: path_s,
                        title,
                        chunk: None,
                        chunks: None,
                        image,
                        snippet: (!body.trim().is_empty()).then(|| snippet(&body, 300)),
                        metadata: rec.metadata.clone(),
                    },
                    vecs,
                });
            }
        }
        out
    }
}

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
fn delete_owned(
    store: &Store,
    batch: &mut Batch,
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
        n += 1;
    }
    Ok(n)
}

fn stored_vector_for(store: &Store, hash: &Hash) -> Result<Option<Vec<f32>>> {
    for (k, _) in store.kv_scan_prefix(NS_HASH, hash)? {
        if let Some(id) = keys::id_suffix(&k) {
            if let Some(v) = store.get_vector(id)? {
                return Ok(Some(v));
            }
        }
    }
    Ok(None)
}

fn known_hashes(store: &Store) -> Result<HashSet<Hash>> {
    Ok(store
        .kv_scan_prefix(NS_HASH, b"")?
        .into_iter()
        .filter_map(|(k, _)| k.get(..32).and_then(keys::to_hash))
        .collect())
}

struct Consumer<'a> {
    store: &'a mut Store,
    model: &'a ClipModel,
    ctx: &'a Ctx<'a>,
    opts: &'a IndexOptions,
    remaining: HashMap<usize, usize>,
    produced: HashMap<usize, HashSet<u64>>,
    failed: HashSet<usize>,
    summary: IndexSummary,
    done_units: usize,
    total_units: usize,
    encode_time: Duration,
    store_time: Duration,
}

impl Consumer<'_> {
    fn flush(
        &mut self,
        mut pending: Vec<Prepared>,
        on_event: &mut dyn FnMut(IndexEvent),
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        // 1. Resolve every vector: stored content, in-batch duplicate, or the model.
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
        for (fi, &(pi, ii, vi)) in flat.iter().enumerate() {
            let file = pending[pi].file;
            let v = &mut pending[pi].items[ii].vecs[vi];
            if let Some(&j) = first.get(&v.hash) {
                dup_of[fi] = Some(j);
                continue;
            }
            if let Some(vec) = stored_vector_for(self.store, &v.hash)? {
                vectors[fi] = Some(vec);
                self.summary.reused += 1;
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
                    let decoded = std::fs::read(&path)
                        .map_err(|e| format!("cannot read: {e}"))
                        .and_then(|b| self.ctx.decode_bytes(&b, &path));
                    match decoded {
                        Ok(px) => {
                            pixels_idx.push(fi);
                            pixels.push(px);
                        }
                        Err(msg) => {
                            first.remove(&v.hash);
                            on_event(IndexEvent::Problem { path, message: msg });
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

        // 2. One transaction: vectors, their bookkeeping, and the records of completed files.
        let t_store = Instant::now();
        let mut batch = Batch::new();
        let mut fi = 0;
        let mut finished = Vec::new();
        for p in &pending {
            let job = &self.ctx.files[p.file];
            for msg in &p.problems {
                on_event(IndexEvent::Problem {
                    path: job.path.clone(),
                    message: msg.clone(),
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
            self.finish_file(&mut batch, f, &produced)?;
        }
        self.store.commit(batch)?;
        self.store_time += t_store.elapsed();
        on_event(IndexEvent::Progress {
            done: self.done_units,
            total: self.total_units,
            encoded: self.summary.encoded,
            reused: self.summary.reused,
        });
        if let Some(d) = self.opts.batch_pause {
            std::thread::sleep(d);
        }
        Ok(())
    }

    /// Writes the file's record and drops the vectors it no longer produces (a failed file keeps
    /// its old state and is retried next run).
    fn finish_file(&mut self, batch: &mut Batch, f: usize, produced: &HashSet<u64>) -> Result<()> {
        let job = &self.ctx.files[f];
        if self.failed.contains(&f) {
            self.summary.failed += 1;
            return Ok(());
        }
        delete_owned(self.store, batch, &job.path, Some(produced))?;
        batch.kv_put(NS_FILES, keys::path_bytes(&job.path), file_record(job));
        if job.update {
            self.summary.updated += 1;
        } else {
            self.summary.indexed += 1;
        }
        Ok(())
    }
}

struct Plan {
    files: Vec<FileJob>,
    units: Vec<Unit>,
    remove: Vec<PathBuf>,
    skipped: usize,
    failed: usize,
    problems: usize,
}

fn deps_unchanged(deps: &[(String, u64, i128)]) -> bool {
    deps.iter().all(|(p, size, mtime)| {
        let now = walk::stat(Path::new(p)).unwrap_or((0, 0));
        now == (*size, *mtime)
    })
}

fn catalog_deps(records: &[Record]) -> Vec<(String, u64, i128)> {
    let mut deps: Vec<(String, u64, i128)> = records
        .iter()
        .filter_map(|r| r.image.as_ref())
        .map(|img| {
            let abs = walk::absolute_lenient(img);
            let (size, mtime) = walk::stat(&abs).unwrap_or((0, 0));
            (display(&abs), size, mtime)
        })
        .collect();
    deps.sort();
    deps.dedup();
    deps
}

fn plan(
    store: &Store,
    roots: &[PathBuf],
    opts: &IndexOptions,
    on_event: &mut dyn FnMut(IndexEvent),
) -> Result<Plan> {
    let mut found: Vec<Found> = Vec::new();
    let mut problems: Vec<(PathBuf, String)> = Vec::new();
    let mut abs_roots = Vec::new();
    for r in roots {
        let abs = walk::absolute(r)?;
        walk::walk(&abs, &opts.excludes, &mut found, &mut problems)?;
        abs_roots.push(abs);
    }
    let mut seen: HashSet<PathBuf> = HashSet::new();
    found.retain(|f| seen.insert(f.path.clone()));
    let mut plan = Plan {
        files: Vec::new(),
        units: Vec::new(),
        remove: Vec::new(),
        skipped: 0,
        failed: 0,
        problems: 0,
    };
    for (path, msg) in &problems {
        on_event(IndexEvent::Problem {
            path: path.clone(),
            message: msg.clone(),
        });
        seen.insert(path.clone());
        plan.problems += 1;
        plan.failed += 1;
    }
    for f in found {
        let old: Option<FileRecord> = store
            .kv_get(NS_FILES, &keys::path_bytes(&f.path))?
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(old) = &old {
            if old.size == f.size
                && old.mtime_ns == f.mtime_ns
                && old.kind == f.kind.as_str()
                && deps_unchanged(&old.deps)
            {
                plan.skipped += 1;
                continue;
            }
        }
        let file = plan.files.len();
        let mut job = FileJob {
            path: f.path.clone(),
            size: f.size,
            mtime_ns: f.mtime_ns,
            kind: f.kind,
            update: old.is_some(),
            units: 1,
            deps: Vec::new(),
        };
        match f.kind {
            FileKind::Image => plan.units.push(Unit {
                file,
                work: Work::Image,
            }),
            FileKind::Text => plan.units.push(Unit {
                file,
                work: Work::Text,
            }),
            FileKind::Catalog => match read_catalog(&f.path) {
                Ok((records, probs)) => {
                    for msg in probs {
                        on_event(IndexEvent::Problem {
                            path: f.path.clone(),
                            message: msg,
                        });
                        plan.problems += 1;
                    }
                    job.deps = catalog_deps(&records);
                    job.units = records.len();
                    for rec in records {
                        plan.units.push(Unit {
                            file,
                            work: Work::Record(Box::new(rec)),
                        });
                    }
                }
                Err(e) => {
                    on_event(IndexEvent::Problem {
                        path: f.path.clone(),
                        message: e.to_string(),
                    });
                    plan.problems += 1;
                    plan.failed += 1;
                    continue;
                }
            },
        }
        plan.files.push(job);
    }
    // Files recorded under the roots that are no longer there.
    for root in &abs_roots {
        let mut candidates = Vec::new();
        if store.kv_get(NS_FILES, &keys::path_bytes(root))?.is_some() {
            candidates.push(keys::path_bytes(root));
        }
        let mut prefix = keys::path_bytes(root);
        prefix.push(std::path::MAIN_SEPARATOR as u8);
        for (k, _) in store.kv_scan_prefix(NS_FILES, &prefix)? {
            candidates.push(k);
        }
        for k in candidates {
            let p = keys::path_from_bytes(&k);
            if !seen.contains(&p) && !plan.remove.contains(&p) {
                plan.remove.push(p);
            }
        }
    }
    Ok(plan)
}

fn run(
    store: &mut Store,
    model: &ClipModel,
    model_dir: &Path,
    plan: Plan,
    opts: &IndexOptions,
    on_event: &mut dyn FnMut(IndexEvent),
) -> Result<IndexSummary> {
    let started = Instant::now();
    let Plan {
        files,
        units,
        remove,
        skipped,
        failed,
        problems,
    } = plan;
    on_event(IndexEvent::Planned {
        files: files.len(),
        units: units.len(),
        unchanged: skipped,
        to_remove: remove.len(),
    });
    let needs_text = units.iter().any(|u| matches!(u.work, Work::Text));
    let chunker = if needs_text {
        Some(Chunker::load(model_dir, opts.max_tokens)?)
    } else {
        None
    };
    let needs_images = units.iter().any(|u| {
        matches!(&u.work, Work::Image) || matches!(&u.work, Work::Record(r) if r.image.is_some())
    });
    let known = if needs_images {
        known_hashes(store)?
    } else {
        HashSet::new()
    };
    let clocks = Clocks::default();
    let cancel = AtomicBool::new(false);
    let ctx = Ctx {
        files: &files,
        pre: model.preprocessor(),
        chunker: chunker.as_ref(),
        known: &known,
        decode: {
            let d = DecodeOptions {
                apply_exif_orientation: true,
                max_megapixels: opts.max_megapixels,
                ..Default::default()
            };
            if opts.fast_jpeg {
                d.with_fast_jpeg(model.image_size())
            } else {
                d
            }
        },
        clocks: &clocks,
        cancel: &cancel,
    };
    let mut remaining = HashMap::new();
    for u in &units {
        *remaining.entry(u.file).or_insert(0usize) += 1;
    }
    let empty_files: Vec<usize> = (0..files.len())
        .filter(|f| !remaining.contains_key(f))
        .collect();
    let batch_size = opts.batch_size.max(1);
    let mut consumer = Consumer {
        store,
        model,
        ctx: &ctx,
        opts,
        remaining,
        produced: HashMap::new(),
        failed: HashSet::new(),
        summary: IndexSummary {
            skipped,
            failed,
            problems,
            ..Default::default()
        },
        done_units: 0,
        total_units: units.len(),
        encode_time: Duration::ZERO,
        store_time: Duration::ZERO,
    };
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("jsearch-prep-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start worker threads: {e}")))?;
    let mut wait = Duration::ZERO;
    let (tx, rx) = sync_channel::<Prepared>(batch_size * 2);
    let result: Result<()> = std::thread::scope(|s| {
        let ctx_ref = &ctx;
        let producer = s.spawn(move || {
            pool.install(|| {
                units.into_par_iter().for_each_with(tx, |tx, unit| {
                    if ctx_ref.cancel.load(Ordering::Relaxed) {
                        return;
                    }
                    let p = ctx_ref.prepare(unit);
                    if tx.send(p).is_err() {
                        ctx_ref.cancel.store(true, Ordering::Relaxed);
                    }
                });
            });
        });
        let mut pending = Vec::new();
        let mut nvec = 0usize;
        let res = loop {
            let t = Instant::now();
            let msg = rx.recv();
            wait += t.elapsed();
            match msg {
                Ok(p) => {
                    nvec += p.items.iter().map(|i| i.vecs.len()).sum::<usize>().max(1);
                    pending.push(p);
                    if nvec >= batch_size {
                        nvec = 0;
                        if let Err(e) = consumer.flush(std::mem::take(&mut pending), on_event) {
                            break Err(e);
                        }
                    }
                }
                Err(_) => break consumer.flush(std::mem::take(&mut pending), on_event),
            }
        };
        if res.is_err() {
            cancel.store(true, Ordering::Relaxed);
        }
        drop(rx);
        if producer.join().is_err() {
            return Err(Error::Internal("a preprocessing thread panicked".into()));
        }
        res
    });
    result?;

    // Last transaction: files with nothing to embed, and files deleted under the roots.
    let t_store = Instant::now();
    let mut batch = Batch::new();
    for f in empty_files {
        consumer.finish_file(&mut batch, f, &HashSet::new())?;
    }
    let mut removed = 0;
    for p in &remove {
        delete_owned(consumer.store, &mut batch, p, None)?;
        batch.kv_delete(NS_FILES, keys::path_bytes(p));
        removed += 1;
    }
    if !batch.is_empty() {
        consumer.store.commit(batch)?;
    }
    consumer.store_time += t_store.elapsed();
    let mut summary = consumer.summary;
    summary.removed = removed;
    summary.elapsed = started.elapsed().as_secs_f64();
    summary.times = StageTimes {
        read: clocks.read.secs(),
        decode: clocks.decode.secs(),
        preprocess: clocks.preprocess.secs(),
        encode: consumer.encode_time.as_secs_f64(),
        store: consumer.store_time.as_secs_f64(),
        wait: wait.as_secs_f64(),
    };
    Ok(summary)
}

pub(crate) fn index_paths(
    store: &mut Store,
    model: &ClipModel,
    model_dir: &Path,
    roots: &[PathBuf],
    opts: &IndexOptions,
    on_event: &mut dyn FnMut(IndexEvent),
) -> Result<IndexSummary> {
    let plan = plan(store, roots, opts, on_event)?;
    run(store, model, model_dir, plan, opts, on_event)
}

pub(crate) fn index_records(
    store: &mut Store,
    model: &ClipModel,
    model_dir: &Path,
    source: &str,
    records: Vec<Record>,
    opts: &IndexOptions,
    on_event: &mut dyn FnMut(IndexEvent),
) -> Result<IndexSummary> {
    let path = PathBuf::from(source);
    let update = store.kv_get(NS_FILES, &keys::path_bytes(&path))?.is_some();
    let job = FileJob {
        path,
        size: 0,
        mtime_ns: 0,
        kind: FileKind::Catalog,
        update,
        units: records.len(),
        deps: Vec::new(),
    };
    let units = records
        .into_iter()
        .map(|r| Unit {
            file: 0,
            work: Work::Record(Box::new(r)),
        })
        .collect();
    let plan = Plan {
        files: vec![job],
        units,
        remove: Vec::new(),
        skipped: 0,
        failed: 0,
        problems: 0,
    };
    run(store, model, model_dir, plan, opts, on_event)
}

/// Removes files, or every file under folders. Fails (removing nothing) if a path is not indexed.
pub(crate) fn remove_paths(store: &mut Store, paths: &[PathBuf]) -> Result<usize> {
    let mut targets: Vec<PathBuf> = Vec::new();
    for p in paths {
        let abs = walk::absolute_lenient(p);
        let mut hits = Vec::new();
        if store.kv_get(NS_FILES, &keys::path_bytes(&abs))?.is_some() {
            hits.push(abs.clone());
        } else if store.kv_get(NS_FILES, &keys::path_bytes(p))?.is_some() {
            // Sources of `index_records` are stored as given.
            hits.push(p.clone());
        }
        let mut prefix = keys::path_bytes(&abs);
        prefix.push(std::path::MAIN_SEPARATOR as u8);
        for (k, _) in store.kv_scan_prefix(NS_FILES, &prefix)? {
            hits.push(keys::path_from_bytes(&k));
        }
        if hits.is_empty() {
            return Err(Error::NotIndexed(abs));
        }
        targets.extend(hits);
    }
    targets.sort();
    targets.dedup();
    for chunk in targets.chunks(256) {
        let mut batch = Batch::new();
        for p in chunk {
            delete_owned(store, &mut batch, p, None)?;
            batch.kv_delete(NS_FILES, keys::path_bytes(p));
        }
        store.commit(batch)?;
    }
    Ok(targets.len())
}
