//! End-to-end tests of the `jsearch` binary on the bundled toy model and corpus.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jsearch_tests::*;
use serde_json::Value;

/// One store with the 120 corpus images, shared by the tests that only read it.
fn images_store() -> &'static Path {
    static DB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DB.get_or_init(|| {
        let dir = tempdir();
        let db = dir.path().join("images.jsearch");
        let (s, _) = index(&db, &[&toy_corpus().join("images")], &[]);
        assert_eq!(s["indexed"], 120, "{s}");
        assert_eq!(s["encoded"], 120, "{s}");
        (dir, db)
    })
    .1
}

/// Passages written for the mixed store.
const NOTES: &[(&str, &str)] = &[
    (
        "rot.md",
        "# Roter Kreis\n\nEin roter Kreis auf einfarbigem Hintergrund.",
    ),
    ("stern.txt", "a yellow star next to a blue heart"),
    ("mond.md", "# Mond\n\nein grüner Mond"),
];

/// One store with images + products.jsonl + three text passages.
fn mixed_store() -> &'static (tempfile::TempDir, PathBuf, PathBuf) {
    static DB: OnceLock<(tempfile::TempDir, PathBuf, PathBuf)> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = tempdir();
        let notes = dir.path().join("notes");
        std::fs::create_dir_all(&notes).unwrap();
        for (name, text) in NOTES {
            std::fs::write(notes.join(name), text).unwrap();
        }
        let db = dir.path().join("mixed.jsearch");
        let s = index_mixed(&db, &[&notes]);
        // 120 images + 1 catalog + 3 notes.
        assert_eq!(s["indexed"], 124, "{s}");
        // Product images are the corpus images: their vectors are reused, not re-encoded.
        assert_eq!(s["encoded"], 120 + 120 + 3, "{s}");
        assert_eq!(s["reused"], 120, "{s}");
        let notes = std::fs::canonicalize(notes).unwrap();
        (dir, db, notes)
    })
}

