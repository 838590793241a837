//! Bounded reads: only regular files are read (also through symlinks), and never more than a
//! limit. `/dev/zero` would grow memory without end, a FIFO would block until a writer comes, and
//! a 200 MB "text note" would be tokenised whole; each gets a message naming the file instead.

use std::io::{BufRead, Read};
use std::path::Path;

/// Default limit of an image file's (compressed) size: 256 MiB. Pixels are limited separately
/// (megapixels, checked before decoding).
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 256 << 20;
/// Default limit of a text file's size: 64 MiB (about 30 000 passages).
pub const DEFAULT_MAX_TEXT_BYTES: u64 = 64 << 20;
/// Default limit of one catalog line (JSONL) or record (CSV): 1 MiB. Longer ones are skipped
/// with a problem, without being held in memory.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// A device, FIFO or socket.
    #[error("{0}")]
    NotRegular(&'static str),
    /// Above the size limit for its kind.
    #[error("{} is above the limit of {} for {what}{}", human(*size), human(*limit), hint.map(|h| format!(" (raise it with {h})")).unwrap_or_default())]
    TooLarge {
        /// The file's size in bytes.
        size: u64,
        /// The limit.
        limit: u64,
        /// What the limit is for ("images", "text files").
        what: &'static str,
        /// The flag that raises it, if any.
        hint: Option<&'static str>,
    },
}

/// `1.5 GiB`, `12.0 MiB`, `900 bytes`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The size limit of one kind of file, and the flag that raises it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub(crate) bytes: u64,
    pub(crate) what: &'static str,
    pub(crate) flag: Option<&'static str>,
}

impl Limit {
    /// The error for a file of `size` bytes above this limit.
    fn exceeded(&self, size: u64) -> ReadError {
        ReadError::TooLarge {
            size,
            limit: self.bytes,
            what: self.what,
            hint: self.flag,
        }
    }
}

/// Opens `path` if it is a regular file (symlinks followed) of at most `limit.bytes`; the check
/// comes before the open, so a FIFO is never opened (which would block).
pub(crate) fn open_regular(path: &Path, limit: Limit) -> Result<(std::fs::File, u64), ReadError> {
    let md = std::fs::metadata(path)?;
    if !md.is_file() {
        return Err(ReadError::NotRegular(crate::walk::not_regular(&md)));
    }
    if md.len() > limit.bytes {
        return Err(limit.exceeded(md.len()));
    }
    Ok((std::fs::File::open(path)?, md.len()))
}

/// Reads a whole regular file of at most `limit.bytes` (a file that grows while read is cut at
/// the limit and refused).
pub(crate) fn read_regular(path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    let (file, len) = open_regular(path, limit)?;
    let mut out = Vec::with_capacity(len as usize);
    file.take(limit.bytes + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit.bytes {
        return Err(limit.exceeded(out.len() as u64));
    }
    Ok(out)
}

/// Reads `len` bytes from `start` of a regular file of at most `limit.bytes` (a part of a big
/// text file; fewer bytes at its end).
pub(crate) fn read_range(
    path: &Path,
    limit: Limit,
    start: u64,
    len: u64,
) -> Result<Vec<u8>, ReadError> {
    use std::io::Seek;
    let (mut file, _) = open_regular(path, limit)?;
    file.seek(std::io::SeekFrom::Start(start))?;
    let mut out = Vec::with_capacity(len.min(limit.bytes) as usize);
    file.take(len).read_to_end(&mut out)?;
    Ok(out)
}

/// Reads an image file given to a call (a query image, an image to embed) within the default
/// image size limit.
pub(crate) fn read_image_arg(path: &Path) -> crate::Result<Vec<u8>> {
    read_arg(path, DEFAULT_MAX_IMAGE_BYTES, "image files")
}

/// Reads a text file given to a call (`similar` to a file not in the store) within the default
/// text size limit.
pub(crate) fn read_text_arg(path: &Path) -> crate::Result<Vec<u8>> {
    read_arg(path, DEFAULT_MAX_TEXT_BYTES, "text files")
}

/// A file given to a call, read within `bytes` (`what` names the limit in errors).
fn read_arg(path: &Path, bytes: u64, what: &'static str) -> crate::Result<Vec<u8>> {
    let limit = Limit {
        bytes,
        what,
        flag: None,
    };
    read_regular(path, limit).map_err(|source| crate::Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// One line read by [`read_line_bounded`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// The end of the input.
    Eof,
    /// A line (in the buffer, without its `\n`).
    Full,
    /// A line longer than the limit, consumed without being kept; its length in bytes.
    TooLong(u64),
}

/// Reads one `\n`-terminated line into `buf` (cleared first), holding at most `limit` bytes of it
/// in memory; a longer line is skipped to its end.
pub(crate) fn read_line_bounded(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut total: u64 = 0;
    let mut too_long = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (too_long, total) {
                (true, n) => Line::TooLong(n),
                (false, 0) => Line::Eof,
                (false, _) => Line::Full,
            });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        total += take as u64;
        if !too_long {
            if buf.len() + take > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(take + usize::from(done));
        if done {
            return Ok(if too_long {
                Line::TooLong(total)
            } else {
                Line::Full
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lines_skip_long_ones_whole() {
        let data = b"short\nxxxxxxxxxxxxxxxxxxxx\nlast".to_vec();
        let mut r = std::io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Line::Full);
        assert_eq!(buf, b"short");
        assert_eq!(
            read_line_bounded(&mut r, &mut buf, 8).unwrap(),
            Line::TooLong(20)
        );
        assert!(buf.len() <= 8);
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Line::Full);
        assert_eq!(buf, b"last");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Line::Eof);
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_without_blocking() {
        let limit = Limit {
            bytes: 1 << 20,
            what: "images",
            flag: None,
        };
        let err = read_regular(Path::new("/dev/zero"), limit).unwrap_err();
        assert!(err.to_string().contains("device"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.png");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status();
        if status.is_ok_and(|s| s.success()) {
            let err = read_regular(&fifo, limit).unwrap_err();
            assert!(err.to_string().contains("FIFO"), "{err}");
        }
        let big = dir.path().join("big.txt");
        std::fs::write(&big, vec![b'a'; 2000]).unwrap();
        let small = Limit {
            bytes: 1000,
            what: "text files",
            flag: Some("--max-text-mb"),
        };
        let err = read_regular(&big, small).unwrap_err().to_string();
        assert!(
            err.contains("limit of 1000 bytes for text files") && err.contains("--max-text-mb"),
            "{err}"
        );
    }
}
