//! The prepared-weights cache: a tower's weights after everything the load does to them (LoRA
//! merged, the attention scale folded in, q/k/v and SwiGLU fused, converted to f32, packed into
//! bf16 panels or quantised to Q8_0), written once per model and kernel layout, then memory-mapped
//! by every later load so that loading costs page faults instead of seconds of conversion.
//!
//! One file per (model fingerprint, tower, layout, format version), in the user's cache
//! (`$JSEARCH_CACHE_DIR`, else `$XDG_CACHE_HOME/jsearch`, else `~/.cache/jsearch`), under
//! `prepared/`. The model folder is never written, so a read-only model works.
//!
//! # Byte format (all integers little-endian)
//!
//! | bytes | holds |
//! |---|---|
//! | 0..8 | magic `JSRCHPW\0` |
//! | 8..12 | format version ([`FORMAT_VERSION`]) |
//! | 12..16 | 0 (reserved) |
//! | 16..24 | length `h` of the JSON header |
//! | 24..32 | XXH3-64 of the JSON header |
//! | 32..32+h | JSON header: `fingerprint`, `tower`, `layout`, `file_len`, `entries` |
//! | … | entry data, each entry starting at a multiple of [`ALIGN`] |
//!
//! An entry is `{name, kind, shape, offset, len, hash}`: `kind` is `f32` (little-endian f32
//! values), `bf16-panels` (the `bf16_gemm` packing of an `[n, k]` weight, u16 values; shape
//! `[n, k, number of values]`), `i8-panels` (the `int8_gemm` packing of an `[n, k]` weight: i8
//! values, then each panel's f32 column scales and i32 offsets; shape `[n, k, number of bytes]`) or `q8_0`
//! (candle's `BlockQ8_0` records, 34 bytes each); `hash` is the XXH3-64 of the entry's bytes.
//!
//! # Trust
//!
//! A file is used only when its magic, version, header hash, fingerprint, tower, layout and length
//! match and every entry's hash matches its bytes (checked at open, in parallel). Anything else is
//! reported ([`CacheError`]) and the caller rebuilds the file from the checkpoint. Files are
//! written to a temporary name in the same folder and renamed into place, so a reader sees either
//! no file or a complete one, and two processes building the same file at once each rename a
//! complete copy.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Version of the byte format and of what the load does to the weights; a change of either makes
/// older files stale (they are rebuilt, never misread).
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Alignment of every entry's data (a cache line; the mapping itself is page-aligned).
pub(crate) const ALIGN: usize = 64;
const MAGIC: &[u8; 8] = b"JSRCHPW\0";
const PREFIX: usize = 32;

/// How the linear layers of a cached tower are stored (the kernel they are prepared for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// f32 weights, multiplied by candle's f32 GEMM straight from the mapping.
    F32,
    /// bf16 panels for the AVX512-BF16 kernel, used straight from the mapping.
    Bf16Panels,
    /// Q8_0 blocks (copied once into candle's quantised tensors at load).
    Q8,
    /// int8 panels for the int8 kernel (AMX-INT8 or AVX512-VNNI), used straight from the mapping.
    I8Panels,
}

impl Layout {
    fn as_str(self) -> &'static str {
        match self {
            Layout::F32 => "f32",
            Layout::Bf16Panels => "bf16-panels",
            Layout::Q8 => "q8",
            Layout::I8Panels => "i8-panels",
        }
    }
}

/// What kind of values an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// f32 values.
    F32,
    /// u16 values of a bf16 panel packing.
    Bf16Panels,
    /// Q8_0 blocks.
    #[serde(rename = "q8_0")]
    Q8,
    /// Bytes of an int8 panel packing.
    I8Panels,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    name: String,
    kind: Kind,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
    hash: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    fingerprint: String,
    tower: String,
    layout: Layout,
    file_len: usize,
    entries: Vec<Entry>,
}

/// Why a cache file was not used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// There is no file yet.
    #[error("not built yet")]
    Missing,
    /// The file is for other weights, another tower or layout, or an older format.
    #[error("stale ({0})")]
    Stale(String),
    /// The file is damaged (truncated, a changed byte, not a cache file).
    #[error("corrupt ({0})")]
    Corrupt(String),
    /// The file could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where prepared weights live: `<cache dir>/prepared/`, `None` when no cache folder is known or
