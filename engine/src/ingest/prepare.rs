//! Stage 2 of a run, on the worker pool: one function per item kind turns a unit of work into
//! items with their vector inputs (pixels, text, or content the store already has).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{FileJob, Unit, Work};
use crate::catalog::Record;
use crate::chunk::{title_of, Chunker};
use crate::enc::preprocess::{decode_rgb_named, DecodeOptions, PixelValues, Preprocessor};
use crate::enc::EncoderError;
use crate::fsread::{read_range, read_regular, Limit};
use crate::item::{path_key, path_strings, snippet, vector_id, ItemMeta, Kind, Modality};
use crate::keys::Hash;
use crate::keyword::KeywordDoc;
use crate::walk;

/// Why a file (or a catalog record) could not be used. Reported as an
/// [`super::IndexEvent::Problem`]; the run goes on.
#[derive(Debug, thiserror::Error)]
pub(super) enum FileProblem {
    /// The file could not be read (missing, not a regular file, above its size limit).
    #[error("{0}")]
    Read(#[from] crate::fsread::ReadError),
    /// A text file that is not UTF-8.
    #[error("not UTF-8 text")]
    NotUtf8,
    /// A text file arrived without a tokenizer to chunk it (a planning bug, reported as such).
    #[error("no tokenizer loaded to chunk text")]
    NoTokenizer,
    /// The image could not be decoded (corrupt, truncated, too large, unknown format).
    #[error("{0}")]
    Decode(#[from] EncoderError),
    /// The text could not be split into passages.
    #[error("{0}")]
    Chunk(#[from] crate::Error),
    /// A catalog record's image could not be used (the record keeps its text).
    #[error("record {id:?}: image {}: {source}", path.display())]
    RecordImage {
        /// The record's id.
        id: String,
        /// The image file.
        path: PathBuf,
        /// What went wrong with it.
        source: Box<FileProblem>,
    },
    /// A catalog record with neither text nor a usable image.
    #[error("record {0:?}: no text and no usable image")]
    RecordEmpty(String),
}

/// Where a vector will come from.
pub(super) enum Input {
    Pixels(PixelValues),
    Text(String),
    /// Content already in the store; the path lets the encoder decode it if the stored copy vanished.
    Known(PathBuf),
}

/// One vector of an item: its id, content hash and input.
pub(super) struct PVec {
    pub(super) id: u64,
    pub(super) hash: Hash,
    pub(super) input: Input,
}

/// One item (an image, a passage, a product) with its vectors.
pub(super) struct PItem {
    pub(super) meta: ItemMeta,
    pub(super) vecs: Vec<PVec>,
    /// Its document in the keyword index.
    pub(super) keywords: KeywordDoc,
}

/// What a unit of work produced.
pub(super) struct Prepared {
    pub(super) file: usize,
    pub(super) items: Vec<PItem>,
    pub(super) problems: Vec<FileProblem>,
    /// The file failed as a whole (it keeps its old state and is retried next run).
    pub(super) fatal: bool,
}

/// CPU time summed over the worker threads.
#[derive(Default)]
pub(super) struct Clock(AtomicU64);

impl Clock {
    fn add(&self, since: Instant) {
        self.0
            .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    pub(super) fn secs(&self) -> f64 {
        self.0.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// The workers' stage clocks.
#[derive(Default)]
pub(super) struct Clocks {
    pub(super) read: Clock,
    pub(super) decode: Clock,
    pub(super) preprocess: Clock,
}

/// What the workers share.
pub(super) struct Ctx<'a> {
    pub(super) files: &'a [FileJob],
    pub(super) pre: &'a Preprocessor,
    pub(super) chunker: Option<&'a Chunker>,
    /// Content hashes of the images already stored (not decoded again).
    pub(super) known: &'a HashSet<Hash>,
    pub(super) decode: DecodeOptions,
    pub(super) clocks: &'a Clocks,
    pub(super) cancel: &'a AtomicBool,
    pub(super) image_limit: Limit,
    pub(super) text_limit: Limit,
}

pub(super) fn sha(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// An image file read for indexing.
struct ImageInput {
    hash: Hash,
    input: Input,
    /// Pixel size from the header, and whether it is already as shown (HEIF).
    size: Option<(u32, u32, bool)>,
    /// What the EXIF block says (date taken, camera, place).
    photo: crate::photo::PhotoAttrs,
}

pub(super) fn text_hash(text: &str) -> Hash {
    sha(&[b"text\0", text.as_bytes()])
}

fn display(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Ctx<'_> {
    /// Reads and hashes an image; decodes + preprocesses it unless its content is already stored.
    fn image_input(&self, path: &Path) -> Result<(Hash, Input), FileProblem> {
        self.image_input_sized(path).map(|i| (i.hash, i.input))
    }

    /// [`Self::image_input`] with the image's pixel size as its header gives it (before EXIF
    /// orientation), when the header can be read.
    fn image_input_sized(&self, path: &Path) -> Result<ImageInput, FileProblem> {
        let t = Instant::now();
        let bytes = read_regular(path, self.image_limit)?;
        let hash = sha(&[&bytes]);
        self.clocks.read.add(t);
        let size = crate::enc::preprocess::header_size(&bytes, path);
        let photo = crate::photo::PhotoAttrs::read(&bytes);
        let input = if self.known.contains(&hash) {
            Input::Known(path.to_path_buf())
        } else {
            Input::Pixels(self.decode_bytes(&bytes, path)?)
        };
        Ok(ImageInput {
            hash,
            input,
            size,
            photo,
        })
    }

    /// Decodes and preprocesses image bytes.
    pub(super) fn decode_bytes(
        &self,
        bytes: &[u8],
        path: &Path,
    ) -> Result<PixelValues, FileProblem> {
        let t = Instant::now();
        let img = decode_rgb_named(bytes, path, &self.decode)?;
        self.clocks.decode.add(t);
        let t = Instant::now();
        let px = self.pre.preprocess_rgb(&img);
        self.clocks.preprocess.add(t);
        Ok(px)
    }

    /// Reads and decodes an image file from scratch.
    pub(super) fn decode_file(&self, path: &Path) -> Result<PixelValues, FileProblem> {
        let bytes = read_regular(path, self.image_limit)?;
        self.decode_bytes(&bytes, path)
    }

    /// Prepares one unit of work.
    pub(super) fn prepare(&self, unit: Unit) -> Prepared {
        let job = &self.files[unit.file];
        let mut out = Prepared {
            file: unit.file,
            items: Vec::new(),
            problems: Vec::new(),
            fatal: false,
        };
        let items = match unit.work {
            Work::Image => self.prepare_image(job).map(|it| vec![it]),
            Work::Text => self.prepare_text(job),
            Work::TextPart { start, end, part } => self.prepare_text_part(job, start, end, part),
            // A record's problems never fail the catalog: it is skipped or keeps its text.
            Work::Record(rec) => Ok(self
                .prepare_record(job, &rec, &mut out.problems)
                .into_iter()
                .collect()),
        };
        match items {
            Ok(items) => out.items = items,
            Err(p) => {
                out.problems.push(p);
                out.fatal = true;
            }
        }
        out
    }

    /// An image file: one item, one vector.
    fn prepare_image(&self, job: &FileJob) -> Result<PItem, FileProblem> {
        let (path_s, path_bytes) = path_strings(&job.path);
        let ImageInput {
            hash,
            input,
            size,
            photo,
        } = self.image_input_sized(&job.path)?;
        // Attributes of every image: its pixel size as shown (EXIF orientation applied), the
        // file's modification time (seconds since 1970, UTC), and the photo attributes
        // (`crate::photo`: taken, camera, make, lens, lat, lon), filterable and shown in tables.
        let mut metadata = serde_json::Map::new();
        if let Some((w, h, oriented)) = size {
            let (w, h) = if photo.quarter_turn && !oriented {
                (h, w)
            } else {
                (w, h)
            };
            metadata.insert("width".into(), w.into());
            metadata.insert("height".into(), h.into());
        }
        let mtime = i64::try_from(job.mtime_ns.div_euclid(1_000_000_000)).ok();
        if let Some(secs) = mtime {
            metadata.insert("modified".into(), secs.into());
        }
        photo.insert_into(&mut metadata, mtime);
        let id = vector_id(
            path_key("file:", &job.path, ""),
            Kind::Image,
            Modality::Image,
        );
        let meta = ItemMeta {
            kind: Kind::Image,
            id: path_s.clone(),
            path: path_s,
            path_bytes,
            title: job
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            part: None,
            chunk: None,
            chunks: None,
            lines: None,
            image: None,
            snippet: None,
            metadata,
        };
        Ok(PItem {
            keywords: KeywordDoc::of(&meta, None),
            meta,
            vecs: vec![PVec { id, hash, input }],
        })
    }

    /// A text file: one item per passage.
    fn prepare_text(&self, job: &FileJob) -> Result<Vec<PItem>, FileProblem> {
        let t = Instant::now();
        let bytes = read_regular(&job.path, self.text_limit)?;
        self.clocks.read.add(t);
        let text = String::from_utf8(bytes).map_err(|_| FileProblem::NotUtf8)?;
        let title = title_of(&text);
        self.passages(job, &text, None, title)
    }

    /// Bytes `start..end` of a big text file (part `part`): its passages, named `path#part.i`.
    /// The title is the file's, from its first 64 KiB (part 0 holds them).
    fn prepare_text_part(
        &self,
        job: &FileJob,
        start: u64,
        end: u64,
        part: u32,
    ) -> Result<Vec<PItem>, FileProblem> {
        let t = Instant::now();
        let read = |from, len| read_range(&job.path, self.text_limit, from, len);
        let bytes = read(start, end.saturating_sub(start))?;
        let head = if part == 0 {
            None
        } else {
            Some(read(0, 64 << 10)?)
        };
        self.clocks.read.add(t);
        let text = String::from_utf8(bytes).map_err(|_| FileProblem::NotUtf8)?;
        let title = match head {
            None => title_of(&text),
            Some(h) => title_of(&String::from_utf8_lossy(&h)),
        };
        self.passages(job, &text, Some(part), title)
    }

    /// The passages of `text` (a whole file, or part `part` of one) as items.
    fn passages(
        &self,
        job: &FileJob,
        text: &str,
        part: Option<u32>,
        title: Option<String>,
    ) -> Result<Vec<PItem>, FileProblem> {
        let (path_s, path_bytes) = path_strings(&job.path);
        let t = Instant::now();
        let chunker = self.chunker.ok_or(FileProblem::NoTokenizer)?;
        let chunks = chunker.chunk(text)?;
        self.clocks.decode.add(t);
        let title = title.or_else(|| {
            job.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        });
        // A whole file knows its number of passages; a part does not know the others'.
        let n = chunks.len() as u32;
        Ok(chunks
            .into_iter()
            .enumerate()
            .map(|(i, ch)| {
                let local = match part {
                    None => format!("{i}"),
                    Some(p) => format!("{p}.{i}"),
                };
                let key = path_key("file:", &job.path, &format!("#{local}"));
                let id = vector_id(key, Kind::Text, Modality::Text);
                let meta = ItemMeta {
                    kind: Kind::Text,
                    id: format!("{path_s}#{local}"),
                    path: path_s.clone(),
                    path_bytes: path_bytes.clone(),
                    title: title.clone(),
                    part,
                    chunk: Some(i as u32),
                    chunks: part.is_none().then_some(n),
                    lines: part.is_none().then_some(ch.lines).flatten(),
                    image: None,
                    snippet: Some(snippet(&ch.text, 300)),
                    metadata: Default::default(),
                };
                PItem {
                    keywords: KeywordDoc::of(&meta, Some(&ch.text)),
                    meta,
                    vecs: vec![PVec {
                        id,
                        hash: text_hash(&ch.text),
                        input: Input::Text(ch.text),
                    }],
                }
            })
            .collect())
    }

    /// A catalog record: one product with a text vector and an image vector (either may be
    /// missing; with neither, the record is skipped with a problem).
    fn prepare_record(
        &self,
        job: &FileJob,
        rec: &Record,
        problems: &mut Vec<FileProblem>,
    ) -> Option<PItem> {
        let (path_s, path_bytes) = path_strings(&job.path);
        let key = path_key("cat:", &job.path, &format!("#{}", rec.id));
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
                Err(e) => problems.push(FileProblem::RecordImage {
                    id: rec.id.clone(),
                    path: abs,
                    source: Box::new(e),
                }),
            }
        }
        if vecs.is_empty() {
            problems.push(FileProblem::RecordEmpty(rec.id.clone()));
            return None;
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
        let meta = ItemMeta {
            kind: Kind::Product,
            id: rec.id.clone(),
            path: path_s,
            path_bytes,
            title,
            part: None,
            chunk: None,
            chunks: None,
            lines: None,
            image,
            snippet: (!body.trim().is_empty()).then(|| snippet(&body, 300)),
            metadata: rec.metadata.clone(),
        };
        Some(PItem {
            keywords: KeywordDoc::of(&meta, Some(&body)),
            meta,
            vecs,
        })
    }
}
