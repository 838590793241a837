//! Encoding a catalog without a store, and indexing with vectors encoded elsewhere: the two
//! halves of `jsearch embed-shard` + `jsearch index --from-parquet`.
//!
//! The store keys every vector by the content hash of what was embedded (a record's text, an
//! image's bytes), and an index run takes a vector from the store whenever it already holds one
//! for that content. [`Engine::encode_records`] computes the same hashes and the same vectors an
//! index run would (document role, images decoded as indexing decodes them), so that vectors
//! encoded on many machines can be handed to an index run as [`Precomputed`]: the run then reads
//! the catalogs as usual (items, attributes, keyword index, the files' records, so that later
//! runs stay incremental) and loads no model tower at all; an input with no vector there is an
//! error that says how many and which.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::f16;

use super::prepare::{sha, text_hash};
use crate::catalog::{read_catalog, CatalogLimits, Record};
use crate::enc::preprocess::decode_rgb_named;
use crate::enc::TextRole;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::item::Modality;
use crate::{fsread, walk, IndexOptions, Workload};

/// SHA-256 of what was embedded (the store's content key).
pub type ContentHash = [u8; 32];

/// The content hash of a record's text ([`Record::embed_text`]) as an index run computes it.
pub fn text_content_hash(text: &str) -> ContentHash {
    text_hash(text)
}

/// The content hash of an image file's bytes as an index run computes it.
pub fn image_content_hash(bytes: &[u8]) -> ContentHash {
    sha(&[bytes])
}

/// Vectors encoded elsewhere, by content hash, for [`IndexOptions::precomputed`]. Held as f16,
/// what the store keeps anyway.
#[derive(Clone, Default)]
pub struct Precomputed {
    /// The model that made them (name, fingerprint, dimension): an index run refuses another.
    pub model: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Dimension.
    pub dim: usize,
    vectors: HashMap<ContentHash, Vec<f16>>,
}

impl std::fmt::Debug for Precomputed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Precomputed")
            .field("model", &self.model)
            .field("fingerprint", &self.fingerprint)
            .field("dim", &self.dim)
            .field("vectors", &self.vectors.len())
            .finish()
    }
}

impl Precomputed {
    /// An empty set for vectors of this model.
    pub fn new(model: impl Into<String>, fingerprint: impl Into<String>, dim: usize) -> Self {
        Precomputed {
            model: model.into(),
            fingerprint: fingerprint.into(),
            dim,
            vectors: HashMap::new(),
        }
    }

    /// Adds a vector (a later one for the same content replaces it).
    pub fn insert(&mut self, hash: ContentHash, vector: &[f32]) -> Result<()> {
        if vector.len() != self.dim {
            return Err(Error::InvalidArgument(format!(
                "a vector of {} dimensions among vectors of {}",
                vector.len(),
                self.dim
            )));
        }
        self.vectors
            .insert(hash, vector.iter().map(|&x| f16::from_f32(x)).collect());
        Ok(())
    }

    /// Vectors held.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    pub(crate) fn get(&self, hash: &ContentHash) -> Option<Vec<f32>> {
        self.vectors
            .get(hash)
            .map(|v| v.iter().map(|x| x.to_f32()).collect())
    }

    pub(crate) fn hashes(&self) -> impl Iterator<Item = &ContentHash> {
        self.vectors.keys()
    }
}

/// One vector of a record, as [`Engine::encode_records`] makes it.
#[derive(Debug, Clone)]
pub struct EncodedInput {
    /// The record's id.
    pub id: String,
    /// Text (title, description, text) or image.
    pub modality: Modality,
    /// What the store keys it by.
    pub hash: ContentHash,
    /// The vector, L2-normalised.
    pub vector: Vec<f32>,
}

impl Engine {
    /// The records of a catalog (`.jsonl`, `.csv`) as `index` reads them (`opts`' record size
    /// limit, catalog root and CSV types), and the problems of the lines it skipped.
    pub fn read_catalog(
        &self,
        path: &Path,
        opts: &IndexOptions,
    ) -> Result<(Vec<Record>, Vec<String>)> {
        let limits = CatalogLimits {
            max_record_bytes: opts.max_record_bytes,
            root: opts.catalog_root.clone(),
            csv_types: opts.csv_types.clone(),
        };
        read_catalog(&walk::absolute_lenient(path), &limits)
    }

    /// The vectors an index run would make for `records` (their text and their image), with
    /// the content hashes it keys them by, without a store: batches of `opts.batch_size`. An
    /// image that cannot be read or decoded is passed to `on_problem` (naming the record and the
    /// file) and left out, as an index run leaves it out.
    pub fn encode_records(
        &self,
        records: &[Record],
        opts: &IndexOptions,
        on_problem: &mut dyn FnMut(String),
    ) -> Result<Vec<EncodedInput>> {
        let has_text = records.iter().any(|r| r.embed_text().is_some());
        let has_image = records.iter().any(|r| r.image.is_some());
        let towers = match (has_text, has_image) {
            (true, true) => jsearch_encoders::Towers::Both,
            (true, false) => jsearch_encoders::Towers::Text,
            (false, true) => jsearch_encoders::Towers::Vision,
            (false, false) => return Ok(Vec::new()),
        };
        let model = self.model(towers, Workload::Index)?;
        let batch = match opts.batch_size {
            0 if model.device().is_cpu() => 32,
            0 => 64,
            n => n,
        };
        let decode = super::pipeline::decode_options(&model, opts);
        let mut out = Vec::new();
        for chunk in records.chunks(batch) {
            let texts: Vec<(usize, String)> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.embed_text().map(|t| (i, t)))
                .collect();
            let strs: Vec<&str> = texts.iter().map(|(_, t)| t.as_str()).collect();
            let tv = if strs.is_empty() {
                Vec::new()
            } else {
                model.encode_texts(&strs, TextRole::Document)?
            };
            let mut by_record: Vec<Vec<EncodedInput>> = vec![Vec::new(); chunk.len()];
            for ((i, t), v) in texts.iter().zip(tv) {
                by_record[*i].push(EncodedInput {
                    id: chunk[*i].id.clone(),
                    modality: Modality::Text,
                    hash: text_hash(t),
                    vector: v,
                });
            }
            let mut pixels = Vec::new();
            let mut owners = Vec::new();
            for (i, r) in chunk.iter().enumerate() {
                let Some(img) = &r.image else { continue };
                let path: PathBuf = walk::absolute_lenient(img);
                let read = fsread::read_regular(&path, opts.image_limit())
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        decode_rgb_named(&bytes, &path, &decode)
                            .map(|img| (sha(&[&bytes]), img))
                            .map_err(|e| e.to_string())
                    });
                match read {
                    Ok((hash, img)) => {
                        pixels.push(model.preprocessor().preprocess_rgb(&img));
                        owners.push((i, hash));
                    }
                    Err(e) => on_problem(format!("record {}: image {}: {e}", r.id, path.display())),
                }
            }
            if !pixels.is_empty() {
                for ((i, hash), v) in owners.into_iter().zip(model.encode_pixels(&pixels)?) {
                    by_record[i].push(EncodedInput {
                        id: chunk[i].id.clone(),
                        modality: Modality::Image,
                        hash,
                        vector: v,
                    });
                }
            }
            out.extend(by_record.into_iter().flatten());
        }
        Ok(out)
    }
}
