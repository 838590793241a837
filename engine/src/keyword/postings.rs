//! The keyword index's byte layout, in one place: posting blocks, documents, statistics, and the
//! conversion of the first layout (one row per posting) into blocks.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `kwb` | term ‖ 0x00 ‖ block id (u64 BE; nothing for block 0) | a block: postings of the term with item ids in `[block id, next block's id)` |
//! | `kwdoc` | item id (u64 BE) | document length (u32 LE), then its distinct terms (u16 LE length + bytes each) |
//! | `kwstat` | `docs` | documents (u64 LE) ‖ total length (u64 LE) |
//! | `kwstat` | `layout` | [`LAYOUT`] (u32 LE); absent in a store of the first layout |
//! | `kw` | term ‖ 0x00 ‖ item id (u64 BE) | first layout only: term frequency (u32 LE) ‖ document length (u32 LE) |
//!
//! A block is its posting count (varint), then per posting, in increasing item id: the id's
//! distance from the previous posting's id (the first: from the block id), the term frequency
//! and the document length, each a LEB128 varint. Item ids are hashes spread over 64 bits, so a
//! posting costs 4–9 bytes here against ~50 as a row of its own (key, value, seal and redb's
//! per-entry overhead): the first layout made the keyword index 70 % of a 1M-product store.
//!
//! A term's blocks cover disjoint id ranges in key order; a block holds at most [`MAX_BLOCK`]
//! postings (a fuller one is split, an emptied one deleted), and an id below the term's first
//! block goes into a new block with id 0. A change rewrites only the blocks it falls in, so an
//! upsert of one item rewrites one block (≤ ~1 KiB) per term of the item.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::idx::{Batch, IndexError, Store};

pub(crate) const NS_BLOCKS: &str = "kwb";
pub(crate) const NS_DOCS: &str = "kwdoc";
pub(crate) const NS_STATS: &str = "kwstat";
/// The first layout's posting rows (read until the next writer converts them).
pub(crate) const NS_ROWS_V1: &str = "kw";
const STATS_KEY: &[u8] = b"docs";
const LAYOUT_KEY: &[u8] = b"layout";
/// The layout this code writes.
pub(crate) const LAYOUT: u32 = 2;
/// The most postings a block holds (about 1 KiB: several blocks share a 4 KiB page; blocks of
/// 256 left much of their pages empty); a split leaves blocks 3/4 full, so that the ids inserted
/// later (spread over the whole range) do not split them again at once.
pub(crate) const MAX_BLOCK: usize = 128;

/// One posting: item id, term frequency, document length.
pub(crate) type Posting = (u64, u32, u32);

/// A posting change: `None` removes the item's posting, `Some((tf, len))` sets it.
pub(crate) type Change = (u64, Option<(u32, u32)>);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The key of `term`'s block with id `block`: term ‖ 0x00 ‖ id (u64 BE), and term ‖ 0x00 alone
/// for block 0 (most terms are one item's code or id and have only that block: 8 bytes less a
/// row). It sorts before the term's other blocks, as id 0 would.
pub(crate) fn block_key(term: &str, block: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(term.len() + 9);
    k.extend_from_slice(term.as_bytes());
    k.push(0);
    if block != 0 {
        k.extend_from_slice(&block.to_be_bytes());
    }
    k
}

/// The prefix of every block (or first-layout row) key of `term`.
pub(crate) fn term_prefix(term: &str) -> Vec<u8> {
    let mut k = term.as_bytes().to_vec();
    k.push(0);
    k
}

/// `(term, id)` of a block key (or a first-layout row key); `None` when malformed. Terms hold no
/// NUL byte, so term ‖ 0x00 ‖ id (whose 9th byte from the end is 0x00) and the short key of
/// block 0 (term ‖ 0x00) never read as each other.
pub(crate) fn split_key(k: &[u8]) -> Option<(&str, u64)> {
    if let Some(i) = k.len().checked_sub(9).filter(|&i| k[i] == 0) {
        let term = std::str::from_utf8(&k[..i]).ok()?;
        return Some((term, u64::from_be_bytes(k[i + 1..].try_into().ok()?)));
    }
    let (&last, term) = k.split_last()?;
    if last != 0 || term.contains(&0) {
        return None;
    }
    Some((std::str::from_utf8(term).ok()?, 0))
}

/// Encodes postings (sorted by id, every id `>= block`) as the block with id `block`.
pub(crate) fn encode_block(block: u64, postings: &[Posting]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + postings.len() * 8);
    put_varint(&mut out, postings.len() as u64);
    let mut prev = block;
    for &(id, tf, len) in postings {
        put_varint(&mut out, id - prev);
        put_varint(&mut out, u64::from(tf));
        put_varint(&mut out, u64::from(len));
        prev = id;
    }
    out
}

