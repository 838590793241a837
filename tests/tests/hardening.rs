//! The careless and hostile user: patterns that would empty the store, devices and FIFOs,
//! option values out of range, re-run `rm`, catalogs pointing outside their folder, exit codes.
//! Each test reproduces a finding of the hardening issue on the real binary and the toy model.

use std::path::{Path, PathBuf};

use jsearch_tests::*;
use serde_json::Value;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `jsearch ARGS` on `db` and returns (exit code, stderr).
fn status(db: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut c = jsearch(db);
    c.args(args);
    let out = run(c, false);
    (out.status.code(), stderr_of(&out))
}

fn write_notes(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("note_{i:03}.txt"));
            std::fs::write(&p, format!("Notiz {i}: ein roter Kreis")).unwrap();
            p
        })
        .collect()
}

#[test]
fn exclude_patterns_that_would_empty_the_store_are_refused() {
    let dir = tempdir();
    let root = dir.path().join("imgs");
    copy_images(&root, 4);
    let db = dir.path().join("s.jsearch");
    let root_s = root.to_str().unwrap();
    index(&db, &[&root], &[]);
    for bad in ["", " ", "!*.png", "#x"] {
        let (code, err) = status(&db, &["index", root_s, "--exclude", bad]);
        assert_eq!(code, Some(2), "--exclude {bad:?}: {err}");
        assert!(err.contains("--exclude"), "{err}");
        assert_eq!(
            stats(&db)["vectors"],
            4,
            "--exclude {bad:?} changed the store"
        );
    }
    // gitignore semantics: exclude the PNGs, re-include one of them.
    let pngs: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    assert!(pngs.len() >= 2, "{pngs:?}");
    let keep = format!("!{}", pngs[0]);
    let (s, _) = index(&db, &[&root], &["--exclude", "*.png", "--exclude", &keep]);
    assert_eq!(s["removed"], pngs.len() - 1, "{s}");
    assert_eq!(stats(&db)["vectors"], 4 - (pngs.len() - 1));
}

