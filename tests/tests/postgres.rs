//! `jsearch sync postgres://…` and `jsearch query --backend`, against a real PostgreSQL 18 +
//! pgvector 0.8 started here on 127.0.0.1 (tests/postgres_server.rs; `scripts/test.sh` installs
//! it and makes a server that cannot start a failure, not a skip).
//!
//! The backend's answers are compared with the local store's exact search: every stored vector's
//! cosine with the query, best vector per item, top 10.

use std::path::Path;

use jsearch_scale::postgres::{BackendQuery, PgBackend};
use jsearch_tests::backends::{
    self, assert_backend_cli, assert_incremental_sync, assert_nothing_written, assert_recalls,
    change_store, engine, local_vectors, query_texts, store, sync, sync_fails,
};
use jsearch_tests::postgres_server::{make_certificates, pg_or_skip, pg_tls_or_skip, PgServer};
use jsearch_tests::{index, jsearch, run, stats, tempdir};
use serde_json::Value;

/// Recall@10 of the PostgreSQL backend (see [`backends::recall`]).
fn recall(
    db: &Path,
    pg: &PgServer,
    texts: &[String],
    filter: Option<&str>,
    keep: &dyn Fn(&Value) -> bool,
) -> f64 {
    let mut backend = PgBackend::connect(&pg.url(), "jsearch_items").unwrap();
    backend
        .check_model(&engine(db).model_info().unwrap())
        .unwrap();
    backends::recall(db, texts, filter, keep, &mut |q, f| {
        let mut bq = BackendQuery::new(10);
        bq.filter = f;
        backend.search(q, &bq).unwrap()
    })
}

#[test]
fn sync_creates_updates_and_deletes_and_the_backend_answers_as_the_store() {
    let Some(pg) = pg_or_skip("sync_creates_updates_and_deletes") else {
        return;
    };
    let dir = tempdir();
    let (db, root, shop) = store(dir.path());
    let url = pg.url();
    let vectors = stats(&db)["vectors"].as_u64().unwrap() as usize;

    // First sync: a new table with every vector.
    let s = sync(&db, &url, &[]);
    assert_eq!(s["created"], true, "{s}");
    assert_eq!(s["inserted"].as_u64().unwrap() as usize, vectors, "{s}");
    assert!(s["query"].as_str().unwrap().contains("ORDER BY head <=>"));
    assert!(!s.to_string().contains("s3cret"), "{s}");
    let count = |pg: &PgServer| pg.query("SELECT count(*) FROM jsearch_items");
    assert_eq!(count(&pg), vectors.to_string());
    // Attributes keep their JSON types; filter_attrs holds them folded.
    let row = pg.query(
        "SELECT attrs->>'brand', jsonb_typeof(attrs->'price'), jsonb_typeof(attrs->'in_stock'), \
         filter_attrs->>'brand', kind, title FROM jsearch_items WHERE id = 'p0001'",
    );
    assert_eq!(
        row,
        "Lumo|number|boolean|lumo|product|Lumo red heart poster"
    );
    // Indexes: HNSW on the heads, GIN on the filter attributes.
    let idx = pg.query(
        "SELECT string_agg(indexdef, ' ; ') FROM pg_indexes WHERE tablename = 'jsearch_items'",
    );
    assert!(idx.contains("hnsw (head halfvec_cosine_ops)"), "{idx}");
    assert!(idx.contains("gin (filter_attrs jsonb_path_ops)"), "{idx}");
    // A vector's own item comes first with cosine 1 (the table's vectors are the store's).
    let e = engine(&db);
    let local = local_vectors(&e);
    let mut backend = PgBackend::connect(&url, "jsearch_items").unwrap();
    for (key, meta, v) in local.iter().step_by(37) {
        let hits = backend.search(v, &BackendQuery::new(1)).unwrap();
        assert_eq!(hits[0].id, meta["id"].as_str().unwrap());
        assert!(hits[0].cosine > 0.999, "{} {}", hits[0].cosine, key);
    }
    drop(e);

    // The same queries: the backend's top 10 is the local exact top 10, plain and filtered.
    let texts = query_texts(30);
    assert_recalls(&texts, &mut |t, f, k| recall(&db, &pg, t, f, k));

    // Nothing changed: nothing written.
    let s = sync(&db, &url, &[]);
    assert_nothing_written(&s);
    assert_eq!(s["unchanged"].as_u64().unwrap() as usize, vectors);

    // Add a note, change a note, remove an image, change two products' prices.
    change_store(&db, &root, &shop);
    let after = stats(&db)["vectors"].as_u64().unwrap() as usize;
    assert_eq!(after, vectors, "one note in, one image out");
    let s = sync(&db, &url, &[]);
    assert_incremental_sync(&s, &texts, &mut |t, f, k| recall(&db, &pg, t, f, k));
    assert_eq!(count(&pg), after.to_string());
    assert_eq!(
        pg.query("SELECT attrs->>'price' FROM jsearch_items WHERE id = 'p0001' LIMIT 1"),
        "1.5"
    );

    // Rows lost or damaged on the backend (by hand, a restore): the next sync repairs them.
    pg.query("DELETE FROM jsearch_items WHERE kind = 'image'");
    pg.query(
        "UPDATE jsearch_items SET vector = vector, digest = '\\x00'::bytea WHERE kind = 'text'",
    );
    let s = sync(&db, &url, &[]);
    assert!(s["inserted"].as_u64().unwrap() >= 11, "{s}");
    assert_eq!(s["updated"].as_u64(), Some(4), "{s}");
    assert_eq!(count(&pg), after.to_string());
    let r = recall(&db, &pg, &texts[..10], None, &|_| true);
    assert!(r >= 0.98, "recall@10 after the repair {r}");

    // The CLI: the backend's hits as JSON, exit 1 when a filter leaves nothing.
    assert_backend_cli(&db, &url);
}