/// Appends the postings of the block with id `block` to `out`; `None` when the bytes are not a
/// well-formed block (ids must increase and fit in 64 bits).
pub(crate) fn decode_block(block: u64, b: &[u8], out: &mut Vec<Posting>) -> Option<()> {
    let mut i = 0;
    let n = get_varint(b, &mut i)?;
    let mut prev = block;
    for j in 0..n {
        let d = get_varint(b, &mut i)?;
        if j > 0 && d == 0 {
            return None;
        }
        prev = prev.checked_add(d)?;
        let tf = u32::try_from(get_varint(b, &mut i)?).ok()?;
        let len = u32::try_from(get_varint(b, &mut i)?).ok()?;
        out.push((prev, tf, len));
    }
    (i == b.len()).then_some(())
}

pub(crate) fn encode_doc(len: u32, terms: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<u8> {
    let mut v = len.to_le_bytes().to_vec();
    for t in terms {
        let t = t.as_ref();
        v.extend_from_slice(&(t.len() as u16).to_le_bytes());
        v.extend_from_slice(t.as_bytes());
    }
    v
}

/// The length and terms of a stored `kwdoc` value (`None` when it is malformed).
pub(crate) fn decode_doc(v: &[u8]) -> Option<(u32, Vec<String>)> {
    let len = u32::from_le_bytes(v.get(..4)?.try_into().ok()?);
    let mut terms = Vec::new();
    let mut i = 4;
    while i < v.len() {
        let n = u16::from_le_bytes(v.get(i..i + 2)?.try_into().ok()?) as usize;
        let t = std::str::from_utf8(v.get(i + 2..i + 2 + n)?).ok()?;
        terms.push(t.to_string());
        i += 2 + n;
    }
    Some((len, terms))
}

/// Document count and total length.
pub(crate) fn read_stats(store: &Store) -> Result<(u64, u64)> {
    Ok(match store.kv_get(NS_STATS, STATS_KEY)? {
        Some(v) if v.len() == 16 => (
            u64::from_le_bytes(v[..8].try_into().unwrap_or_default()),
            u64::from_le_bytes(v[8..].try_into().unwrap_or_default()),
        ),
        _ => (0, 0),
    })
}

/// Puts the statistics and the layout marker into `batch`.
pub(crate) fn write_stats(batch: &mut Batch, docs: u64, len: u64) {
    let mut v = docs.to_le_bytes().to_vec();
    v.extend_from_slice(&len.to_le_bytes());
    batch.kv_put(NS_STATS, STATS_KEY.to_vec(), v);
    batch.kv_put(NS_STATS, LAYOUT_KEY.to_vec(), LAYOUT.to_le_bytes().to_vec());
}

/// The store's layout: [`LAYOUT`], or 1 for a store whose documents were written by the first
/// layout (statistics without a layout marker).
pub(crate) fn layout(store: &Store) -> Result<u32> {
    if let Some(v) = store.kv_get(NS_STATS, LAYOUT_KEY)? {
        return v
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| malformed(store, LAYOUT_KEY).into());
    }
    Ok(if store.kv_get(NS_STATS, STATS_KEY)?.is_some() {
        1
    } else {
        LAYOUT
    })
}

/// Every posting of `term`, in item id order.
pub(crate) fn read_postings(store: &Store, layout: u32, term: &str) -> Result<Vec<Posting>> {
    let prefix = term_prefix(term);
    let mut out = Vec::new();
    if layout == 1 {
        store.kv_for_each(NS_ROWS_V1, &prefix, |k, v| {
            if let (Some((_, id)), Some(tf), Some(dl)) = (split_key(k), u32_at(v, 0), u32_at(v, 4))
            {
                out.push((id, tf, dl));
            }
            Ok(())
        })?;
        return Ok(out);
    }
    store.kv_for_each(NS_BLOCKS, &prefix, |k, v| {
        let (_, block) = split_key(k).ok_or_else(|| malformed(store, k))?;
        decode_block(block, v, &mut out).ok_or_else(|| malformed(store, k))
    })?;
    Ok(out)
}

