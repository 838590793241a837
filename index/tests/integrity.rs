//! Damaged files: random bit flips and truncations of a real store never panic and never give a
//! wrong answer; either the answer is the undamaged store's, or an error names the damage.
//! `JSEARCH_FUZZ_CASES` sets the number of damaged copies (default 120; the `store_fuzz` bench
//! runs thousands).

mod common;
use common::*;
use jsearch_index::{IndexError, SearchParams, Store};

const DIM: usize = 64;

fn splitmix(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Everything a reader answers from the store: graph and exact searches with their metadata and
/// vectors, and a whole key-value namespace.
type Answers = Vec<(Vec<(u64, u32)>, Vec<Vec<u8>>, Vec<Vec<u32>>)>;
/// The answers and a scanned namespace.
type Everything = (Answers, Vec<(Vec<u8>, Vec<u8>)>);

fn answers(s: &Store) -> Result<Everything, IndexError> {
    let mut out = Vec::new();
    for q in 0..6 {
        let qv = vector(7, 500_000 + q, DIM);
        for hits in [
            s.search(&qv, 10, &SearchParams::default())?,
            s.exact_search(&qv, 10, None)?,
        ] {
            let mut metas = Vec::new();
            let mut vecs = Vec::new();
            for h in &hits {
                metas.push(s.get_meta(h.id)?.unwrap_or_default());
                let v = s.get_vector(h.id)?.unwrap_or_default();
                vecs.push(v.iter().map(|x| x.to_bits()).collect());
            }
            let ids = hits.iter().map(|h| (h.id, h.score.to_bits())).collect();
            out.push((ids, metas, vecs));
        }
    }
    Ok((out, s.kv_scan_prefix("files", b"")?))
}

fn build(path: &std::path::Path) {
    let mut s = Store::open(path, settings(DIM)).unwrap();
    s.commit(batch(3, 0..1500, DIM)).unwrap();
    let mut b = batch(3, 1500..2000, DIM);
    for i in 0..300u32 {
        b.kv_put("files", format!("f{i:04}").into_bytes(), vec![i as u8; 40]);
    }
    b.delete(17);
    s.commit(b).unwrap();
}

#[derive(Debug, Default)]
struct Tally {
    same: usize,
    error: usize,
    wrong: Vec<String>,
    panicked: Vec<String>,
}

/// Opens a damaged copy read-only and compares its answers with the intact store's.
fn trial(path: &std::path::Path, want: &Everything, what: &str, t: &mut Tally) {
    let got = std::panic::catch_unwind(|| Store::open_read_only(path).and_then(|s| answers(&s)));
    match got {
        Ok(Ok(a)) if &a == want => t.same += 1,
        Ok(Ok(_)) => t.wrong.push(what.to_string()),
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()) || msg.contains("storage"),
                "{msg}"
            );
            t.error += 1;
        }
        Err(_) => t.panicked.push(what.to_string()),
    }
}