#[test]
fn bad_backends_are_named_and_a_failed_sync_leaves_the_table_as_it_was() {
    let Some(pg) = pg_or_skip("bad_backends") else {
        return;
    };
    let dir = tempdir();
    let (db, root, _) = store(dir.path());
    let url = pg.url();

    // Unreachable, wrong password, not a URL: exit 2, the server named, no password printed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = sync_fails(
        &db,
        &format!("postgres://shop:s3cret@127.0.0.1:{closed}/shop"),
        &[],
    );
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "{err}"
    );
    assert!(
        err.contains("shop:***@127.0.0.1") && !err.contains("s3cret"),
        "{err}"
    );
    let err = sync_fails(
        &db,
        &format!("postgres://shop:wrong@127.0.0.1:{}/shop", pg.port),
        &[],
    );
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
    let err = sync_fails(&db, "mysql://x@y/z", &[]);
    assert!(err.contains("not a PostgreSQL URL"), "{err}");
    let err = sync_fails(&db, &url, &["--table", "Items; drop"]);
    assert!(err.contains("invalid table name"), "{err}");

    // A table that is not jsearch's: refused, untouched.
    pg.query("CREATE TABLE jsearch_items (x int); INSERT INTO jsearch_items VALUES (7)");
    pg.query("ALTER TABLE jsearch_items OWNER TO shop");
    let err = sync_fails(&db, &url, &[]);
    assert!(
        err.contains("not made by `jsearch sync`") && err.contains("--table"),
        "{err}"
    );
    assert_eq!(pg.query("SELECT x FROM jsearch_items"), "7");
    // --table elsewhere works; --replace takes the table over.
    let s = sync(&db, &url, &["--table", "shop_v2"]);
    assert_eq!(s["created"], true);
    let s = sync(&db, &url, &["--replace"]);
    assert_eq!(s["created"], true, "{s}");

    // Another model's table (its jsearch_sync row says so): refused with the way forward, for
    // sync and for query --backend.
    pg.query("UPDATE jsearch_sync SET fingerprint = 'other' WHERE table_name = 'jsearch_items'");
    let err = sync_fails(&db, &url, &[]);
    assert!(
        err.contains("holds vectors of model") && err.contains("--replace"),
        "{err}"
    );
    let mut c = jsearch(&db);
    c.args(["query", "a red heart", "--backend", &url]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds vectors of model") && err.contains("--model"),
        "{err}"
    );
    pg.query("UPDATE jsearch_sync SET fingerprint = (SELECT fingerprint FROM jsearch_sync WHERE table_name = 'shop_v2') WHERE table_name = 'jsearch_items'");
    // A column altered by hand.
    pg.query("ALTER TABLE jsearch_items ALTER COLUMN title TYPE varchar(200)");
    let err = sync_fails(&db, &url, &[]);
    assert!(
        err.contains("column title is character varying(200)"),
        "{err}"
    );
    sync(&db, &url, &["--replace"]);

    // A sync that fails half-way (a trigger refuses one row) changes nothing; once the cause is
    // gone, the next sync completes it.
    let before = pg.query(
        "SELECT count(*), md5(string_agg(digest::text, ',' ORDER BY key)) FROM jsearch_items",
    );
    std::fs::write(root.join("notes/n9.txt"), "poison pill").unwrap();
    std::fs::write(root.join("notes/n8.txt"), "a quiet blue note").unwrap();
    std::fs::write(root.join("notes/n0.txt"), "a red circle on a poster").unwrap();
    index(&db, &[&root], &[]);
    pg.query(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF NEW.title = 'poison pill' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON jsearch_items \
         FOR EACH ROW EXECUTE FUNCTION refuse()",
    );
    let err = sync_fails(&db, &url, &[]);
    assert!(err.contains("refused by a trigger"), "{err}");
    let now = pg.query(
        "SELECT count(*), md5(string_agg(digest::text, ',' ORDER BY key)) FROM jsearch_items",
    );
    assert_eq!(now, before, "a failed sync changed the table");
    pg.query("DROP TRIGGER refuse ON jsearch_items");
    let s = sync(&db, &url, &[]);
    assert_eq!(s["inserted"].as_u64(), Some(2), "{s}");
    assert_eq!(s["updated"].as_u64(), Some(1), "{s}");
    assert_eq!(
        pg.query("SELECT count(*) FROM jsearch_items")
            .parse::<usize>()
            .unwrap(),
        stats(&db)["vectors"].as_u64().unwrap() as usize
    );

    // query --backend refuses what it cannot do there.
    let mut c = jsearch(&db);
    c.args(["query", "x", "--backend", &url, "--facet", "brand"]);
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--facet is not available with --backend")
    );
    // A table never synced.
    let mut c = jsearch(&db);
    c.args(["query", "x", "--backend", &url, "--table", "nothing_here"]);
    let out = run(c, false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no table nothing_here synced here"));
}

