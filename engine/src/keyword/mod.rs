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
//! The tables and their byte layout are in [`postings`]: per term, blocks of up to 128
//! postings (item id, term frequency, document length; varints), and per item its document
//! (length and terms, for deletes).
//!
//! Terms are [`tokenize`]'s; a term `=value` (not counted in the length) marks a field whose whole
//! folded value is `value` (the record id, the title, each string attribute): a query equal to it
//! is an exact identifier match.

pub(crate) mod postings;
pub(crate) mod tokenize;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub(crate) use tokenize::fold;

use crate::error::Result;
use crate::idx::{Batch, Store};
use crate::item::ItemMeta;

pub(crate) use postings::{upgrade, Posting, NS_DOCS as NS_KWDOC};

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

/// The keyword side of one batch: the documents it removes and puts, applied to the index at
/// [`KeywordWrites::finish`] (every posting block a change falls in is rewritten once).
#[derive(Default)]
pub(crate) struct KeywordWrites {
    /// The item's document after this batch (`None`: removed).
    items: HashMap<u64, Option<KeywordDoc>>,
    /// Postings no document lists, to drop (`repair`).
    stray: Vec<(String, u64)>,
}

impl KeywordWrites {
    /// Removes item `item`'s document (if it has one) from the index.
    pub(crate) fn remove(&mut self, item: u64) {
        self.items.insert(item, None);
    }

    /// Indexes `doc` as item `item`'s document, replacing the one it had.
    pub(crate) fn put(&mut self, item: u64, doc: &KeywordDoc) {
        self.items.insert(item, Some(doc.clone()));
    }

    /// Drops the posting of `term` for `item` (one no document lists; see [`scan`]).
    pub(crate) fn drop_posting(&mut self, term: String, item: u64) {
        self.stray.push((term, item));
    }

    /// Writes the documents, their postings and the updated statistics into the batch.
    pub(crate) fn finish(self, store: &Store, batch: &mut Batch) -> Result<()> {
        if self.items.is_empty() && self.stray.is_empty() {
            return Ok(());
        }
        let mut items: Vec<(u64, Option<KeywordDoc>)> = self.items.into_iter().collect();
        items.sort_unstable_by_key(|x| x.0);
        let (mut docs, mut total) = postings::read_stats(store)?;
        let mut changes: BTreeMap<String, Vec<postings::Change>> = BTreeMap::new();
        for (term, item) in self.stray {
            changes.entry(term).or_default().push((item, None));
        }
        for (item, new) in items {
            let key = item.to_be_bytes().to_vec();
            let old = match store.kv_get(NS_KWDOC, &key)? {
                Some(v) => postings::decode_doc(&v),
                None => None,
            };
            if let Some((len, terms)) = &old {
                for t in terms {
                    changes.entry(t.clone()).or_default().push((item, None));
                }
                docs = docs.saturating_sub(1);
                total = total.saturating_sub(u64::from(*len));
            }
            match new {
                Some(doc) => {
                    for (t, tf) in &doc.terms {
                        changes
                            .entry(t.clone())
                            .or_default()
                            .push((item, Some((*tf, doc.len))));
                    }
                    docs += 1;
                    total += u64::from(doc.len);
                    batch.kv_put(
                        NS_KWDOC,
                        key,
                        postings::encode_doc(doc.len, doc.terms.iter().map(|t| &t.0)),
                    );
                }
                // Also a document that no longer decodes (its postings are strays then).
                None => batch.kv_delete(NS_KWDOC, key),
            }
        }
        for (term, cs) in &mut changes {
            // By item, an item's removal before its new posting (the sort is stable).
            cs.sort_by_key(|c| c.0);
            postings::apply(store, batch, term, cs)?;
        }
        postings::write_stats(batch, docs, total);
        Ok(())
    }
}

