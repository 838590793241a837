//! Store semantics: persistence, upsert/delete, filters, key-value tables, bad inputs, identity checks.

mod common;
use common::*;
use jsearch_index::{Batch, IndexError, SearchParams, Store, StoreSettings};
use std::collections::HashSet;

const DIM: usize = 64;

#[test]
fn roundtrip_and_recall_vs_brute_force() {
    let (_d, path) = tmp("s.redb");
    let n = 6000u64;
    {
        let mut s = Store::open(&path, settings(DIM)).unwrap();
        s.commit(batch(1, 0..3000, DIM)).unwrap();
        s.commit(batch(1, 3000..n, DIM)).unwrap();
        assert_eq!(s.len(), n as usize);
    }
    let s = Store::open(&path, settings(DIM)).unwrap();
    assert_eq!(s.len(), n as usize);
    assert_eq!(
        s.get_meta(42).unwrap().unwrap(),
        42u64.to_le_bytes().to_vec()
    );
    let v = s.get_vector(7).unwrap().unwrap();
    let mut want = vector(1, 7, DIM);
    jsearch_index::vecmath::normalize(&mut want);
    assert!(v.iter().zip(&want).all(|(a, b)| (a - b).abs() < 2e-3));
    let mut found = 0;
    let nq = 40;
    for q in 0..nq {
        let qv = vector(99, 100_000 + q, DIM);
        let exact = s.exact_search(&qv, 10, None).unwrap();
        let got = s.search(&qv, 10, &SearchParams::default()).unwrap();
        assert_eq!(got.len(), 10);
        let e: HashSet<u64> = exact.iter().map(|h| h.id).collect();
        found += got.iter().filter(|h| e.contains(&h.id)).count();
        // scores are full-dimension cosines, sorted
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
    }
    let recall = found as f64 / (nq as f64 * 10.0);
    assert!(recall >= 0.95, "recall {recall}");
}

fn exact_ids(s: &Store, q: &[f32], k: usize) -> HashSet<u64> {
    let hits = s.exact_search(q, k, None).unwrap();
    hits.iter().map(|h| h.id).collect()
}

#[test]
fn sketch_shortlist_reads_few_vectors_and_changes_no_answer() {
    // 128-d vectors with a 32-d graph: the 96-d tail carries much of the similarity, so choosing
    // the re-rank candidates by sketch (head norm + 4-bit tail) rather than by graph distance matters.
    let dim = 128;
    let (_d, path) = tmp("sk.redb");
    let mut s = Store::open(&path, settings(dim)).unwrap();
    s.commit(batch(3, 0..6000, dim)).unwrap();
    let (k, nq) = (10, 60u64);
    let wide = |exhaustive_rerank| SearchParams {
        ef: 96,
        candidates: Some(96),
        exhaustive_rerank,
        ..Default::default()
    };
    let (mut same, mut found_fast, mut found_all) = (0, 0, 0);
    for q in 0..nq {
        let qv = vector(77, 500_000 + q, dim);
        let r0 = s.stats().unwrap().rerank_reads;
        let fast = s.search(&qv, k, &wide(false)).unwrap();
        let r1 = s.stats().unwrap().rerank_reads;
        let all = s.search(&qv, k, &wide(true)).unwrap();
        let r2 = s.stats().unwrap().rerank_reads;
        // The skipping reads a fraction of the 96 candidates the exhaustive re-rank reads.
        assert!(
            r2 - r1 > 2 * (r1 - r0).max(1),
            "reads: skipping {} vs all {}",
            r1 - r0,
            r2 - r1
        );
        let exact = exact_ids(&s, &qv, k);
        found_fast += fast.iter().filter(|h| exact.contains(&h.id)).count();
        found_all += all.iter().filter(|h| exact.contains(&h.id)).count();
        same += usize::from(fast.iter().map(|h| h.id).eq(all.iter().map(|h| h.id)));
        assert!(fast.windows(2).all(|w| w[0].score >= w[1].score));
    }
    assert!(
        same as u64 >= nq - 2,
        "skipping changed {} of {nq} answers",
        nq as usize - same
    );
    assert!(
        found_fast + 3 >= found_all,
        "recall {found_fast} vs {found_all}"
    );
    // And the sketch picks well: 20 reads at most give (nearly) the recall of all 96.
    let mut found_20 = 0;
    for q in 0..nq {
        let qv = vector(77, 500_000 + q, dim);
        let p = SearchParams {
            ef: 96,
            candidates: Some(20),
            ..Default::default()
        };
        let exact = exact_ids(&s, &qv, k);
        found_20 += s
            .search(&qv, k, &p)
            .unwrap()
            .iter()
            .filter(|h| exact.contains(&h.id))
            .count();
    }
    let recall_all = found_all as f64 / (nq as f64 * k as f64);
    let recall_20 = found_20 as f64 / (nq as f64 * k as f64);
    assert!(recall_all >= 0.9, "recall with the whole beam {recall_all}");
    assert!(
        recall_20 >= recall_all - 0.02,
        "recall@20 reads {recall_20} vs whole beam {recall_all}"
    );
}

