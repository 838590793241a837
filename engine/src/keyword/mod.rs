//! The keyword index: BM25 over every item's title, text and string attributes, kept in the
//! store file's key-value tables and written in the same transaction as the item's vectors (so a
//! crash never leaves the two apart; deletes and upserts keep it exact).
//!
//! Why our own and not tantivy or the `bm25` crate: tantivy keeps its own segment files and
//! commits (one file, one transaction would need a tantivy `Directory` inside redb, and two
//! commit protocols to keep in step); the `bm25` crate is an in-memory scorer with no storage.
//! An inverted index over redb tables is small (below), exact under upserts, and crash-safe by
//! construction: the store's commit is the index's commit.
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `kw` | term ‖ 0x00 ‖ item id (u64 BE) | term frequency (u32 LE) ‖ document length (u32 LE) |
//! | `kwdoc` | item id (u64 BE) | document length (u32 LE), then its distinct terms (u16 LE length + bytes each) |
//! | `kwstat` | `docs` | documents (u64 LE) ‖ total length (u64 LE) |
//!
//! Terms are [`tokenize`]'s; a term `=value` (not counted in the length) marks a field whose whole
//! folded value is `value` (the record id, the title, each string attribute): a query equal to it
//! is an exact identifier match.

pub(crate) mod tokenize;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub(crate) use tokenize::fold;

use crate::error::Result;
use crate::idx::{Batch, Store};
use crate::item::ItemMeta;

pub(crate) const NS_KW: &str = "kw";
pub(crate) const NS_KWDOC: &str = "kwdoc";
pub(crate) const NS_KWSTAT: &str = "kwstat";
const STATS_KEY: &[u8] = b"docs";

/// BM25 parameters (the usual ones).
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// An item's terms and length, as the index stores them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct KeywordDoc {
    /// Distinct terms with their frequencies.
    pub(crate) terms: Vec<(String, u32)>,
    /// Length: the number of (non-exact) terms.
    pub(crate) len: u32,
}

impl KeywordDoc {
    /// The document of an item: its title, `body` (a passage's or a product's text), a product's
    /// id, and its string attributes (list elements too); exact-value terms for the id, the title
    /// and each string attribute.
    pub(crate) fn of(meta: &ItemMeta, body: Option<&str>) -> KeywordDoc {
        let mut words = Vec::new();
        let mut exact: Vec<String> = Vec::new();
        let add_exact = |v: &str, exact: &mut Vec<String>| {
            if let Some(t) = tokenize::exact_term(v) {
                exact.push(t);
            }
            exact.extend(tokenize::code_parts(v));
        };
        if let Some(t) = &meta.title {
            tokenize::tokens_into(t, &mut words);
            add_exact(t, &mut exact);
        }
        if let Some(b) = body {
            tokenize::tokens_into(b, &mut words);
        }
        if meta.kind == crate::Kind::Product {
            tokenize::tokens_into(&meta.id, &mut words);
            add_exact(&meta.id, &mut exact);
        }
        for v in meta.metadata.values() {
            let one = |s: &str, words: &mut Vec<String>, exact: &mut Vec<String>| {
                tokenize::tokens_into(s, words);
                add_exact(s, exact);
            };
            match v {
                serde_json::Value::String(s) => one(s, &mut words, &mut exact),
                serde_json::Value::Array(a) => {
                    for s in a.iter().filter_map(|x| x.as_str()) {
                        one(s, &mut words, &mut exact);
                    }
                }
                _ => {}
            }
        }
        let len = words.len() as u32;
        let mut tf: HashMap<String, u32> = HashMap::new();
        for w in words {
            *tf.entry(w).or_default() += 1;
        }
        for e in exact {
            tf.entry(e).or_insert(1);
        }
        let mut terms: Vec<(String, u32)> = tf.into_iter().collect();
        terms.sort_unstable();
        KeywordDoc { terms, len }
    }
}

fn posting_key(term: &str, item: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(term.len() + 9);
    k.extend_from_slice(term.as_bytes());
    k.push(0);
    k.extend_from_slice(&item.to_be_bytes());
    k
}

fn term_prefix(term: &str) -> Vec<u8> {
    let mut k = term.as_bytes().to_vec();
    k.push(0);
    k
}

fn encode_doc(doc: &KeywordDoc) -> Vec<u8> {
    let mut v = doc.len.to_le_bytes().to_vec();
    for (t, _) in &doc.terms {
        v.extend_from_slice(&(t.len() as u16).to_le_bytes());
        v.extend_from_slice(t.as_bytes());
    }
    v
}

