//! Encoding a catalog in shards without a store (`jsearch embed-shard`), and reading the shards
//! back as vectors an index run takes instead of running the model (`jsearch index
//! --from-parquet`).
//!
//! A record belongs to shard `I` of `N` when the first 8 bytes of SHA-256 of its id, read as a
//! big-endian number, are `I` modulo `N`: the split does not depend on the records' order or
//! on which machine runs which shard, and a record keeps its shard when others are added.
//!
//! A shard file has one row per vector, in the catalog's order (a record's text, then its
//! image):
//!
//! | column | Arrow type | what |
//! |---|---|---|
//! | `id` | utf8 | the record's id |
//! | `modality` | utf8 | `text` or `image` |
//! | `content_hash` | `fixed_size_binary[32]` | SHA-256 of what was embedded, as the store keys it |
//! | `vector` | `fixed_size_list<float32>[dim]` | the vector, L2-normalised |
//!
//! and key-value metadata `jsearch.format` (1), `jsearch.content` (`shard`), `jsearch.model`,
//! `jsearch.model_fingerprint`, `jsearch.dim`, `jsearch.shard` (`I/N`) and `jsearch.catalog`.
//!
//! **Resuming.** Vectors are written in parts (`OUT.parts/part-NNNNN.parquet`, each complete
//! before it gets its name) while the shard is encoded, and merged into `OUT` at the end. A run
//! that finds `OUT` or parts of an earlier run reads them and encodes only the records whose
//! content (the hashes) is not there yet; rows of records that changed or left the shard are
//! dropped at the merge. Deterministic: the same catalog and model give the same rows in the
//! same order.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::FixedSizeBinaryBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use jsearch::{ContentHash, Engine, IndexOptions, Modality, Precomputed, Record};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};

use crate::export::write_error;
use crate::{Result, ScaleError};

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    /// Which shard, `0..count`.
    pub index: u32,
    /// How many shards.
    pub count: u32,
}

impl std::str::FromStr for ShardSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("invalid shard {s:?}: expected I/N with 0 <= I < N (e.g. 0/8)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(ShardSpec { index, count })
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl ShardSpec {
    /// Whether the record with this id belongs to the shard.
    pub fn holds(&self, id: &str) -> bool {
        let d = Sha256::digest(id.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d[..8]);
        u64::from_be_bytes(b) % u64::from(self.count) == u64::from(self.index)
    }
}

/// What an `embed-shard` run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ShardSummary {
    /// The file written.
    pub out: PathBuf,
    /// `I/N`.
    pub shard: String,
    /// Records of the catalog (paths of a file list).
    pub catalog_records: usize,
    /// Records (paths) in this shard.
    pub records: usize,
    /// Vectors in the file.
    pub vectors: usize,
    /// Vectors encoded by this run.
    pub encoded: usize,
    /// Vectors found in the file or parts of an earlier run.
    pub resumed: usize,
    /// Lines of the catalog skipped and images that could not be used (each named).
    pub problems: Vec<String>,
    /// Wall seconds.
    pub seconds: f64,
}

/// How to encode a shard.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// Which shard.
    pub shard: ShardSpec,
    /// Records per part file (a resumed run loses at most one part's work).
    pub part_records: usize,
    /// How the catalog is read and its images decoded (record size limit, catalog root, CSV
    /// types, image limits, batch size): as `index` would.
    pub index: IndexOptions,
}

/// The vectors of one row.
struct ShardRow {
    id: String,
    modality: Modality,
    hash: ContentHash,
    vector: Vec<f32>,
}

fn schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("modality", DataType::Utf8, false),
        Field::new("content_hash", DataType::FixedSizeBinary(32), false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dim as i32,
            ),
            false,
        ),
    ]))
}

/// The model metadata of a shard file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileModel {
    model: String,
    fingerprint: String,
    dim: usize,
}