/// `JSEARCH_WEIGHT_CACHE=off`.
pub(crate) fn default_dir() -> Option<PathBuf> {
    if std::env::var("JSEARCH_WEIGHT_CACHE").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
        return None;
    }
    crate::weights_hash::cache_dir().map(|d| d.join("prepared"))
}

/// The file of one tower's prepared weights.
pub(crate) fn file_path(dir: &Path, fingerprint: &str, tower: &str, layout: Layout) -> PathBuf {
    let fp: String = fingerprint.chars().take(24).collect();
    dir.join(format!(
        "{fp}-{tower}-{}-v{FORMAT_VERSION}.jsw",
        layout.as_str()
    ))
}

/// A memory-mapped, verified cache file.
#[derive(Clone)]
pub(crate) struct CacheFile {
    map: Arc<Mmap>,
    entries: Arc<HashMap<String, Entry>>,
    path: PathBuf,
    /// Packed entries are copied out of the mapping ([`CacheFile::resident`]).
    resident: bool,
}

impl std::fmt::Debug for CacheFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheFile")
            .field("path", &self.path)
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// A read-only slice of f32 or u16 values inside a mapped cache file (keeps the mapping alive).
#[derive(Clone)]
pub(crate) struct Mapped<T> {
    map: Arc<Mmap>,
    offset: usize,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

impl<T> std::fmt::Debug for Mapped<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} values at {})", self.len, self.offset)
    }
}

/// A kernel's packed weight values: made at load, or inside a mapped cache file (used in place).
#[derive(Debug, Clone)]
pub(crate) enum Stored<T> {
    /// Packed or quantised by this process.
    Owned(Vec<T>),
    /// Read from a weight cache.
    Mapped(Mapped<T>),
}

impl<T: Pod> Stored<T> {
    /// The values.
    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Stored::Owned(v) => v,
            Stored::Mapped(m) => m.as_slice(),
        }
    }
}

/// Plain numeric types that can be viewed in place in a little-endian file.
pub(crate) trait Pod: Copy + 'static {}
impl Pod for f32 {}
impl Pod for u16 {}
impl Pod for u8 {}

impl<T: Pod> Mapped<T> {
    /// The values.
    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: `CacheFile::open` checked that `offset..offset + len * size_of::<T>()` lies
        // inside the mapping and that `offset` is a multiple of ALIGN (>= align_of::<T>()) from a
        // page-aligned base; f32/u16 have no invalid bit patterns; the mapping is read-only and
        // lives as long as `self.map`. Like every mmap user we assume the file is not truncated
        // while mapped (it is only ever replaced by rename, which keeps the old inode alive).
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(self.offset).cast::<T>(), self.len)
        }
    }
}

