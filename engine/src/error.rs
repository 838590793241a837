//! Errors of the engine.

use std::path::PathBuf;

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine. Messages name the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file was not read: not a regular file (a device, FIFO, socket), or above its size limit.
    #[error("{path}: {source}")]
    Read {
        /// The file concerned.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::fsread::ReadError,
    },
    /// The store was built with another model than the one in use.
    #[error("{0}")]
    ModelMismatch(Box<ModelMismatch>),
    /// No store exists at the given path (for commands that only read).
    #[error("no store at {0}: index something first (`jsearch index PATH...`) or pass --db FILE")]
    NoStore(PathBuf),
    /// Another process holds the store open for writing.
    #[error("store {path} is locked by another jsearch process that is writing to it; wait for it to finish ({detail})")]
    Locked {
        /// Path of the store.
        path: PathBuf,
        /// What the storage layer said.
        detail: String,
    },
    /// A catalog (.jsonl / .csv) is malformed.
    #[error("catalog {path}: {message}")]
    Catalog {
        /// The catalog file.
        path: PathBuf,
        /// What is wrong (with the line number where known).
        message: String,
    },
    /// An index run would remove most of the files indexed under a root (gone or excluded);
    /// nothing was changed. Re-run with [`crate::IndexOptions::prune`] (`--prune`) if that is meant.
    #[error(
        "this run would remove {gone} of the {indexed} files indexed under {} (they are gone or \
         excluded; e.g. {}); nothing was changed. If that is meant, re-run with --prune",
        root.display(),
        examples.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MassRemoval {
        /// The root whose files would go.
        root: PathBuf,
        /// How many would be removed.
        gone: usize,
        /// How many are indexed under it.
        indexed: usize,
        /// The first few of them.
        examples: Vec<PathBuf>,
    },
    /// The store's model cannot be found: no `--model` was given and the folder the store
    /// recorded is gone or holds another model (and the model is not one that can be
    /// downloaded).
    #[error("{0}")]
    StoreModelMissing(Box<StoreModelMissing>),
    /// A path given to a command is not in the store.
    #[error("{0} is not in the store (index it first)")]
    NotIndexed(PathBuf),
    /// A filter expression is malformed, names an unknown field, or compares a field with a
    /// value of a type it never holds. The message shows the expression and marks the column.
    #[error("invalid filter at column {column}: {message}\n  {expr}\n  {caret}^", caret = " ".repeat(column.saturating_sub(1)))]
    Filter {
        /// The expression as given.
        expr: String,
        /// 1-based character column of the mistake.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A caller passed an invalid argument (bad device name, empty query, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The requested device is not available.
    #[error("device: {0}")]
    Device(String),
    /// An item's stored metadata could not be parsed (store written by an incompatible version).
    #[error("corrupt item metadata for vector {id}: {message}")]
    CorruptMeta {
        /// The vector id.
        id: u64,
        /// What is wrong.
        message: String,
    },
    /// The model failed (loading, tokenising, encoding, decoding an image).
    #[error(transparent)]
    Encoder(#[from] crate::enc::EncoderError),
    /// The vector store failed.
    #[error(transparent)]
    Index(#[from] crate::idx::IndexError),
    /// The tokenizer used for chunking failed.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer.json file.
        path: PathBuf,
        /// What it said.
        message: String,
    },
    /// The pipeline stopped unexpectedly (a worker thread panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whose side a failure is on, for a caller that answers requests (a server's 4xx or 5xx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is wrong: an invalid argument or filter, an image that does not decode, a
    /// file over its size limit.
    BadInput,
    /// The request names something the store does not hold.
    NotFound,
    /// The store or the model cannot serve now (no store, locked, another model, model missing).
    Unavailable,
    /// Anything else: storage, model or internal failures.
    Internal,
}

impl Error {
    /// Whose side the failure is on ([`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        use crate::enc::EncoderError;
        match self {
            Error::InvalidArgument(_)
            | Error::Filter { .. }
            | Error::Read { .. }
            | Error::Encoder(EncoderError::Image { .. } | EncoderError::InvalidArgument(_)) => {
                ErrorClass::BadInput
            }
            Error::NotIndexed(_) => ErrorClass::NotFound,
            Error::NoStore(_)
            | Error::Locked { .. }
            | Error::ModelMismatch(_)
            | Error::StoreModelMissing(_)
            | Error::Device(_)
            | Error::Encoder(EncoderError::ModelNotFound(_)) => ErrorClass::Unavailable,
            _ => ErrorClass::Internal,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Details of [`Error::ModelMismatch`].
#[derive(Debug, thiserror::Error)]
#[error(
    "store {store} was built with model {store_model} (fingerprint {store_fp}, dim {store_dim}), \
     but the model in use is {model} (fingerprint {model_fp}, dim {model_dim}).\n\
     Use the same model (--model DIR or JSEARCH_MODEL), or re-index into a new store: \
     `jsearch --db NEW.jsearch index PATH...` (or delete {store} and index again)"
)]
pub struct ModelMismatch {
    /// Path of the store.
    pub store: PathBuf,
    /// Model name recorded in the store.
    pub store_model: String,
    /// Model fingerprint recorded in the store.
    pub store_fp: String,
    /// Dimension recorded in the store.
    pub store_dim: usize,
    /// Name of the model in use.
    pub model: String,
    /// Fingerprint of the model in use.
    pub model_fp: String,
    /// Dimension of the model in use.
    pub model_dim: usize,
}

/// Details of [`Error::StoreModelMissing`].
#[derive(Debug, thiserror::Error)]
#[error(
    "store {store} was built with model {model} (fingerprint {fingerprint}){}; \
     give that model with --model DIR (or JSEARCH_MODEL)",
    match looked { Some(d) => format!(", found at {}, but {why}", d.display()), None => format!(" and {why}") }
)]
pub struct StoreModelMissing {
    /// Path of the store.
    pub store: PathBuf,
    /// Model name recorded in the store.
    pub model: String,
    /// Model fingerprint recorded in the store.
    pub fingerprint: String,
    /// The folder the store recorded, if any.
    pub looked: Option<PathBuf>,
    /// What is wrong with it.
    pub why: String,
}