#[test]
fn a_run_that_would_remove_most_of_a_root_asks_for_prune() {
    let dir = tempdir();
    let root = dir.path().join("notes");
    let notes = write_notes(&root, 120);
    let db = dir.path().join("s.jsearch");
    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(s["indexed"], 120, "{s}");
    for p in &notes[..110] {
        std::fs::remove_file(p).unwrap();
    }
    let (code, err) = status(&db, &["index", root.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("would remove 110 of the 120 files") && err.contains("--prune"),
        "{err}"
    );
    assert!(err.contains("note_000.txt"), "names what would go: {err}");
    assert_eq!(stats(&db)["files"], 120, "nothing changed");
    let (s, _) = index(&db, &[&root], &["--prune"]);
    assert_eq!(s["removed"], 110, "{s}");
    assert_eq!(stats(&db)["files"], 10);
}

#[cfg(unix)]
#[test]
fn devices_fifos_and_oversized_files_are_skipped_with_a_message() {
    let dir = tempdir();
    let root = dir.path().join("in");
    copy_images(&root, 1);
    let fifo = root.join("pipe.png");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::write(root.join("big.txt"), "wort ".repeat(300_000)).unwrap();
    let db = dir.path().join("s.jsearch");
    let (s, err) = index(&db, &[&root], &["--max-text-mb", "1"]);
    assert_eq!(s["indexed"], 1, "{s}\n{err}");
    assert_eq!(s["failed"], 2, "{s}\n{err}");
    assert!(err.contains("pipe.png") && err.contains("FIFO"), "{err}");
    assert!(
        err.contains("big.txt") && err.contains("limit of 1.0 MiB for text files"),
        "{err}"
    );
    // Named directly: a device is reported, never read; the run says it failed (3).
    let (code, err) = status(&db, &["index", "/dev/zero"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("/dev/zero") && err.contains("device"), "{err}");
    for args in [
        &["query", "--image", "/dev/zero"][..],
        &["query", "--queries", "/dev/zero"][..],
        &["query", "--image", fifo.to_str().unwrap()][..],
        &["query", "--queries", fifo.to_str().unwrap()][..],
    ] {
        let (code, err) = status(&db, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("not a regular file"), "{args:?}: {err}");
    }
}

#[test]
fn option_values_out_of_range_are_usage_errors() {
    let dir = tempdir();
    let db = dir.path().join("s.jsearch");
    let root = dir.path().join("in");
    copy_images(&root, 1);
    let root_s = root.to_str().unwrap();
    for args in [
        &["index", root_s, "--batch-size", "0"][..],
        &["index", root_s, "--batch-size", "1000000000"][..],
        &["index", root_s, "--batch-size", "18446744073709551615"][..],
        &["index", root_s, "--threads", "100000"][..],
        &["index", root_s, "--max-megapixels", "0"][..],
        &["index", root_s, "--max-megapixels", "NaN"][..],
        &["index", root_s, "--max-text-mb", "0"][..],
        &["query", "x", "--min-score", "NaN"][..],
        &["query", "x", "--min-score", "inf"][..],
        &["query", "x", "--image-weight", "2"][..],
        &["query", "x", "-k", "0"][..],
    ] {
        let (code, err) = status(&db, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid value"), "{args:?}: {err}");
    }
    assert!(!db.exists(), "no usage error created the store");
}

#[test]
fn rm_run_again_finishes_what_it_started() {
    let dir = tempdir();
    let root = dir.path().join("imgs");
    let imgs = copy_images(&root, 3);
    let db = dir.path().join("s.jsearch");
    index(&db, &[&root], &[]);
    let (a, b) = (imgs[0].to_str().unwrap(), imgs[1].to_str().unwrap());
    // As if `rm A B` had been killed after removing A.
    let (code, err) = status(&db, &["rm", a]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = status(&db, &["rm", a, b]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("is not in the store") && err.contains("removed 1 file"),
        "{err}"
    );
    assert_eq!(stats(&db)["vectors"], 1);
}

#[test]
fn catalog_images_stay_inside_the_catalog_folder_and_errors_never_quote_files() {
    let dir = tempdir();
    let shop = dir.path().join("shop");
    let imgs = copy_images(&shop.join("img"), 1);
    let secret = dir.path().join("secret.png");
    std::fs::write(&secret, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    let good = imgs[0].file_name().unwrap().to_string_lossy().into_owned();
    let lines = [
        format!(r#"{{"id": "ok", "title": "roter Kreis", "image": "img/{good}"}}"#),
        r#"{"id": "up", "title": "blaues Quadrat", "image": "../secret.png"}"#.to_string(),
        format!(
            r#"{{"id": "abs", "title": "grünes Dreieck", "image": "{}"}}"#,
            secret.display()
        ),
        r#"{"id": "url", "title": "gelber Stern", "image": "https://example.com/a.png"}"#
            .to_string(),
        r#"{"id": "num", "title": "rosa Herz", "image": 42}"#.to_string(),
    ];
    let cat = shop.join("c.jsonl");
    std::fs::write(&cat, lines.join("\n")).unwrap();
    let db = dir.path().join("s.jsearch");
    let (s, err) = index(&db, &[&cat], &[]);
    assert_eq!(s["problems"], 4, "{s}\n{err}");
    assert!(!err.contains("root:x") && !err.contains("72 6f"), "{err}");
    assert!(err.contains("outside the catalog's folder"), "{err}");
    assert!(
        err.contains("is a URL") && err.contains("is a number"),
        "{err}"
    );
    let hits = query_json(&db, &["roter Kreis", "--type", "product", "-k", "10"]);
    assert_eq!(hits.len(), 5, "every record kept its text");
    let with_image: Vec<&Value> = hits.iter().filter(|h| !h["image"].is_null()).collect();
    assert_eq!(with_image.len(), 1, "{hits:?}");
    assert_eq!(with_image[0]["id"], "ok");
    // --catalog-root widens the folder: the secret is now read, and refused as an image
    // without its bytes in the message.
    let db2 = dir.path().join("s2.jsearch");
    let root_s = dir.path().to_str().unwrap();
    let (_, err) = index(&db2, &[&cat], &["--catalog-root", root_s]);
    assert!(
        err.contains("secret.png") && err.contains("unrecognised"),
        "{err}"
    );
    assert!(!err.contains("root:x") && !err.contains("72 6f"), "{err}");
}

#[test]
fn exit_status_says_what_happened_and_closed_pipes_are_quiet() {
    let dir = tempdir();
    let root = dir.path().join("in");
    copy_images(&root, 2);
    std::fs::write(root.join("broken.png"), b"not a png").unwrap();
    let db = dir.path().join("s.jsearch");
    // Some files failed: 3 (the helper checks 3 against the summary's problems).
    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(
        (s["indexed"].as_u64(), s["failed"].as_u64()),
        (Some(2), Some(1))
    );
    std::fs::remove_file(root.join("broken.png")).unwrap();
    for args in [
        vec!["index", root.to_str().unwrap(), "--json"],
        vec!["stats"],
        vec!["stats", "--json"],
    ] {
        let mut c = jsearch(&db);
        c.args(&args);
        let out = run_with_closed_stdout(c);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("error"), "{err}");
    }
    // An error: 2.
    let (code, err) = status(&dir.path().join("none.jsearch"), &["stats"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn path_filter_matches_folders_not_name_prefixes_and_cosines_stay_in_range() {
    let dir = tempdir();
    let a = dir.path().join("DIR");
    let b = dir.path().join("DIR2");
    copy_images(&a, 2);
    let copied = copy_images(&b, 3);
    let db = dir.path().join("s.jsearch");
    index(&db, &[&a, &b], &[]);
    let a_s = a.to_str().unwrap();
    let hits = query_json(&db, &["roter Kreis", "--path", a_s, "-k", "10"]);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits
        .iter()
        .all(|h| h["path"].as_str().unwrap().starts_with(&format!("{a_s}/"))));
    // A self-match prints a cosine of at most 1.
    let mut c = jsearch(&db);
    c.args(["similar", copied[0].to_str().unwrap(), "--json", "-k", "3"]);
    let out = run(c, true);
    for h in json_lines(&out.stdout) {
        let cos = h["cosine"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&cos), "{h}");
    }
    let mut c = jsearch(&db);
    c.args([
        "query",
        "--image",
        copied[0].to_str().unwrap(),
        "--include-self",
        "--json",
        "-k",
        "1",
    ]);
    let hit = &json_lines(&run(c, true).stdout)[0];
    assert!(hit["cosine"].as_f64().unwrap() <= 1.0, "{hit}");
}

#[cfg(unix)]
#[test]
fn escape_sequences_in_names_and_titles_do_not_reach_the_terminal_raw() {
    let dir = tempdir();
    let root = dir.path().join("in");
    let imgs = copy_images(&root, 1);
    let evil = root.join("evil\x1b[2J.png");
    std::fs::rename(&imgs[0], &evil).unwrap();
    std::fs::write(
        root.join("c.jsonl"),
        "{\"id\": \"p\", \"title\": \"roter \\u001b[31mKreis\"}\n",
    )
    .unwrap();
    let db = dir.path().join("s.jsearch");
    index(&db, &[&root], &[]);
    let mut c = jsearch(&db);
    c.args(["query", "roter Kreis", "-k", "5", "--all"]);
    let out = run(c, true);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains('\x1b'), "{table:?}");
    assert!(table.contains("\\u{1b}"), "{table:?}");
    // JSON escapes them by itself; --paths to a pipe stays byte-exact for xargs.
    let mut c = jsearch(&db);
    c.args([
        "query",
        "roter Kreis",
        "--paths",
        "--type",
        "image",
        "--all",
    ]);
    let out = run(c, true);
    assert!(String::from_utf8_lossy(&out.stdout).contains("evil\x1b[2J.png"));
}

#[cfg(unix)]
#[test]
fn names_that_are_not_utf8_stay_distinct_items_with_their_exact_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempdir();
    let root = dir.path().join("in");
    let imgs = copy_images(&root, 3);
    let names: [&[u8]; 2] = [b"b\xff.png", b"b\xfe.png"];
    for (src, name) in imgs.iter().zip(names) {
        std::fs::rename(src, root.join(OsStr::from_bytes(name))).unwrap();
    }
    let db = dir.path().join("s.jsearch");
    for batch in ["32", "1"] {
        let _ = std::fs::remove_file(&db);
        let (s, err) = index(&db, &[&root], &["--batch-size", batch]);
        assert_eq!(
            (s["indexed"].as_u64(), s["failed"].as_u64()),
            (Some(3), Some(0)),
            "{err}"
        );
        assert_eq!(stats(&db)["vectors"], 3, "batch size {batch}");
    }
    let mut c = jsearch(&db);
    c.args([
        "query", "Kreis", "--paths", "--type", "image", "-k", "10", "--all",
    ]);
    let out = run(c, true);
    let mut printed: Vec<&[u8]> = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    printed.sort();
    assert_eq!(printed.len(), 3);
    for name in names {
        let full = root.join(OsStr::from_bytes(name));
        assert!(
            printed.contains(&full.as_os_str().as_bytes()),
            "{printed:?}"
        );
    }
    // Every printed path exists on disk.
    for p in &printed {
        assert!(Path::new(OsStr::from_bytes(p)).exists());
    }
    let hits = query_json(&db, &["Kreis", "--type", "image", "-k", "10"]);
    let with_bytes: Vec<Vec<u8>> = hits
        .iter()
        .filter_map(|h| h["path_bytes"].as_array())
        .map(|a| a.iter().map(|b| b.as_u64().unwrap() as u8).collect())
        .collect();
    assert_eq!(with_bytes.len(), 2, "{hits:?}");
    for b in &with_bytes {
        assert!(Path::new(OsStr::from_bytes(b)).exists());
    }
    // similar by the exact name.
    let mut c = jsearch(&db);
    c.arg("similar")
        .arg(root.join(OsStr::from_bytes(names[0])))
        .arg("--json");
    let hits = json_lines(&run(c, true).stdout);
    assert_eq!(hits.len(), 2, "the other two images");
}

/// Flips bit 0 of byte `at` of a value through redb itself (damage redb's page checksums do not
/// see, as a bad disk sector under a rewritten page would leave).
fn flip_tail_chunk(db: &Path, chunk: u32, at: usize) {
    use redb::ReadableTable;
    let tails: redb::TableDefinition<u32, &[u8]> = redb::TableDefinition::new("tails");
    let d = redb::Database::open(db).unwrap();
    let txn = d.begin_write().unwrap();
    {
        let mut t = txn.open_table(tails).unwrap();
        let mut v = t.get(chunk).unwrap().unwrap().value().to_vec();
        v[at] ^= 1;
        t.insert(chunk, v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn damage_is_named_checked_and_repaired() {
    let dir = tempdir();
    let root = dir.path().join("in");
    copy_images(&root, 6);
    let db = dir.path().join("s.jsearch");
    index(&db, &[&root], &[]);
    let (code, err) = status(&db, &["check"]);
    assert_eq!(code, Some(0), "{err}");
    flip_tail_chunk(&db, 0, 10);
    // A query that reads the damaged row: an error naming it, never a wrong list.
    let mut c = jsearch(&db);
    c.args([
        "query",
        "--image",
        root.join("img_000.jpg").to_str().unwrap(),
        "-k",
        "6",
    ]);
    let out = run(c, false);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("damaged") && err.contains("jsearch check"),
        "{err}"
    );
    // check lists it; repair rebuilds the rest and names the files to re-index.
    let mut c = jsearch(&db);
    c.arg("check");
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("tails row 0 fails its checksum"),
        "{report}"
    );
    let mut c = jsearch(&db);
    c.args(["repair", "--json"]);
    let r: Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
    let lost = r["lost_vectors"].as_array().unwrap().len();
    assert!(lost >= 1, "{r}");
    assert_eq!(r["reindex"].as_array().unwrap().len(), lost, "{r}");
    assert_eq!(
        r["kept_vectors"].as_u64().unwrap() as usize,
        6 - lost,
        "{r}"
    );
    assert!(Path::new(r["backup"].as_str().unwrap()).exists());
    let (code, err) = status(&db, &["check"]);
    assert_eq!(code, Some(0), "{err}");
    // The next index run encodes exactly what was lost.
    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(s["encoded"].as_u64().unwrap() as usize, lost, "{s}");
    assert_eq!(stats(&db)["vectors"], 6);
    let (code, _) = status(&db, &["check"]);
    assert_eq!(code, Some(0));
    // A truncated copy is named as damaged, not "failed to fill whole buffer".
    let bytes = std::fs::read(&db).unwrap();
    let cut = dir.path().join("cut.jsearch");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for cmd in ["stats", "query"] {
        let args: Vec<&str> = if cmd == "query" {
            vec!["query", "Kreis"]
        } else {
            vec!["stats"]
        };
        let (code, err) = status(&cut, &args);
        assert_eq!(code, Some(2), "{err}");
        assert!(
            err.contains("damaged") || err.contains("truncated"),
            "{cmd}: {err}"
        );
        assert!(
            !err.contains("failed to fill whole buffer") || err.contains("damaged"),
            "{err}"
        );
    }
}

/// A full disk: the index run stops with "disk full (ENOSPC)", what was committed stays readable
/// and healthy, and after space is freed the same run finishes. The disk is a 4 MiB tmpfs in a
/// private mount namespace (`unshare -rm`: no root needed where user namespaces are allowed).
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_is_named_and_loses_nothing() {
    let dir = tempdir();
    let imgs = dir.path().join("imgs");
    copy_images(&imgs, 40);
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let db = disk.join("s.jsearch");
    let log = dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let bin = jsearch_bin();
    let model = toy_model();
    let js = format!(
        "{} --db {} --model {} --device cpu",
        bin.display(),
        db.display(),
        model.display()
    );
    let l = log.display();
    let first: Vec<String> = std::fs::read_dir(&imgs)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().display().to_string()))
        .take(4)
        .collect();
    let script = format!(
        "set -u
mount -t tmpfs -o size=4m tmpfs {disk} || exit 90
{js} index {first} --json > {l}/first.json 2> {l}/first.err
echo $? > {l}/first.code
dd if=/dev/zero of={disk}/filler bs=64k 2> /dev/null
{js} index {imgs} --batch-size 1 --json > {l}/full.json 2> {l}/full.err
echo $? > {l}/full.code
{js} stats --json > {l}/stats.json 2> {l}/stats.err
rm {disk}/filler
{js} check > {l}/check.out 2>&1
echo $? > {l}/check.code
{js} index {imgs} --json > {l}/again.json 2> {l}/again.err
echo $? > {l}/again.code
{js} stats --json > {l}/stats2.json
",
        disk = disk.display(),
        first = first.join(" "),
        imgs = imgs.display(),
    );
    // A user namespace where the kernel allows one, else (as root) a plain mount namespace.
    let mut status = None;
    for flags in ["-rm", "-m"] {
        let st = std::process::Command::new("unshare")
            .args([flags, "sh", "-c", &script])
            .env_remove("JSEARCH_DB")
            .env("HF_HUB_OFFLINE", "1")
            .status()
            .expect("unshare (util-linux) runs the disk-full test in its own mount namespace");
        status = Some(st);
        if log.join("first.code").exists() {
            break;
        }
    }
    let status = status.unwrap();
    assert_ne!(
        status.code(),
        Some(90),
        "mounting a tmpfs in a user namespace failed"
    );
    let read = |f: &str| std::fs::read_to_string(log.join(f)).unwrap_or_default();
    assert_eq!(read("first.code").trim(), "0", "{}", read("first.err"));
    let full_err = read("full.err");
    assert_eq!(read("full.code").trim(), "2", "{full_err}");
    assert!(full_err.contains("disk full (ENOSPC)"), "{full_err}");
    assert!(!full_err.contains("panicked"), "{full_err}");
    let st: Value = serde_json::from_str(&read("stats.json"))
        .unwrap_or_else(|e| panic!("stats after a full disk: {e}: {}", read("stats.err")));
    let kept = st["vectors"].as_u64().unwrap();
    assert!((4..40).contains(&kept), "{st}");
    assert_eq!(read("check.code").trim(), "0", "{}", read("check.out"));
    assert_eq!(read("again.code").trim(), "0", "{}", read("again.err"));
    let st2: Value = serde_json::from_str(&read("stats2.json")).unwrap();
    assert_eq!(st2["vectors"], 40, "{st2}");
}

/// After a killed writer, parallel readers all answer (one may recover the file, the others read
/// the last commit recovered in memory), and a store that cannot be written (read-only file and
/// folder, as a user without write permission) is read as of its last commit.
#[cfg(target_os = "linux")]
#[test]
fn readers_never_fail_because_of_recovery() {
    let dir = tempdir();
    let root = dir.path().join("imgs");
    copy_images(&root, 40);
    for trial in 0..3 {
        let db = dir.path().join(format!("t{trial}.jsearch"));
        kill_mid_index(
            &db,
            &root,
            &["--batch-size", "2", "--throttle-ms", "150"],
            4,
        );
        let children: Vec<_> = (0..6)
            .map(|_| {
                let mut c = jsearch(&db);
                c.args(["query", "roter Kreis", "--json", "-k", "3", "--all"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                c.spawn().unwrap()
            })
            .collect();
        for ch in children {
            let out = ch.wait_with_output().unwrap();
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(0), "trial {trial}: {err}");
            assert_eq!(json_lines(&out.stdout).len(), 3, "trial {trial}");
        }
    }
    // A store left needing recovery in a folder nobody may write: read as it stands.
    let ro = dir.path().join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let db = ro.join("s.jsearch");
    kill_mid_index(
        &db,
        &root,
        &["--batch-size", "2", "--throttle-ms", "150"],
        4,
    );
    let chmod = |mode: &str, p: &Path| {
        assert!(std::process::Command::new("chmod")
            .arg(mode)
            .arg(p)
            .status()
            .unwrap()
            .success());
    };
    chmod("a-w", &db);
    chmod("a-w", &ro);
    // `unshare -r`: a user namespace whose root is not the files' owner, so the write
    // permissions apply even when the tests run as root.
    let bin = jsearch_bin();
    let as_other_user = |wrapper: &[&str]| {
        std::process::Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(bin)
            .arg("--db")
            .arg(&db)
            .arg("--model")
            .arg(toy_model())
            .args(["--device", "cpu", "stats", "--json"])
            .env_remove("JSEARCH_DB")
            .env("HF_HUB_OFFLINE", "1")
            .env("JSEARCH_CACHE_DIR", dir.path().join("nobody-cache"))
            .output()
            .expect("unshare / setpriv (util-linux)")
    };
    let mut out = as_other_user(&["unshare", "-r"]);
    if out.status.code() == Some(1) && stderr_of(&out).contains("unshare") {
        // No user namespaces here: as root, run it as `nobody` instead (the folders on the way
        // must then be open to others).
        chmod("a+rx", dir.path());
        out = as_other_user(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]);
    }
    chmod("u+w", &ro);
    chmod("u+w", &db);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(st["vectors"].as_u64().unwrap() >= 4, "{st}");
}

/// A model with one weight byte changed (same shapes, same header) is another model: a store
/// built with the original refuses it, for writing and for queries. A store recorded with the
/// fingerprint of before weights were hashed is accepted and then records the new one.
#[test]
fn a_model_with_one_changed_weight_is_refused() {
    let dir = tempdir();
    let root = dir.path().join("imgs");
    copy_images(&root, 2);
    let db = dir.path().join("s.jsearch");
    index(&db, &[&root], &[]);
    let fp = stats(&db)["model_fingerprint"].clone();
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for e in std::fs::read_dir(toy_model()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    let cache = dir.path().join("cache");
    for args in [
        vec!["index", root.to_str().unwrap()],
        vec!["query", "roter Kreis"],
    ] {
        let mut c = jsearch_with_model(&db, &model);
        c.env("JSEARCH_CACHE_DIR", &cache).args(&args);
        let out = run(c, false);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("was built with model"), "{args:?}: {err}");
    }
    assert_eq!(stats(&db)["model_fingerprint"], fp);
    // The original model is still accepted, its hash now cached.
    let mut c = jsearch(&db);
    c.env("JSEARCH_CACHE_DIR", &cache)
        .args(["query", "roter Kreis", "--all"]);
    run(c, true);

    // A store from before weights were hashed (the format v1 fixture): read, then upgraded.
    let old = dir.path().join("old.jsearch");
    std::fs::copy(repo_root().join("tests/data/images-v1.jsearch"), &old).unwrap();
    let legacy = stats(&old)["model_fingerprint"].clone();
    assert_ne!(legacy, fp);
    let (s, _) = index(&old, &[&root], &[]);
    assert_eq!(s["indexed"], 2, "{s}");
    assert_eq!(
        stats(&old)["model_fingerprint"],
        fp,
        "the store records the new fingerprint"
    );
}

/// `rm` killed at pseudo-random moments (it commits 256 files at a time), then run again: the
/// store ends as an uninterrupted `rm` leaves it.
#[test]
fn killed_rm_run_again_equals_an_uninterrupted_rm() {
    let dir = tempdir();
    let root = dir.path().join("notes");
    write_notes(&root.join("a"), 300);
    write_notes(&root.join("b"), 5);
    let base = dir.path().join("base.jsearch");
    index(&base, &[&root], &[]);
    let reference = dir.path().join("ref.jsearch");
    std::fs::copy(&base, &reference).unwrap();
    let (code, err) = status(&reference, &["rm", root.join("a").to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    let want = stats(&reference);
    assert_eq!(want["files"], 5);
    let mut r = 0x2545_F491_4F6C_DD1Du64;
    let mut midway = 0;
    for trial in 0..4 {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        let db = dir.path().join(format!("t{trial}.jsearch"));
        std::fs::copy(&base, &db).unwrap();
        let mut c = jsearch(&db);
        c.arg("rm")
            .arg(root.join("a"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50 + r % 400));
        let _ = child.kill();
        child.wait().unwrap();
        let files = stats(&db)["files"].as_u64().unwrap();
        if files > 5 && files < 305 {
            midway += 1;
        }
        let (code, err) = status(&db, &["rm", root.join("a").to_str().unwrap()]);
        assert_eq!(code, Some(0), "trial {trial}: {err}");
        let got = stats(&db);
        for k in ["files", "vectors", "items"] {
            assert_eq!(got[k], want[k], "trial {trial}: {k}");
        }
        let (code, _) = status(&db, &["check"]);
        assert_eq!(code, Some(0), "trial {trial}");
    }
    println!("{midway} of 4 kills landed between rm's commits");
}

/// Builds the LD_PRELOAD shim that kills the process just before its N-th write or sync call
/// (`tests/data/crash_shim.c`).
#[cfg(target_os = "linux")]
fn crash_shim(dir: &Path) -> PathBuf {
    let so = dir.join("crash_shim.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(repo_root().join("tests/data/crash_shim.c"))
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) builds the crash shim");
    assert!(status.success(), "building the crash shim failed");
    so
}

/// Runs `args` on a fresh copy of `start` killed before each sampled write/sync call, then
/// `args` again without a kill; every store must then equal the uninterrupted run's
/// (`same(reference, got)`) and pass `check`. Returns (calls, kill points tried).
#[cfg(target_os = "linux")]
fn crash_matrix(
    dir: &Path,
    shim: &Path,
    start: &Path,
    args: &[&str],
    same: &dyn Fn(&Path, &Path),
) -> (usize, usize) {
    let copy = |name: &str| {
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        if start.exists() {
            std::fs::copy(start, &p).unwrap();
        }
        p
    };
    // A private cache folder, filled before counting: the first use of a model writes its
    // prepared-weights cache (ftruncate, pwrite, fsync through the shim), which a run that
    // finds the cache does not, so the counted run and the killed runs would differ.
    let cache = dir.join("cache");
    let jsearch = |db: &Path| {
        let mut c = jsearch_tests::jsearch(db);
        c.env("JSEARCH_CACHE_DIR", &cache);
        c
    };
    // A run that ends as `index` and `rm` may: done (0) or done with named problems (3).
    let completes = |c: std::process::Command, what: &str| {
        let out = run(c, false);
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{what}{}",
            stderr_of(&out)
        );
    };
    let mut c = jsearch(&copy("warm.jsearch"));
    c.args(args);
    completes(c, "");
    let reference = copy("reference.jsearch");
    let count_file = dir.join("calls");
    let mut c = jsearch(&reference);
    c.args(args)
        .env("LD_PRELOAD", shim)
        .env("JSEARCH_CRASH_COUNT", &count_file);
    completes(c, "");
    let calls: usize = std::fs::read_to_string(&count_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        calls > 10,
        "only {calls} write/sync calls: the shim intercepts nothing?"
    );
    // Every call among the first and last 8, and 24 spread over the rest.
    let mut points: Vec<usize> = (1..=calls.min(8))
        .chain(calls.saturating_sub(7)..=calls)
        .collect();
    points.extend((1..=24).map(|i| i * calls / 25));
    points.retain(|&p| p >= 1 && p <= calls);
    points.sort_unstable();
    points.dedup();
    let mut beyond = 0;
    for &at in &points {
        let db = copy("crashed.jsearch");
        let mut c = jsearch(&db);
        c.args(args)
            .env("LD_PRELOAD", shim)
            .env("JSEARCH_CRASH_AT", at.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let own_count = dir.join("calls-killed");
        let _ = std::fs::remove_file(&own_count);
        c.env("JSEARCH_CRASH_COUNT", &own_count);
        let status = c.status().unwrap();
        if status.code().is_some() {
            // Not killed: only right when this run made fewer calls than `at` (the shim writes
            // its count at a normal exit); its store is still checked below.
            let made: usize = std::fs::read_to_string(&own_count)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(usize::MAX);
            assert!(
                made < at,
                "call {at}: the process was not killed ({status}, {made} calls made)"
            );
            beyond += 1;
        }
        let mut c = jsearch(&db);
        c.args(args);
        completes(c, &format!("call {at}: the run after the kill failed: "));
        same(&reference, &db);
        let (code, err) = status_of(&db, &["check"]);
        assert_eq!(code, Some(0), "call {at}: {err}");
    }
    assert!(
        beyond * 4 <= points.len(),
        "{beyond} of {} kill points lay beyond the runs' own calls",
        points.len()
    );
    (calls, points.len())
}

#[cfg(target_os = "linux")]
fn status_of(db: &Path, args: &[&str]) -> (Option<i32>, String) {
    status(db, args)
}

/// Stores equal: counts, and the same hits with the same scores for a few queries. Scores may
/// differ in the last digits: a resumed run batches items differently, and a batch's padding
/// changes the order of the encoder's sums (bf16 on CPUs that have it).
#[cfg(target_os = "linux")]
fn same_store(a: &Path, b: &Path) {
    let (sa, sb) = (stats(a), stats(b));
    for k in ["files", "vectors", "items"] {
        assert_eq!(sa[k], sb[k], "{k}: {sa} vs {sb}");
    }
    for q in ["roter Kreis", "a yellow star"] {
        let hits = |db: &Path| -> Vec<(String, f64)> {
            let mut c = jsearch(db);
            c.args(["query", q, "--json", "-k", "50", "--all"]);
            let mut v: Vec<(String, f64)> = json_lines(&run(c, false).stdout)
                .iter()
                .map(|h| (h["id"].to_string(), h["score"].as_f64().unwrap_or(f64::NAN)))
                .collect();
            v.sort_by(|x, y| x.0.cmp(&y.0));
            v
        };
        let (ha, hb) = (hits(a), hits(b));
        let ids = |h: &[(String, f64)]| h.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&ha), ids(&hb), "{q}");
        for ((id, x), (_, y)) in ha.iter().zip(&hb) {
            assert!((x - y).abs() <= 1e-3, "{q}: {id} scores {x} vs {y}");
        }
    }
}

/// Killed before each sampled write or sync call of `index`, `rm` and `repair`, then run again:
/// the store equals an uninterrupted run's and is healthy.
#[cfg(target_os = "linux")]
#[test]
fn killed_at_write_and_sync_calls_index_rm_and_repair_resume_to_the_same_store() {
    let dir = tempdir();
    let shim = crash_shim(dir.path());
    let root = dir.path().join("in");
    copy_images(&root.join("img"), 10);
    write_notes(&root.join("notes"), 4);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let root_s = root.to_str().unwrap().to_string();
    // index, from nothing, in batches of 2.
    let none = dir.path().join("absent.jsearch");
    let (calls, n) = crash_matrix(
        &work,
        &shim,
        &none,
        &["index", &root_s, "--batch-size", "2", "--threads", "1"],
        &same_store,
    );
    println!("index: {calls} write/sync calls, killed at {n} of them");
    // rm of a folder.
    let base = dir.path().join("base.jsearch");
    index(&base, &[&root], &[]);
    let img = root.join("img");
    let (calls, n) = crash_matrix(
        &work,
        &shim,
        &base,
        &["rm", img.to_str().unwrap()],
        &same_store,
    );
    println!("rm: {calls} write/sync calls, killed at {n} of them");
    // repair of a damaged store.
    let damaged = dir.path().join("damaged.jsearch");
    std::fs::copy(&base, &damaged).unwrap();
    flip_tail_chunk(&damaged, 0, 7);
    let (calls, n) = crash_matrix(&work, &shim, &damaged, &["repair"], &same_store);
    println!("repair: {calls} write/sync calls, killed at {n} of them");
}

/// A file that is not a store at all is named as such, for reading and for writing, and left
/// as it was.
#[test]
fn a_foreign_file_is_not_a_store() {
    let dir = tempdir();
    let db = dir.path().join("notes.jsearch");
    std::fs::write(&db, "my shopping list\n").unwrap();
    let root = dir.path().join("in");
    write_notes(&root, 1);
    for args in [vec!["stats"], vec!["index", root.to_str().unwrap()]] {
        let (code, err) = status(&db, &args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("is not a jsearch store"), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read_to_string(&db).unwrap(), "my shopping list\n");
}

/// A text file over 4 MiB is read in parts (memory follows the part): every part's passages are
/// indexed (`path#part.chunk`), an unchanged file is skipped, a shorter version drops the rest.
#[test]
fn big_text_files_are_indexed_part_by_part() {
    let dir = tempdir();
    let root = dir.path().join("in");
    std::fs::create_dir_all(&root).unwrap();
    let para = "Ein roter Kreis liegt neben einem blauen Quadrat.\n\n";
    let big = root.join("big.txt");
    std::fs::write(&big, format!("Titelzeile\n\n{}", para.repeat(190_000))).unwrap();
    let db = dir.path().join("s.jsearch");
    let (s, err) = index(&db, &[&root], &[]);
    assert_eq!(
        (s["indexed"].as_u64(), s["failed"].as_u64()),
        (Some(1), Some(0)),
        "{err}"
    );
    let items = stats(&db)["items"]["text"].as_u64().unwrap();
    assert!(items > 100, "{items}");
    let hits = query_json(&db, &["roter Kreis", "--type", "text", "-k", "10000"]);
    assert_eq!(hits.len() as u64, items);
    let parts: std::collections::BTreeSet<u64> =
        hits.iter().map(|h| h["part"].as_u64().unwrap()).collect();
    assert_eq!(
        parts.into_iter().collect::<Vec<_>>(),
        [0, 1, 2],
        "9 MiB in 4 MiB parts"
    );
    assert!(
        hits.iter().all(|h| h["title"] == "Titelzeile"),
        "the file's first line"
    );
    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(s["skipped"], 1, "{s}");
    // A shorter version (one part): the passages of the parts that are gone are dropped.
    std::fs::write(&big, format!("Titelzeile\n\n{}", para.repeat(1000))).unwrap();
    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(s["updated"], 1, "{s}");
    let hits = query_json(&db, &["roter Kreis", "--type", "text", "-k", "10000"]);
    assert!(hits.iter().all(|h| h["part"].is_null()), "read whole again");
    assert_eq!(
        hits.len() as u64,
        stats(&db)["items"]["text"].as_u64().unwrap()
    );
}