fn u32_at(v: &[u8], at: usize) -> Option<u32> {
    v.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

fn malformed(store: &Store, k: &[u8]) -> IndexError {
    IndexError::Corrupt {
        path: store.path().to_path_buf(),
        what: format!(
            "keyword index row {:?} does not decode",
            String::from_utf8_lossy(k)
        ),
    }
}

/// Applies `changes` (sorted by item id; an item's removal before its new posting) to `term`'s
/// blocks: reads the blocks they fall in from the committed store and puts the rewritten ones
/// into `batch`.
pub(crate) fn apply(
    store: &Store,
    batch: &mut Batch,
    term: &str,
    changes: &[Change],
) -> Result<()> {
    let prefix = term_prefix(term);
    let keys: Vec<Vec<u8>> = changes.iter().map(|c| block_key(term, c.0)).collect();
    let floors = store.kv_floor_keys(NS_BLOCKS, &keys)?;
    // Changes per block id; ids below the term's first block go into a new block 0.
    let mut by_block: BTreeMap<u64, (bool, Vec<Change>)> = BTreeMap::new();
    for (c, floor) in changes.iter().zip(floors) {
        let stored = floor
            .filter(|f| {
                f.starts_with(&prefix) && (f.len() == prefix.len() || f.len() == prefix.len() + 8)
            })
            .and_then(|f| split_key(&f).map(|(_, b)| b));
        let e = by_block
            .entry(stored.unwrap_or(0))
            .or_insert((stored.is_some(), Vec::new()));
        e.1.push(*c);
    }
    for (block, (exists, cs)) in by_block {
        let key = block_key(term, block);
        let mut postings = Vec::new();
        if exists {
            if let Some(v) = store.kv_get(NS_BLOCKS, &key)? {
                decode_block(block, &v, &mut postings).ok_or_else(|| malformed(store, &key))?;
            }
        }
        for (id, change) in cs {
            match (postings.binary_search_by_key(&id, |p| p.0), change) {
                (Ok(i), Some((tf, len))) => postings[i] = (id, tf, len),
                (Err(i), Some((tf, len))) => postings.insert(i, (id, tf, len)),
                (Ok(i), None) => {
                    postings.remove(i);
                }
                (Err(_), None) => {}
            }
        }
        write_block(batch, term, block, &postings);
    }
    Ok(())
}

/// Puts `postings` as the block `block` of `term` (split when over [`MAX_BLOCK`], deleted when
/// empty).
fn write_block(batch: &mut Batch, term: &str, block: u64, postings: &[Posting]) {
    if postings.is_empty() {
        batch.kv_delete(NS_BLOCKS, block_key(term, block));
        return;
    }
    let fill = MAX_BLOCK * 3 / 4;
    let parts = if postings.len() > MAX_BLOCK {
        postings.len().div_ceil(fill)
    } else {
        1
    };
    let per = postings.len().div_ceil(parts);
    for (i, part) in postings.chunks(per).enumerate() {
        let id = if i == 0 { block } else { part[0].0 };
        batch.kv_put(NS_BLOCKS, block_key(term, id), encode_block(id, part));
    }
}

/// Converts a store of the first layout: every posting row becomes part of a block, the rows'
/// table is dropped and the layout marked, in one commit. Returns the postings converted (0 when
/// the store had the current layout already).
pub(crate) fn upgrade(store: &mut Store) -> Result<u64> {
    if layout(store)? == LAYOUT {
        return Ok(0);
    }
    let mut batch = Batch::new();
    let mut term: Option<String> = None;
    let mut postings: Vec<Posting> = Vec::new();
    let mut converted = 0u64;
    fn flush(batch: &mut Batch, term: &Option<String>, postings: &mut Vec<Posting>) {
        if let Some(t) = term {
            postings.sort_unstable_by_key(|p| p.0);
            for (i, part) in postings.chunks(MAX_BLOCK * 3 / 4).enumerate() {
                let id = if i == 0 { 0 } else { part[0].0 };
                batch.kv_put(NS_BLOCKS, block_key(t, id), encode_block(id, part));
            }
        }
        postings.clear();
    }
    store.kv_for_each(NS_ROWS_V1, b"", |k, v| {
        let (Some((t, id)), Some(tf), Some(dl)) = (split_key(k), u32_at(v, 0), u32_at(v, 4)) else {
            // A malformed row: `jsearch check` reports the document that misses it.
            return Ok(());
        };
        if term.as_deref() != Some(t) {
            flush(&mut batch, &term, &mut postings);
            term = Some(t.to_string());
        }
        postings.push((id, tf, dl));
        converted += 1;
        Ok(())
    })?;
    flush(&mut batch, &term, &mut postings);
    batch.kv_clear(NS_ROWS_V1);
    let (docs, len) = read_stats(store)?;
    write_stats(&mut batch, docs, len);
    store.commit(batch)?;
    Ok(converted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_roundtrip_and_reject_garbage() {
        let ps: Vec<Posting> = vec![(5, 1, 3), (6, 2, 3), (u64::MAX - 1, 300, 70000)];
        let b = encode_block(5, &ps);
        let mut out = Vec::new();
        decode_block(5, &b, &mut out).unwrap();
        assert_eq!(out, ps);
        // Truncated, trailing bytes, repeated id, a bad count.
        for bad in [
            &b[..b.len() - 1],
            &[b.as_slice(), &[0]].concat()[..],
            &encode_block(1, &[(2, 1, 1), (2, 1, 1)]),
            &[9][..],
        ] {
            assert!(decode_block(5, bad, &mut Vec::new()).is_none(), "{bad:?}");
        }
        // An id overflowing 64 bits.
        let over = encode_block(0, &[(u64::MAX, 1, 1)]);
        assert!(decode_block(1, &over, &mut Vec::new()).is_none());
    }

    #[test]
    fn keys_split_back() {
        let k = block_key("sku-1", 42);
        assert_eq!(split_key(&k), Some(("sku-1", 42)));
        assert_eq!(block_key("sku-1", 0), b"sku-1\0");
        assert_eq!(split_key(b"sku-1\0"), Some(("sku-1", 0)));
        // An id whose last byte is 0 is still an id, not a short key.
        assert_eq!(split_key(&block_key("a", 0x100)), Some(("a", 0x100)));
        assert_eq!(split_key(b"short"), None);
        assert_eq!(split_key(b"a\0b\0"), None);
    }
}