fn file_name(v: &Value) -> String {
    Path::new(v["path"].as_str().unwrap_or(""))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs every corpus query through `query --queries`; hits grouped by query id.
fn batch_queries(db: &Path, extra: &[&str]) -> HashMap<String, Vec<Value>> {
    let dir = tempdir();
    let qfile = dir.path().join("q.jsonl");
    let lines: Vec<String> = read_jsonl(&toy_corpus().join("queries.jsonl"))
        .iter()
        .map(|q| serde_json::json!({"id": q["id"], "text": q["text"]}).to_string())
        .collect();
    std::fs::write(&qfile, lines.join("\n")).unwrap();
    let mut c = jsearch(db);
    // Ranking against the official model's R@5: every hit up to -k (the cut is tested in
    // tests/cli.rs).
    c.arg("query")
        .arg("--queries")
        .arg(&qfile)
        .arg("--json")
        .arg("--all")
        .args(extra);
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for hit in json_lines(&run(c, true).stdout) {
        out.entry(hit["query"].as_str().unwrap().to_string())
            .or_default()
            .push(hit);
    }
    out
}

/// Official R@5 per language (all statuses pooled) for a metric of expected.json at full dim.
fn official_r5(metric: &str) -> BTreeMap<String, f64> {
    let expected: Value =
        serde_json::from_slice(&std::fs::read(toy_corpus().join("expected.json")).unwrap())
            .unwrap();
    let m = &expected["metrics"]["128"][metric];
    let mut out = BTreeMap::new();
    for (lang, by_status) in m.as_object().unwrap() {
        if lang == "all" {
            continue;
        }
        let (mut hit, mut n) = (0.0, 0.0);
        for (_, v) in by_status.as_object().unwrap() {
            let k = v["n"].as_f64().unwrap();
            hit += v["R@5"].as_f64().unwrap() * k;
            n += k;
        }
        out.insert(lang.clone(), hit / n);
    }
    out
}

/// Our R@5 per language given a relevance field and how a hit is named.
fn measured_r5(
    hits: &HashMap<String, Vec<Value>>,
    relevant_field: &str,
    name: impl Fn(&Value) -> String,
) -> BTreeMap<String, (f64, usize)> {
    let mut agg: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for q in read_jsonl(&toy_corpus().join("queries.jsonl")) {
        let rel: HashSet<String> = q[relevant_field]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let got = hits
            .get(q["id"].as_str().unwrap())
            .cloned()
            .unwrap_or_default();
        assert!(got.len() <= 5);
        let ok = got.iter().any(|h| rel.contains(&name(h)));
        let e = agg
            .entry(q["lang"].as_str().unwrap().to_string())
            .or_default();
        e.0 += ok as usize;
        e.1 += 1;
    }
    agg.into_iter()
        .map(|(l, (h, n))| (l, (h as f64 / n as f64, n)))
        .collect()
}

#[test]
fn text_to_image_recall_in_every_language() {
    let db = images_store();
    let hits = batch_queries(db, &["-k", "5", "--type", "image"]);
    let ours = measured_r5(&hits, "relevant_images", file_name);
    let official = official_r5("text_to_image.instruction");
    assert_eq!(ours.len(), 10, "{ours:?}");
    for (lang, (r5, n)) in &ours {
        let off = official[lang];
        eprintln!("{lang}: R@5 {r5:.3} (n={n}), official {off:.3}");
        assert!(
            *r5 >= off - 0.02,
            "{lang}: R@5 {r5:.3} below official {off:.3} - 0.02"
        );
    }
    // The German demo query finds red circles first.
    let top = query_json(db, &["roter Kreis", "-k", "3"]);
    let red: HashSet<String> = read_jsonl(&toy_corpus().join("queries.jsonl"))
        .into_iter()
        .find(|q| q["id"] == "q150")
        .unwrap()["relevant_images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(top.iter().all(|h| red.contains(&file_name(h))), "{top:?}");
}

#[test]
fn image_to_image_and_similar() {
    let db = images_store();
    let img = toy_corpus().join("images/img_027.jpg"); // a red circle
    let red: HashSet<&str> = [
        "img_027.jpg",
        "img_076.jpg",
        "img_088.jpg",
        "img_094.jpg",
        "img_102.jpg",
        "img_104.png",
        "img_109.jpg",
    ]
    .into_iter()
    .collect();
    let hits = query_json(
        db,
        &[
            "--image",
            img.to_str().unwrap(),
            "-k",
            "5",
            "--include-self",
        ],
    );
    assert_eq!(
        file_name(&hits[0]),
        "img_027.jpg",
        "the image itself first: {hits:?}"
    );
    // Without --include-self the query file is left out.
    let others = query_json(db, &["--image", img.to_str().unwrap(), "-k", "5"]);
    assert!(others.iter().all(|h| file_name(h) != "img_027.jpg"));
    let relevant = hits
        .iter()
        .filter(|h| red.contains(file_name(h).as_str()))
        .count();
    assert!(
        relevant >= 3,
        "only {relevant} red circles in the top 5: {hits:?}"
    );

    let mut c = jsearch(db);
    c.arg("similar").arg(&img).args(["-k", "4", "--json"]);
    let sim = json_lines(&run(c, true).stdout);
    assert_eq!(sim.len(), 4);
    assert!(
        sim.iter().all(|h| file_name(h) != "img_027.jpg"),
        "itself excluded"
    );
    let relevant = sim
        .iter()
        .filter(|h| red.contains(file_name(h).as_str()))
        .count();
    assert!(relevant >= 2, "{sim:?}");

    // Combined query: the weights move the ranking between the two single-modality rankings.
    let ids = |v: &[Value]| {
        v.iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let text_only = ids(&query_json(db, &["blauer Stern", "-k", "5"]));
    let image_only = ids(&query_json(
        db,
        &["--image", img.to_str().unwrap(), "-k", "5"],
    ));
    let w1 = ids(&query_json(
        db,
        &[
            "--image",
            img.to_str().unwrap(),
            "--text",
            "blauer Stern",
            "--image-weight",
            "1",
            "-k",
            "5",
        ],
    ));
    let w0 = ids(&query_json(
        db,
        &[
            "--image",
            img.to_str().unwrap(),
            "--text",
            "blauer Stern",
            "--image-weight",
            "0",
            "-k",
            "5",
        ],
    ));
    assert_eq!(w1, image_only);
    assert_eq!(w0, text_only);
    let mid = ids(&query_json(
        db,
        &[
            "--image",
            img.to_str().unwrap(),
            "--text",
            "blauer Stern",
            "-k",
            "5",
        ],
    ));
    assert!(mid != image_only && mid != text_only, "{mid:?}");
}

#[test]
fn mixed_store_returns_every_kind_and_keeps_metadata() {
    let (_, db, notes) = mixed_store();
    let st = stats(db);
    assert_eq!(st["items"]["image"], 120, "{st}");
    assert_eq!(st["items"]["product"], 120, "{st}");
    assert_eq!(st["items"]["text"], 3, "{st}");
    assert_eq!(st["files"], 124, "{st}");
    assert_eq!(st["vectors"], 120 + 240 + 3, "{st}");
    assert_eq!(st["dim"], 128);

    let hits = query_json(db, &["roter Kreis", "-k", "10"]);
    assert_eq!(hits.len(), 10);
    let kinds: HashSet<&str> = hits.iter().map(|h| h["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 3, "all three kinds in the top 10: {hits:#?}");
    let passage = hits
        .iter()
        .find(|h| h["kind"] == "text")
        .expect("the passage");
    assert_eq!(
        Path::new(passage["path"].as_str().unwrap()),
        notes.join("rot.md")
    );
    assert_eq!(passage["chunk"], 0);
    // The modality gap is real (text-text cosines run higher than text-image ones), and the
    // calibrated scores still bring the images up.
    let max_img_cos = hits
        .iter()
        .filter(|h| h["kind"] == "image")
        .map(|h| h["cosine"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert!(
        passage["cosine"].as_f64().unwrap() > max_img_cos + 0.1,
        "{hits:#?}"
    );
    // Relevance: images and products are red circles.
    let q150 = read_jsonl(&toy_corpus().join("queries.jsonl"))
        .into_iter()
        .find(|q| q["id"] == "q150")
        .unwrap();
    let rel = |field: &str| -> HashSet<String> {
        q150[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let (rel_img, rel_prod) = (rel("relevant_images"), rel("relevant_products"));
    let relevant = hits
        .iter()
        .filter(|h| match h["kind"].as_str().unwrap() {
            "image" => rel_img.contains(&file_name(h)),
            "product" => rel_prod.contains(h["id"].as_str().unwrap()),
            _ => true,
        })
        .count();
    assert!(relevant >= 9, "{relevant}/10 relevant: {hits:#?}");
    // Catalog fields other than id/title/description/image are kept as metadata.
    let prod = hits.iter().find(|h| h["kind"] == "product").unwrap();
    assert!(prod["metadata"]["lang"].is_string(), "{prod}");
    assert!(Path::new(prod["image"].as_str().unwrap()).exists());

    // Text → product recall over all corpus queries.
    let hits = batch_queries(db, &["-k", "5", "--type", "product"]);
    let ours = measured_r5(&hits, "relevant_products", |h| {
        h["id"].as_str().unwrap().to_string()
    });
    let official = official_r5("text_to_product_title.instruction");
    for (lang, (r5, _)) in &ours {
        assert!(*r5 >= official[lang] - 0.02, "{lang}: products R@5 {r5}");
    }
}

#[test]
fn json_and_paths_output_schema() {
    let (_, db, _) = mixed_store();
    let hits = query_json(db, &["ein gelber Stern", "-k", "8"]);
    assert_eq!(hits.len(), 8);
    let mut last = f64::INFINITY;
    for (i, h) in hits.iter().enumerate() {
        let o = h.as_object().unwrap();
        for key in ["rank", "score", "kind", "id", "path", "title", "metadata"] {
            assert!(o.contains_key(key), "missing {key}: {h}");
        }
        assert_eq!(h["rank"].as_u64().unwrap(), i as u64 + 1);
        let s = h["score"].as_f64().unwrap();
        assert!(s <= last, "scores descend");
        last = s;
        assert!(["image", "text", "product"].contains(&h["kind"].as_str().unwrap()));
        assert!(h["id"].is_string() && h["path"].is_string());
        assert!(h["title"].is_string() || h["title"].is_null());
        assert!(h["metadata"].is_object());
        assert!(Path::new(h["path"].as_str().unwrap()).is_absolute());
    }
    // --type and --min-score filter; --paths prints existing files only.
    let imgs = query_json(db, &["ein gelber Stern", "-k", "5", "--type", "image"]);
    assert!(imgs.iter().all(|h| h["kind"] == "image"));
    let cut = hits[2]["score"].as_f64().unwrap();
    let high = query_json(
        db,
        &[
            "ein gelber Stern",
            "-k",
            "8",
            "--min-score",
            &cut.to_string(),
        ],
    );
    assert!(high.len() >= 3 && high.len() < 8, "{}", high.len());
    let mut c = jsearch(db);
    c.args(["query", "ein gelber Stern", "-k", "5", "--paths"]);
    let out = String::from_utf8(run(c, true).stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| Path::new(l).is_file()), "{out}");
    // --path prefix: only the notes.
    let (_, _, notes) = mixed_store();
    let only = query_json(db, &["roter Kreis", "--path", notes.to_str().unwrap()]);
    assert!(
        !only.is_empty() && only.iter().all(|h| h["kind"] == "text"),
        "{only:?}"
    );
    // Table output on a pipe is readable and has a header.
    let mut c = jsearch(db);
    c.args(["query", "roter Kreis", "-k", "3"]);
    let table = String::from_utf8(run(c, true).stdout).unwrap();
    assert!(table.starts_with("rank"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");
}

#[test]
fn incremental_runs_encode_only_what_changed() {
    let dir = tempdir();
    let root = dir.path().join("data");
    let imgs = copy_images(&root, 10);
    let notes = root.join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("a.md"), "# A\n\nein roter Kreis").unwrap();
    std::fs::write(notes.join("b.txt"), "a blue star").unwrap();
    let db = dir.path().join("inc.jsearch");

    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(
        (s["indexed"].as_u64(), s["encoded"].as_u64()),
        (Some(12), Some(12)),
        "{s}"
    );

    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(s["skipped"], 12, "{s}");
    assert_eq!(s["encoded"], 0, "{s}");
    assert_eq!(s["indexed"], 0, "{s}");

    // add, modify, delete, rename, duplicate
    std::fs::copy(
        toy_corpus().join("images/img_010.png"),
        root.join("new.png"),
    )
    .unwrap();
    std::fs::write(
        notes.join("a.md"),
        "# A\n\nein roter Kreis und ein blauer Stern",
    )
    .unwrap();
    std::fs::remove_file(&imgs[0]).unwrap();
    let renamed = root
        .join("renamed")
        .with_extension(imgs[1].extension().unwrap());
    std::fs::rename(&imgs[1], &renamed).unwrap();
    let dup = root
        .join("dup")
        .with_extension(imgs[2].extension().unwrap());
    std::fs::copy(&imgs[2], &dup).unwrap();

    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(s["indexed"], 3, "new, renamed, duplicate: {s}");
    assert_eq!(s["updated"], 1, "a.md: {s}");
    assert_eq!(
        s["removed"], 2,
        "deleted + old name of the renamed file: {s}"
    );
    assert_eq!(s["skipped"], 9, "{s}");
    assert_eq!(
        s["encoded"], 2,
        "only new.png and a.md's chunk are encoded: {s}"
    );
    assert_eq!(
        s["reused"], 2,
        "renamed + duplicate reuse stored vectors: {s}"
    );
    assert_eq!(s["failed"], 0, "{s}");

    let st = stats(&db);
    assert_eq!(st["items"]["image"], 11, "{st}");
    assert_eq!(st["items"]["text"], 2, "{st}");
    assert_eq!(st["files"], 13, "{st}");

    // The renamed file is findable under its new name, the deleted one is gone.
    let mut c = jsearch(&db);
    c.arg("similar").arg(&renamed).arg("--json");
    run(c, true);
    let mut c = jsearch(&db);
    c.arg("similar").arg(&imgs[0]);
    let out = run(c, false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the store"));
    let a_md = std::fs::canonicalize(notes.join("a.md")).unwrap();
    let hits = query_json(&db, &["blauer Stern", "--path", a_md.to_str().unwrap()]);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert!(
        hits[0]["snippet"]
            .as_str()
            .unwrap()
            .contains("blauer Stern"),
        "modified text re-embedded: {hits:?}"
    );

    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(
        (s["encoded"].as_u64(), s["skipped"].as_u64()),
        (Some(0), Some(13)),
        "{s}"
    );

    // rm: a folder, then an unknown path (reported and skipped: `rm` can be run again).
    let mut c = jsearch(&db);
    c.arg("rm").arg(&notes);
    run(c, true);
    assert_eq!(stats(&db)["items"]["text"], 0);
    let before = stats(&db)["vectors"].clone();
    let mut c = jsearch(&db);
    c.arg("rm").arg(root.join("nope.png"));
    let out = run(c, true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the store"));
    assert_eq!(stats(&db)["vectors"], before);
}

fn sorted_hits(db: &Path, q: &str) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = query_json(db, &[q, "-k", "60"])
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_string(),
                (h["score"].as_f64().unwrap() * 1e4).round() as i64,
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn killed_run_resumes_to_the_same_store_with_concurrent_reader_and_locked_writer() {
    let dir = tempdir();
    let root = dir.path().join("imgs");
    copy_images(&root, 60);
    let db_ref = dir.path().join("ref.jsearch");
    let (s, _) = index(&db_ref, &[&root], &["--batch-size", "4"]);
    assert_eq!(s["encoded"], 60);

    let db = dir.path().join("killed.jsearch");
    let mut c = jsearch(&db);
    c.arg("index")
        .arg(&root)
        .args(["--batch-size", "4", "--throttle-ms", "250", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut committed = 0;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        if !db.exists() {
            continue;
        }
        let mut sc = jsearch(&db);
        sc.args(["stats", "--json"]);
        let out = sc.output().unwrap();
        if out.status.success() {
            let st: Value = serde_json::from_slice(&out.stdout).unwrap();
            committed = st["vectors"].as_u64().unwrap();
            if committed >= 12 {
                break;
            }
        }
    }
    assert!(committed >= 12, "the writer made no progress");
    // A query runs while the index run is writing.
    let during = query_json(&db, &["roter Kreis", "-k", "3"]);
    assert!(!during.is_empty());
    // A second writer gets a clear error.
    let mut w2 = jsearch(&db);
    w2.arg("index").arg(&root);
    let out = run(w2, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked by another jsearch process"), "{err}");
    // Kill it mid-way.
    child.kill().unwrap();
    child.wait().unwrap();
    // Readers recover the store left by the killed writer (last commit intact).
    let after_kill = stats(&db)["vectors"].as_u64().unwrap();
    assert!(after_kill >= committed && after_kill < 60, "{after_kill}");

    let (s, _) = index(&db, &[&root], &[]);
    assert_eq!(s["skipped"].as_u64().unwrap(), after_kill, "{s}");
    assert_eq!(s["encoded"].as_u64().unwrap(), 60 - after_kill, "{s}");
    assert_eq!(stats(&db)["vectors"], 60);
    assert_eq!(stats(&db)["items"], stats(&db_ref)["items"]);
    for q in ["roter Kreis", "a yellow star", "синее сердце"] {
        assert_eq!(sorted_hits(&db, q), sorted_hits(&db_ref, q), "{q}");
    }
}

/// A PNG header declaring `w` x `h` pixels (valid signature and IHDR CRC) with no image data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    out
}

#[test]
fn bad_images_are_reported_and_skipped() {
    let dir = tempdir();
    let root = dir.path().join("bad");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::copy(
        toy_corpus().join("images/img_001.png"),
        root.join("good.png"),
    )
    .unwrap();
    std::fs::write(root.join("notes.txt"), "ein roter Kreis").unwrap();
    std::fs::write(root.join("zero.png"), b"").unwrap();
    let png = std::fs::read(toy_corpus().join("images/img_001.png")).unwrap();
    std::fs::write(root.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    let jpg = std::fs::read(toy_corpus().join("images/img_000.jpg")).unwrap();
    std::fs::write(root.join("truncated.jpg"), &jpg[..jpg.len() / 3]).unwrap();
    std::fs::write(
        root.join("garbage.jpg"),
        b"this is not a jpeg at all, just text",
    )
    .unwrap();
    std::fs::write(root.join("huge.png"), png_header(100_000, 100_000)).unwrap();
    // A real 2000x1000 image, above --max-megapixels 1.5.
    image::RgbImage::from_pixel(2000, 1000, image::Rgb([200, 30, 30]))
        .save(root.join("big.png"))
        .unwrap();
    let db = dir.path().join("bad.jsearch");
    let (s, stderr) = index(&db, &[&root], &["--max-megapixels", "1.5"]);
    let bad = [
        "zero.png",
        "truncated.png",
        "truncated.jpg",
        "garbage.jpg",
        "huge.png",
        "big.png",
    ];
    for b in bad {
        let lines = stderr.lines().filter(|l| l.contains(b)).count();
        assert_eq!(lines, 1, "{b} reported once:\n{stderr}");
    }
    assert_eq!(s["failed"], bad.len(), "{s}\n{stderr}");
    assert_eq!(s["indexed"], 2, "{s}");
    let st = stats(&db);
    assert_eq!(st["vectors"], 2, "{st}");
    // Unreadable files are retried (and reported) next run; good ones are skipped.
    let (s, _) = index(&db, &[&root], &["--max-megapixels", "1.5"]);
    assert_eq!(
        (s["skipped"].as_u64(), s["failed"].as_u64()),
        (Some(2), Some(bad.len() as u64)),
        "{s}"
    );
}

#[test]
fn another_model_is_refused_with_a_clear_message() {
    let dir = tempdir();
    let root = dir.path().join("few");
    copy_images(&root, 2);
    let db = dir.path().join("m.jsearch");
    index(&db, &[&root], &[]);
    let other = repo_root().join("datasets/jina-clip-v2-tiny/model");
    for args in [
        vec!["query", "roter Kreis"],
        vec!["index", root.to_str().unwrap()],
    ] {
        let mut c = jsearch_with_model(&db, &other);
        c.args(&args);
        let out = run(c, false);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("was built with model") && err.contains("re-index"),
            "{err}"
        );
    }
    // No store at all: a clear message too.
    let mut c = jsearch(&dir.path().join("none.jsearch"));
    c.args(["query", "x"]);
    let out = run(c, false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at"));
}

/// Without `--model`, the engine looks in `$JSEARCH_MODEL`, then the Hugging Face cache; a model
/// found there is used, and offline with none, one message says what to download and where.
#[test]
fn model_comes_from_the_hugging_face_cache_or_a_clear_message() {
    let dir = tempdir();
    let root = dir.path().join("few");
    copy_images(&root, 2);
    let hf_home = dir.path().join("hf");
    let cmd = |db: &str| {
        let mut c = jsearch_without_model(&dir.path().join(db));
        c.env_remove("HF_HUB_CACHE")
            .env_remove("HUGGINGFACE_HUB_CACHE")
            .env("HF_HOME", &hf_home)
            .arg("index")
            .arg(&root);
        c
    };
    let out = run(cmd("a.jsearch"), false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jinaai/jina-clip-v2") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );

    // The toy model placed in the cache layout is found and used.
    let snap = hf_home.join("hub/models--jinaai--jina-clip-v2/snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    for f in std::fs::read_dir(toy_model()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, snap.join(f.file_name().unwrap())).unwrap();
    }
    run(cmd("b.jsearch"), true);
    let mut c = jsearch(&dir.path().join("b.jsearch"));
    c.args(["stats", "--json"]);
    let st: Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
    assert_eq!(st["items"]["image"], 2, "{st}");
}

/// `tests/data/images-v1.jsearch` was written by `jsearch index` with store format version 1
/// (commit 17055b4) on the toy model: ten corpus images (img_000–img_007, img_041, img_093)
/// indexed from `/tmp/v1imgs`. A query upgrades it in place (it opens the store as a writer once)
/// and then answers from it; the store stays usable afterwards.
#[test]
fn query_upgrades_a_format_v1_store() {
    let dir = tempdir();
    let db = dir.path().join("old.jsearch");
    std::fs::copy(repo_root().join("tests/data/images-v1.jsearch"), &db).unwrap();
    let top = |q: &str| -> Vec<String> { query_json(&db, &[q]).iter().map(file_name).collect() };
    let crosses = top("an image with an orange cross");
    let want: HashSet<&str> = ["img_005.jpg", "img_041.png"].into();
    assert!(
        crosses.len() >= 2 && crosses[..2].iter().all(|n| want.contains(n.as_str())),
        "{crosses:?}"
    );
    assert_eq!(
        top("a purple heart").first().map(String::as_str),
        Some("img_093.png")
    );
    let s = stats(&db);
    assert_eq!(s["vectors"], 10, "{s}");
    assert_eq!(s["items"]["image"], 10, "{s}");
}

/// A reader that closes the pipe early (`| head -1`, `| head -0`) ends the command quietly with
/// status 0, for every command that prints to stdout; nothing found is status 1.
#[test]
fn closed_stdout_exits_quietly_and_nothing_found_is_status_1() {
    let db = images_store();
    for args in [
        vec!["query", "roter Kreis", "--paths", "-k", "50"],
        vec!["query", "roter Kreis", "--json", "-k", "50"],
        vec!["stats"],
        vec!["stats", "--json"],
    ] {
        let mut c = jsearch(db);
        c.args(&args);
        let out = run_with_closed_stdout(c);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(
            !err.contains("error") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    // A filter that nothing passes: no hits, status 1 (documented in --help), like grep.
    for extra in [&["--json"][..], &[][..], &["--paths"][..]] {
        let mut c = jsearch(db);
        c.args(["query", "roter Kreis", "--type", "product"])
            .args(extra);
        let out = run(c, false);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        assert!(out.stdout.is_empty());
    }
    // Usage errors are clap's: status 2, naming the valid values.
    let mut c = jsearch(db);
    c.args(["query", "x", "--type", "photo"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("image, text or product"));
    let mut c = jsearch(db);
    c.args(["stats", "--device", "tpu"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
}

/// `--help` documents the exit status.
#[test]
fn help_documents_exit_status() {
    let mut c = jsearch(Path::new("unused.jsearch"));
    c.arg("--help");
    let out = run(c, true);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit status:\n  0  success"), "{help}");
    assert!(help.contains("1  a query"), "{help}");
    assert!(help.contains("3  an index run"), "{help}");
}