/// TLS as the URL's sslmode asks: `require` encrypts, `verify-ca` checks the chain against
/// `sslrootcert`, `verify-full` the host name too. The server is the system's PostgreSQL (the
/// PyPI one is built without OpenSSL), which refuses user `shop` without TLS once it is on, and
/// has no pgvector: a connection that got through TLS and the password ends at the sync's
/// pgvector check, one that did not ends with the TLS or certificate error.
#[test]
fn tls_to_postgres_checks_what_sslmode_asks() {
    let Some(pg) = pg_tls_or_skip("tls_to_postgres") else {
        return;
    };
    let dir = tempdir();
    let (db, _, _) = store(dir.path());
    let base = |host: &str| format!("postgres://shop:s3cret@{host}:{}/shop", pg.port);
    let connected = |url: &str| {
        let err = sync_fails(&db, url, &[]);
        assert!(
            err.contains("halfvec") || err.contains("pgvector"),
            "{url}: expected to get past TLS to the pgvector check: {err}"
        );
    };

    // No TLS on the server yet: require is refused, naming it; plain TCP gets through.
    let err = sync_fails(&db, &format!("{}?sslmode=require", base("127.0.0.1")), &[]);
    assert!(err.contains("TLS"), "{err}");
    connected(&base("127.0.0.1"));

    // A CA whose certificate says `localhost` only, and an unrelated CA.
    let (ca, crt, key) = make_certificates(dir.path(), "good", "DNS:localhost").unwrap();
    let (other_ca, _, _) = make_certificates(dir.path(), "other", "DNS:localhost").unwrap();
    pg.enable_tls(&crt, &key).unwrap();
    let root = |f: &Path| f.display().to_string();

    // Plain TCP is refused by the server now: what gets through below went over TLS.
    let err = sync_fails(&db, &format!("{}?sslmode=disable", base("127.0.0.1")), &[]);
    assert!(err.contains("no encryption"), "{err}");
    // require: encrypted, the certificate not checked; the default (prefer) takes TLS too.
    connected(&format!("{}?sslmode=require", base("127.0.0.1")));
    connected(&base("127.0.0.1"));
    // verify-ca: the chain is checked (the name is not: the certificate is for localhost).
    connected(&format!(
        "{}?sslmode=verify-ca&sslrootcert={}",
        base("127.0.0.1"),
        root(&ca)
    ));
    let err = sync_fails(
        &db,
        &format!(
            "{}?sslmode=verify-ca&sslrootcert={}",
            base("127.0.0.1"),
            root(&other_ca)
        ),
        &[],
    );
    assert!(
        err.contains("certificate") && err.contains("sslrootcert=FILE"),
        "{err}"
    );
    // require with a root certificate checks the chain, as libpq's does.
    let err = sync_fails(
        &db,
        &format!(
            "{}?sslmode=require&sslrootcert={}",
            base("127.0.0.1"),
            root(&other_ca)
        ),
        &[],
    );
    assert!(err.contains("certificate"), "{err}");
    // verify-full: the name too: 127.0.0.1 is not in the certificate, localhost is.
    let err = sync_fails(
        &db,
        &format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            base("127.0.0.1"),
            root(&ca)
        ),
        &[],
    );
    assert!(err.contains("certificate"), "{err}");
    let full = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        base("localhost"),
        root(&ca)
    );
    connected(&full);
    // The query side takes the same URL (and gets to the missing table).
    let mut c = jsearch(&db);
    c.args(["query", "red circle", "--backend", &full]);
    let out = run(c, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing synced here yet"), "{err}");
    // Bad TLS parameters are named before anything is sent.
    let err = sync_fails(
        &db,
        &format!("{}?sslmode=sometimes", base("localhost")),
        &[],
    );
    assert!(err.contains("sslmode=sometimes"), "{err}");
    let err = sync_fails(
        &db,
        &format!(
            "{}?sslmode=verify-ca&sslrootcert=/nonexistent.pem",
            base("localhost")
        ),
        &[],
    );
    assert!(err.contains("/nonexistent.pem"), "{err}");
}
