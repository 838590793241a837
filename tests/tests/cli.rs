//! End-to-end tests of what a user meets on the command line: relevance scores and the default
//! cut, exit codes, stdin, colour, `-v`, help, the store's remembered model, tables, `similar`
//! and `rm` by id, `stats`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use jsearch_tests::*;
use serde_json::Value;

/// Long note: 40 numbered lines, the last ten about something else.
fn long_note() -> String {
    let mut s = String::from("# Notizen\n\n");
    for i in 1..=30 {
        s.push_str(&format!(
            "Line {i}: a blue square and a green triangle on a plain background.\n"
        ));
    }
    for i in 31..=40 {
        s.push_str(&format!("Zeile {i}: ein roter Kreis, ein roter Kreis.\n"));
    }
    s
}

/// A store with the corpus images, its product catalog, two notes, and a byte-identical copy of
/// one image; the folder it lives in.
fn mixed() -> &'static (tempfile::TempDir, PathBuf) {
    static DB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = tempdir();
        let notes = dir.path().join("notes");
        std::fs::create_dir_all(&notes).unwrap();
        std::fs::write(notes.join("long.md"), long_note()).unwrap();
        std::fs::write(
            notes.join("stern.txt"),
            "a yellow star next to a blue heart",
        )
        .unwrap();
        let copies = dir.path().join("copies");
        std::fs::create_dir_all(&copies).unwrap();
        std::fs::copy(
            toy_corpus().join("images/img_001.png"),
            copies.join("copy_of_001.png"),
        )
        .unwrap();
        let db = dir.path().join("mixed.jsearch");
        index_mixed(&db, &[&notes, &copies]);
        (dir, db)
    })
}

fn mixed_db() -> &'static Path {
    &mixed().1
}

fn out_of_domain() -> Vec<String> {
    let mut out = Vec::new();
    for f in [
        "out_of_domain_test.txt",
        "out_of_domain_test2.txt",
        "out_of_domain_test3.txt",
    ] {
        let text = std::fs::read_to_string(repo_root().join("datasets/relevance").join(f)).unwrap();
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
    }
    out
}

/// R@5 of the corpus queries (a relevant image or product in the top 5).
fn recall5(db: &Path, extra: &[&str]) -> f64 {
    let qs = read_jsonl(&toy_corpus().join("queries.jsonl"));
    let texts: Vec<String> = qs
        .iter()
        .map(|q| q["text"].as_str().unwrap().to_string())
        .collect();
    let got = query_batch(db, &texts, &[&["-k", "5"], extra].concat());
    let mut hit = 0;
    for (q, hits) in qs.iter().zip(&got) {
        let rel: HashSet<&str> = ["relevant_images", "relevant_products"]
            .iter()
            .flat_map(|k| q[*k].as_array().unwrap().iter().filter_map(Value::as_str))
            .collect();
        let found = hits.iter().any(|h| {
            let file = Path::new(h["path"].as_str().unwrap_or(""))
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            (h["kind"] == "image" && rel.contains(file.as_str()))
                || rel.contains(h["id"].as_str().unwrap_or(""))
        });
        hit += usize::from(found);
    }
    hit as f64 / qs.len() as f64
}

/// The default cut keeps R@5 within 0.02 of R@5 without it, and at most 5 % of out-of-domain
/// queries return any hit.
fn relevance_holds_on(db: &Path) {
    // Out-of-domain queries (other topics, gibberish, other scripts; none used in the fit):
    // at most 5 % return any hit with the default cut.
    let ood = out_of_domain();
    assert!(ood.len() >= 150, "{}", ood.len());
    let answered: Vec<&String> = query_batch(db, &ood, &["-k", "5"])
        .into_iter()
        .zip(&ood)
        .filter(|(hits, _)| !hits.is_empty())
        .map(|(_, t)| t)
        .collect();
    assert!(
        answered.len() as f64 <= 0.05 * ood.len() as f64,
        "{} of {} out-of-domain queries got a hit: {answered:?}",
        answered.len(),
        ood.len()
    );
    // The real queries keep their relevant hits: R@5 with the cut within 0.02 of R@5 without.
    let (cut, all) = (recall5(db, &[]), recall5(db, &["--all"]));
    assert!(cut >= all - 0.02, "R@5 {cut} with the cut, {all} without");
    assert!(all >= 0.95, "R@5 {all}");
}