/// Writes `rows` to `path` (under a temporary name, renamed when complete).
fn write_file(
    path: &Path,
    rows: &[ShardRow],
    m: &FileModel,
    extra: &[(&str, String)],
) -> Result<()> {
    let schema = schema(m.dim);
    let mut kv = vec![
        KeyValue::new("jsearch.format".into(), "1".to_string()),
        KeyValue::new("jsearch.content".into(), "shard".to_string()),
        KeyValue::new("jsearch.model".into(), m.model.clone()),
        KeyValue::new("jsearch.model_fingerprint".into(), m.fingerprint.clone()),
        KeyValue::new("jsearch.dim".into(), m.dim.to_string()),
    ];
    kv.extend(
        extra
            .iter()
            .map(|(k, v)| KeyValue::new((*k).into(), v.clone())),
    );
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_key_value_metadata(Some(kv))
        .build();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let file = File::create(&tmp).map_err(|e| write_error(&tmp, e))?;
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(|e| write_error(&tmp, e))?;
    for chunk in rows.chunks(8192) {
        let mut hashes = FixedSizeBinaryBuilder::with_capacity(chunk.len(), 32);
        for r in chunk {
            hashes
                .append_value(r.hash)
                .map_err(|e| write_error(&tmp, e))?;
        }
        let flat: Vec<f32> = chunk
            .iter()
            .flat_map(|r| r.vector.iter().copied())
            .collect();
        let field = Arc::new(Field::new("item", DataType::Float32, false));
        let vectors = FixedSizeListArray::try_new(
            field,
            m.dim as i32,
            Arc::new(Float32Array::from(flat)),
            None,
        )
        .map_err(|e| write_error(&tmp, e))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| r.modality.as_str()),
            )),
            Arc::new(hashes.finish()),
            Arc::new(vectors),
        ];
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|e| write_error(&tmp, e))?;
        w.write(&batch).map_err(|e| write_error(&tmp, e))?;
    }
    let file = w.into_inner().map_err(|e| write_error(&tmp, e))?;
    file.sync_all().map_err(|e| write_error(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| write_error(&tmp, e))
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> ScaleError {
    ScaleError::InvalidArgument(format!(
        "{}: not a readable shard file: {e}",
        path.display()
    ))
}

/// Every row of a shard file and its model metadata.
fn read_file(path: &Path) -> Result<(FileModel, Vec<ShardRow>)> {
    let file = File::open(path).map_err(|e| read_error(path, e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| read_error(path, e))?;
    let mut kv: HashMap<String, String> = HashMap::new();
    if let Some(list) = b.metadata().file_metadata().key_value_metadata() {
        for e in list {
            kv.insert(e.key.clone(), e.value.clone().unwrap_or_default());
        }
    }
    if kv.get("jsearch.content").map(String::as_str) != Some("shard") {
        return Err(read_error(
            path,
            "no jsearch.content = shard in its metadata (only `jsearch embed-shard` files carry the content hashes an index run needs)",
        ));
    }
    let m = FileModel {
        model: kv.get("jsearch.model").cloned().unwrap_or_default(),
        fingerprint: kv
            .get("jsearch.model_fingerprint")
            .cloned()
            .unwrap_or_default(),
        dim: kv
            .get("jsearch.dim")
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| read_error(path, "no jsearch.dim in its metadata"))?,
    };
    let mut rows = Vec::new();
    for batch in b.build().map_err(|e| read_error(path, e))? {
        let batch = batch.map_err(|e| read_error(path, e))?;
        let col = |n: &str| {
            batch
                .column_by_name(n)
                .cloned()
                .ok_or_else(|| read_error(path, format!("no column {n}")))
        };
        let (id, modality, hash, vector) = (
            col("id")?,
            col("modality")?,
            col("content_hash")?,
            col("vector")?,
        );
        let (Some(id), Some(modality), Some(hash), Some(vector)) = (
            id.as_string_opt::<i32>(),
            modality.as_string_opt::<i32>(),
            hash.as_fixed_size_binary_opt(),
            vector.as_fixed_size_list_opt(),
        ) else {
            return Err(read_error(path, "a column of another type"));
        };
        for r in 0..batch.num_rows() {
            let v = vector.value(r);
            let Some(v) = v.as_primitive_opt::<Float32Type>() else {
                return Err(read_error(path, "vector is not float32"));
            };
            let h: ContentHash = hash
                .value(r)
                .try_into()
                .map_err(|_| read_error(path, "content_hash is not 32 bytes"))?;
            rows.push(ShardRow {
                id: id.value(r).to_string(),
                modality: if modality.value(r) == "image" {
                    Modality::Image
                } else {
                    Modality::Text
                },
                hash: h,
                vector: v.values().to_vec(),
            });
            if rows.last().is_some_and(|x| x.vector.len() != m.dim) {
                return Err(read_error(
                    path,
                    format!(
                        "a vector of {} dimensions, jsearch.dim says {}",
                        v.len(),
                        m.dim
                    ),
                ));
            }
        }
    }
    Ok((m, rows))
}

/// The content hashes a record needs (text, then image), computed as an index run does; an
/// image that cannot be read yet is left out (the encode step reports it).
fn needed_hashes(rec: &Record, opts: &IndexOptions) -> Vec<ContentHash> {
    let mut out = Vec::new();
    if let Some(t) = rec.embed_text() {
        out.push(jsearch::text_content_hash(&t));
    }
    if let Some(img) = &rec.image {
        let small =
            std::fs::metadata(img).is_ok_and(|m| m.is_file() && m.len() <= opts.max_image_bytes);
        if let Some(Ok(bytes)) = small.then(|| std::fs::read(img)) {
            out.push(jsearch::image_content_hash(&bytes));
        }
    }
    out
}

/// The parts folder of `out`.
fn parts_dir(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".parts");
    out.with_file_name(name)
}

