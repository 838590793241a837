//! The engine's key-value namespaces inside the store (written in the same transaction as vectors).
//!
//! * `files`: absolute path → [`FileRecord`] (JSON): size + mtime for incremental runs.
//! * `own`:   path ‖ 0x00 ‖ id (8 bytes BE) → content hash (32 bytes): the vectors a file owns.
//! * `hash`:  content hash ‖ id → `[]`: which live vectors hold a content (reuse on rename/duplicate).
//! * `mod`:   modality byte ‖ id → `[]`: vector ids per modality (calibration samples, stats).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::item::Modality;

pub(crate) const NS_FILES: &str = "files";
pub(crate) const NS_OWN: &str = "own";
pub(crate) const NS_HASH: &str = "hash";
pub(crate) const NS_MOD: &str = "mod";

/// A content hash (SHA-256).
pub(crate) type Hash = [u8; 32];

/// What the engine remembers about an indexed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileRecord {
    /// File size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// `image`, `text` or `catalog`.
    pub kind: String,
    /// Files this one depends on (a catalog's images): path, size, mtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<(String, u64, i128)>,
}

pub(crate) fn path_bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_encoded_bytes().to_vec()
}

/// Inverse of [`path_bytes`].
pub(crate) fn path_from_bytes(b: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(b))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(b).into_owned())
    }
}

pub(crate) fn own_prefix(path: &Path) -> Vec<u8> {
    let mut k = path_bytes(path);
    k.push(0);
    k
}

pub(crate) fn own_key(path: &Path, id: u64) -> Vec<u8> {
    let mut k = own_prefix(path);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Splits an `own` key into (path bytes, id).
pub(crate) fn split_own_key(key: &[u8]) -> Option<(&[u8], u64)> {
    if key.len() < 9 || key[key.len() - 9] != 0 {
        return None;
    }
    let (p, rest) = key.split_at(key.len() - 9);
    let mut b = [0u8; 8];
    b.copy_from_slice(&rest[1..]);
    Some((p, u64::from_be_bytes(b)))
}

pub(crate) fn hash_key(hash: &Hash, id: u64) -> Vec<u8> {
    let mut k = hash.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

pub(crate) fn id_suffix(key: &[u8]) -> Option<u64> {
    if key.len() < 8 {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[key.len() - 8..]);
    Some(u64::from_be_bytes(b))
}

pub(crate) fn mod_key(m: Modality, id: u64) -> Vec<u8> {
    let mut k = vec![m.byte()];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The content hash of a file's bytes (what an image's vector records in `own` and `hash`).
pub(crate) fn content_hash(bytes: &[u8]) -> Hash {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

pub(crate) fn to_hash(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keys_roundtrip() {
        let k = own_key(Path::new("/a/b.png"), 42);
        let (p, id) = split_own_key(&k).unwrap();
        assert_eq!(p, b"/a/b.png");
        assert_eq!(id, 42);
        assert!(k.starts_with(&own_prefix(Path::new("/a/b.png"))));
        assert!(!k.starts_with(&own_prefix(Path::new("/a/b"))));
        assert_eq!(id_suffix(&hash_key(&[7; 32], 9)), Some(9));
    }
}
