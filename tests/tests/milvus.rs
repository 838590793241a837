//! `jsearch sync milvus://…` and `jsearch query --backend milvus://…`, against real Milvus
//! servers started here on 127.0.0.1 (tests/milvus_server.rs): milvus-lite 2.4 (PyPI's
//! `milvus-lite` wheel; both vector fields in one collection) and Milvus 2.3 standalone (PyPI's
//! `milvus` wheel; one vector field per collection, so the full vectors go to a second one).
//! The backend's answers are compared with the local store's exact search, as for PostgreSQL
//! (tests/tests/postgres.rs).

use std::path::Path;

use jsearch_scale::backend::BackendQuery;
use jsearch_scale::milvus::schema::Layout;
use jsearch_scale::milvus::MilvusBackend;
use jsearch_tests::backends::{
    self, assert_backend_cli, assert_incremental_sync, assert_nothing_written, assert_recalls,
    change_store, engine, local_vectors, query_texts, store, sync, sync_fails,
};
use jsearch_tests::milvus_server::{milvus_or_skip, milvus_standalone_or_skip};
use jsearch_tests::postgres_server::make_certificates;
use jsearch_tests::{jsearch, run, stats, tempdir};
use serde_json::Value;

fn recall(
    db: &Path,
    url: &str,
    texts: &[String],
    filter: Option<&str>,
    keep: &dyn Fn(&Value) -> bool,
) -> f64 {
    let mut backend = MilvusBackend::connect(url, "jsearch_items").unwrap();
    let info = backend.info().clone();
    assert!(engine(db)
        .model_info()
        .unwrap()
        .made(&info.model, &info.fingerprint, info.dim));
    backends::recall(db, texts, filter, keep, &mut |q, f| {
        let mut bq = BackendQuery::new(10);
        bq.filter = f;
        backend.search(q, &bq).unwrap()
    })
}

#[test]
fn milvus_sync_is_incremental_and_answers_as_the_store() {
    let Some(m) = milvus_or_skip("milvus_sync_is_incremental") else {
        return;
    };
    sync_and_compare(&m.url(), Layout::One);
}

/// Milvus 2.3 allows one vector field per collection and has no FLOAT16_VECTOR: the heads
/// (FLOAT_VECTOR, HNSW) stay with the attributes, the full vectors go to `jsearch_items_vectors`.
#[test]
fn milvus_2_3_standalone_sync_splits_the_vectors_and_answers_as_the_store() {
    let Some(m) = milvus_standalone_or_skip("milvus_2_3_standalone_sync", &[]) else {
        return;
    };
    sync_and_compare(&m.url(), Layout::Split);
}