impl CacheFile {
    /// Opens and verifies `path` for `fingerprint`, `tower` and `layout`.
    pub(crate) fn open(
        path: &Path,
        fingerprint: &str,
        tower: &str,
        layout: Layout,
    ) -> Result<Self, CacheError> {
        if !cfg!(target_endian = "little") {
            return Err(CacheError::Stale("big-endian host".into()));
        }
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheError::Missing),
            Err(e) => return Err(e.into()),
        };
        // Populated: every page is read at open anyway (checksums; every forward pass reads
        // every layer), and faulting them in one call is several times cheaper than one by one.
        // SAFETY: read-only mapping; see `Mapped::as_slice` for the truncation contract.
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
        let corrupt = |m: &str| CacheError::Corrupt(m.to_string());
        if map.len() < PREFIX || &map[..8] != MAGIC {
            return Err(corrupt("not a jsearch weight cache"));
        }
        let version = u32::from_le_bytes(map[8..12].try_into().expect("4 bytes"));
        if map[12..16] != [0; 4] {
            return Err(corrupt("reserved bytes set"));
        }
        if version != FORMAT_VERSION {
            return Err(CacheError::Stale(format!(
                "format version {version}, this build writes {FORMAT_VERSION}"
            )));
        }
        let hlen = u64::from_le_bytes(map[16..24].try_into().expect("8 bytes"));
        let hhash = u64::from_le_bytes(map[24..32].try_into().expect("8 bytes"));
        let hend = usize::try_from(hlen)
            .ok()
            .and_then(|h| h.checked_add(PREFIX))
            .filter(|&e| e <= map.len())
            .ok_or_else(|| corrupt("truncated header"))?;
        let hbytes = &map[PREFIX..hend];
        if xxhash_rust::xxh3::xxh3_64(hbytes) != hhash {
            return Err(corrupt("header checksum mismatch"));
        }
        let header: Header =
            serde_json::from_slice(hbytes).map_err(|e| corrupt(&format!("header: {e}")))?;
        if header.fingerprint != fingerprint {
            return Err(CacheError::Stale("made from other weights".into()));
        }
        if header.tower != tower || header.layout != layout {
            return Err(CacheError::Stale(format!(
                "holds the {} tower as {}",
                header.tower,
                header.layout.as_str()
            )));
        }
        if header.file_len != map.len() {
            return Err(corrupt(&format!(
                "{} bytes, the header says {}",
                map.len(),
                header.file_len
            )));
        }
        for e in &header.entries {
            let end = e.offset.checked_add(e.len);
            if e.offset % ALIGN != 0 || end.is_none_or(|end| end > map.len()) || e.offset < hend {
                return Err(corrupt(&format!("entry {} out of bounds", e.name)));
            }
            if e.len != expected_len(e.kind, &e.shape) {
                return Err(corrupt(&format!("entry {} has a wrong length", e.name)));
            }
        }
        let bad = header
            .entries
            .par_iter()
            .find_any(|e| xxhash_rust::xxh3::xxh3_64(&map[e.offset..e.offset + e.len]) != e.hash);
        if let Some(e) = bad {
            return Err(corrupt(&format!("checksum mismatch in {}", e.name)));
        }
        let entries = header
            .entries
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect();
        Ok(Self {
            map: Arc::new(map),
            entries: Arc::new(entries),
            path: path.to_path_buf(),
            resident: false,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, name: &str, kind: Kind) -> candle_core::Result<&Entry> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("weight cache: no entry {name}")))?;
        if e.kind != kind {
            candle_core::bail!(
                "weight cache: entry {name} is {:?}, expected {kind:?}",
                e.kind
            );
        }
        Ok(e)
    }

    /// Whether an entry exists.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The shape of an entry.
    pub(crate) fn shape(&self, name: &str) -> candle_core::Result<&[usize]> {
        self.entries
            .get(name)
            .map(|e| e.shape.as_slice())
            .ok_or_else(|| candle_core::Error::Msg(format!("weight cache: no entry {name}")))
    }

    /// An f32 entry as a mapped slice (no copy).
    pub(crate) fn f32s(&self, name: &str) -> candle_core::Result<Mapped<f32>> {
        let e = self.entry(name, Kind::F32)?;
        Ok(self.mapped(e, 4))
    }

    /// Whether packed entries are copied into this process's memory ([`Stored::Owned`], on
    /// huge pages where the allocator gets them) instead of used in place
    /// (`LoadOptions::resident`).
    pub(crate) fn resident(mut self, on: bool) -> Self {
        self.resident = on;
        self
    }

    /// A bf16-panel entry: mapped, or a copy when [`CacheFile::resident`].
    pub(crate) fn panels(&self, name: &str) -> candle_core::Result<Stored<u16>> {
        let e = self.entry(name, Kind::Bf16Panels)?;
        Ok(self.stored(self.mapped(e, 2)))
    }

    /// An int8-panel entry: mapped, or a copy when [`CacheFile::resident`].
    pub(crate) fn i8_panels(&self, name: &str) -> candle_core::Result<Stored<u8>> {
        let e = self.entry(name, Kind::I8Panels)?;
        Ok(self.stored(self.mapped(e, 1)))
    }

    fn stored<T: Pod>(&self, m: Mapped<T>) -> Stored<T> {
        if self.resident {
            Stored::Owned(m.as_slice().to_vec())
        } else {
            Stored::Mapped(m)
        }
    }

    /// The raw bytes of a Q8_0 entry.
    pub(crate) fn q8_bytes(&self, name: &str) -> candle_core::Result<&[u8]> {
        let e = self.entry(name, Kind::Q8)?;
        Ok(&self.map[e.offset..e.offset + e.len])
    }

    /// An f32 entry copied into a CPU tensor of its shape (for the small tensors).
    pub(crate) fn tensor(&self, name: &str) -> candle_core::Result<candle_core::Tensor> {
        let e = self.entry(name, Kind::F32)?;
        let v = self.mapped::<f32>(e, 4);
        candle_core::Tensor::from_slice(v.as_slice(), e.shape.as_slice(), &candle_core::Device::Cpu)
    }

    fn mapped<T>(&self, e: &Entry, size: usize) -> Mapped<T> {
        Mapped {
            map: self.map.clone(),
            offset: e.offset,
            len: e.len / size,
            _t: std::marker::PhantomData,
        }
    }
}