/// The read side: statistics and the postings of the terms queries asked for, cached (the
/// engine drops it when the store changes).
pub(crate) struct KeywordIndex {
    pub(crate) docs: u64,
    layout: u32,
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
        let (docs, len) = postings::read_stats(store)?;
        Ok(KeywordIndex {
            docs,
            layout: postings::layout(store)?,
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
        let out = postings::read_postings(store, self.layout, term)?;
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

/// What [`scan`] found wrong with the keyword index.
#[derive(Debug, Default)]
pub(crate) struct KeywordDamage {
    /// What is wrong, one line each (empty when consistent).
    pub(crate) problems: Vec<String>,
    /// Items whose document and postings disagree (a posting or the document was lost): their
    /// files are re-indexed by `repair`.
    pub(crate) items: HashSet<u64>,
    /// Postings no document lists: dropped by `repair`.
    pub(crate) stray: Vec<(String, u64)>,
}

/// What `jsearch check` verifies of the keyword index: every document belongs to a live item,
/// every posting block decodes and lies in its term's order, every posting belongs to a document
/// that lists its term (and every listed term has its posting), and the statistics add up.
pub(crate) fn scan(store: &Store, live_items: &HashSet<u64>) -> Result<KeywordDamage> {
    let mut out = KeywordDamage::default();
    let mut docs: HashMap<u64, (u32, HashSet<String>)> = HashMap::new();
    let mut total: u64 = 0;
    for (k, v) in store.kv_scan_prefix(NS_KWDOC, b"")? {
        let Some(id) = k.as_slice().try_into().ok().map(u64::from_be_bytes) else {
            out.problems
                .push("keyword index: a document key is malformed".into());
            continue;
        };
        let Some((len, terms)) = postings::decode_doc(&v) else {
            out.problems
                .push(format!("keyword index: document of item {id} is malformed"));
            out.items.insert(id);
            continue;
        };
        if !live_items.contains(&id) {
            out.problems.push(format!(
                "keyword index: item {id} is indexed but not in the store"
            ));
        }
        total += len as u64;
        docs.insert(id, (len, terms.into_iter().collect()));
    }
    let mut postings_per_doc: HashMap<u64, usize> = HashMap::new();
    let mut on_posting = |term: &str, id: u64, out: &mut KeywordDamage| match docs.get(&id) {
        Some((_, terms)) if terms.contains(term) => {
            *postings_per_doc.entry(id).or_default() += 1;
        }
        _ => {
            out.problems.push(format!(
                "keyword index: posting {term:?} of item {id} has no document listing it"
            ));
            out.stray.push((term.to_string(), id));
        }
    };
    if postings::layout(store)? == 1 {
        store.kv_for_each(postings::NS_ROWS_V1, b"", |k, _| {
            match postings::split_key(k) {
                Some((term, id)) => on_posting(term, id, &mut out),
                None => out
                    .problems
                    .push("keyword index: a posting key is malformed".into()),
            }
            Ok(())
        })?;
    } else {
        // The previous block's term and last id: a term's blocks hold increasing ids.
        let mut last: Option<(String, u64)> = None;
        let mut block = Vec::new();
        store.kv_for_each(postings::NS_BLOCKS, b"", |k, v| {
            let Some((term, id)) = postings::split_key(k) else {
                out.problems
                    .push("keyword index: a block key is malformed".into());
                return Ok(());
            };
            block.clear();
            if postings::decode_block(id, v, &mut block).is_none() || block.is_empty() {
                out.problems.push(format!(
                    "keyword index: block {id} of {term:?} is malformed"
                ));
                return Ok(());
            }
            if last.as_ref().is_some_and(|(t, l)| t == term && *l >= id) {
                out.problems.push(format!(
                    "keyword index: block {id} of {term:?} overlaps the one before it"
                ));
            }
            for &(item, _, _) in &block {
                on_posting(term, item, &mut out);
            }
            last = block.last().map(|p| (term.to_string(), p.0));
            Ok(())
        })?;
    }
    for (id, (_, terms)) in &docs {
        if postings_per_doc.get(id).copied().unwrap_or(0) != terms.len() {
            out.problems
                .push(format!("keyword index: item {id} is missing postings"));
            out.items.insert(*id);
        }
    }
    let (sd, sl) = postings::read_stats(store)?;
    if sd != docs.len() as u64 || sl != total {
        out.problems.push(format!(
            "keyword index: statistics say {sd} documents / {sl} terms, the documents hold {} / {total}",
            docs.len()
        ));
    }
    Ok(out)
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
        let (len, terms) =
            postings::decode_doc(&postings::encode_doc(d.len, d.terms.iter().map(|t| &t.0)))
                .unwrap();
        assert_eq!(len, d.len);
        assert_eq!(terms.len(), d.terms.len());
    }

    fn doc(terms: &[(&str, u32)]) -> KeywordDoc {
        KeywordDoc {
            terms: terms.iter().map(|(t, f)| (t.to_string(), *f)).collect(),
            len: terms.iter().map(|x| x.1).sum(),
        }
    }

    fn open(dir: &std::path::Path) -> Store {
        Store::open(
            &dir.join("s.redb"),
            crate::idx::StoreSettings::new("m", "fp", 8),
        )
        .unwrap()
    }

    /// Every posting of every term, as the reader sees them.
    fn all_postings(store: &Store, terms: &[&str]) -> BTreeMap<String, Vec<Posting>> {
        let layout = postings::layout(store).unwrap();
        terms
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    postings::read_postings(store, layout, t).unwrap(),
                )
            })
            .filter(|(_, p)| !p.is_empty())
            .collect()
    }

    /// Random puts, re-puts and removals over many commits (blocks split, shrink and vanish):
    /// the postings always equal those of the documents that should be there, and `scan` finds
    /// nothing wrong.
    #[test]
    fn blocks_follow_a_model_through_many_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let terms = ["common", "half", "rare", "x"];
        let mut model: HashMap<u64, KeywordDoc> = HashMap::new();
        let mut seed = 7u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..12 {
            let mut kw = KeywordWrites::default();
            let mut batch = Batch::new();
            for _ in 0..if round == 0 { 2000 } else { 300 } {
                // Ids from a small range (collisions: re-puts and removals of present items),
                // spread over 64 bits as item ids are.
                let id = (rnd() % 3000).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                if rnd() % 4 == 0 {
                    kw.remove(id);
                    model.remove(&id);
                } else {
                    let mut ts = vec![("common", 1 + (rnd() % 3) as u32)];
                    if rnd() % 2 == 0 {
                        ts.push(("half", 2));
                    }
                    if rnd() % 50 == 0 {
                        ts.push(("rare", 1));
                    }
                    let d = doc(&ts);
                    kw.put(id, &d);
                    model.insert(id, d);
                }
            }
            kw.finish(&store, &mut batch).unwrap();
            store.commit(batch).unwrap();
            let mut want: BTreeMap<String, Vec<Posting>> = BTreeMap::new();
            for (id, d) in &model {
                for (t, tf) in &d.terms {
                    want.entry(t.clone()).or_default().push((*id, *tf, d.len));
                }
            }
            for p in want.values_mut() {
                p.sort_unstable();
            }
            assert_eq!(all_postings(&store, &terms), want, "round {round}");
            let live: HashSet<u64> = model.keys().copied().collect();
            let damage = scan(&store, &live).unwrap();
            assert!(damage.problems.is_empty(), "{:?}", damage.problems);
            let blocks = store
                .kv_scan_prefix(postings::NS_BLOCKS, &postings::term_prefix("common"))
                .unwrap();
            assert!(blocks.len() > 1, "the common term is split into blocks");
        }
    }

    /// A store of the first layout (a row per posting) is read as it is, and the upgrade turns
    /// it into blocks with the same postings.
    #[test]
    fn first_layout_is_read_then_converted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut batch = Batch::new();
        let mut want = Vec::new();
        for i in 0..700u64 {
            let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut v = 2u32.to_le_bytes().to_vec();
            v.extend_from_slice(&5u32.to_le_bytes());
            batch.kv_put(postings::NS_ROWS_V1, postings::block_key("old", id), v);
            batch.kv_put(
                NS_KWDOC,
                id.to_be_bytes().to_vec(),
                postings::encode_doc(5, ["old"]),
            );
            want.push((id, 2, 5));
        }
        want.sort_unstable();
        let mut stats = 700u64.to_le_bytes().to_vec();
        stats.extend_from_slice(&3500u64.to_le_bytes());
        batch.kv_put(postings::NS_STATS, b"docs".to_vec(), stats);
        store.commit(batch).unwrap();
        assert_eq!(postings::layout(&store).unwrap(), 1);
        assert_eq!(all_postings(&store, &["old"])["old"], want);
        let live: HashSet<u64> = want.iter().map(|p| p.0).collect();
        assert!(scan(&store, &live).unwrap().problems.is_empty());
        assert_eq!(postings::upgrade(&mut store).unwrap(), 700);
        assert_eq!(postings::layout(&store).unwrap(), postings::LAYOUT);
        assert_eq!(all_postings(&store, &["old"])["old"], want);
        assert!(store
            .kv_scan_prefix(postings::NS_ROWS_V1, b"")
            .unwrap()
            .is_empty());
        assert!(scan(&store, &live).unwrap().problems.is_empty());
        assert_eq!(postings::upgrade(&mut store).unwrap(), 0);
    }
}
