//! Helpers of the backend tests (`tests/tests/postgres.rs`, `tests/tests/milvus.rs`): the toy
//! store they sync, the local exact search they compare with.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use jsearch::{Engine, Filter, OpenOptions};
use jsearch_scale::backend::BackendHit;
use serde_json::Value;

use crate::{index, json_lines, read_jsonl, repo_root, run, toy_corpus, toy_model};

/// 12 toy images, 3 notes, 40 products of the toy shop (typed fields).
pub fn store(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let root = dir.join("in");
    let img = root.join("img");
    std::fs::create_dir_all(&img).unwrap();
    let src = toy_corpus().join("images");
    let mut names: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for n in names.iter().take(12) {
        std::fs::copy(src.join(n), img.join(n)).unwrap();
    }
    let notes = root.join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    for (i, t) in [
        "a red circle on a card",
        "Einkaufsliste: Milch",
        "notes on moons",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(notes.join(format!("n{i}.txt")), t).unwrap();
    }
    let shop = dir.join("shop.jsonl");
    write_catalog(&shop, 40, |_| {});
    let db = dir.join("s.jsearch");
    index(&db, &[&root, &shop], &[]);
    (db, root, shop)
}

/// The first `n` records of the toy shop, each passed through `edit` first.
pub fn write_catalog(path: &Path, n: usize, edit: impl Fn(&mut Value)) {
    let lines: Vec<String> = read_jsonl(&repo_root().join("datasets/toy-shop/catalog.jsonl"))
        .into_iter()
        .take(n)
        .map(|mut v| {
            edit(&mut v);
            v.to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// `jsearch sync URL --json EXTRA…` on `db`: its summary.
pub fn sync(db: &Path, url: &str, extra: &[&str]) -> Value {
    let mut c = crate::jsearch(db);
    c.args(["sync", url, "--json"]).args(extra);
    json_lines(&run(c, true).stdout).remove(0)
}

/// `jsearch sync URL EXTRA…` that must fail with exit status 2: its stderr.
pub fn sync_fails(db: &Path, url: &str, extra: &[&str]) -> String {
    let mut c = crate::jsearch(db);
    c.args(["sync", url]).args(extra);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The store `db` opened on the toy model.
pub fn engine(db: &Path) -> Engine {
    Engine::open(OpenOptions {
        db: db.to_path_buf(),
        model_dir: Some(toy_model()),
        ..OpenOptions::default()
    })
    .unwrap()
}

/// The local exact search: best cosine per item over every stored vector that passes `keep`.
pub fn exact_top(
    vectors: &[(u64, Value, Vec<f32>)],
    q: &[f32],
    k: usize,
    keep: impl Fn(&Value) -> bool,
) -> Vec<String> {
    let mut best: HashMap<String, f32> = HashMap::new();
    for (_, meta, v) in vectors.iter().filter(|(_, m, _)| keep(m)) {
        let c: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
        let e = best
            .entry(meta["id"].as_str().unwrap().to_string())
            .or_insert(f32::MIN);
        *e = e.max(c);
    }
    let mut v: Vec<(String, f32)> = best.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.into_iter().take(k).map(|p| p.0).collect()
}

/// Every stored vector: key, the item as JSON (kind, id, metadata), the vector.
pub fn local_vectors(e: &Engine) -> Vec<(u64, Value, Vec<f32>)> {
    let mut out = Vec::new();
    e.for_each_vector(|key, item, _, v| {
        out.push((key, serde_json::to_value(item).unwrap(), v.to_vec()));
        Ok(())
    })
    .unwrap();
    out
}

/// The first `n` query texts of the toy corpus.
pub fn query_texts(n: usize) -> Vec<String> {
    read_jsonl(&toy_corpus().join("queries.jsonl"))
        .iter()
        .take(n)
        .map(|q| q["text"].as_str().unwrap().to_string())
        .collect()
}

/// A backend's search: (query vector, filter) → hits.
pub type BackendSearch<'a> = dyn FnMut(&[f32], Option<Filter>) -> Vec<BackendHit> + 'a;

/// Recall@10 of a backend's search (`search(query vector, filter)` → hits) against the local
/// exact search over `texts`, with a filter (backend side) and its Rust twin (local side); every
/// hit must be a stored vector that passes `keep`, and as many come back as the truth has.
pub fn recall(
    db: &Path,
    texts: &[String],
    filter: Option<&str>,
    keep: &dyn Fn(&Value) -> bool,
    search: &mut BackendSearch<'_>,
) -> f64 {
    let e = engine(db);
    let vectors = local_vectors(&e);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let qs = e.embed(&refs, &[], true).unwrap().texts;
    let (mut found, mut wanted) = (0usize, 0usize);
    for (t, mut q) in texts.iter().zip(qs) {
        jsearch::normalize(&mut q);
        let want = exact_top(&vectors, &q, 10, keep);
        let hits = search(&q, filter.map(|f| Filter::parse(f).unwrap()));
        for h in &hits {
            let meta = vectors
                .iter()
                .find(|(k, _, _)| *k == h.key)
                .map(|(_, m, _)| m)
                .unwrap_or_else(|| panic!("{t}: backend hit {} is not in the store", h.id));
            assert!(keep(meta), "{t}: hit {} fails the filter {filter:?}", h.id);
        }
        assert_eq!(hits.len(), want.len(), "{t}: {filter:?}");
        let got: HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        found += want.iter().filter(|id| got.contains(id.as_str())).count();
        wanted += want.len();
    }
    found as f64 / wanted.max(1) as f64
}

/// The Rust twin of `price < 20 AND in_stock = true`.
pub fn cheap_in_stock(m: &Value) -> bool {
    let md = &m["metadata"];
    md["price"].as_f64().is_some_and(|p| p < 20.0) && md["in_stock"] == Value::Bool(true)
}

/// The change both backends' incremental syncs must follow: a note added, a note changed, an
/// image removed (`rm` and from disk), two products' prices changed; then `index` again.
pub fn change_store(db: &Path, root: &Path, shop: &Path) {
    let notes = root.join("notes");
    std::fs::write(notes.join("n9.txt"), "a green triangle poster").unwrap();
    std::fs::write(notes.join("n1.txt"), "Einkaufsliste: Milch, Brot").unwrap();
    let gone = std::fs::read_dir(root.join("img"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let mut c = crate::jsearch(db);
    c.arg("rm").arg(&gone);
    run(c, true);
    std::fs::remove_file(&gone).unwrap();
    write_catalog(shop, 40, |v| {
        if v["id"] == "p0001" || v["id"] == "p0002" {
            v["price"] = Value::from(1.5);
        }
    });
    index(db, &[root, shop], &[]);
}

/// A backend test's local recall: `recall(texts, backend-side filter, its Rust twin)`.
pub type RecallFn<'a> = dyn FnMut(&[String], Option<&str>, &dyn Fn(&Value) -> bool) -> f64 + 'a;

/// The recall checks every backend passes after its first sync: plain, filtered, and with
/// folded strings and lists (brand "LUMO", tag "Sale" find the same as the data's spelling).
pub fn assert_recalls(texts: &[String], recall: &mut RecallFn<'_>) {
    let r = recall(texts, None, &|_| true);
    assert!(r >= 0.98, "recall@10 {r}");
    let r = recall(
        texts,
        Some("price < 20 AND in_stock = true"),
        &cheap_in_stock,
    );
    assert!(r >= 0.98, "filtered recall@10 {r}");
    let r = recall(
        &texts[..5],
        Some(r#"brand IN ("LUMO", "Vëxa") OR tags = "Sale""#),
        &|m| {
            let md = &m["metadata"];
            matches!(md["brand"].as_str(), Some("Lumo" | "Vexa"))
                || md["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x == "sale"))
        },
    );
    assert!(r >= 0.98, "folded recall@10 {r}");
}

/// A sync's summary `s` says nothing was written.
pub fn assert_nothing_written(s: &Value) {
    assert_eq!(
        (
            s["inserted"].as_u64(),
            s["updated"].as_u64(),
            s["deleted"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{s}"
    );
}

/// The summary of the sync after [`change_store`]: one note in, the changed note and each
/// changed product's text (+ image) vector updated, one image out; then the filtered recall.
pub fn assert_incremental_sync(s: &Value, texts: &[String], recall: &mut RecallFn<'_>) {
    assert_eq!(s["created"], false, "{s}");
    assert_eq!(s["inserted"].as_u64(), Some(1), "{s}");
    assert!(s["updated"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["deleted"].as_u64(), Some(1), "{s}");
    let r = recall(
        texts,
        Some("price < 20 AND in_stock = true"),
        &cheap_in_stock,
    );
    assert!(
        r >= 0.98,
        "filtered recall@10 after the incremental sync {r}"
    );
}

/// `jsearch query --backend URL` on the CLI: the backend's product hits as JSON with the filter
/// applied, and exit status 1 when a filter leaves nothing.
pub fn assert_backend_cli(db: &Path, url: &str) {
    let mut c = crate::jsearch(db);
    c.args([
        "query",
        "a red heart",
        "--backend",
        url,
        "--type",
        "product",
        "--where",
        "price < 20",
        "--json",
        "-k",
        "5",
    ]);
    let hits = json_lines(&run(c, true).stdout);
    assert_eq!(hits.len(), 5);
    for h in &hits {
        assert_eq!(h["kind"], "product");
        assert!(h["metadata"]["price"].as_f64().unwrap() < 20.0, "{h}");
    }
    let mut c = crate::jsearch(db);
    c.args([
        "query",
        "a red heart",
        "--backend",
        url,
        "--where",
        "price < 0",
    ]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}
