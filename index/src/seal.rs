//! Seals: the checksum at the end of every value of a store (format version 3 on). See the
//! file format table in `store/schema.rs`.

use std::path::Path;

use crate::error::{IndexError, Result};

/// Bytes of the seal at the end of every value.
pub(crate) const SEAL_BYTES: usize = 4;

fn seal_crc(table: &str, key: &[u8], value: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(table.as_bytes());
    h.update(&[0]);
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key);
    h.update(value);
    h.finalize()
}

/// `value` with its seal for row `key` of `table` appended.
pub(crate) fn seal(table: &str, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + SEAL_BYTES);
    out.extend_from_slice(value);
    append_seal(table, key, &mut out);
    out
}

/// Appends to `buf`, which holds the value of row `key` of `table`, its seal (in place: a
/// reused buffer stays reused).
pub(crate) fn append_seal(table: &str, key: &[u8], buf: &mut Vec<u8>) {
    let crc = seal_crc(table, key, buf);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// The value of a sealed row, or [`IndexError::Corrupt`] naming the row when its seal does not
/// match.
pub(crate) fn unseal<'a>(path: &Path, table: &str, key: &[u8], row: &'a [u8]) -> Result<&'a [u8]> {
    let damaged = || IndexError::Corrupt {
        path: path.to_path_buf(),
        what: format!("{table} row {} fails its checksum", show_key(key)),
    };
    if row.len() < SEAL_BYTES {
        return Err(damaged());
    }
    let (value, tag) = row.split_at(row.len() - SEAL_BYTES);
    let stored = u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]);
    if stored != seal_crc(table, key, value) {
        return Err(damaged());
    }
    Ok(value)
}

/// A key for messages: a number for 4- and 8-byte keys, text when printable, else hex.
fn show_key(key: &[u8]) -> String {
    match key.len() {
        4 => u32_at(key, 0).map(|v| v.to_string()).unwrap_or_default(),
        8 => u64_at(key, 0).map(|v| v.to_string()).unwrap_or_default(),
        _ => match std::str::from_utf8(key) {
            Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
            _ => key.iter().map(|b| format!("{b:02x}")).collect(),
        },
    }
}

/// Runs `f`, turning a panic inside it (the storage layer reading a damaged page) into
/// [`IndexError::Corrupt`] naming the store: a damaged file is reported, never a crash.
pub(crate) fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| name_storage_error(path, e)),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".into());
            Err(IndexError::Corrupt {
                path: path.to_path_buf(),
                what: format!("the storage layer failed reading it ({msg})"),
            })
        }
    }
}

/// Storage-layer errors said in the store's terms: a file cut short is named as truncated, redb's
/// corruption as damage (with the way forward), a full disk as such.
fn name_storage_error(path: &Path, e: IndexError) -> IndexError {
    let IndexError::Storage(inner) = &e else {
        return e;
    };
    let corrupt = |what: String| IndexError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    match inner {
        redb::Error::Io(io) if is_disk_full(io) => IndexError::DiskFull {
            path: path.to_path_buf(),
        },
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => corrupt(
            "the file ends early: it is truncated (cut short while copied or written)".into(),
        ),
        redb::Error::Corrupted(msg) => corrupt(format!("the storage layer reports: {msg}")),
        redb::Error::Io(io)
            if io.kind() == std::io::ErrorKind::InvalidData
                && io.to_string().contains("Not a redb database") =>
        {
            IndexError::NotAStore {
                path: path.to_path_buf(),
                reason: "the file is not a database at all (another program's file?); pass \
                         another --db, or move it away and index again"
                    .into(),
            }
        }
        _ => e,
    }
}

/// ENOSPC or EDQUOT.
pub(crate) fn is_disk_full(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::StorageFull
        || io.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(io.raw_os_error(), Some(28) | Some(122))
}

/// The little-endian `u32` at byte `at`, if the slice is long enough.
pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The little-endian `u64` at byte `at`, if the slice is long enough.
pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).map(|s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_flipped_bit_or_moved_row_fails_the_seal() {
        let p = Path::new("s");
        let row = seal("items", &7u64.to_le_bytes(), b"hello");
        assert_eq!(
            unseal(p, "items", &7u64.to_le_bytes(), &row).unwrap(),
            b"hello"
        );
        for bit in 0..row.len() * 8 {
            let mut r = row.clone();
            r[bit / 8] ^= 1 << (bit % 8);
            assert!(
                unseal(p, "items", &7u64.to_le_bytes(), &r).is_err(),
                "bit {bit}"
            );
        }
        assert!(
            unseal(p, "items", &8u64.to_le_bytes(), &row).is_err(),
            "other key"
        );
        assert!(
            unseal(p, "nodes", &7u64.to_le_bytes(), &row).is_err(),
            "other table"
        );
        let e = unseal(p, "items", &8u64.to_le_bytes(), &row).unwrap_err();
        assert!(
            e.to_string().contains("items row 8 fails its checksum"),
            "{e}"
        );
        assert!(unseal(p, "items", b"", &[1, 2]).is_err(), "short");
    }
}