fn expected_len(kind: Kind, shape: &[usize]) -> usize {
    let n: usize = shape.iter().product();
    match kind {
        Kind::F32 => n * 4,
        // shape = [n, k, packed values]: the packing pads n and k.
        Kind::Bf16Panels => shape.get(2).map_or(usize::MAX, |&v| v * 2),
        Kind::I8Panels => shape.get(2).copied().unwrap_or(usize::MAX),
        // shape = [rows, cols]; one 34-byte block per 32 values.
        Kind::Q8 => n / 32 * 34,
    }
}

/// Collects a tower's prepared tensors, then writes them as one cache file.
pub(crate) struct CacheWriter {
    entries: Vec<(Entry, Vec<u8>)>,
}

impl CacheWriter {
    pub(crate) fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    fn push(&mut self, name: &str, kind: Kind, shape: Vec<usize>, bytes: Vec<u8>) {
        self.entries.push((
            Entry {
                name: name.to_string(),
                kind,
                shape,
                offset: 0,
                len: bytes.len(),
                hash: xxhash_rust::xxh3::xxh3_64(&bytes),
            },
            bytes,
        ));
    }

    /// An f32 tensor (any shape).
    pub(crate) fn f32s(&mut self, name: &str, shape: &[usize], values: &[f32]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push(name, Kind::F32, shape.to_vec(), bytes);
    }

    /// A CPU tensor, converted to f32.
    pub(crate) fn tensor(
        &mut self,
        name: &str,
        t: &candle_core::Tensor,
    ) -> candle_core::Result<()> {
        let v = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.f32s(name, t.dims(), &v);
        Ok(())
    }

    /// The bf16 panel packing of an `[n, k]` weight.
    pub(crate) fn panels(&mut self, name: &str, n: usize, k: usize, values: &[u16]) {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push(name, Kind::Bf16Panels, vec![n, k, values.len()], bytes);
    }

    /// The int8 panel packing of an `[n, k]` weight.
    pub(crate) fn i8_panels(&mut self, name: &str, n: usize, k: usize, bytes: &[u8]) {
        self.push(
            name,
            Kind::I8Panels,
            vec![n, k, bytes.len()],
            bytes.to_vec(),
        );
    }

    /// Q8_0 blocks of a `[rows, cols]` weight.
    pub(crate) fn q8(&mut self, name: &str, shape: &[usize], bytes: Vec<u8>) {
        self.push(name, Kind::Q8, shape.to_vec(), bytes);
    }

    /// Writes the file atomically (a temporary file in the same folder, synced, then renamed).
    pub(crate) fn write(
        self,
        path: &Path,
        fingerprint: &str,
        tower: &str,
        layout: Layout,
    ) -> std::io::Result<()> {
        let mut entries: Vec<Entry> = self.entries.iter().map(|(e, _)| e.clone()).collect();
        // The header's length depends on the offsets it lists: lay out with a generous bound
        // on the header size, then fix the offsets (the JSON only grows by digits).
        let mut data_start: usize = 0;
        for _ in 0..4 {
            let mut off = data_start;
            for e in &mut entries {
                off = off.div_ceil(ALIGN) * ALIGN;
                e.offset = off;
                off += e.len;
            }
            let header = Header {
                fingerprint: fingerprint.to_string(),
                tower: tower.to_string(),
                layout,
                file_len: off,
                entries: entries.clone(),
            };
            let json = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
            let need = (PREFIX + json.len()).div_ceil(4096) * 4096;
            if need == data_start {
                return write_file(path, &json, &header, &self.entries);
            }
            data_start = need;
        }
        Err(std::io::Error::other("weight cache header did not settle"))
    }
}