#[test]
fn upsert_delete_filter_and_kv() {
    let (_d, path) = tmp("u.redb");
    let mut s = Store::open(&path, settings(DIM)).unwrap();
    s.commit(batch(2, 0..4000, DIM)).unwrap();
    // delete 0..100 and replace 100..200 with other vectors
    let mut b = Batch::new();
    for id in 0..100 {
        b.delete(id);
    }
    for id in 100..200u64 {
        b.upsert(id, vector(77, id, DIM), b"new".to_vec());
    }
    b.kv_put("paths", b"/x/a.jpg".to_vec(), b"1".to_vec());
    b.kv_put("paths", b"/x/b.jpg".to_vec(), b"2".to_vec());
    b.kv_put("paths", b"/y/c.jpg".to_vec(), b"3".to_vec());
    s.commit(b).unwrap();
    assert_eq!(s.len(), 3900);
    for id in 0..10u64 {
        // searching for a deleted vector never returns it
        let hits = s
            .search(&vector(2, id, DIM), 10, &SearchParams::default())
            .unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.id >= 100));
        // a replaced vector is not found by its old value, the new one is
        let old = s
            .search(&vector(2, 100 + id, DIM), 10, &SearchParams::default())
            .unwrap();
        assert!(old.iter().all(|h| h.id != 100 + id || h.score < 0.999));
        let new = s
            .search(&vector(77, 100 + id, DIM), 1, &SearchParams::default())
            .unwrap();
        assert_eq!(new[0].id, 100 + id);
        assert!(new[0].score > 0.999);
    }
    assert_eq!(s.get_meta(150).unwrap().unwrap(), b"new");
    assert_eq!(s.get_meta(50).unwrap(), None);
    // filter: only ids divisible by 97 (41 of them live) -> k results when they exist
    let f = |id: u64| id.is_multiple_of(97);
    let p = SearchParams {
        filter: Some(&f),
        ..Default::default()
    };
    let hits = s.search(&vector(5, 123456, DIM), 10, &p).unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| h.id.is_multiple_of(97) && h.id >= 100));
    // filter matching 3 live items: all 3 come back
    let g = |id: u64| id == 500 || id == 600 || id == 700 || id == 5;
    let p = SearchParams {
        filter: Some(&g),
        ..Default::default()
    };
    let hits = s.search(&vector(5, 1, DIM), 10, &p).unwrap();
    let got: HashSet<u64> = hits.iter().map(|h| h.id).collect();
    assert_eq!(got, HashSet::from([500, 600, 700]));
    // kv
    assert_eq!(s.kv_get("paths", b"/x/b.jpg").unwrap().unwrap(), b"2");
    assert_eq!(s.kv_get("nope", b"k").unwrap(), None);
    let scan = s.kv_scan_prefix("paths", b"/x/").unwrap();
    assert_eq!(scan.len(), 2);
    let mut b = Batch::new();
    b.kv_delete("paths", b"/x/a.jpg".to_vec());
    s.commit(b).unwrap();
    assert_eq!(s.kv_scan_prefix("paths", b"/x/").unwrap().len(), 1);
    // persistence of all of it
    drop(s);
    let s = Store::open(&path, settings(DIM)).unwrap();
    assert_eq!(s.len(), 3900);
    let hits = s
        .search(&vector(2, 3, DIM), 10, &SearchParams::default())
        .unwrap();
    assert!(hits.iter().all(|h| h.id >= 100));
    assert_eq!(s.kv_get("paths", b"/y/c.jpg").unwrap().unwrap(), b"3");
}

