//! Errors of the encoders crate.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = EncoderError> = std::result::Result<T, E>;

/// Everything that can go wrong while locating, loading or running the encoders.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A config file is malformed or has unexpected values.
    #[error("invalid config {path}: {message}")]
    Config {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights file is missing a tensor, has a wrong shape or dtype.
    #[error("invalid weights {path}: {message}")]
    Weights {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer error ({path}): {message}")]
    Tokenizer {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An image could not be decoded or is unusable.
    #[error("cannot use image {path}: {message}")]
    Image {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model could not be found locally and could not be downloaded.
    #[error("{0}")]
    ModelNotFound(String),
    /// A download failed.
    #[error("download of {url} failed: {message}")]
    Download {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A caller passed an argument out of range (e.g. a Matryoshka dim above the model's).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The requested tower was not loaded (e.g. images on a text-only model).
    #[error("the {0} tower is not loaded")]
    TowerNotLoaded(&'static str),
    /// An error from candle while running the model.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}
