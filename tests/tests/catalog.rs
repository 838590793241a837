//! Catalog search end to end on the generated shop catalog (`datasets/toy-shop`): identifier and
//! brand queries, filters that return exactly `k` passing hits in every mode (also after
//! upserts, deletes and a killed run), facets against a brute-force count, paging, sorting,
//! typed CSV, and bad filters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use jsearch_tests::*;
use serde_json::Value;

fn shop() -> PathBuf {
    repo_root().join("datasets/toy-shop")
}

fn rows() -> Vec<Value> {
    read_jsonl(&shop().join("catalog.jsonl"))
}

/// Writes `rows` as a JSONL catalog at `path`.
fn write_catalog(path: &Path, rows: &[Value]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// A filter with the same meaning in Rust, for brute-force counts.
struct Case {
    expr: String,
    pass: Box<dyn Fn(&Value) -> bool>,
}

fn cases(rows: &[Value]) -> Vec<Case> {
    let one_sku = rows[17]["sku"].as_str().unwrap().to_string();
    let sku2 = one_sku.clone();
    vec![
        Case {
            expr: "price >= 0".into(),
            pass: Box::new(|_| true),
        },
        Case {
            expr: "in_stock = true".into(),
            pass: Box::new(|r| r["in_stock"] == true),
        },
        Case {
            expr: r#"category = "card""#.into(),
            pass: Box::new(|r| r["category"] == "card"),
        },
        Case {
            expr: r#"price < 8 AND category IN ("card", "Sticker")"#.into(),
            pass: Box::new(|r| {
                r["price"].as_f64().unwrap() < 8.0
                    && (r["category"] == "card" || r["category"] == "sticker")
            }),
        },
        Case {
            expr: r#"tags = "eco" AND NOT in_stock = true OR brand = "nobody""#.into(),
            pass: Box::new(|r| {
                r["tags"].as_array().unwrap().iter().any(|t| t == "eco") && r["in_stock"] != true
            }),
        },
        Case {
            expr: format!(r#"sku = "{one_sku}""#),
            pass: Box::new(move |r| r["sku"] == sku2.as_str()),
        },
        Case {
            expr: "price > 1000".into(),
            pass: Box::new(|_| false),
        },
    ]
}

/// Every case in every mode at k = 10 and 60: exactly min(k, passing) hits, all passing.
fn assert_filters_exact(db: &Path, rows: &[Value]) {
    let by_id: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    for case in cases(rows) {
        let passing = rows.iter().filter(|r| (case.pass)(r)).count();
        for mode in ["vector", "keyword", "hybrid", "auto"] {
            for k in [10usize, 60] {
                let k_s = k.to_string();
                let mut c = jsearch(db);
                c.args([
                    "query",
                    "red heart shop",
                    "--all",
                    "--json",
                    "--mode",
                    mode,
                    "-k",
                    &k_s,
                ])
                .args(["--where", &case.expr]);
                let out = run(c, false);
                let hits = json_lines(&out.stdout);
                assert_eq!(
                    hits.len(),
                    k.min(passing),
                    "{mode} k={k} {}: {passing} pass\n{}",
                    case.expr,
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(out.status.code(), Some(if passing == 0 { 1 } else { 0 }));
                for h in &hits {
                    let id = h["id"].as_str().unwrap();
                    let r = by_id
                        .get(id)
                        .unwrap_or_else(|| panic!("{id} is not in the catalog"));
                    assert!((case.pass)(r), "{mode} {}: {id} leaked: {r}", case.expr);
                }
                let distinct: HashSet<&str> =
                    hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
                assert_eq!(distinct.len(), hits.len(), "duplicate hits");
            }
        }
    }
}

#[test]
fn sku_and_brand_queries_rank_right_in_the_default_mode() {
    let dir = tempdir();
    let db = dir.path().join("s.jsearch");
    index(&db, &[&shop().join("catalog.jsonl")], &["-q"]);
    let queries = read_jsonl(&shop().join("queries.jsonl"));
    let texts: Vec<String> = queries
        .iter()
        .map(|q| q["text"].as_str().unwrap().to_string())
        .collect();
    let results = query_batch(&db, &texts, &["-k", "5"]);
    let (mut skus, mut brands) = (0, 0);
    for (q, hits) in queries.iter().zip(&results) {
        let relevant: HashSet<&str> = q["relevant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        match q["kind"].as_str().unwrap() {
            "sku" => {
                skus += 1;
                assert_eq!(
                    hits[0]["id"].as_str(),
                    relevant.iter().next().copied(),
                    "{q}: {:?}",
                    ids(hits)
                );
                assert_eq!(hits[0]["exact"], true, "{}", hits[0]);
            }
            "brand" => {
                brands += 1;
                assert_eq!(hits.len(), 5);
                for h in hits {
                    assert!(
                        relevant.contains(h["id"].as_str().unwrap()),
                        "{q}: {:?}",
                        ids(hits)
                    );
                }
            }
            _ => {
                // Descriptive queries: the best hit is relevant; the score parts are shown.
                assert!(
                    relevant.contains(hits[0]["id"].as_str().unwrap()),
                    "{q}: {:?}",
                    ids(hits)
                );
                assert!(
                    hits[0]["vector"].is_number() && hits[0]["keyword"].is_number(),
                    "{}",
                    hits[0]
                );
            }
        }
    }
    assert_eq!((skus, brands), (25, 6));
    // A bare number part of a SKU finds it first too (a code's numbered parts are exact terms).
    let r = &rows()[3];
    let part = r["sku"]
        .as_str()
        .unwrap()
        .trim_start_matches("SKU-")
        .to_string();
    for mode in ["auto", "keyword"] {
        let hits = query_json(&db, &[&part, "-k", "1", "--mode", mode]);
        assert_eq!(hits[0]["id"], r["id"], "{mode}");
        assert_eq!(hits[0]["exact"], true);
    }
    // Vector mode alone does not find SKUs: the keyword side is what does.
    let v = query_batch(&db, &texts[..25], &["-k", "1", "--mode", "vector", "--all"]);
    let at1 = queries[..25]
        .iter()
        .zip(&v)
        .filter(|(q, h)| h[0]["id"] == q["relevant"][0])
        .count();
    assert!(at1 < 10, "vector mode found {at1}/25 SKUs at rank 1");
}

#[test]
fn filters_return_exactly_k_passing_hits_in_every_mode_after_upserts_and_deletes() {
    let dir = tempdir();
    let db = dir.path().join("s.jsearch");
    let cat = dir.path().join("shop/catalog.jsonl");
    let mut rows = rows();
    write_catalog(&cat, &rows);
    index(&db, &[&cat], &["-q"]);
    assert_filters_exact(&db, &rows);
    // Upserts (a new price, in stock) and deletes, then the same checks on the new catalog.
    let deleted: Vec<Value> = rows.iter().skip(1).step_by(9).cloned().collect();
    let gone: HashSet<String> = deleted
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    rows.retain(|r| !gone.contains(r["id"].as_str().unwrap()));
    for r in rows.iter_mut().step_by(7) {
        r["price"] = serde_json::json!(0.5);
        r["in_stock"] = serde_json::json!(true);
    }
    write_catalog(&cat, &rows);
    index(&db, &[&cat], &["-q"]);
    assert_filters_exact(&db, &rows);
    let cheap = rows.iter().filter(|r| r["price"] == 0.5).count();
    let hits = query_json(
        &db,
        &[
            "shop",
            "--mode",
            "keyword",
            "--where",
            "price < 1",
            "-k",
            "100",
        ],
    );
    assert_eq!(hits.len(), cheap);
    // Deleted SKUs are gone from the keyword index.
    let texts: Vec<String> = deleted
        .iter()
        .map(|r| r["sku"].as_str().unwrap().to_string())
        .collect();
    for (r, hits) in deleted
        .iter()
        .zip(query_batch(&db, &texts, &["--mode", "keyword", "-k", "5"]))
    {
        assert!(
            !ids(&hits).contains(&r["id"].as_str().unwrap().to_string()),
            "{r}"
        );
    }
    let mut c = jsearch(&db);
    c.arg("check");
    run(c, true);
}

#[test]
fn facets_equal_a_brute_force_count() {
    let dir = tempdir();
    let db = dir.path().join("s.jsearch");
    index(&db, &[&shop().join("catalog.jsonl")], &["-q"]);
    let rows = rows();
    for (expr, pass) in [
        (
            "in_stock = true",
            Box::new(|r: &Value| r["in_stock"] == true) as Box<dyn Fn(&Value) -> bool>,
        ),
        (
            "price < 10",
            Box::new(|r: &Value| r["price"].as_f64().unwrap() < 10.0),
        ),
    ] {
        let mut c = jsearch(&db);
        c.args([
            "query",
            "red heart",
            "--all",
            "--json",
            "-k",
            "3",
            "--where",
            expr,
        ])
        .args([
            "--facet", "brand", "--facet", "tags", "--facet", "price", "--facet", "in_stock",
        ]);
        let out = run(c, true);
        let lines = json_lines(&out.stdout);
        let facets = &lines.last().unwrap()["facets"];
        assert_eq!(lines.len(), 4, "3 hits then the facets line");
        let passing: Vec<&Value> = rows.iter().filter(|r| pass(r)).collect();
        let mut brands: BTreeMap<String, u64> = BTreeMap::new();
        let mut tags: BTreeMap<String, u64> = BTreeMap::new();
        for r in &passing {
            *brands
                .entry(r["brand"].as_str().unwrap().into())
                .or_default() += 1;
            for t in r["tags"].as_array().unwrap() {
                *tags.entry(t.as_str().unwrap().into()).or_default() += 1;
            }
        }
        let got = |f: &str| -> BTreeMap<String, u64> {
            facets[f]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        };
        assert_eq!(got("brand"), brands, "{expr}");
        assert_eq!(got("tags"), tags, "{expr}");
        let prices: Vec<f64> = passing
            .iter()
            .map(|r| r["price"].as_f64().unwrap())
            .collect();
        assert_eq!(facets["price"]["count"], passing.len() as u64);
        assert_eq!(
            facets["price"]["min"].as_f64().unwrap(),
            prices.iter().cloned().fold(f64::INFINITY, f64::min)
        );
        assert_eq!(
            facets["price"]["max"].as_f64().unwrap(),
            prices.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        );
        let in_stock = passing.iter().filter(|r| r["in_stock"] == true).count() as u64;
        assert_eq!(facets["in_stock"]["true"].as_u64().unwrap_or(0), in_stock);
    }
    // The table shows a footer.
    let mut c = jsearch(&db);
    c.args(["query", "red heart", "--all", "-k", "2", "--facet", "brand"]);
    let out = String::from_utf8(run(c, true).stdout).unwrap();
    assert!(out.contains("facets:\n  brand: "), "{out}");
}

#[test]
fn paging_and_sorting() {
    let dir = tempdir();
    let db = dir.path().join("s.jsearch");
    index(&db, &[&shop().join("catalog.jsonl")], &["-q"]);
    let all = ids(&query_json(&db, &["red heart", "-k", "20"]));
    let p1 = ids(&query_json(&db, &["red heart", "-k", "10"]));
    let p2 = ids(&query_json(
        &db,
        &["red heart", "-k", "10", "--offset", "10"],
    ));
    assert_eq!([p1.clone(), p2.clone()].concat(), all);
    let ranks: Vec<u64> = query_json(&db, &["red heart", "-k", "10", "--offset", "10"])
        .iter()
        .map(|h| h["rank"].as_u64().unwrap())
        .collect();
    assert_eq!(ranks, (11..=20).collect::<Vec<u64>>());
    // Sorted by price: the same top 20 by relevance, cheapest first.
    let sorted = query_json(&db, &["red heart", "-k", "20", "--sort", "price:asc"]);
    let prices: Vec<f64> = sorted
        .iter()
        .map(|h| h["metadata"]["price"].as_f64().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");
    let set: HashSet<String> = ids(&sorted).into_iter().collect();
    assert_eq!(set, all.iter().cloned().collect::<HashSet<_>>());
    let desc = query_json(&db, &["red heart", "-k", "20", "--sort", "price:desc"]);
    let prices: Vec<f64> = desc
        .iter()
        .map(|h| h["metadata"]["price"].as_f64().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] >= w[1]), "{prices:?}");
    // With --min-score, every hit above it is sorted (not only the top k).
    let above = query_json(&db, &["red heart", "-k", "10000", "--min-score", "0.01"]);
    let sorted = query_json(
        &db,
        &[
            "red heart",
            "-k",
            "10000",
            "--min-score",
            "0.01",
            "--sort",
            "price",
        ],
    );
    assert_eq!(above.len(), sorted.len());
    assert!(above.len() > 20, "{}", above.len());
}

#[test]
fn typed_csv_filters_like_jsonl() {
    let dir = tempdir();
    let (a, b) = (dir.path().join("a.jsearch"), dir.path().join("b.jsearch"));
    index(&a, &[&shop().join("catalog.jsonl")], &["-q"]);
    index(&b, &[&shop().join("catalog.csv")], &["-q"]);
    for expr in [
        r#"price < 20 AND in_stock = true"#,
        r#"tags IN ("eco", "kids") AND sku >= "SKU-5""#,
    ] {
        let q = [
            "red heart",
            "-k",
            "1000",
            "--mode",
            "vector",
            "--where",
            expr,
        ];
        let x: HashSet<String> = ids(&query_json(&a, &q)).into_iter().collect();
        let y: HashSet<String> = ids(&query_json(&b, &q)).into_iter().collect();
        assert!(!x.is_empty());
        assert_eq!(x, y, "{expr}");
    }
    let h = query_json(&b, &["red heart", "-k", "1"]);
    assert!(
        h[0]["metadata"]["price"].is_number() && h[0]["metadata"]["in_stock"].is_boolean(),
        "{}",
        h[0]
    );
    assert!(h[0]["metadata"]["sku"].is_string());
}

#[test]
fn bad_filters_name_the_column_and_the_field() {
    let dir = tempdir();
    let db = dir.path().join("s.jsearch");
    index(&db, &[&shop().join("catalog.jsonl")], &["-q"]);
    for (expr, needles) in [
        (
            "price < ",
            vec!["column 9", "ends where a value was expected"],
        ),
        (
            "pryce < 20",
            vec![
                "column 1",
                "unknown field \"pryce\"",
                "did you mean \"price\"",
            ],
        ),
        (
            r#"price < "cheap""#,
            vec![
                "column 9",
                "field \"price\" holds numbers",
                "\"cheap\" is a string",
            ],
        ),
        ("brand = Korrin", vec!["column 9", "double quotes"]),
        ("(price < 3", vec!["column 11", "')'"]),
        ("in_stock > true", vec!["booleans"]),
    ] {
        let mut c = jsearch(&db);
        c.args(["query", "red", "--all", "--where", expr]);
        let out = run(c, false);
        assert_eq!(out.status.code(), Some(2), "{expr}");
        let err = String::from_utf8_lossy(&out.stderr);
        for n in needles {
            assert!(err.contains(n), "{expr}: {n} in {err}");
        }
    }
    let mut c = jsearch(&db);
    c.args(["query", "red", "--all", "--facet", "colour"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}

#[test]
fn a_field_whose_type_changes_is_reported_once_and_kept() {
    let dir = tempdir();
    let db = dir.path().join("s.jsearch");
    let cat = dir.path().join("c.jsonl");
    let mut rows: Vec<Value> = rows().into_iter().take(20).collect();
    rows[3]["price"] = serde_json::json!("ask us");
    rows[9]["price"] = serde_json::json!("n/a");
    write_catalog(&cat, &rows);
    let (summary, stderr) = index(&db, &[&cat], &[]);
    assert_eq!(summary["items"], 20, "{summary}");
    assert_eq!(stderr.matches("mixed types").count(), 1, "{stderr}");
    assert!(stderr.contains("\"price\""), "{stderr}");
    // Numeric filters skip the string values; the strings are still there as given.
    let hits = query_json(
        &db,
        &[
            "shop",
            "--mode",
            "keyword",
            "-k",
            "100",
            "--where",
            "price >= 0",
        ],
    );
    assert_eq!(hits.len(), 18);
    let hits = query_json(
        &db,
        &[
            "shop",
            "--mode",
            "keyword",
            "-k",
            "100",
            "--where",
            r#"price = "ask us""#,
        ],
    );
    assert_eq!(ids(&hits), [rows[3]["id"].as_str().unwrap()]);
}

#[test]
fn keyword_index_matches_the_items_after_a_killed_run() {
    let dir = tempdir();
    let db = dir.path().join("s.jsearch");
    let cat = dir.path().join("shop/catalog.jsonl");
    let rows = rows();
    write_catalog(&cat, &rows);
    kill_mid_index(
        &db,
        &cat,
        &["--batch-size", "4", "--throttle-ms", "100"],
        40,
    );
    let mut c = jsearch(&db);
    c.arg("check");
    run(c, true);
    // Every item in the store is found by its SKU, first.
    let stored = ids(&query_json(&db, &["x", "--mode", "vector", "-k", "10000"]));
    assert!(
        stored.len() >= 40 && stored.len() < rows.len(),
        "{}",
        stored.len()
    );
    let by_id: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    let texts: Vec<String> = stored
        .iter()
        .map(|id| by_id[id.as_str()]["sku"].as_str().unwrap().to_string())
        .collect();
    for (id, hits) in stored.iter().zip(query_batch(&db, &texts, &["-k", "1"])) {
        assert_eq!(ids(&hits), std::slice::from_ref(id), "{id}");
    }
    // The keyword index holds exactly the stored items.
    let kw = ids(&query_json(
        &db,
        &["shop", "--mode", "keyword", "-k", "10000"],
    ));
    assert_eq!(
        kw.iter().collect::<HashSet<_>>(),
        stored.iter().collect::<HashSet<_>>()
    );
    // The run resumes; then half the catalog goes and its SKUs are not found any more.
    index(&db, &[&cat], &["-q"]);
    let half: Vec<Value> = rows.iter().step_by(2).cloned().collect();
    write_catalog(&cat, &half);
    index(&db, &[&cat], &["-q", "--prune"]);
    let kw = ids(&query_json(
        &db,
        &["shop", "--mode", "keyword", "-k", "10000"],
    ));
    assert_eq!(kw.len(), half.len());
    let mut c = jsearch(&db);
    c.arg("check");
    run(c, true);
}

/// Flips a bit in the middle of the keyword index's block of `term` (through redb itself, as a
/// bad sector under a rewritten page would).
fn damage_keyword_block(db: &Path, term: &str) {
    use redb::ReadableTable;
    let table: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv:kwb");
    let d = redb::Database::open(db).unwrap();
    let txn = d.begin_write().unwrap();
    {
        let mut t = txn.open_table(table).unwrap();
        let mut prefix = term.as_bytes().to_vec();
        prefix.push(0);
        let (k, mut v) = {
            let (k, v) = t
                .range(prefix.as_slice()..)
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            assert!(k.value().starts_with(&prefix), "{term} has a block");
            (k.value().to_vec(), v.value().to_vec())
        };
        let at = v.len() / 2;
        v[at] ^= 1;
        t.insert(k.as_slice(), v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

/// A damaged keyword block is named by a query that reads it and by `check`; `repair` drops it
/// and names the catalog to re-index, and the next index run restores every SKU.
#[test]
fn a_damaged_keyword_block_is_checked_repaired_and_reindexed() {
    let dir = tempdir();
    let db = dir.path().join("s.jsearch");
    let cat = dir.path().join("shop/catalog.jsonl");
    let rows = rows();
    write_catalog(&cat, &rows);
    index(&db, &[&cat], &["-q"]);
    let brand = rows[0]["brand"].as_str().unwrap().to_lowercase();
    damage_keyword_block(&db, &brand);
    let mut c = jsearch(&db);
    c.args(["query", &brand, "--mode", "keyword"]);
    let out = run(c, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("damaged") && err.contains("kv:kwb"), "{err}");
    let mut c = jsearch(&db);
    c.arg("check");
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    let mut c = jsearch(&db);
    c.args(["repair", "--json"]);
    let r: Value = serde_json::from_slice(&run(c, true).stdout).unwrap();
    let reindex: Vec<&str> = r["reindex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(reindex.iter().any(|p| p.ends_with("catalog.jsonl")), "{r}");
    let mut c = jsearch(&db);
    c.arg("check");
    run(c, true);
    index(&db, &[&cat], &["-q"]);
    let mut c = jsearch(&db);
    c.arg("check");
    run(c, true);
    let skus: Vec<String> = rows
        .iter()
        .map(|r| r["sku"].as_str().unwrap().to_string())
        .collect();
    for (r, hits) in rows.iter().zip(query_batch(&db, &skus, &["-k", "1"])) {
        assert_eq!(ids(&hits), [r["id"].as_str().unwrap()], "{}", r["sku"]);
    }
    let of_brand = rows
        .iter()
        .filter(|r| r["brand"].as_str().unwrap().to_lowercase() == brand)
        .count();
    let hits = query_json(&db, &[&brand, "--mode", "keyword", "-k", "10000"]);
    assert_eq!(hits.len(), of_brand);
}