#[test]
fn compaction_drops_tombstones_and_keeps_results() {
    let (_d, path) = tmp("c.redb");
    let mut st = settings(DIM);
    st.compact_threshold = 0.3;
    let mut s = Store::open(&path, st.clone()).unwrap();
    s.commit(batch(3, 0..3000, DIM)).unwrap();
    let mut b = Batch::new();
    for id in 0..800 {
        b.delete(id);
    }
    s.commit(b).unwrap();
    assert_eq!(s.stats().unwrap().tombstones, 800);
    let mut b = Batch::new();
    for id in 800..1000 {
        b.delete(id);
    }
    s.commit(b).unwrap(); // 1000/3000 > 0.3 -> compacted automatically
    let stats = s.stats().unwrap();
    assert_eq!((stats.tombstones, stats.nodes, stats.live), (0, 2000, 2000));
    let hits = s
        .search(&vector(3, 1500, DIM), 5, &SearchParams::default())
        .unwrap();
    assert_eq!(hits[0].id, 1500);
    drop(s);
    let s = Store::open(&path, st).unwrap();
    assert_eq!(s.len(), 2000);
    assert_eq!(
        s.search(&vector(3, 2500, DIM), 1, &SearchParams::default())
            .unwrap()[0]
            .id,
        2500
    );
    assert_eq!(s.get_meta(2500).unwrap().unwrap(), 2500u64.to_le_bytes());
}

/// Compaction without tombstones keeps the graph and only renumbers nodes (locality order):
/// every search gives the same ids and scores before, after, and after reopening, and the
/// items' metadata, vectors and further upserts still work.
#[test]
fn compaction_renumbering_changes_no_result() {
    let (_d, path) = tmp("r.redb");
    let st = settings(DIM);
    let mut s = Store::open(&path, st.clone()).unwrap();
    s.commit(batch(5, 0..4000, DIM)).unwrap();
    let p = SearchParams::default();
    let queries: Vec<Vec<f32>> = (0..40).map(|i| vector(6, i, DIM)).collect();
    let before: Vec<_> = queries
        .iter()
        .map(|q| s.search(q, 10, &p).unwrap())
        .collect();
    let v7 = s.get_vector(7).unwrap().unwrap();
    s.compact().unwrap();
    let stats = s.stats().unwrap();
    assert_eq!((stats.tombstones, stats.nodes, stats.live), (0, 4000, 4000));
    let after: Vec<_> = queries
        .iter()
        .map(|q| s.search(q, 10, &p).unwrap())
        .collect();
    assert_eq!(before, after);
    drop(s);
    let mut s = Store::open(&path, st).unwrap();
    let reopened: Vec<_> = queries
        .iter()
        .map(|q| s.search(q, 10, &p).unwrap())
        .collect();
    assert_eq!(before, reopened);
    assert_eq!(s.get_vector(7).unwrap().unwrap(), v7);
    assert_eq!(s.get_meta(3999).unwrap().unwrap(), 3999u64.to_le_bytes());
    s.commit(batch(5, 4000..4100, DIM)).unwrap();
    assert_eq!(s.search(&vector(5, 4050, DIM), 1, &p).unwrap()[0].id, 4050);
}

#[test]
fn bad_inputs_write_nothing() {
    let (_d, path) = tmp("b.redb");
    let mut s = Store::open(&path, settings(DIM)).unwrap();
    s.commit(batch(4, 0..10, DIM)).unwrap();
    let cases: Vec<(Batch, &str)> = vec![
        (
            {
                let mut b = batch(4, 100..105, DIM);
                b.upsert(200, vec![1.0; DIM - 1], vec![]);
                b
            },
            "dimension",
        ),
        (
            {
                let mut b = batch(4, 100..105, DIM);
                let mut v = vec![1.0; DIM];
                v[3] = f32::NAN;
                b.upsert(200, v, vec![]);
                b
            },
            "NaN",
        ),
        (
            {
                let mut b = batch(4, 100..105, DIM);
                let mut v = vec![1.0; DIM];
                v[5] = f32::INFINITY;
                b.upsert(200, v, vec![]);
                b
            },
            "NaN",
        ),
        (
            {
                let mut b = batch(4, 100..105, DIM);
                b.upsert(200, vec![0.0; DIM], vec![]);
                b
            },
            "zero",
        ),
        (
            {
                let mut b = batch(4, 100..105, DIM);
                b.upsert(101, vector(4, 1, DIM), vec![]);
                b
            },
            "more than once",
        ),
        (
            {
                let mut b = batch(4, 100..105, DIM);
                b.delete(102);
                b
            },
            "more than once",
        ),
        (
            {
                let mut b = batch(4, 100..105, DIM);
                b.kv_put("bad ns!", vec![], vec![]);
                b
            },
            "namespace",
        ),
    ];
    for (b, what) in cases {
        let e = s.commit(b).unwrap_err();
        assert!(e.to_string().contains(what), "{e} should mention {what}");
        assert_eq!(s.len(), 10);
        assert_eq!(s.get_meta(100).unwrap(), None);
    }
    // query errors too
    assert!(matches!(
        s.search(&[1.0; 3], 5, &SearchParams::default()),
        Err(IndexError::WrongDimension { .. })
    ));
    assert!(matches!(
        s.search(&vec![0.0; DIM], 5, &SearchParams::default()),
        Err(IndexError::ZeroVector { .. })
    ));
    drop(s);
    let s = Store::open(&path, settings(DIM)).unwrap();
    assert_eq!(s.len(), 10);
}

