//! The weight cache and `--precision auto` seen from the binary: concurrent first runs build
//! one valid cache, a damaged cache file is rebuilt with a message and the same answers, an index
//! of notes loads only the text tower, auto says once what it runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use jsearch_tests::*;

const NOTES: &[(&str, &str)] = &[
    ("rot.md", "Ein roter Kreis auf einfarbigem Hintergrund."),
    ("blau.md", "A blue square on a plain background."),
    ("gelb.md", "Una estrella amarilla sobre fondo liso."),
];

fn notes(dir: &Path) -> PathBuf {
    let d = dir.join("notes");
    std::fs::create_dir_all(&d).unwrap();
    for (n, t) in NOTES {
        std::fs::write(d.join(n), t).unwrap();
    }
    d
}

/// `jsearch` with its weight cache in `cache` and no precision from the environment.
fn with_cache(db: &Path, cache: &Path) -> Command {
    let mut c = jsearch(db);
    c.env("JSEARCH_CACHE_DIR", cache)
        .env_remove("JSEARCH_PRECISION")
        .env_remove("JSEARCH_WEIGHT_CACHE")
        .env_remove("JSEARCH_CPU_TIER");
    c
}

/// The prepared-weight files (name only) and anything else left in the folder.
fn prepared(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("prepared"))
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A store of the notes in `dir`, indexed with its weight cache in `cache`.
fn notes_store(dir: &Path, cache: &Path) -> PathBuf {
    let db = dir.join("s.jsearch");
    let mut c = with_cache(&db, cache);
    c.arg("index").arg(notes(dir));
    run(c, true);
    db
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn concurrent_first_queries_build_one_valid_cache_and_later_runs_map_it() {
    let dir = tempdir();
    let db = notes_store(dir.path(), &dir.path().join("index-cache"));
    let cache = dir.path().join("cache");
    let children: Vec<_> = (0..4)
        .map(|_| {
            let mut c = with_cache(&db, &cache);
            c.args(["query", "red circle", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{}", stderr(o));
        assert_eq!(o.stdout, outs[0].stdout, "same answers from every process");
        assert!(
            stderr(o).matches("precision: auto: ").count() == 1,
            "auto says once what it runs: {}",
            stderr(o)
        );
    }
    assert!(
        outs.iter()
            .any(|o| stderr(o).contains("preparing the text weights")),
        "the first use says it prepares the weights"
    );
    let files = prepared(&cache);
    assert_eq!(files.len(), 1, "one text file, no temporaries: {files:?}");
    assert!(
        files[0].contains("-text-") && files[0].ends_with(".jsw"),
        "{files:?}"
    );
    // A later run maps the file: nothing to say about the cache, same answer.
    let mut c = with_cache(&db, &cache);
    c.args(["query", "red circle", "--json"]);
    let o = run(c, true);
    assert!(!stderr(&o).contains("prepar"), "{}", stderr(&o));
    assert_eq!(o.stdout, outs[0].stdout);
    // -q keeps stderr quiet.
    let mut c = with_cache(&db, &cache);
    c.args(["-q", "query", "red circle", "--json"]);
    let o = run(c, true);
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn a_damaged_cache_file_is_rebuilt_with_a_message_and_the_same_answers() {
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let db = notes_store(dir.path(), &cache);
    let query = || {
        let mut c = with_cache(&db, &cache);
        c.args(["query", "yellow star", "--json"]);
        run(c, true)
    };
    let good = query();
    let files = prepared(&cache);
    assert!(!files.is_empty());
    for f in &files {
        let p = cache.join("prepared").join(f);
        let mut bytes = std::fs::read(&p).unwrap();
        // The file ends with its last entry's data (padding only ever precedes an entry).
        let i = bytes.len() - 1;
        bytes[i] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
    }
    let o = query();
    assert!(
        stderr(&o).contains("is corrupt") && stderr(&o).contains("rebuilding it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(o.stdout, good.stdout, "rebuilt, same answers");
    let o = query();
    assert!(!stderr(&o).contains("rebuilding"), "{}", stderr(&o));
    // Truncated to nothing: also rebuilt.
    for f in prepared(&cache) {
        std::fs::write(cache.join("prepared").join(f), b"").unwrap();
    }
    let o = query();
    assert!(stderr(&o).contains("rebuilding it"), "{}", stderr(&o));
    assert_eq!(o.stdout, good.stdout);
}

#[test]
fn an_index_run_loads_only_the_towers_its_items_need() {
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let db = notes_store(dir.path(), &cache);
    let files = prepared(&cache);
    assert!(
        !files.is_empty() && files.iter().all(|f| f.contains("-text-")),
        "notes load the text tower only: {files:?}"
    );
    // Nothing changed: nothing to encode, no tower loaded, nothing said about precision.
    let idle_cache = dir.path().join("idle-cache");
    let mut c = with_cache(&db, &idle_cache);
    c.arg("index").arg(dir.path().join("notes"));
    let o = run(c, true);
    assert!(
        prepared(&idle_cache).is_empty(),
        "{:?}",
        prepared(&idle_cache)
    );
    assert!(!stderr(&o).contains("precision"), "{}", stderr(&o));
    let imgs = dir.path().join("imgs");
    copy_images(&imgs, 2);
    let mut c = with_cache(&db, &cache);
    c.arg("index").arg(&imgs);
    run(c, true);
    let files = prepared(&cache);
    assert!(
        files.iter().any(|f| f.contains("-vision-")),
        "images load the vision tower: {files:?}"
    );
}