/// Sync, compare with the local store, change the store, sync again, the CLI, refusals.
fn sync_and_compare(url: &str, layout: Layout) {
    let dir = tempdir();
    let (db, root, shop) = store(dir.path());
    let url = url.to_string();
    let vectors = stats(&db)["vectors"].as_u64().unwrap() as usize;

    let s = sync(&db, &url, &[]);
    assert_eq!(s["created"], true, "{s}");
    assert_eq!(s["inserted"].as_u64().unwrap() as usize, vectors, "{s}");
    // The printed plan says where the full vectors are.
    let plan = s["query"].as_str().unwrap();
    assert_eq!(
        plan.contains("query collection jsearch_items_vectors"),
        layout == Layout::Split,
        "{plan}"
    );
    // Each stored vector finds its own item first, at cosine 1.
    let e = engine(&db);
    let mut backend = MilvusBackend::connect(&url, "jsearch_items").unwrap();
    assert_eq!(backend.layout(), layout);
    for (_, meta, v) in local_vectors(&e).iter().step_by(37) {
        let hits = backend.search(v, &BackendQuery::new(1)).unwrap();
        assert_eq!(hits[0].id, meta["id"].as_str().unwrap());
        assert!(hits[0].cosine > 0.999, "{}", hits[0].cosine);
    }
    drop(e);
    let texts = query_texts(30);
    assert_recalls(&texts, &mut |t, f, k| recall(&db, &url, t, f, k));

    // Nothing changed: nothing written.
    let s = sync(&db, &url, &[]);
    assert_nothing_written(&s);

    // A note in, a note changed, an image out, two prices changed.
    change_store(&db, &root, &shop);
    let s = sync(&db, &url, &[]);
    assert_incremental_sync(&s, &texts, &mut |t, f, k| recall(&db, &url, t, f, k));
    assert_eq!(s["rows"].as_u64().unwrap() as usize, vectors);

    // The CLI: hits as JSON with the filter applied; exit 1 when nothing passes.
    assert_backend_cli(&db, &url);

    // --replace starts again; bad URLs and servers are named.
    let s = sync(&db, &url, &["--replace"]);
    assert_eq!(s["created"], true, "{s}");
    assert_eq!(s["inserted"].as_u64().unwrap() as usize, vectors);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = sync_fails(&db, &format!("milvus://127.0.0.1:{closed}"), &[]);
    assert!(err.contains("cannot connect"), "{err}");
    let mut c = jsearch(&db);
    c.args(["query", "x", "--backend", &url, "--table", "nothing_here"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no collection nothing_here"));
    let mut c = jsearch(&db);
    c.args(["query", "x", "--backend", &url, "--near", "48.8,2.3,5"]);
    let out = run(c, false);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--near is not available"),
        "{out:?}"
    );
}

/// Milvus 2.3 with a password and TLS (`https://USER:PASSWORD@HOST:PORT?ca=FILE`): the right
/// ones sync and answer; plain gRPC, a wrong password, another CA and a host name the
/// certificate does not carry are refused, each named.
#[test]
fn milvus_over_tls_with_a_password() {
    let dir = tempdir();
    let (ca, crt, key) = make_certificates(dir.path(), "good", "DNS:localhost").unwrap();
    let (other_ca, _, _) = make_certificates(dir.path(), "other", "DNS:localhost").unwrap();
    let s = |p: &Path| p.display().to_string();
    let Some(m) = milvus_standalone_or_skip(
        "milvus_over_tls_with_a_password",
        &[
            "--authorization-enabled",
            "true",
            "--tls-mode",
            "1",
            "--server-pem-path",
            &s(&crt),
            "--server-key-path",
            &s(&key),
            "--ca-pem-path",
            &s(&ca),
        ],
    ) else {
        return;
    };
    let (db, _, _) = store(dir.path());
    let url = |user: &str, host: &str, ca: &Path| {
        format!("https://{user}@{host}:{}?ca={}", m.port, ca.display())
    };

    let err = sync_fails(&db, &m.url(), &[]);
    assert!(
        err.contains("127.0.0.1"),
        "plain gRPC to a TLS server: {err}"
    );
    let err = sync_fails(&db, &url("root:wrong", "localhost", &ca), &[]);
    assert!(
        err.contains("auth") && err.contains("root:***@") && !err.contains("wrong"),
        "{err}"
    );
    let err = sync_fails(&db, &url("root:Milvus", "localhost", &other_ca), &[]);
    assert!(err.contains("certificate"), "{err}");
    let err = sync_fails(&db, &url("root:Milvus", "127.0.0.1", &ca), &[]);
    assert!(err.contains("not valid for name"), "{err}");

    let good = url("root:Milvus", "localhost", &ca);
    let s = sync(&db, &good, &[]);
    assert_eq!(s["created"], true, "{s}");
    // server_name names the certificate's host when the URL has another.
    let by_ip = format!(
        "{}&server_name=localhost",
        url("root:Milvus", "127.0.0.1", &ca)
    );
    assert_nothing_written(&sync(&db, &by_ip, &[]));
    let mut c = jsearch(&db);
    c.args(["query", "red circle", "--backend", &good, "--json"]);
    let hits = jsearch_tests::json_lines(&run(c, true).stdout);
    assert_eq!(hits.len(), 10, "{hits:?}");
}