#[test]
fn identity_and_format_are_checked() {
    let (_d, path) = tmp("i.redb");
    Store::open(&path, settings(DIM)).unwrap();
    let other = StoreSettings::new("other-model", "fp-2", DIM);
    let e = Store::open(&path, other).err().unwrap();
    assert!(matches!(e, IndexError::ModelMismatch { .. }), "{e}");
    assert!(e.to_string().contains("test-model@fp-1"));
    let mut d = settings(DIM);
    d.ann_dim = 48;
    assert!(matches!(
        Store::open(&path, d).err().unwrap(),
        IndexError::SettingsMismatch { .. }
    ));
    // forge an unknown format version with plain redb
    {
        let db = redb::Database::create(&path).unwrap();
        let t = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut m = t.open_table(def).unwrap();
            m.insert("format_version", 99u64.to_le_bytes().as_slice())
                .unwrap();
        }
        t.commit().unwrap();
    }
    let e = Store::open(&path, settings(DIM)).err().unwrap();
    assert!(
        matches!(e, IndexError::UnsupportedFormat { found: 99, .. }),
        "{e}"
    );
    let e = Store::open_read_only(&path).err().unwrap();
    assert!(
        matches!(e, IndexError::UnsupportedFormat { found: 99, .. }),
        "{e}"
    );
    // a redb file that is not a store
    let (_d2, p2) = tmp("x.redb");
    drop(redb::Database::create(&p2).unwrap());
    assert!(matches!(
        Store::open_read_only(&p2).err().unwrap(),
        IndexError::NotAStore { .. }
    ));
    assert!(matches!(
        Store::open_read_only(&p2.with_extension("missing"))
            .err()
            .unwrap(),
        IndexError::NotAStore { .. }
    ));
}

#[test]
fn reader_follows_writer() {
    let (_d, path) = tmp("r.redb");
    let mut w = Store::open(&path, settings(DIM)).unwrap();
    w.commit(batch(6, 0..3000, DIM)).unwrap();
    let r = Store::open_read_only(&path).unwrap();
    assert_eq!(r.len(), 3000);
    assert!(matches!(r.kv_get("a", b"b"), Ok(None)));
    w.commit(batch(6, 3000..3500, DIM)).unwrap();
    let mut b = Batch::new();
    b.delete(3100);
    w.commit(b).unwrap();
    assert_eq!(r.len(), 3499);
    assert_eq!(
        r.search(&vector(6, 3200, DIM), 1, &SearchParams::default())
            .unwrap()[0]
            .id,
        3200
    );
    assert!(r
        .search(&vector(6, 3100, DIM), 10, &SearchParams::default())
        .unwrap()
        .iter()
        .all(|h| h.id != 3100));
    let mut rb = Batch::new();
    rb.delete(1);
    let mut r = r;
    assert!(matches!(r.commit(rb), Err(IndexError::ReadOnly { .. })));
    // a second writer handle is refused
    assert!(matches!(
        Store::open(&path, settings(DIM)).err().unwrap(),
        IndexError::Busy { .. }
    ));
}

