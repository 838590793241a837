//! Items (images, passages, products), their vector ids and the metadata stored with each vector.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What an indexed item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An image file.
    Image,
    /// A chunk of a text file (`.txt`, `.md`).
    Text,
    /// A catalog record: text and optionally an image, returned as one result.
    Product,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 3] = [Kind::Image, Kind::Text, Kind::Product];

    /// Lower-case name (`image`, `text`, `product`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Text => "text",
            Kind::Product => "product",
        }
    }

    pub(crate) fn code(self) -> u64 {
        match self {
            Kind::Image => 1,
            Kind::Text => 2,
            Kind::Product => 3,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "image" | "images" => Ok(Kind::Image),
            "text" | "passage" | "texts" => Ok(Kind::Text),
            "product" | "products" => Ok(Kind::Product),
            _ => Err(Error::InvalidArgument(format!(
                "unknown type {s:?}: expected image, text or product"
            ))),
        }
    }
}

/// Which encoder produced a vector: text vectors and image vectors live in different regions
/// of the embedding space (the "modality gap"), so their cosines are calibrated separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Produced by the text tower.
    Text,
    /// Produced by the vision tower.
    Image,
}

impl Modality {
    /// Both modalities.
    pub const ALL: [Modality; 2] = [Modality::Text, Modality::Image];

    pub(crate) fn byte(self) -> u8 {
        match self {
            Modality::Text => 0,
            Modality::Image => 1,
        }
    }

    /// Lower-case name (`text`, `image`).
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Text => "text",
            Modality::Image => "image",
        }
    }
}

const KIND_MASK: u64 = 0b011;
const MODALITY_BIT: u64 = 0b100;
const LOW_BITS: u64 = 0b111;

/// Stable vector id: 61 bits of SHA-256 of the item key, then the modality bit and two kind bits.
/// The same item key always gives the same id, so re-indexing overwrites in place; a product's text
/// and image vectors differ only in the modality bit. Keys are bytes: a file's key holds its path's
/// bytes, so two names that only differ in bytes that are not UTF-8 never share an id.
pub fn vector_id(item_key: impl AsRef<[u8]>, kind: Kind, modality: Modality) -> u64 {
    let digest = Sha256::digest(item_key.as_ref());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    let base = u64::from_be_bytes(b) & !LOW_BITS;
    let m = if modality == Modality::Image {
        MODALITY_BIT
    } else {
        0
    };
    base | m | kind.code()
}

/// Kind encoded in a vector id (None for ids not written by the engine).
pub fn kind_of(id: u64) -> Option<Kind> {
    match id & KIND_MASK {
        1 => Some(Kind::Image),
        2 => Some(Kind::Text),
        3 => Some(Kind::Product),
        _ => None,
    }
}

/// Modality encoded in a vector id.
pub fn modality_of(id: u64) -> Modality {
    if id & MODALITY_BIT != 0 {
        Modality::Image
    } else {
        Modality::Text
    }
}

/// The other vector of the same item (a product's text vs image vector).
pub fn sibling(id: u64) -> u64 {
    id ^ MODALITY_BIT
}

/// The id that names an item as a whole (its text-modality id; images use their image id).
pub fn item_id(id: u64) -> u64 {
    match kind_of(id) {
        Some(Kind::Product) => id & !MODALITY_BIT,
        _ => id,
    }
}