#[test]
fn nonsense_finds_nothing_and_real_queries_keep_their_hits_on_an_image_store() {
    let dir = tempdir();
    let db = dir.path().join("images.jsearch");
    index(&db, &[&toy_corpus().join("images")], &["-q"]);
    relevance_holds_on(&db);
}

#[test]
fn nonsense_finds_nothing_and_real_queries_keep_their_hits_on_a_mixed_store() {
    relevance_holds_on(mixed_db());
}

#[test]
fn scores_are_probabilities_and_the_cut_is_a_flag() {
    let db = mixed_db();
    let hits = query_json_cut(db, &["ein roter Kreis", "-k", "20"]);
    assert!(!hits.is_empty());
    for h in &hits {
        let s = h["score"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&s), "{h}");
    }
    // --all and --min-score -inf: no cut (low scores come back too, still within 0..1).
    for flag in [&["--all"][..], &["--min-score", "-inf"][..]] {
        let all = query_json_cut(db, &[&["ein roter Kreis", "-k", "200"], flag].concat());
        assert_eq!(all.len(), 200);
        assert!(all
            .iter()
            .all(|h| (0.0..=1.0).contains(&h["score"].as_f64().unwrap())));
        assert!(all.iter().any(|h| h["score"].as_f64().unwrap() < 0.5));
    }
    let strict = query_json_cut(db, &["ein roter Kreis", "-k", "20", "--min-score", "0.9"]);
    assert!(strict.len() <= hits.len());
    assert!(strict.iter().all(|h| h["score"].as_f64().unwrap() >= 0.9));
}

