//! Cross-process behaviour: a writer killed at random points leaves the last commit; a second
//! writer is refused with `Busy` (no hang); readers in another process follow a writer.
//!
//! The test binary re-runs itself as the child process (`child_entry` with an env variable).

mod common;
use common::*;
use jsearch_index::{Batch, IndexError, SearchParams, Store};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DIM: usize = 32;
const PER_BATCH: u64 = 40;
const ENV: &str = "JSEARCH_INDEX_TEST_CHILD";

/// Ids live after batches 0..=last were committed.
fn expected_live(last: Option<u64>) -> Vec<u64> {
    let Some(last) = last else { return Vec::new() };
    let mut live = std::collections::BTreeSet::new();
    for b in 0..=last {
        live.extend(b * PER_BATCH..(b + 1) * PER_BATCH);
        if b % 3 == 2 {
            for id in (b - 1) * PER_BATCH..(b - 1) * PER_BATCH + 10 {
                live.remove(&id);
            }
        }
    }
    live.into_iter().collect()
}

fn batch_for(b: u64) -> Batch {
    let mut batch = common::batch(11, b * PER_BATCH..(b + 1) * PER_BATCH, DIM);
    if b % 3 == 2 {
        for id in (b - 1) * PER_BATCH..(b - 1) * PER_BATCH + 10 {
            batch.delete(id);
        }
    }
    batch.kv_put("progress", b"last".to_vec(), b.to_le_bytes().to_vec());
    batch
}

fn last_batch(s: &Store) -> Option<u64> {
    s.kv_get("progress", b"last")
        .unwrap()
        .map(|v| u64::from_le_bytes(v.try_into().unwrap()))
}

/// Child process body (no-op when run as a normal test).
#[test]
fn child_entry() {
    let Ok(spec) = std::env::var(ENV) else { return };
    let (mode, path) = spec.split_once(':').unwrap();
    let path = std::path::Path::new(path);
    match mode {
        "crash" => {
            let mut s = Store::open(path, settings(DIM)).unwrap();
            let mut b = last_batch(&s).map_or(0, |l| l + 1);
            println!("ready");
            loop {
                s.commit(batch_for(b)).unwrap();
                b += 1;
            }
        }
        "hold" => {
            let mut s = Store::open(path, settings(DIM)).unwrap();
            s.commit(common::batch(12, 0..100, DIM)).unwrap();
            println!("ready");
            std::thread::sleep(Duration::from_millis(1500));
            s.commit(common::batch(12, 100..200, DIM)).unwrap();
            println!("committed");
            std::thread::sleep(Duration::from_millis(1500));
        }
        "repair" => {
            println!("ready");
            Store::repair(path).unwrap();
            println!("repaired");
        }
        _ => panic!("unknown child mode"),
    }
}

fn spawn(mode: &str, path: &std::path::Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV, format!("{mode}:{}", path.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_line(child: &mut std::process::Child, want: &str) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child exited before {want:?}"
        );
        if line.trim().ends_with(want) {
            return out;
        }
    }
}

#[test]
fn killed_writer_leaves_last_commit() {
    let (_d, path) = tmp("crash.redb");
    // pseudo-random kill delays (ms after the child is ready), reproducible
    let mut r = 0x2545_F491_4F6C_DD1Du64;
    let mut max_seen = None;
    let mut needed_recovery = 0;
    for round in 0..25 {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        let delay = 5 + r % 250;
        let mut child = spawn("crash", &path);
        let _out = wait_line(&mut child, "ready");
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        // A reader that does not write reads the last commit as it stands, recovering in
        // memory when the file needs it, and leaves the file as it was.
        let before = std::fs::read(&path).unwrap();
        let r = match Store::open_read_only(&path) {
            Ok(r) => r,
            Err(IndexError::NeedsRecovery { .. }) => {
                needed_recovery += 1;
                Store::open_recovered(&path)
                    .unwrap_or_else(|e| panic!("round {round}: in-memory recovery failed: {e}"))
            }
            Err(e) => panic!("round {round}: {e}"),
        };
        let read_live = expected_live(last_batch(&r));
        assert_eq!(r.ids().unwrap(), read_live, "round {round}: reader");
        drop(r);
        assert!(
            std::fs::read(&path).unwrap() == before,
            "round {round}: a reader wrote"
        );
        let s = Store::open(&path, settings(DIM))
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let last = last_batch(&s);
        let live = expected_live(last);
        assert_eq!(
            s.len(),
            live.len(),
            "round {round}: torn batch (last {last:?})"
        );
        assert_eq!(s.ids().unwrap(), live, "round {round}");
        if let Some(l) = last {
            // the newest committed batch is fully searchable; the next one is absent
            for id in [l * PER_BATCH, (l + 1) * PER_BATCH - 1] {
                let hits = s
                    .search(&vector(11, id, DIM), 1, &SearchParams::default())
                    .unwrap();
                assert_eq!(hits[0].id, id, "round {round}");
            }
            assert_eq!(s.get_meta((l + 1) * PER_BATCH).unwrap(), None);
        }
        max_seen = last;
    }
    assert!(
        max_seen.unwrap_or(0) > 5,
        "the child committed too little to test anything: {max_seen:?}"
    );
    assert!(
        needed_recovery > 0,
        "no kill left the file needing recovery: the in-memory recovery went untested"
    );
}