/// Metadata stored (as JSON) with every vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemMeta {
    /// What the item is.
    pub kind: Kind,
    /// Identifier: the file path for images, `path#chunk` for passages, the record id for products.
    pub id: String,
    /// The file: image or text file, or the catalog a product comes from. A name that is not
    /// UTF-8 is shown here with U+FFFD for the bad bytes; its exact bytes are in `path_bytes`.
    pub path: String,
    /// The path's exact bytes, only when they are not UTF-8 (JSON: an array of byte values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<Vec<u8>>,
    /// Title: the record's title, the first line of a passage's file, or the file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Part of a big text file (over 4 MiB) the passage comes from, 0-based; `None` for a file
    /// read whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
    /// Chunk number of a passage (0-based; within its part for a big file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// Number of chunks of the passage's file (`None` for a big file read in parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u32>,
    /// A passage's first and last line in its file, 1-based (`None` for a big file read in parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<(u32, u32)>,
    /// Image of a product (absolute path), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The start of the passage text / product text (at most ~300 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snippet: Option<String>,
    /// Catalog fields other than id/title/description/text/image.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl ItemMeta {
    /// The item's file (the image, the text file, the catalog) with its exact bytes.
    pub(crate) fn file(&self) -> std::path::PathBuf {
        match &self.path_bytes {
            Some(b) => crate::keys::path_from_bytes(b),
            None => std::path::PathBuf::from(&self.path),
        }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings and maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn from_bytes(id: u64, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::CorruptMeta {
            id,
            message: e.to_string(),
        })
    }
}

/// The key bytes of a file-based item: `prefix` then the path's bytes (exactly as the OS gives
/// them) and `suffix`. For UTF-8 paths these are the bytes of `format!("{prefix}{path}{suffix}")`,
/// so ids of stores written before paths were kept as bytes are unchanged.
pub(crate) fn path_key(prefix: &str, path: &std::path::Path, suffix: &str) -> Vec<u8> {
    let mut k = prefix.as_bytes().to_vec();
    k.extend_from_slice(path.as_os_str().as_encoded_bytes());
    k.extend_from_slice(suffix.as_bytes());
    k
}

/// A path for [`ItemMeta`]: its display form, and its bytes when that form is lossy.
pub(crate) fn path_strings(path: &std::path::Path) -> (String, Option<Vec<u8>>) {
    match path.to_str() {
        Some(s) => (s.to_string(), None),
        None => (
            path.to_string_lossy().into_owned(),
            Some(path.as_os_str().as_encoded_bytes().to_vec()),
        ),
    }
}

/// First `max` characters of `s`, whitespace collapsed, with an ellipsis when cut.
pub(crate) fn snippet(s: &str, max: usize) -> String {
    let collapsed: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max {
        collapsed
    } else {
        let mut out: String = collapsed.chars().take(max).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_encode_kind_and_modality() {
        let t = vector_id("cat:/a.jsonl#1", Kind::Product, Modality::Text);
        let i = vector_id("cat:/a.jsonl#1", Kind::Product, Modality::Image);
        assert_eq!(sibling(t), i);
        assert_eq!(item_id(i), t);
        assert_eq!(kind_of(t), Some(Kind::Product));
        assert_eq!(modality_of(i), Modality::Image);
        assert_eq!(modality_of(t), Modality::Text);
        let img = vector_id("file:/x.png", Kind::Image, Modality::Image);
        assert_eq!(kind_of(img), Some(Kind::Image));
        assert_eq!(item_id(img), img);
        assert_eq!(
            img,
            vector_id("file:/x.png", Kind::Image, Modality::Image),
            "stable"
        );
        assert_ne!(img, vector_id("file:/y.png", Kind::Image, Modality::Image));
    }

    #[test]
    fn snippets_are_cut_on_chars() {
        assert_eq!(snippet("a  b\nc", 10), "a b c");
        assert_eq!(snippet("héllo wörld", 4), "héll…");
    }

    #[test]
    fn meta_roundtrip() {
        let m = ItemMeta {
            kind: Kind::Text,
            id: "/a.md#0".into(),
            path: "/a.md".into(),
            title: Some("A".into()),
            path_bytes: None,
            part: None,
            chunk: Some(0),
            chunks: Some(2),
            lines: Some((3, 9)),
            image: None,
            snippet: None,
            metadata: Default::default(),
        };
        assert_eq!(ItemMeta::from_bytes(1, &m.to_bytes()).unwrap(), m);
        assert!(ItemMeta::from_bytes(1, b"{").is_err());
    }
}