/// `tests/data/store-v1.redb` was written by format version 1 (whole f16 vectors, 127 per value;
/// commit 17055b4) with `settings(64)`: ids 0..2400 = `vector(41, id, 64)` in two commits, then
/// every tenth id deleted and `kv_put("files", "a.jpg", "meta-a")` in a third, then vacuumed.
#[test]
fn format_v1_store_is_upgraded_when_opened_for_writing() {
    let (_d, path) = tmp("v1.redb");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/store-v1.redb");
    std::fs::copy(&fixture, &path).unwrap();
    // Reading it as it is: refused, saying how to upgrade; the file is left alone.
    let e = Store::open_read_only(&path).err().unwrap();
    assert!(
        matches!(e, IndexError::UpgradeNeeded { found: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("open it once for writing"), "{e}");
    assert!(
        std::fs::read(&path).unwrap() == std::fs::read(&fixture).unwrap(),
        "a read-only open changed the file"
    );
    let live: Vec<u64> = (0..2400).filter(|id| id % 10 != 0).collect();
    let check = |s: &Store| {
        assert_eq!(s.len(), live.len());
        assert_eq!(s.kv_get("files", b"a.jpg").unwrap().unwrap(), b"meta-a");
        assert_eq!(s.get_meta(7).unwrap().unwrap(), 7u64.to_le_bytes());
        assert_eq!(s.get_meta(10).unwrap(), None);
        let v = s.get_vector(7).unwrap().unwrap();
        let mut want = vector(41, 7, 64);
        jsearch_index::vecmath::normalize(&mut want);
        assert!(v.iter().zip(&want).all(|(a, b)| (a - b).abs() < 2e-3));
        // Every vector came across: the store's exact and graph searches agree with a brute
        // force over the regenerated vectors.
        let base: Vec<(u64, Vec<f32>)> = live
            .iter()
            .map(|&id| {
                let mut v = vector(41, id, 64);
                jsearch_index::vecmath::normalize(&mut v);
                (id, v)
            })
            .collect();
        let (mut exact_found, mut graph_found) = (0, 0);
        for q in 0..30 {
            let mut qv = vector(5, 90_000 + q, 64);
            jsearch_index::vecmath::normalize(&mut qv);
            let mut truth: Vec<(f32, u64)> = base
                .iter()
                .map(|(id, v)| (v.iter().zip(&qv).map(|(a, b)| a * b).sum(), *id))
                .collect();
            truth.sort_by(|a, b| b.0.total_cmp(&a.0));
            let top: HashSet<u64> = truth[..10].iter().map(|t| t.1).collect();
            let exact = s.exact_search(&qv, 10, None).unwrap();
            for h in &exact {
                let t = truth.iter().find(|t| t.1 == h.id).unwrap();
                assert!((t.0 - h.score).abs() < 2e-3, "{} vs {}", t.0, h.score);
            }
            exact_found += exact.iter().filter(|h| top.contains(&h.id)).count();
            let got = s.search(&qv, 10, &SearchParams::default()).unwrap();
            graph_found += got.iter().filter(|h| top.contains(&h.id)).count();
        }
        assert!(
            exact_found >= 295,
            "exact search found {exact_found} of 300"
        );
        assert!(
            graph_found >= 285,
            "graph search found {graph_found} of 300"
        );
    };
    // Another model's writer: refused as for a current store, and nothing is upgraded.
    let e = Store::open(&path, StoreSettings::new("other-model", "fp-2", 64))
        .err()
        .unwrap();
    assert!(matches!(e, IndexError::ModelMismatch { .. }), "{e}");
    let e = Store::open_read_only(&path).err().unwrap();
    assert!(
        matches!(e, IndexError::UpgradeNeeded { found: 1, .. }),
        "{e}"
    );
    {
        let mut s = Store::open(&path, settings(64)).unwrap();
        check(&s);
        // and it takes new commits
        s.commit(batch(41, 5000..5010, 64)).unwrap();
        assert_eq!(s.len(), live.len() + 10);
    }
    let r = Store::open_read_only(&path).unwrap();
    assert_eq!(r.len(), live.len() + 10);
    assert_eq!(r.get_meta(5003).unwrap().unwrap(), 5003u64.to_le_bytes());
}

#[test]
fn store_without_a_tail_works() {
    // dim 32: the graph holds all 32 dimensions (default ann_dim), nothing is left for the tails
    // table, and every score comes from the heads alone.
    let (dim, n) = (32, 4500u64);
    let (_d, path) = tmp("notail.redb");
    let mut s = Store::open(&path, settings(dim)).unwrap();
    assert_eq!(s.settings().ann_dim, dim);
    s.commit(batch(8, 0..n, dim)).unwrap();
    let mut b = Batch::new();
    (0..n).step_by(3).for_each(|id| b.delete(id));
    s.commit(b).unwrap();
    s.compact().unwrap();
    drop(s);
    let s = Store::open_read_only(&path).unwrap();
    assert_eq!(
        s.len(),
        3000,
        "above the exact-search size: the graph answers"
    );
    let v = s.get_vector(7).unwrap().unwrap();
    let mut want = vector(8, 7, dim);
    jsearch_index::vecmath::normalize(&mut want);
    assert!(v.iter().zip(&want).all(|(a, b)| (a - b).abs() < 2e-3));
    let mut found = 0;
    for q in 0..20 {
        let qv = vector(9, 50_000 + q, dim);
        let exact = exact_ids(&s, &qv, 10);
        assert!(exact.iter().all(|id| id % 3 != 0));
        let got = s.search(&qv, 10, &SearchParams::default()).unwrap();
        found += got.iter().filter(|h| exact.contains(&h.id)).count();
    }
    assert!(found >= 190, "found {found} of 200");
    assert_eq!(s.stats().unwrap().rerank_reads, 0);
}