/// Encodes shard `opts.shard` of `catalog` into `out` (see the module docs); `progress` hears
/// (records done, records of the shard) after each part.
pub fn embed_shard(
    engine: &Engine,
    catalog: &Path,
    out: &Path,
    opts: &ShardOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ShardSummary> {
    let started = Instant::now();
    if opts.part_records == 0 {
        return Err(ScaleError::InvalidArgument(
            "part size must be at least 1 record".into(),
        ));
    }
    let info = engine.model_info()?;
    let model = FileModel {
        model: info.name.clone(),
        fingerprint: info.fingerprint.clone(),
        dim: info.dim,
    };
    let (records, mut problems) = engine.read_catalog(catalog, &opts.index)?;
    let catalog_records = records.len();
    let mine: Vec<Record> = records
        .into_iter()
        .filter(|r| opts.shard.holds(&r.id))
        .collect();
    // What earlier runs left: the finished file, then parts.
    let parts = parts_dir(out);
    let mut earlier: Vec<PathBuf> = Vec::new();
    if out.exists() {
        earlier.push(out.to_path_buf());
    }
    if let Ok(rd) = std::fs::read_dir(&parts) {
        let mut p: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        p.sort();
        earlier.extend(p);
    }
    let mut have: HashMap<ContentHash, ShardRow> = HashMap::new();
    for f in &earlier {
        let (m, rows) = read_file(f)?;
        if m != model {
            return Err(ScaleError::InvalidArgument(format!(
                "{} holds vectors of {} ({}, {}-d), this run encodes with {} ({}, {}-d): write to another file, or remove it and its .parts folder",
                f.display(), m.model, m.fingerprint, m.dim, model.model, model.fingerprint, model.dim
            )));
        }
        for r in rows {
            have.insert(r.hash, r);
        }
    }
    let resumed_rows = have.len();
    // Records whose every vector is there already are skipped.
    let todo: Vec<&Record> = mine
        .iter()
        .filter(|r| {
            let need = needed_hashes(r, &opts.index);
            need.is_empty() || !need.iter().all(|h| have.contains_key(h))
        })
        .collect();
    let mut done = mine.len() - todo.len();
    let mut encoded = 0usize;
    if !todo.is_empty() {
        std::fs::create_dir_all(&parts).map_err(|e| write_error(&parts, e))?;
        // Numbered after the parts already there (an unfinished part's temporary file is not one).
        let first_part = std::fs::read_dir(&parts)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
                    .count()
            })
            .unwrap_or(0);
        for (next_part, chunk) in (first_part..).zip(todo.chunks(opts.part_records)) {
            // Only the vectors not there yet: a record whose title changed keeps its image's.
            let recs: Vec<Record> = chunk
                .iter()
                .map(|r| {
                    let mut r = (*r).clone();
                    if r.embed_text()
                        .is_some_and(|t| have.contains_key(&jsearch::text_content_hash(&t)))
                    {
                        (r.title, r.description, r.text) = (None, None, None);
                    }
                    let hashes = needed_hashes(&r, &opts.index);
                    if r.image.is_some() && hashes.last().is_some_and(|h| have.contains_key(h)) {
                        r.image = None;
                    }
                    r
                })
                .collect();
            let mut on_problem = |p: String| problems.push(p);
            let vectors = engine.encode_records(&recs, &opts.index, &mut on_problem)?;
            let rows: Vec<ShardRow> = vectors
                .into_iter()
                .map(|e| ShardRow {
                    id: e.id,
                    modality: e.modality,
                    hash: e.hash,
                    vector: e.vector,
                })
                .collect();
            encoded += rows.len();
            let part = parts.join(format!("part-{next_part:05}.parquet"));
            write_file(&part, &rows, &model, &[])?;
            for r in rows {
                have.insert(r.hash, r);
            }
            done += chunk.len();
            progress(done, mine.len());
        }
    }
    // The merge: the shard's records in catalog order, each vector once.
    let mut rows: Vec<ShardRow> = Vec::new();
    let mut written: HashSet<ContentHash> = HashSet::new();
    for r in &mine {
        for h in needed_hashes(r, &opts.index) {
            if let Some(row) = have.get(&h) {
                if written.insert(h) {
                    rows.push(ShardRow {
                        id: r.id.clone(),
                        modality: row.modality,
                        hash: h,
                        vector: row.vector.clone(),
                    });
                }
            }
        }
    }
    let catalog_name = catalog.display().to_string();
    write_file(
        out,
        &rows,
        &model,
        &[
            ("jsearch.shard", opts.shard.to_string()),
            ("jsearch.catalog", catalog_name),
        ],
    )?;
    let _ = std::fs::remove_dir_all(&parts);
    Ok(ShardSummary {
        out: out.to_path_buf(),
        shard: opts.shard.to_string(),
        catalog_records,
        records: mine.len(),
        vectors: rows.len(),
        encoded,
        resumed: resumed_rows.min(rows.len()),
        problems,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The paths of a file list: one per line, blank lines and `#` comments skipped, relative
/// ones taken from the list's folder. Each with the line as written (its shard key).
fn read_file_list(list: &Path) -> Result<Vec<(String, PathBuf)>> {
    let text = std::fs::read_to_string(list).map_err(|e| {
        ScaleError::InvalidArgument(format!(
            "{}: cannot read the file list: {e}",
            list.display()
        ))
    })?;
    let base = list.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| (l.to_string(), base.join(l)))
        .collect())
}

