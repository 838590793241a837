//! Typed errors of the store.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// Everything that can go wrong when opening, writing or querying a store.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Another process (or another handle in this process) holds the store open for writing.
    #[error("store {path} is busy: another process has it open for writing (only one writer at a time; readers may use open_read_only)")]
    Busy {
        /// The store file.
        path: PathBuf,
    },
    /// The file does not exist (read-only open) or is not a jsearch store.
    #[error("{path} is not a jsearch store: {reason}")]
    NotAStore {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The file was written by a format version this build does not know.
    #[error("store {path} has format version {found}, this build reads only version {supported}; re-index or use a matching jsearch version")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// The file has an older format version that this build upgrades when it opens the store
    /// for writing ([`crate::Store::open`]); it cannot be read as it is.
    #[error("store {path} has format version {found}, older than this build's {supported}: open it once for writing (run `jsearch index` on it, or `Store::open` in a program) to upgrade it in place, then read it again")]
    UpgradeNeeded {
        /// The file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// A writer was killed while it had the file open: the last commit is intact, but the file
    /// needs the recovery that only a writer runs ([`crate::Store::open`] does it), so a
    /// read-only open cannot use it as it is.
    #[error("store {path} was left open by a writer that did not finish (killed or crashed); its last commit is intact and is recovered when the store is next opened for writing")]
    NeedsRecovery {
        /// The file.
        path: PathBuf,
    },
    /// The store was written by another model than the one the caller uses.
    #[error("store {path} was built with model {stored} but the caller uses {requested}; re-index the store with the new model (or open it with the model it was built with)")]
    ModelMismatch {
        /// The file.
        path: PathBuf,
        /// `name@fingerprint` recorded in the store.
        stored: String,
        /// `name@fingerprint` the caller passed.
        requested: String,
    },
    /// Dimensions or graph parameters of the caller differ from the store's.
    #[error("store {path} settings differ from the caller's: {what}")]
    SettingsMismatch {
        /// The file.
        path: PathBuf,
        /// Which setting, with both values.
        what: String,
    },
    /// Settings that cannot describe a store (zero dimension, ann_dim > dim, ...).
    #[error("invalid store settings: {0}")]
    InvalidSettings(String),
    /// A vector of the wrong length.
    #[error("vector for id {id:?} has dimension {got}, the store expects {expected}")]
    WrongDimension {
        /// The id (None for a query).
        id: Option<u64>,
        /// Length given.
        got: usize,
        /// Length expected.
        expected: usize,
    },
    /// A vector containing NaN or infinity.
    #[error("vector for id {id:?} contains NaN or infinity at position {position}")]
    NonFinite {
        /// The id (None for a query).
        id: Option<u64>,
        /// First bad coordinate.
        position: usize,
    },
    /// A vector whose norm is zero (or too small to normalise).
    #[error("vector for id {id:?} is zero (norm {norm:e}); it has no direction to compare")]
    ZeroVector {
        /// The id (None for a query).
        id: Option<u64>,
        /// Its norm.
        norm: f32,
    },
    /// The same id twice in one batch (upserts and deletes together).
    #[error("id {0} appears more than once in the batch; nothing was written")]
    DuplicateId(u64),
    /// A key-value namespace name that is empty, too long or has characters outside `[A-Za-z0-9_.-]`.
    #[error("invalid key-value namespace {0:?}: use 1-64 characters from [A-Za-z0-9_.-]")]
    InvalidNamespace(String),
    /// A write on a store opened with `open_read_only`.
    #[error("store {path} was opened read-only")]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// A record in the file that fails its checksum or does not decode (the file was damaged
    /// or altered outside jsearch), or a file the storage layer cannot read (truncated, torn).
    #[error("store {path} is damaged: {what}. `jsearch check` lists what is damaged, `jsearch repair` rebuilds what can be rebuilt (or restore the file from a backup)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What failed to decode.
        what: String,
    },
    /// The disk (or the user's quota) is full. The write in progress was not committed: the
    /// store is as of its last commit.
    #[error("disk full (ENOSPC) writing {path}: the last batch was not committed and the store is as of its previous commit; free some space and run the command again")]
    DiskFull {
        /// The file.
        path: PathBuf,
    },
    /// An error of the redb storage engine (I/O, corruption detected by checksums, ...).
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    /// An I/O error outside redb.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> Self {
                IndexError::Storage(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::CompactionError
);