#[test]
fn second_writer_is_busy_and_readers_follow() {
    let (_d, path) = tmp("busy.redb");
    let mut child = spawn("hold", &path);
    let mut out = wait_line(&mut child, "ready");
    let t = Instant::now();
    let e = Store::open(&path, settings(DIM))
        .err()
        .expect("second writer must be refused");
    assert!(matches!(e, IndexError::Busy { .. }), "{e}");
    assert!(e.to_string().contains("busy"));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "refusal must not wait"
    );
    // a reader in this process sees the child's commits as they happen
    let r = Store::open_read_only(&path).unwrap();
    assert_eq!(r.len(), 100);
    let mut line = String::new();
    while !line.trim().ends_with("committed") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0);
    }
    assert_eq!(r.len(), 200);
    let hits = r
        .search(&vector(12, 150, DIM), 1, &SearchParams::default())
        .unwrap();
    assert_eq!(hits[0].id, 150);
    child.wait().unwrap();
    drop(r);
    // once the writer is gone, writing works again
    let mut s = Store::open(&path, settings(DIM)).unwrap();
    s.commit(common::batch(12, 200..210, DIM)).unwrap();
    assert_eq!(s.len(), 210);
}

/// A damaged store: 3000 items and 200 key-value rows, one items row and one tail chunk flipped
/// through redb itself.
fn damaged_store(path: &std::path::Path) {
    use redb::ReadableTable;
    {
        // 64-d: a 32-d store has no tails (its graph holds all dimensions).
        let mut s = Store::open(path, settings(64)).unwrap();
        let mut b = common::batch(13, 0..3000, 64);
        for i in 0..200u32 {
            b.kv_put("files", format!("f{i:04}").into_bytes(), vec![1; 30]);
        }
        s.commit(b).unwrap();
    }
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let items: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("items");
        let tails: redb::TableDefinition<u32, &[u8]> = redb::TableDefinition::new("tails");
        let mut t = txn.open_table(items).unwrap();
        let mut v = t.get(77).unwrap().unwrap().value().to_vec();
        v[5] ^= 1;
        t.insert(77, v.as_slice()).unwrap();
        let mut t = txn.open_table(tails).unwrap();
        let mut v = t.get(5).unwrap().unwrap().value().to_vec();
        v[9] ^= 1;
        t.insert(5, v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

/// `repair` killed at pseudo-random moments: there is always a store at the path (the damaged
/// one or the rebuilt one), and repairing again gives what an uninterrupted repair gives.
#[test]
fn killed_repair_leaves_a_store_and_finishes_on_the_next_run() {
    let (_d, dir) = tmp("repair");
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = dir.join("damaged.redb");
    damaged_store(&fixture);
    let reference = dir.join("reference.redb");
    std::fs::copy(&fixture, &reference).unwrap();
    let t = Instant::now();
    let want = Store::repair(&reference).unwrap();
    let full = t.elapsed();
    let want_ids = Store::open_read_only(&reference).unwrap().ids().unwrap();
    assert!(want.lost_items.contains(&77), "{want:?}");
    let path = dir.join("s.redb");
    let mut r = 0x9E37_79B9_7F4A_7C15u64;
    let (mut before, mut after) = (0, 0);
    for round in 0..12 {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        let _ = std::fs::remove_file(&path);
        std::fs::copy(&fixture, &path).unwrap();
        let mut child = spawn("repair", &path);
        let _out = wait_line(&mut child, "ready");
        let delay = r % (full.as_millis() as u64 * 2 + 20);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        child.wait().unwrap();
        assert!(
            path.exists(),
            "round {round}: no store at the path after the kill"
        );
        if Store::check(&path).unwrap().is_healthy() {
            after += 1;
        } else {
            before += 1;
        }
        Store::repair(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(Store::check(&path).unwrap().is_healthy(), "round {round}");
        let s = Store::open_read_only(&path).unwrap();
        assert_eq!(s.ids().unwrap(), want_ids, "round {round}");
        assert_eq!(
            s.kv_scan_prefix("files", b"").unwrap().len(),
            200,
            "round {round}"
        );
    }
    println!("killed repairs: {before} left the damaged store, {after} the rebuilt one");
}
