//! `jsearch embed-shard` and `jsearch index --from-parquet`: a catalog encoded in shards without
//! a store, resumed after an interruption, and imported into a store equal to one built in one
//! run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use jsearch::{Engine, OpenOptions};
use jsearch_tests::{
    ids, index, jsearch, json_lines, read_jsonl, run, tempdir, toy_corpus, toy_model,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

fn catalog() -> PathBuf {
    toy_corpus().join("products.jsonl")
}

fn embed_shard(catalog: &Path, shard: &str, out: &Path, extra: &[&str]) -> Value {
    let mut c = jsearch(&out.with_extension("unused"));
    c.arg("embed-shard")
        .arg(catalog)
        .args(["--shard", shard, "--json"])
        .arg("--out")
        .arg(out)
        .args(["--precision", "f32"])
        .args(extra);
    json_lines(&run(c, true).stdout).remove(0)
}

/// (id, modality, content hash, vector) of every row, in order.
fn rows(path: &Path) -> Vec<Row> {
    let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for batch in b.build().unwrap() {
        let batch = batch.unwrap();
        let id = batch
            .column_by_name("id")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let m = batch
            .column_by_name("modality")
            .unwrap()
            .as_string::<i32>()
            .clone();
        let h = batch
            .column_by_name("content_hash")
            .unwrap()
            .as_fixed_size_binary()
            .clone();
        let v = batch
            .column_by_name("vector")
            .unwrap()
            .as_fixed_size_list()
            .clone();
        for r in 0..batch.num_rows() {
            out.push((
                id.value(r).to_string(),
                m.value(r).to_string(),
                h.value(r).to_vec(),
                v.value(r).as_primitive::<Float32Type>().values().to_vec(),
            ));
        }
    }
    out
}

/// Cosine (the store's vectors are f16: unit length only to about 1e-4).
fn cos(a: &[f32], b: &[f32]) -> f32 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

/// Same rows in the same order, vectors equal up to the last digits (a batch of other
/// records pads the texts differently).
fn assert_same_rows(a: &Path, b: &Path) {
    same_rows(&rows(a), &rows(b));
}

type Row = (String, String, Vec<u8>, Vec<f32>);

fn same_rows(ra: &[Row], rb: &[Row]) {
    assert_eq!(ra.len(), rb.len());
    for (x, y) in ra.iter().zip(rb) {
        assert_eq!((&x.0, &x.1, &x.2), (&y.0, &y.1, &y.2));
        assert!(
            cos(&x.3, &y.3) > 0.99999,
            "{} {}: {}",
            x.0,
            x.1,
            cos(&x.3, &y.3)
        );
    }
}

fn store_vectors(db: &Path) -> HashMap<(u64, String), Vec<f32>> {
    let e = Engine::open(OpenOptions {
        db: db.to_path_buf(),
        model_dir: Some(toy_model()),
        ..OpenOptions::default()
    })
    .unwrap();
    let mut out = HashMap::new();
    e.for_each_vector(|k, item, m, v| {
        out.insert((k, format!("{} {}", item.id, m.as_str())), v.to_vec());
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn shards_encoded_apart_import_into_the_store_one_run_builds() {
    let dir = tempdir();
    let d = dir.path();
    let records = read_jsonl(&catalog()).len();

    // Three shards: every record in exactly one, text and image vectors.
    let mut files = Vec::new();
    let (mut recs, mut vecs) = (0, 0);
    for i in 0..3 {
        let out = d.join(format!("s{i}.parquet"));
        let s = embed_shard(
            &catalog(),
            &format!("{i}/3"),
            &out,
            &["--part-records", "16"],
        );
        assert_eq!(s["catalog_records"].as_u64().unwrap() as usize, records);
        assert_eq!(s["encoded"], s["vectors"], "{s}");
        assert!(
            !d.join(format!("s{i}.parquet.parts")).exists(),
            "parts left behind"
        );
        recs += s["records"].as_u64().unwrap() as usize;
        vecs += s["vectors"].as_u64().unwrap() as usize;
        let r = rows(&out);
        assert_eq!(r.len(), s["vectors"].as_u64().unwrap() as usize);
        assert!(r
            .iter()
            .all(|x| (x.3.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4));
        files.push(out);
    }
    assert_eq!(recs, records);
    assert_eq!(vecs, 2 * records, "each product has a text and an image");
    // Deterministic: the same shard again gives the same rows in the same order.
    let again = d.join("s1-again.parquet");
    embed_shard(&catalog(), "1/3", &again, &[]);
    assert_same_rows(&files[1], &again);

    // One store built in one run, one imported from the shards without running the model.
    let one = d.join("one.jsearch");
    // f32 on both sides: the comparison is of the shards, not of a faster path's rounding.
    let (s1, _) = index(&one, &[&catalog()], &["--precision", "f32"]);
    assert_eq!(s1["encoded"].as_u64().unwrap() as usize, vecs);
    let imported = d.join("imported.jsearch");
    let mut args: Vec<&str> = vec!["--precision", "f32", "--from-parquet"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let (s2, stderr) = index(&imported, &[&catalog()], &args);
    assert_eq!(s2["encoded"], 0, "{s2}");
    assert_eq!(s2["precomputed"].as_u64().unwrap() as usize, vecs, "{s2}");
    assert_eq!(s2["items"], s1["items"]);
    assert!(
        stderr.contains(&format!("vectors: {vecs} from 3 shard file(s)")),
        "{stderr}"
    );
    // Same vectors under the same keys.
    let (a, b) = (store_vectors(&one), store_vectors(&imported));
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        let w = b.get(k).unwrap_or_else(|| panic!("{k:?} not imported"));
        assert!(cos(v, w) > 0.99999, "{k:?}: {}", cos(v, w));
    }
    // Same top 10 for the corpus's queries.
    for q in read_jsonl(&toy_corpus().join("queries.jsonl"))
        .iter()
        .take(20)
    {
        let t = q["text"].as_str().unwrap();
        let args = ["--all", "-k", "10", "--type", "product"];
        let full = |db: &Path| {
            let mut c = jsearch(db);
            c.args(["query", t, "--json"]).args(args);
            ids(&json_lines(&run(c, true).stdout))
        };
        assert_eq!(full(&one), full(&imported), "{t}");
    }

    // A shard missing: the run names the problem and writes nothing half.
    let partial = d.join("partial.jsearch");
    let mut c = jsearch(&partial);
    c.arg("index")
        .arg(catalog())
        .arg("--from-parquet")
        .arg(&files[0]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not in the given Parquet shards") && err.contains("embed-shard"),
        "{err}"
    );
    // Not a shard file (an export has no content hashes).
    let mut c = jsearch(&one);
    c.arg("export").arg(d.join("exp"));
    run(c, true);
    let mut c = jsearch(&partial);
    c.arg("index")
        .arg(catalog())
        .arg("--from-parquet")
        .arg(d.join("exp/part-00000.parquet"));
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("part-00000.parquet: not a readable shard file"),
        "{err}"
    );
}

#[test]
fn an_interrupted_shard_resumes_and_a_changed_record_is_encoded_again() {
    let dir = tempdir();
    let d = dir.path();
    let whole = d.join("whole.parquet");
    embed_shard(&catalog(), "0/3", &whole, &[]);

    // Killed once its first part is written: the next run keeps that work.
    let out = d.join("s0.parquet");
    let parts = d.join("s0.parquet.parts");
    let mut c = jsearch(&d.join("unused"));
    c.arg("embed-shard")
        .arg(catalog())
        .args([
            "--shard",
            "0/3",
            "--part-records",
            "4",
            "--batch-size",
            "4",
            "-q",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        // A finished part (not the temporary file of one being written).
        let n = std::fs::read_dir(&parts)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
                    .count()
            })
            .unwrap_or(0);
        if n >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no part written");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !out.exists(),
        "the file appears only when the shard is whole"
    );
    let s = embed_shard(&catalog(), "0/3", &out, &[]);
    let resumed = s["resumed"].as_u64().unwrap();
    assert!(resumed >= 8, "{s}");
    assert_eq!(
        s["encoded"].as_u64().unwrap() + resumed,
        s["vectors"].as_u64().unwrap(),
        "{s}"
    );
    assert_same_rows(&whole, &out);

    // Nothing to do the second time; a changed title re-encodes that record's text only.
    let s = embed_shard(&catalog(), "0/3", &out, &[]);
    assert_eq!(s["encoded"], 0, "{s}");
    let first = rows(&out)[0].0.clone();
    let changed = d.join("products.jsonl");
    let lines: Vec<String> = read_jsonl(&catalog())
        .into_iter()
        .map(|mut v| {
            if v["id"] == first.as_str() {
                v["title"] = "a new title".into();
            }
            if let Some(img) = v["image"].as_str() {
                v["image"] = toy_corpus().join(img).display().to_string().into();
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&changed, lines.join("\n")).unwrap();
    let s = embed_shard(
        &changed,
        "0/3",
        &out,
        &["--catalog-root", &toy_corpus().display().to_string()],
    );
    assert_eq!(s["encoded"], 1, "{s}");
    let r = rows(&out);
    assert_eq!(
        r.len(),
        s["vectors"].as_u64().unwrap() as usize,
        "the old text row is gone"
    );
    let old = rows(&whole);
    assert_ne!(r[0].2, old[0].2, "the changed text has a new hash");
    same_rows(&r[1..], &old[1..]);
}

/// A photo folder (images in two levels, two notes) and a list of its files, relative to the
/// list's folder, with a comment and a blank line.
fn photo_folder(d: &Path) -> (PathBuf, PathBuf, Vec<String>) {
    let photos = d.join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(toy_corpus().join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut lines = vec!["# the toy photos".to_string(), String::new()];
    for (i, n) in names.iter().take(24).enumerate() {
        let rel = if i % 3 == 0 {
            format!("photos/sub/{n}")
        } else {
            format!("photos/{n}")
        };
        std::fs::copy(toy_corpus().join("images").join(n), d.join(&rel)).unwrap();
        lines.push(rel);
    }
    std::fs::write(
        photos.join("moons.txt"),
        "Notes on moons.\n\nThe moon is a round grey disc.\n\nA red circle rises.\n",
    )
    .unwrap();
    std::fs::write(photos.join("shop.txt"), "a blue square card for the shop").unwrap();
    lines.push("photos/moons.txt".into());
    lines.push("photos/shop.txt".into());
    let list = d.join("list.txt");
    std::fs::write(&list, lines.join("\n")).unwrap();
    (photos, list, lines)
}

#[test]
fn a_file_list_encoded_in_shards_imports_into_the_store_one_run_builds() {
    let dir = tempdir();
    let d = dir.path();
    let (photos, list, _) = photo_folder(d);

    // One store, one run: the reference.
    let one = d.join("one.jsearch");
    index(&one, &[&photos], &["--precision", "f32"]);

    // Three shards of the list, then a store from them without the model's towers.
    let mut vectors = 0;
    let mut paths = 0;
    let mut shards = Vec::new();
    for i in 0..3 {
        let out = d.join(format!("shards/{i}.parquet"));
        let s = embed_shard(&list, &format!("{i}/3"), &out, &["--files"]);
        assert_eq!(s["catalog_records"], 26, "{s}");
        assert_eq!(s["encoded"], s["vectors"], "{s}");
        assert!(
            !d.join(format!("shards/{i}.parquet.parts")).exists(),
            "the scratch store is removed"
        );
        vectors += s["vectors"].as_u64().unwrap();
        paths += s["records"].as_u64().unwrap();
        shards.push(out);
    }
    assert_eq!(paths, 26, "each path in one shard");
    let two = d.join("two.jsearch");
    let (s, _) = index(
        &two,
        &[&photos],
        &[
            "--from-parquet",
            &shards[0].display().to_string(),
            &shards[1].display().to_string(),
            &shards[2].display().to_string(),
        ],
    );
    assert_eq!(s["encoded"], 0, "{s}");
    let (a, b) = (store_vectors(&one), store_vectors(&two));
    assert_eq!(a.len() as u64, vectors, "one row per stored vector");
    assert_eq!(
        a.keys().collect::<std::collections::BTreeSet<_>>(),
        b.keys().collect::<std::collections::BTreeSet<_>>()
    );
    for (k, v) in &a {
        assert!(cos(v, &b[k]) > 0.99999, "{k:?}: {}", cos(v, &b[k]));
    }
    for t in ["red circle", "a blue square", "moon", "grüner Stern"] {
        let q = |db: &Path| {
            let mut c = jsearch(db);
            c.args(["query", t, "--json", "--all", "-n", "10"]);
            ids(&json_lines(&run(c, true).stdout))
        };
        assert_eq!(q(&one), q(&two), "{t}");
    }
}

#[test]
fn a_file_list_shard_skips_missing_files_and_encodes_only_new_ones_again() {
    let dir = tempdir();
    let d = dir.path();
    let (_, list, mut lines) = photo_folder(d);
    let out = d.join("all.parquet");
    let first = embed_shard(&list, "0/1", &out, &["--files"]);
    assert_eq!(first["encoded"], first["vectors"], "{first}");

    // Again with one more image and a path that is gone: the gone one is named (exit 3), the
    // earlier vectors are taken from OUT, only the new image is encoded.
    let extra = d.join("photos/extra.png");
    image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 200])
    })
    .save(&extra)
    .unwrap();
    lines.push("photos/extra.png".into());
    lines.push("photos/gone.png".into());
    std::fs::write(&list, lines.join("\n")).unwrap();
    let mut c = jsearch(&d.join("unused"));
    c.args([
        "embed-shard",
        "--files",
        "--shard",
        "0/1",
        "--json",
        "--precision",
        "f32",
    ])
    .arg(&list)
    .arg("--out")
    .arg(&out);
    let o = run(c, false);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("gone.png"),
        "{o:?}"
    );
    let s = &json_lines(&o.stdout)[0];
    assert_eq!(s["encoded"], 1, "{s}");
    assert_eq!(
        s["vectors"].as_u64().unwrap(),
        first["vectors"].as_u64().unwrap() + 1,
        "{s}"
    );
    let r = rows(&out);
    assert!(r.iter().any(|x| x.0.ends_with("extra.png")));
    // A fresh run over the same list writes the same rows (deterministic).
    lines.pop();
    std::fs::write(&list, lines.join("\n")).unwrap();
    let again = embed_shard(&list, "0/1", &d.join("again.parquet"), &["--files"]);
    assert_eq!(again["vectors"], s["vectors"]);
    same_rows(&rows(&d.join("again.parquet")), &r);
}