/// Encodes shard `opts.shard` of the files a list names (one path per line: images, text
/// files, catalogs or folders, as `index` takes them; a line belongs to shard `I` of `N` by
/// the hash of the line as written) into `out`, with the same columns as a catalog's shard:
/// each vector's item id (`PATH` for an image, `PATH#N` for a text passage), modality,
/// content hash and vector, so that `index PATHS --from-parquet` takes them.
///
/// The files are indexed, exactly as `index` would, into a scratch store in `OUT.parts/`
/// (which an interrupted run resumes from), then written out in key order (deterministic) and
/// the scratch store removed. A run that finds `OUT` from an earlier run takes its vectors
/// and encodes only what is new. `progress` hears (inputs done, inputs planned).
pub fn embed_shard_files(
    engine: &Engine,
    list: &Path,
    out: &Path,
    opts: &ShardOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ShardSummary> {
    let started = Instant::now();
    let info = engine.model_info()?;
    let model = FileModel {
        model: info.name.clone(),
        fingerprint: info.fingerprint.clone(),
        dim: info.dim,
    };
    let listed = read_file_list(list)?;
    let catalog_records = listed.len();
    let mut problems = Vec::new();
    let mut mine: Vec<PathBuf> = Vec::new();
    for (line, path) in listed {
        if !opts.shard.holds(&line) {
            continue;
        }
        // A path that vanished is skipped with a message, as `index` skips an unreadable file.
        match std::fs::metadata(&path) {
            Ok(_) => mine.push(path),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    let records = mine.len() + problems.len();
    let mut index_opts = opts.index.clone();
    let mut resumed = 0;
    if out.exists() {
        let earlier = read_shards(&[out.to_path_buf()])?;
        if !info.made(&earlier.model, &earlier.fingerprint, earlier.dim) {
            return Err(ScaleError::InvalidArgument(format!(
                "{} holds vectors of {} ({}, {}-d), this run encodes with {} ({}, {}-d): write to another file, or remove it",
                out.display(), earlier.model, earlier.fingerprint, earlier.dim, model.model, model.fingerprint, model.dim
            )));
        }
        resumed = earlier.len();
        index_opts.precomputed = Some(Arc::new(earlier));
        index_opts.encode_missing = true;
    }
    let parts = parts_dir(out);
    std::fs::create_dir_all(&parts).map_err(|e| write_error(&parts, e))?;
    let scratch_db = parts.join("scratch.jsearch");
    let (rows, encoded) = {
        let mut scratch = engine.with_store(scratch_db)?;
        let summary = if mine.is_empty() {
            jsearch::IndexSummary::default()
        } else {
            scratch.index(&mine, &index_opts, &mut |e| match e {
                jsearch::IndexEvent::Problem { path, message } => {
                    problems.push(format!("{}: {message}", path.display()))
                }
                jsearch::IndexEvent::Progress { done, total, .. } => progress(done, total),
                _ => {}
            })?
        };
        let mut rows: Vec<ShardRow> = Vec::new();
        if !mine.is_empty() {
            let hashes = scratch.content_hashes()?;
            let mut written: HashSet<ContentHash> = HashSet::new();
            scratch.for_each_vector(|key, item, modality, v| {
                if let Some(h) = hashes.get(&key) {
                    if written.insert(*h) {
                        rows.push(ShardRow {
                            id: item.id.clone(),
                            modality,
                            hash: *h,
                            vector: v.to_vec(),
                        });
                    }
                }
                Ok(())
            })?;
        }
        (rows, summary.encoded)
    };
    write_file(
        out,
        &rows,
        &model,
        &[
            ("jsearch.shard", opts.shard.to_string()),
            ("jsearch.files", list.display().to_string()),
        ],
    )?;
    let _ = std::fs::remove_dir_all(&parts);
    Ok(ShardSummary {
        out: out.to_path_buf(),
        shard: opts.shard.to_string(),
        catalog_records,
        records,
        vectors: rows.len(),
        encoded,
        resumed: resumed.min(rows.len()),
        problems,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The vectors of shard files, for [`IndexOptions::precomputed`]. Files of different models are
/// refused, naming both.
pub fn read_shards(files: &[PathBuf]) -> Result<Precomputed> {
    let mut out: Option<(FileModel, PathBuf, Precomputed)> = None;
    for f in files {
        let (m, rows) = read_file(f)?;
        let (first, first_path, p) = out.get_or_insert_with(|| {
            (
                m.clone(),
                f.clone(),
                Precomputed::new(m.model.clone(), m.fingerprint.clone(), m.dim),
            )
        });
        if *first != m {
            return Err(ScaleError::InvalidArgument(format!(
                "{} holds vectors of {} ({}), {} of {} ({}): shards of one store come from one model",
                f.display(), m.model, m.fingerprint, first_path.display(), first.model, first.fingerprint
            )));
        }
        for r in rows {
            p.insert(r.hash, &r.vector)?;
        }
    }
    out.map(|o| o.2)
        .ok_or_else(|| ScaleError::InvalidArgument("no shard files given".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_every_id_once() {
        let specs: Vec<ShardSpec> = (0..4).map(|i| format!("{i}/4").parse().unwrap()).collect();
        let mut counts = [0usize; 4];
        for n in 0..4000 {
            let id = format!("p{n:05}");
            let owners: Vec<usize> = (0..4).filter(|&i| specs[i].holds(&id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            counts[owners[0]] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(bad.parse::<ShardSpec>().is_err(), "{bad}");
        }
    }
}