fn write_file(
    path: &Path,
    json: &[u8],
    header: &Header,
    data: &[(Entry, Vec<u8>)],
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("cache");
    remove_dead_temporaries(dir, name);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = (|| {
        let f = File::create(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(8 << 20, f);
        w.write_all(MAGIC)?;
        w.write_all(&FORMAT_VERSION.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&xxhash_rust::xxh3::xxh3_64(json).to_le_bytes())?;
        w.write_all(json)?;
        let mut pos = PREFIX + json.len();
        for (e, (_, bytes)) in header.entries.iter().zip(data) {
            w.write_all(&vec![0u8; e.offset - pos])?;
            w.write_all(bytes)?;
            pos = e.offset + bytes.len();
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporary files of `name` left by builders that died (killed mid-write): each is as
/// large as the cache file. A builder is dead when its process is gone (Linux: no `/proc/PID`;
/// elsewhere: the file is a day old).
fn remove_dead_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let file = e.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let dead = if cfg!(target_os = "linux") {
            pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists())
        } else {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 86_400)
        };
        if dead {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let p = file_path(dir, "fp0123", "text", Layout::F32);
        let mut w = CacheWriter::new();
        w.f32s("a", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        w.panels("b", 1, 4, &[1, 2, 3, 65535]);
        w.f32s("c", &[1], &[f32::MIN_POSITIVE]);
        w.write(&p, "fp0123", "text", Layout::F32).unwrap();
        p
    }

    #[test]
    fn round_trips_bit_exactly_and_refuses_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample(dir.path());
        let c = CacheFile::open(&p, "fp0123", "text", Layout::F32).unwrap();
        assert_eq!(
            c.f32s("a").unwrap().as_slice(),
            &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]
        );
        assert_eq!(c.panels("b").unwrap().as_slice(), &[1, 2, 3, 65535]);
        assert_eq!(
            c.f32s("c").unwrap().as_slice()[0].to_bits(),
            f32::MIN_POSITIVE.to_bits()
        );
        assert_eq!(c.shape("a").unwrap(), &[2, 3]);
        assert!(c.f32s("b").is_err(), "kind checked");
        assert!(matches!(
            CacheFile::open(&p, "other", "text", Layout::F32),
            Err(CacheError::Stale(_))
        ));
        assert!(matches!(
            CacheFile::open(&p, "fp0123", "vision", Layout::F32),
            Err(CacheError::Stale(_))
        ));
        assert!(matches!(
            CacheFile::open(&dir.path().join("none"), "fp0123", "text", Layout::F32),
            Err(CacheError::Missing)
        ));
    }

    /// A killed builder's temporary file is removed by the next build; a live one's is not.
    #[cfg(target_os = "linux")]
    #[test]
    fn temporaries_of_dead_builders_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = file_path(dir.path(), "fp0123", "text", Layout::F32);
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        // pid_max is at most 2^22 on Linux: this process cannot exist.
        let dead = dir.path().join(format!(".{name}.tmp-99999999-1"));
        let live = dir
            .path()
            .join(format!(".{name}.tmp-{}-2", std::process::id()));
        let other = dir.path().join(".other.jsw.tmp-99999999-3");
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"partial").unwrap();
        }
        sample(dir.path());
        assert!(!dead.exists(), "a dead builder's file is removed");
        assert!(live.exists(), "a live builder's file stays");
        assert!(
            other.exists(),
            "only this cache file's temporaries are touched"
        );
        assert!(CacheFile::open(&p, "fp0123", "text", Layout::F32).is_ok());
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample(dir.path());
        let good = std::fs::read(&p).unwrap();
        let c = CacheFile::open(&p, "fp0123", "text", Layout::F32).unwrap();
        let used: Vec<(usize, usize)> = c
            .entries
            .values()
            .map(|e| (e.offset, e.offset + e.len))
            .collect();
        let hend = PREFIX + u64::from_le_bytes(good[16..24].try_into().unwrap()) as usize;
        drop(c);
        let bad = dir.path().join("bad.jsw");
        // Every byte that carries meaning (prefix, header, entry data); padding is not read.
        let meaningful =
            (0..good.len()).filter(|&i| i < hend || used.iter().any(|&(a, b)| (a..b).contains(&i)));
        for i in meaningful {
            let mut b = good.clone();
            b[i] ^= 0x10;
            std::fs::write(&bad, &b).unwrap();
            let r = CacheFile::open(&bad, "fp0123", "text", Layout::F32);
            assert!(r.is_err(), "flipped byte {i} went unnoticed");
        }
        for len in [0, 7, 31, hend - 1, hend, good.len() - 1] {
            std::fs::write(&bad, &good[..len]).unwrap();
            assert!(
                CacheFile::open(&bad, "fp0123", "text", Layout::F32).is_err(),
                "truncated to {len}"
            );
        }
    }
}