/// The length and terms of a stored `kwdoc` value (`None` when it is malformed).
fn decode_doc(v: &[u8]) -> Option<(u32, Vec<String>)> {
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
fn read_stats(store: &Store) -> Result<(u64, u64)> {
    Ok(match store.kv_get(NS_KWSTAT, STATS_KEY)? {
        Some(v) if v.len() == 16 => (
            u64::from_le_bytes(v[..8].try_into().unwrap_or_default()),
            u64::from_le_bytes(v[8..].try_into().unwrap_or_default()),
        ),
        _ => (0, 0),
    })
}

/// The keyword side of one batch: removals and new documents go into the batch, the statistics
/// are updated once at the end ([`KeywordWrites::finish`]).
#[derive(Default)]
pub(crate) struct KeywordWrites {
    docs: i64,
    len: i64,
    removed: HashSet<u64>,
}

impl KeywordWrites {
    /// Removes item `item`'s document (if it has one) from the index.
    pub(crate) fn remove(&mut self, store: &Store, batch: &mut Batch, item: u64) -> Result<()> {
        if !self.removed.insert(item) {
            return Ok(());
        }
        let key = item.to_be_bytes().to_vec();
        let Some(v) = store.kv_get(NS_KWDOC, &key)? else {
            return Ok(());
        };
        if let Some((len, terms)) = decode_doc(&v) {
            for t in terms {
                batch.kv_delete(NS_KW, posting_key(&t, item));
            }
            self.len -= len as i64;
        }
        self.docs -= 1;
        batch.kv_delete(NS_KWDOC, key);
        Ok(())
    }

    /// Indexes `doc` as item `item`'s document, replacing the one it had.
    pub(crate) fn put(
        &mut self,
        store: &Store,
        batch: &mut Batch,
        item: u64,
        doc: &KeywordDoc,
    ) -> Result<()> {
        self.remove(store, batch, item)?;
        for (t, tf) in &doc.terms {
            let mut v = tf.to_le_bytes().to_vec();
            v.extend_from_slice(&doc.len.to_le_bytes());
            batch.kv_put(NS_KW, posting_key(t, item), v);
        }
        batch.kv_put(NS_KWDOC, item.to_be_bytes().to_vec(), encode_doc(doc));
        self.docs += 1;
        self.len += doc.len as i64;
        Ok(())
    }

    /// Writes the updated statistics into the batch.
    pub(crate) fn finish(self, store: &Store, batch: &mut Batch) -> Result<()> {
        if self.docs == 0 && self.len == 0 && self.removed.is_empty() {
            return Ok(());
        }
        let (docs, len) = read_stats(store)?;
        let docs = (docs as i64 + self.docs).max(0) as u64;
        let len = (len as i64 + self.len).max(0) as u64;
        let mut v = docs.to_le_bytes().to_vec();
        v.extend_from_slice(&len.to_le_bytes());
        batch.kv_put(NS_KWSTAT, STATS_KEY.to_vec(), v);
        Ok(())
    }
}

/// One posting: item id, term frequency, document length.
pub(crate) type Posting = (u64, u32, u32);

/// The read side: statistics and the postings of the terms queries asked for, cached (the
/// engine drops it when the store changes).
pub(crate) struct KeywordIndex {
    pub(crate) docs: u64,
    avg_len: f32,
    postings: Mutex<HashMap<String, Arc<Vec<Posting>>>>,
}

/// A keyword query's result: BM25 score per matching item, and the items whose whole field
/// value equals the query.
#[derive(Debug, Default)]
pub(crate) struct KeywordScores {
    pub(crate) scores: HashMap<u64, f32>,
    pub(crate) exact: HashSet<u64>,
    /// The best possible score of this query (every term matching once in an average-length
    /// document; a term no item has counts as the rarest would): the scale that normalises
    /// scores to about [0, 1].
    pub(crate) scale: f32,
}

impl KeywordIndex {
    pub(crate) fn load(store: &Store) -> Result<Self> {
        let (docs, len) = read_stats(store)?;
        Ok(KeywordIndex {
            docs,
            avg_len: if docs == 0 {
                1.0
            } else {
                (len as f32 / docs as f32).max(1.0)
            },
            postings: Mutex::new(HashMap::new()),
        })
    }

    /// True when the store has keyword-indexed items.
    pub(crate) fn is_empty(&self) -> bool {
        self.docs == 0
    }

    fn postings(&self, store: &Store, term: &str) -> Result<Arc<Vec<Posting>>> {
        if let Some(p) = self
            .postings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(term)
        {
            return Ok(p.clone());
        }
        let prefix = term_prefix(term);
        let mut out = Vec::new();
        for (k, v) in store.kv_scan_prefix(NS_KW, &prefix)? {
            let (Some(id), Some(tf), Some(dl)) = (
                k.get(prefix.len()..)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes),
                v.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes),
                v.get(4..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_le_bytes),
            ) else {
                continue;
            };
            out.push((id, tf, dl));
        }
        let p = Arc::new(out);
        let mut cache = self.postings.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(term.to_string(), p.clone());
        Ok(p)
    }

    /// BM25 scores of every item matching a term of `query` for which `accept` holds.
    pub(crate) fn search(
        &self,
        store: &Store,
        query: &str,
        accept: &dyn Fn(u64) -> bool,
    ) -> Result<KeywordScores> {
        let mut terms = tokenize::tokens(query);
        terms.sort_unstable();
        terms.dedup();
        let mut out = KeywordScores::default();
        let n = self.docs as f32;
        for t in &terms {
            let p = self.postings(store, t)?;
            if p.is_empty() {
                // A term no item has still counts in the best possible score (as the rarest
                // term would): a query matched on one common word of many ("insurance for a
                // rental car" on "a") gets that share of the keyword score, not all of it.
                let idf = ((n + 0.5) / 0.5 + 1.0).ln();
                out.scale += idf * (K1 + 1.0) / (1.0 + K1);
                continue;
            }
            let df = p.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            out.scale += idf * (K1 + 1.0) / (1.0 + K1);
            for &(id, tf, dl) in p.iter() {
                if !accept(id) {
                    continue;
                }
                let tf = tf as f32;
                let s =
                    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * dl as f32 / self.avg_len));
                *out.scores.entry(id).or_default() += s;
            }
        }
        if let Some(e) = tokenize::exact_term(query) {
            for &(id, _, _) in self.postings(store, &e)?.iter() {
                if accept(id) {
                    out.exact.insert(id);
                    out.scores.entry(id).or_default();
                }
            }
        }
        Ok(out)
    }
}