#[test]
fn exit_codes_and_usage_errors() {
    let db = mixed_db();
    // Nothing relevant: exit 1, nothing on stdout.
    let mut c = jsearch(db);
    c.args(["query", "quarterly tax report 2023"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty());
    // -k 0 is a usage error.
    let mut c = jsearch(db);
    c.args(["query", "red", "-k", "0"]);
    assert_eq!(run(c, false).status.code(), Some(2));
    // A bad --type names the valid ones.
    let mut c = jsearch(db);
    c.args(["query", "red", "--type", "photo"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for kind in ["image", "text", "product"] {
        assert!(err.contains(kind), "{err}");
    }
    // -n and --top are -k.
    for flag in ["-k", "-n", "--top"] {
        let hits = query_json(db, &["ein roter Kreis", flag, "3"]);
        assert_eq!(hits.len(), 3, "{flag}");
    }
}

fn with_stdin(mut c: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn dash_reads_stdin() {
    let db = mixed_db();
    let direct = query_json(db, &["ein roter Kreis", "-k", "5"]);
    let mut c = jsearch(db);
    c.args(["query", "-", "-k", "5", "--all", "--json"]);
    let out = with_stdin(c, "ein roter Kreis\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(ids(&json_lines(&out.stdout)), ids(&direct));
    // An empty stdin is an error.
    let mut c = jsearch(db);
    c.args(["query", "-"]);
    let out = with_stdin(c, "  \n");
    assert_eq!(out.status.code(), Some(2));
    // --queries -: one query per line.
    let mut c = jsearch(db);
    c.args(["query", "--queries", "-", "-k", "2", "--all", "--json"]);
    let out = with_stdin(c, "ein roter Kreis\na yellow star\n");
    let hits = json_lines(&out.stdout);
    let queries: HashSet<&str> = hits.iter().filter_map(|h| h["query"].as_str()).collect();
    assert_eq!(queries, ["1", "2"].into_iter().collect());
    // embed --text -: one text per line, in place of the dash.
    let mut c = jsearch(db);
    c.args(["embed", "--text", "first", "--text", "-", "--text", "last"]);
    let out = with_stdin(c, "zwei\ndrei\n");
    assert!(out.status.success(), "{out:?}");
    let inputs: Vec<String> = json_lines(&out.stdout)
        .iter()
        .map(|l| l["input"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(inputs, ["first", "zwei", "drei", "last"]);
}

#[test]
fn colour_follows_the_flag_and_no_color() {
    let db = mixed_db();
    let table = |args: &[&str], env: Option<(&str, &str)>| -> String {
        let mut c = jsearch(db);
        c.args(["query", "ein roter Kreis", "-k", "3"]).args(args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        String::from_utf8(run(c, true).stdout).unwrap()
    };
    // Piped: no colour unless asked.
    assert!(!table(&[], None).contains('\x1b'));
    assert!(!table(&["--color", "auto"], None).contains('\x1b'));
    assert!(!table(&["--color", "never"], None).contains('\x1b'));
    assert!(table(&["--color", "always"], None).contains("\x1b["));
    assert!(table(&["--color", "always"], Some(("NO_COLOR", "1"))).contains("\x1b["));
    // JSON is never coloured.
    assert!(!table(&["--color", "always", "--json"], None).contains('\x1b'));
    let mut c = jsearch(db);
    c.args(["query", "red", "--color", "sometimes"]);
    assert_eq!(run(c, false).status.code(), Some(2));
}

#[test]
fn verbose_shows_device_timings_and_cosines() {
    let db = mixed_db();
    let mut c = jsearch(db);
    c.args(["query", "ein roter Kreis", "-k", "3"]);
    let quiet = run(c, true);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("device:"));
    let mut c = jsearch(db);
    c.args(["-v", "query", "ein roter Kreis", "-k", "3"]);
    let out = run(c, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("device: cpu"), "{err}");
    assert!(err.contains("timings:") && err.contains("total"), "{err}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().contains("cosine"), "{table}");
}

fn help(args: &[&str]) -> String {
    let mut c = Command::new(jsearch_bin());
    c.args(args).arg("--help");
    String::from_utf8(run(c, true).stdout).unwrap()
}

#[test]
fn help_groups_options_and_leaves_out_what_a_command_does_not_use() {
    let top = help(&[]);
    for s in [
        "Global options:",
        "Model options:",
        "Exit status:",
        "Examples:",
    ] {
        assert!(top.contains(s), "{s}:\n{top}");
    }
    assert!(top.contains("probability"), "{top}");
    let query = help(&["query"]);
    assert!(query.contains("--model") && query.contains("--min-score"));
    assert!(query.contains("-n") && query.contains("--top"));
    for cmd in ["stats", "rm", "check", "repair"] {
        let h = help(&[cmd]);
        for opt in ["--model", "--device", "--precision"] {
            assert!(!h.contains(opt), "{cmd} --help lists {opt}:\n{h}");
        }
        assert!(h.contains("--db"), "{h}");
    }
}

#[test]
fn the_store_remembers_its_model() {
    let dir = tempdir();
    let model = dir.path().join("my-model");
    std::fs::create_dir_all(&model).unwrap();
    for e in std::fs::read_dir(toy_model()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
        }
    }
    let db = dir.path().join("s.jsearch");
    let mut c = jsearch_with_model(&db, &model);
    c.arg("index").arg(toy_corpus().join("images")).arg("-q");
    run(c, true);
    let mut c = jsearch_with_model(&db, &model);
    c.args(["query", "ein roter Kreis", "--all", "--json"]);
    let want = ids(&json_lines(&run(c, true).stdout));
    // No --model, an empty Hugging Face cache, downloads allowed but pointing nowhere: the
    // store's model folder is used.
    let empty = dir.path().join("hf");
    let no_model = |db: &Path| {
        let mut c = jsearch_without_model(db);
        c.env_remove("HF_HUB_OFFLINE")
            .env("HF_HOME", &empty)
            .env("HF_ENDPOINT", "http://127.0.0.1:9");
        c
    };
    let mut c = no_model(&db);
    c.args(["query", "ein roter Kreis", "--all", "--json"]);
    assert_eq!(ids(&json_lines(&run(c, true).stdout)), want);
    let mut c = no_model(&db);
    c.arg("index").arg(toy_corpus().join("images")).arg("-q");
    run(c, true);
    let mut c = no_model(&db);
    c.arg("stats");
    let stats = String::from_utf8(run(c, true).stdout).unwrap();
    assert!(stats.contains(&model.display().to_string()), "{stats}");
    // The folder moved: one clear message naming the model and where it looked; no download.
    let moved = dir.path().join("moved-model");
    std::fs::rename(&model, &moved).unwrap();
    let mut c = no_model(&db);
    c.args(["query", "ein roter Kreis"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was built with model"), "{err}");
    assert!(err.contains(&model.display().to_string()), "{err}");
    assert!(err.contains("--model"), "{err}");
    assert!(!err.to_lowercase().contains("download"), "{err}");
    // --model still works, and an index run with it records the new folder.
    let mut c = jsearch_with_model(&db, &moved);
    c.arg("index").arg(toy_corpus().join("images")).arg("-q");
    run(c, true);
    let mut c = no_model(&db);
    c.args(["query", "ein roter Kreis", "--all", "--json"]);
    assert_eq!(ids(&json_lines(&run(c, true).stdout)), want);
}

/// The table of `query ARGS` run from `cwd`, with `COLUMNS=columns`.
fn table_in(db: &Path, cwd: &Path, columns: usize, args: &[&str]) -> String {
    let mut c = jsearch(db);
    c.current_dir(cwd)
        .env("COLUMNS", columns.to_string())
        .arg("query")
        .args(args);
    String::from_utf8(run(c, true).stdout).unwrap()
}

#[test]
fn paths_read_the_same_from_any_folder() {
    let db = mixed_db();
    let args = ["ein roter Kreis", "-k", "5", "--type", "image", "--all"];
    let hits = query_json(db, &args);
    let abs = hits[0]["path"].as_str().unwrap().to_string();
    let corpus = std::fs::canonicalize(toy_corpus()).unwrap();
    let rel = Path::new(&abs)
        .strip_prefix(&corpus)
        .unwrap()
        .display()
        .to_string();
    // Outside the corpus folder (the root, a temporary folder): absolute.
    let elsewhere = tempdir();
    for cwd in [Path::new("/"), elsewhere.path()] {
        // Wide enough for any checkout's absolute path (CI clones deeper than a desktop).
        let t = table_in(db, cwd, 1000, &args);
        assert!(
            t.contains(&format!(" {abs} ")),
            "from {}:\n{t}",
            cwd.display()
        );
    }
    // Inside it: relative.
    let t = table_in(db, &corpus, 1000, &args);
    assert!(t.contains(&format!(" {rel} ")), "{t}");
    assert!(!t.contains(&abs), "{t}");
}

#[test]
fn tables_fit_the_width_and_show_what_matters() {
    let db = mixed_db();
    let cwd = tempdir();
    // Every row fits the terminal's width.
    for width in [60, 80, 120] {
        let t = table_in(
            db,
            cwd.path(),
            width,
            &["ein roter Kreis", "-k", "30", "--all"],
        );
        for line in t.lines() {
            assert!(line.chars().count() <= width, "{width}: {line:?}");
        }
    }
    // Passages: file:first-last lines, and a snippet of the passage.
    let hits = query_json(db, &["ein roter Kreis", "--type", "text", "-k", "5"]);
    let long = hits
        .iter()
        .find(|h| h["path"].as_str().unwrap().ends_with("long.md"))
        .expect("a passage of long.md");
    let lines = long["lines"].as_array().expect("lines");
    let (a, b) = (lines[0].as_u64().unwrap(), lines[1].as_u64().unwrap());
    assert!(a >= 1 && b >= a && b <= 42, "{a}-{b}");
    let t = table_in(
        db,
        cwd.path(),
        200,
        &["ein roter Kreis", "--type", "text", "-k", "5", "--all"],
    );
    assert!(t.contains(&format!("long.md:{a}-{b}")), "{t}");
    assert!(t.contains('“'), "{t}");
    // Images: pixel size and date.
    let t = table_in(
        db,
        cwd.path(),
        200,
        &["ein roter Kreis", "--type", "image", "-k", "3", "--all"],
    );
    let row = t.lines().nth(1).unwrap();
    assert!(row.contains('×') && row.contains("-"), "{row}");
    // Products of a shop catalog: key attributes by default, --columns to choose.
    let shop = tempdir();
    let sdb = shop.path().join("shop.jsearch");
    index(
        &sdb,
        &[&repo_root().join("datasets/toy-shop/catalog.jsonl")],
        &["-q"],
    );
    let t = table_in(&sdb, cwd.path(), 160, &["red heart", "-k", "5", "--all"]);
    for line in t.lines().skip(1) {
        assert!(
            line.contains("price ") && line.contains("brand ") && line.contains("category "),
            "{line}"
        );
    }
    let t = table_in(
        &sdb,
        cwd.path(),
        160,
        &["red heart", "-k", "5", "--all", "--columns", "sku"],
    );
    for line in t.lines().skip(1) {
        assert!(
            line.contains("sku SKU-") && !line.contains("price "),
            "{line}"
        );
    }
}

#[test]
fn similar_and_image_queries_leave_out_twins() {
    let db = mixed_db();
    let corpus = std::fs::canonicalize(toy_corpus()).unwrap();
    let img = corpus.join("images/img_001.png");
    let copy = std::fs::canonicalize(mixed().0.path().join("copies/copy_of_001.png")).unwrap();
    let similar = |target: &Path, extra: &[&str]| -> Vec<Value> {
        let mut c = jsearch(db);
        c.arg("similar")
            .arg(target)
            .args(["-k", "300", "--json"])
            .args(extra);
        json_lines(&run(c, true).stdout)
    };
    let named = |hits: &[Value], path: &Path, id: &str| -> bool {
        hits.iter().any(|h| {
            (h["kind"] == "image" && Path::new(h["path"].as_str().unwrap()) == path)
                || h["id"] == id
        })
    };
    // img_001.png, its copy, and product pub-001 (whose image it is) are one content.
    let hits = similar(&img, &[]);
    assert!(!hits.is_empty());
    assert!(!named(&hits, &img, "-") && !named(&hits, &copy, "pub-001"));
    let hits = similar(&img, &["--include-self"]);
    assert!(named(&hits, &copy, "-") && named(&hits, Path::new("/"), "pub-001"));
    assert!(
        !named(&hits, &img, "-"),
        "the query item itself never comes back"
    );
    // By product id.
    let hits = similar(Path::new("pub-002"), &[]);
    assert!(!hits.is_empty() && !named(&hits, Path::new("/"), "pub-002"));
    // A file that is not in the store is embedded on the fly.
    let new = tempdir();
    let fresh = new.path().join("fresh.png");
    std::fs::copy(corpus.join("images/img_003.png"), &fresh).unwrap();
    let hits = similar(&fresh, &[]);
    assert!(!hits.is_empty());
    // ... leaving out the store's copies of it unless asked.
    assert!(!named(&hits, &corpus.join("images/img_003.png"), "pub-003"));
    assert!(named(
        &similar(&fresh, &["--include-self"]),
        &corpus.join("images/img_003.png"),
        "pub-003"
    ));
    // Neither indexed, nor an id, nor a file.
    let mut c = jsearch(db);
    c.args(["similar", "no-such-thing-42"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-thing-42"));
    // query --image: the query file and its twins are left out, unless --include-self.
    let q = |extra: &[&str]| {
        let mut c = jsearch(db);
        c.arg("query")
            .arg("--image")
            .arg(&img)
            .args(["-k", "300", "--all", "--json"])
            .args(extra);
        json_lines(&run(c, true).stdout)
    };
    let hits = q(&[]);
    assert!(!named(&hits, &img, "pub-001") && !named(&hits, &copy, "-"));
    let hits = q(&["--include-self"]);
    assert!(named(&hits[..1], &img, "-") || named(&hits[..1], &copy, "pub-001"));
}

#[test]
fn rm_takes_product_ids_and_removes_every_match() {
    let dir = tempdir();
    let db = dir.path().join("shop.jsearch");
    let catalog = repo_root().join("datasets/toy-shop/catalog.jsonl");
    index(&db, &[&catalog], &["-q"]);
    let before = stats(&db)["items"]["product"].as_u64().unwrap();
    let by_id = |id: &str| query_json(&db, &["heart", "--where", &format!("id = \"{id}\"")]);
    assert_eq!(by_id("p0000").len(), 1);
    let mut c = jsearch(&db);
    c.args(["rm", "p0000", "no-such-id", "p0001"]);
    let out = run(c, true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-id") && err.contains("not in the store"),
        "{err}"
    );
    assert!(err.contains("2 product(s)"), "{err}");
    assert!(by_id("p0000").is_empty() && by_id("p0001").is_empty());
    assert_eq!(by_id("p0002").len(), 1);
    assert_eq!(stats(&db)["items"]["product"].as_u64().unwrap(), before - 2);
    // Its SKU finds it no more (the keyword index went with it).
    let rows = read_jsonl(&catalog);
    let sku = rows[0]["sku"].as_str().unwrap();
    let hits = query_json(&db, &[sku, "--mode", "keyword"]);
    assert!(hits.iter().all(|h| h["id"] != "p0000"));
    let mut c = jsearch(&db);
    c.arg("check");
    run(c, true);
}

#[test]
fn stats_are_aligned_and_count_files_and_passages() {
    let db = mixed_db();
    let mut c = jsearch(db);
    c.arg("stats");
    let out = String::from_utf8(run(c, true).stdout).unwrap();
    let cols: HashSet<usize> = out
        .lines()
        .map(|l| {
            let colon = l.find(':').unwrap();
            colon + l[colon + 1..].chars().take_while(|c| *c == ' ').count()
        })
        .collect();
    assert_eq!(cols.len(), 1, "values not aligned:\n{out}");
    for s in [
        "files:",
        "images:",
        "texts:",
        "catalogs:",
        "passages:",
        "products:",
    ] {
        assert!(out.contains(s), "{s}\n{out}");
    }
    let json = stats(db);
    assert_eq!(json["files_by_kind"]["text"], 2, "{json}");
}

#[test]
fn a_folder_as_db_is_refused_once() {
    let dir = tempdir();
    let mut c = jsearch(dir.path());
    c.args(["query", "red"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("is a folder").count(), 1, "{err}");
}

#[test]
fn progress_counts_items_only() {
    let dir = tempdir();
    let db = dir.path().join("p.jsearch");
    let mut c = jsearch(&db);
    c.arg("index").arg(toy_corpus().join("images"));
    let out = run(c, true);
    let err = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<&str> = err.lines().filter(|l| l.starts_with("indexed ")).collect();
    assert!(!progress.is_empty(), "{err}");
    for l in progress {
        assert!(l.contains(" items ") && !l.contains("encoded"), "{l}");
    }
}