/// The number of damaged copies to try.
fn cases() -> usize {
    std::env::var("JSEARCH_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

#[test]
fn bit_flips_and_truncations_give_the_right_answer_or_an_error() {
    let (_d, path) = tmp("s.redb");
    build(&path);
    let want = answers(&Store::open_read_only(&path).unwrap()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let copy = path.with_extension("damaged");
    let mut rng = 0x5eed_u64;
    let mut tally = Tally::default();
    let n = cases();
    // Quiet the default hook: a panic inside the storage layer is caught and counted.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for case in 0..n {
        let mut b = bytes.clone();
        let what = if case % 5 == 4 {
            let len = (splitmix(&mut rng) % b.len() as u64) as usize;
            b.truncate(len);
            format!("truncated to {len} bytes")
        } else {
            let flips = 1 + (splitmix(&mut rng) % 4) as usize;
            let mut at = Vec::new();
            for _ in 0..flips {
                let bit = splitmix(&mut rng) % (b.len() as u64 * 8);
                b[(bit / 8) as usize] ^= 1 << (bit % 8);
                at.push(bit);
            }
            format!("bits {at:?} flipped")
        };
        std::fs::write(&copy, &b).unwrap();
        trial(&copy, &want, &what, &mut tally);
    }
    std::panic::set_hook(hook);
    println!(
        "{n} damaged copies: {} same answer, {} errors, {} wrong, {} panics",
        tally.same,
        tally.error,
        tally.wrong.len(),
        tally.panicked.len()
    );
    assert!(tally.wrong.is_empty(), "wrong answers: {:?}", tally.wrong);
    assert!(tally.panicked.is_empty(), "panics: {:?}", tally.panicked);
    assert_eq!(tally.same + tally.error, n);
}

/// Rewrites one value through redb itself (so redb's own page checksums stay valid: damage the
/// storage layer cannot see), flipping bit 0 of byte `at`.
fn flip_value<K: redb::Key + 'static>(
    path: &std::path::Path,
    table: redb::TableDefinition<K, &[u8]>,
    key: K::SelfType<'_>,
    at: usize,
) where
    for<'a> K::SelfType<'a>: Clone,
{
    use redb::ReadableTable;
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(table).unwrap();
        let mut v = t.get(key.clone()).unwrap().unwrap().value().to_vec();
        v[at] ^= 1;
        t.insert(key, v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_damaged_row_is_an_error_naming_it() {
    let (_d, path) = tmp("s.redb");
    build(&path);
    let items: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("items");
    let tails: redb::TableDefinition<u32, &[u8]> = redb::TableDefinition::new("tails");
    let nodes: redb::TableDefinition<u32, &[u8]> = redb::TableDefinition::new("nodes");
    let kv: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv:files");
    let copy = |name: &str| {
        let p = path.with_extension(name);
        std::fs::copy(&path, &p).unwrap();
        p
    };
    let p = copy("items");
    flip_value(&p, items, 42, 6);
    let s = Store::open_read_only(&p).unwrap();
    let e = s.get_meta(42).unwrap_err().to_string();
    assert!(
        e.contains("items row 42 fails its checksum") && e.contains("jsearch check"),
        "{e}"
    );
    assert_eq!(s.get_meta(43).unwrap().unwrap(), 43u64.to_le_bytes());

    let p = copy("tails");
    flip_value(&p, tails, 3, 100);
    let e = Store::open_read_only(&p).err().unwrap().to_string();
    assert!(e.contains("tails row 3 fails its checksum"), "{e}");

    let p = copy("nodes");
    flip_value(&p, nodes, 9, 0);
    let e = Store::open_read_only(&p).err().unwrap().to_string();
    assert!(e.contains("nodes row 9 fails its checksum"), "{e}");

    let p = copy("kv");
    flip_value(&p, kv, b"f0007".as_slice(), 3);
    let s = Store::open_read_only(&p).unwrap();
    let e = s.kv_get("files", b"f0007").unwrap_err().to_string();
    assert!(
        e.contains("kv:files row \"f0007\" fails its checksum"),
        "{e}"
    );
    assert!(s.kv_scan_prefix("files", b"").is_err());
    assert_eq!(s.kv_get("files", b"f0008").unwrap().unwrap(), vec![8u8; 40]);
}

#[test]
fn check_lists_every_damaged_row_and_repair_keeps_the_rest() {
    let (_d, path) = tmp("s.redb");
    build(&path);
    let healthy = Store::check(&path).unwrap();
    assert!(healthy.is_healthy(), "{:?}", healthy.damage);
    assert_eq!(healthy.items, 1999);
    assert_eq!(healthy.kv_rows, 300);
    let items: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("items");
    let tails: redb::TableDefinition<u32, &[u8]> = redb::TableDefinition::new("tails");
    let kv: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv:files");
    flip_value(&path, items, 42, 6);
    flip_value(&path, tails, 3, 10);
    flip_value(&path, kv, b"f0007".as_slice(), 3);
    let r = Store::check(&path).unwrap();
    let all = r.damage.join("\n");
    for needle in [
        "items row 42 fails its checksum",
        "tails row 3 fails its checksum",
        "kv:files row \"f0007\" fails its checksum",
    ] {
        assert!(all.contains(needle), "{needle}:\n{all}");
    }
    // The vectors of the tail chunk's nodes are gone with it: their items are listed.
    let before = Store::check(&path).unwrap();
    assert!(!before.is_healthy());
    let rep = Store::repair(&path).unwrap();
    assert!(rep.lost_items.contains(&42), "{rep:?}");
    assert!(rep.lost_items.len() >= 2, "{rep:?}");
    assert_eq!(rep.kept_items + rep.lost_items.len(), 1999);
    assert_eq!(rep.lost_kv, vec!["files: f0007".to_string()]);
    assert_eq!(rep.kept_kv, 299);
    assert!(rep.backup.exists());
    let after = Store::check(&path).unwrap();
    assert!(after.is_healthy(), "{:?}", after.damage);
    let s = Store::open_read_only(&path).unwrap();
    assert_eq!(s.len(), rep.kept_items);
    assert_eq!(s.get_meta(43).unwrap().unwrap(), 43u64.to_le_bytes());
    assert_eq!(s.get_meta(42).unwrap(), None);
    assert_eq!(s.kv_get("files", b"f0008").unwrap().unwrap(), vec![8u8; 40]);
    let qv = vector(7, 500_001, DIM);
    let hits = s.search(&qv, 10, &SearchParams::default()).unwrap();
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| !rep.lost_items.contains(&h.id)));
}