/// What `jsearch check` verifies of the keyword index: every document belongs to a live item,
/// every posting to a document that lists its term, and the statistics add up. Returns the
/// problems found (empty when consistent).
pub(crate) fn check(store: &Store, live_items: &HashSet<u64>) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut docs: HashMap<u64, (u32, HashSet<String>)> = HashMap::new();
    let mut total: u64 = 0;
    for (k, v) in store.kv_scan_prefix(NS_KWDOC, b"")? {
        let Some(id) = k.as_slice().try_into().ok().map(u64::from_be_bytes) else {
            problems.push("keyword index: a document key is malformed".into());
            continue;
        };
        let Some((len, terms)) = decode_doc(&v) else {
            problems.push(format!("keyword index: document of item {id} is malformed"));
            continue;
        };
        if !live_items.contains(&id) {
            problems.push(format!(
                "keyword index: item {id} is indexed but not in the store"
            ));
        }
        total += len as u64;
        docs.insert(id, (len, terms.into_iter().collect()));
    }
    let mut postings_per_doc: HashMap<u64, usize> = HashMap::new();
    for (k, _) in store.kv_scan_prefix(NS_KW, b"")? {
        let (term, id) = match k.len().checked_sub(9) {
            Some(i) if k[i] == 0 => (
                String::from_utf8_lossy(&k[..i]).into_owned(),
                u64::from_be_bytes(k[i + 1..].try_into().unwrap_or_default()),
            ),
            _ => {
                problems.push("keyword index: a posting key is malformed".into());
                continue;
            }
        };
        match docs.get(&id) {
            Some((_, terms)) if terms.contains(&term) => {
                *postings_per_doc.entry(id).or_default() += 1;
            }
            _ => problems.push(format!(
                "keyword index: posting {term:?} of item {id} has no document listing it"
            )),
        }
    }
    for (id, (_, terms)) in &docs {
        if postings_per_doc.get(id).copied().unwrap_or(0) != terms.len() {
            problems.push(format!("keyword index: item {id} is missing postings"));
        }
    }
    let (sd, sl) = read_stats(store)?;
    if sd != docs.len() as u64 || sl != total {
        problems.push(format!(
            "keyword index: statistics say {sd} documents / {sl} terms, the documents hold {} / {total}",
            docs.len()
        ));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_roundtrip_and_hold_exact_terms() {
        let meta = ItemMeta {
            kind: crate::Kind::Product,
            id: "SKU-28589".into(),
            path: "/c.jsonl".into(),
            path_bytes: None,
            title: Some("Red Card".into()),
            part: None,
            chunk: None,
            chunks: None,
            lines: None,
            image: None,
            snippet: None,
            metadata: serde_json::json!({"brand": "Korrin", "tags": ["a b", "c"], "price": 3})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        let d = KeywordDoc::of(&meta, Some("A red card, red."));
        let has = |t: &str| d.terms.iter().any(|(x, _)| x == t);
        for t in [
            "=sku-28589",
            "sku-28589",
            "28589",
            "=korrin",
            "korrin",
            "=a b",
            "=red card",
        ] {
            assert!(has(t), "{t} in {:?}", d.terms);
        }
        assert_eq!(
            d.terms.iter().find(|(t, _)| t == "red").map(|x| x.1),
            Some(3)
        );
        let (len, terms) = decode_doc(&encode_doc(&d)).unwrap();
        assert_eq!(len, d.len);
        assert_eq!(terms.len(), d.terms.len());
    }
}
