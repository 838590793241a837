//! A jsearch store beyond one file: its vectors, their 256-d Matryoshka heads and the items'
//! attributes written out for engines built to replicate and shard (issue #18).
//!
//! This crate holds what crosses the store's boundary, each format in one module:
//! - [`export`]: Apache Parquet (one row per vector), readable as is by pandas, polars, DuckDB,
//!   Spark and LanceDB.
//! - [`shard`]: a catalog encoded in shards without a store (`jsearch embed-shard`), and the
//!   shards read back for an index run that takes their vectors (`jsearch index --from-parquet`).
//! - [`postgres`]: a table in PostgreSQL + pgvector kept in step with the store (`jsearch sync`),
//!   and the two-stage query against it (`jsearch query --backend`).
//!
//! ```no_run
//! use jsearch::{Engine, OpenOptions};
//! use jsearch_scale::{export_parquet, ExportOptions};
//!
//! let engine = Engine::open(OpenOptions::default())?;
//! let summary = export_parquet(&engine, "export/".as_ref(), &ExportOptions::default())?;
//! println!("{} vectors in {} files", summary.rows, summary.files.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backend;
pub mod export;
pub mod milvus;
pub mod postgres;
pub mod shard;

pub use export::{export_parquet, ExportOptions, ExportSummary, VectorType};

/// What can go wrong moving a store's contents out.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// Reading the store (it names the store and the problem).
    #[error(transparent)]
    Engine(#[from] jsearch::Error),
    /// Writing a file, naming it.
    #[error("{path}: {message}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A database server refused or failed (names the server, password hidden, and what was
    /// being done).
    #[error("{backend}: {message}")]
    Backend {
        /// The server's URL without its password.
        backend: String,
        /// What failed and why.
        message: String,
    },
    /// An argument that cannot work (names it).
    #[error("{0}")]
    InvalidArgument(String),
}

/// This crate's results.
pub type Result<T, E = ScaleError> = std::result::Result<T, E>;
