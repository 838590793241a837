//! `jsearch serve` over real HTTP on 127.0.0.1: every endpoint and error path, the same hits as
//! the CLI, the token, thumbnails, hostile URLs, an index run writing beside the server, the web
//! page in headless Chromium, and shutdown.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use jsearch_tests::*;
use serde_json::{json, Value};

/// A store with the corpus images, its product catalog, the toy shop's catalog (brands,
/// prices, categories), a note, a byte-identical copy of one image, and an image whose EXIF orientation turns it upright (stored 64×32, shown 32×64).
fn store() -> &'static (tempfile::TempDir, PathBuf) {
    static DB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    DB.get_or_init(|| {
        let dir = tempdir();
        let notes = dir.path().join("notes");
        std::fs::create_dir_all(&notes).unwrap();
        std::fs::write(
            notes.join("stern.txt"),
            "a yellow star next to a blue heart",
        )
        .unwrap();
        let extra = dir.path().join("extra");
        std::fs::create_dir_all(&extra).unwrap();
        std::fs::copy(
            toy_corpus().join("images/img_001.png"),
            extra.join("copy_of_001.png"),
        )
        .unwrap();
        std::fs::write(extra.join("rotated.jpg"), rotated_jpeg()).unwrap();
        let db = dir.path().join("serve.jsearch");
        let shop = repo_root().join("datasets/toy-shop/catalog.jsonl");
        index_mixed(&db, &[&notes, &extra, &shop]);
        (dir, db)
    })
}

fn db() -> &'static Path {
    &store().1
}

/// One server on the shared store for the tests that only read.
fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| Server::start(db(), &["-q"]))
}

/// A 64×32 JPEG (left half red, right half blue) tagged with EXIF orientation 6 (turn 90°
/// clockwise to show): upright it is 32×64 with red on top.
fn rotated_jpeg() -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 32, |x, _| {
        if x < 32 {
            image::Rgb([230, 20, 20])
        } else {
            image::Rgb([20, 20, 230])
        }
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    with_exif_orientation(&jpeg.into_inner(), 6)
}

fn hits(v: &Value) -> &Vec<Value> {
    v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits: {v}"))
}

/// Every error is `{error: {code, message}}` with the expected status; the message.
fn expect_error(r: &Resp, status: u16) -> String {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert!(v["error"]["code"].is_string(), "{v}");
    v["error"]["message"].as_str().unwrap().to_string()
}

fn same_hits(api: &[Value], cli: &[Value]) {
    assert_eq!(
        api.iter().map(|h| h["id"].clone()).collect::<Vec<_>>(),
        cli.iter().map(|h| h["id"].clone()).collect::<Vec<_>>()
    );
    for (a, c) in api.iter().zip(cli) {
        let (a, c) = (a["score"].as_f64().unwrap(), c["score"].as_f64().unwrap());
        assert!((a - c).abs() < 1e-6, "score {a} vs {c}");
    }
}

#[test]
fn search_answers_as_the_cli_does() {
    let s = server();
    assert_eq!(s.get("/healthz").json()["status"], "ok");
    // GET, the simple case: the default relevance cut, like `jsearch query`.
    let api = s.get("/v1/search?q=ein%20roter%20Kreis&k=5").json();
    let cli = query_json_cut(db(), &["ein roter Kreis", "-k", "5"]);
    assert!(!cli.is_empty());
    same_hits(hits(&api), &cli);
    for h in hits(&api) {
        assert!(h["score"].as_f64().unwrap() >= 0.5, "{h}");
        assert_eq!(h["key"].as_str().unwrap().len(), 16, "{h}");
    }
    // POST with every catalog option: filter, type, facets, sort, paging.
    let body = json!({"text": "a red circle", "type": "product", "where": "price < 30",
        "limit": 4, "offset": 4, "all": true, "facets": ["brand", "price"], "sort": "price:desc"});
    let api = s.post_json("/v1/search", &body).json();
    let cli = query_json(
        db(),
        &[
            "a red circle",
            "--type",
            "product",
            "--where",
            "price < 30",
            "-k",
            "4",
            "--offset",
            "4",
            "--sort",
            "price:desc",
        ],
    );
    same_hits(hits(&api), &cli);
    assert_eq!(
        (api["offset"].as_u64(), api["limit"].as_u64()),
        (Some(4), Some(4))
    );
    assert!(api["more"].is_boolean() && api["took_ms"].as_f64().unwrap() > 0.0);
    let prices: Vec<f64> = hits(&api)
        .iter()
        .map(|h| h["metadata"]["price"].as_f64().unwrap())
        .collect();
    assert!(prices.windows(2).all(|w| w[0] >= w[1]) && prices.iter().all(|p| *p < 30.0));
    assert!(
        api["facets"]["brand"]
            .as_array()
            .is_some_and(|b| !b.is_empty()),
        "{api}"
    );
    assert!(
        api["facets"]["price"]["max"].as_f64().unwrap() < 30.0,
        "{api}"
    );
    // Products with an image carry a thumbnail URL (the shop's have none), passages none.
    for h in hits(&api) {
        assert_eq!(h["thumbnail"].is_string(), h["image"].is_string(), "{h}");
    }
    let pics = s
        .get("/v1/search?q=sticker%20white%20triangle&type=product&k=3&all=true")
        .json();
    assert!(
        hits(&pics).iter().any(|h| h["thumbnail"].is_string()),
        "{pics}"
    );
    let t = s
        .get("/v1/search?q=yellow%20star%20blue%20heart&type=text&all=true")
        .json();
    assert!(hits(&t).iter().all(|h| h["thumbnail"].is_null()), "{t}");
    // Nonsense finds nothing relevant (an empty page, not an error).
    let none = s.get("/v1/search?q=quarterly%20tax%20report%202023").json();
    assert_eq!(hits(&none).len(), 0, "{none}");
}

#[test]
fn search_by_uploaded_image_base64_and_multipart() {
    let s = server();
    let file = toy_corpus().join("images/img_027.jpg");
    let bytes = std::fs::read(&file).unwrap();
    let cli = query_json(db(), &["--image", file.to_str().unwrap(), "-k", "5"]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    // Plain base64, and a data: URL, give what the CLI gives.
    for image in [b64.clone(), format!("data:image/jpeg;base64,{b64}")] {
        let api = s
            .post_json(
                "/v1/search",
                &json!({"image": image, "limit": 5, "all": true}),
            )
            .json();
        same_hits(hits(&api), &cli);
        // The uploaded file's own item is left out (same content), as the CLI leaves it out.
        assert!(hits(&api)
            .iter()
            .all(|h| h["id"].as_str() != file.canonicalize().unwrap().to_str()));
    }
    // Multipart: the file as a part, the other fields as parts.
    let boundary = "XjsearchBoundary";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\ncontent-disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n\
             content-type: image/jpeg\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&bytes);
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\ncontent-disposition: form-data; name=\"limit\"\r\n\r\n5\r\n\
             --{boundary}\r\ncontent-disposition: form-data; name=\"all\"\r\n\r\ntrue\r\n--{boundary}--\r\n"
        )
        .as_bytes(),
    );
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = s.req("POST", "/v1/search", &[("content-type", &ct)], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    same_hits(hits(&r.json()), &cli);
    // A corrupt upload: 400 naming the problem.
    let junk = base64::engine::general_purpose::STANDARD.encode(b"GIF89a this is not really a gif");
    let m = expect_error(&s.post_json("/v1/search", &json!({"image": junk})), 400);
    assert!(m.contains("uploaded image"), "{m}");
    let m = expect_error(
        &s.post_json("/v1/search", &json!({"image": "%%% not base64"})),
        400,
    );
    assert!(m.contains("image") && m.contains("base64"), "{m}");
}

#[test]
fn items_similar_and_thumbnails() {
    let s = server();
    let found = s
        .get("/v1/search?q=ein%20roter%20Kreis&k=1&type=image")
        .json();
    let first = &hits(&found)[0];
    let key = first["key"].as_str().unwrap();
    let id = first["id"].as_str().unwrap();
    // By key and by the percent-encoded id: the same item.
    let by_key = s.get(&format!("/v1/items/{key}")).json();
    let by_id = s.get(&format!("/v1/items/{}", url_encode(id))).json();
    assert_eq!(by_key["id"], id);
    assert_eq!(by_id["key"], key);
    // Similar: what `jsearch similar PATH` answers; the item itself is left out.
    let sim = s
        .get(&format!("/v1/items/{key}/similar?k=5&all=true"))
        .json();
    let cli = {
        let mut c = jsearch(db());
        c.args(["similar", id, "-k", "5", "--all", "--json"]);
        json_lines(&run(c, true).stdout)
            .into_iter()
            .filter(|v| v.get("facets").is_none())
            .collect::<Vec<_>>()
    };
    same_hits(hits(&sim), &cli);
    assert!(hits(&sim).iter().all(|h| h["id"] != id));
    // A passage's similar uses that passage; a product's item works by its id too.
    let product = s.get("/v1/items/pub-001").json();
    assert_eq!(product["kind"], "product");
    let psim = s.get(&format!(
        "/v1/items/{}/similar?k=3",
        product["key"].as_str().unwrap()
    ));
    assert_eq!(psim.status, 200, "{}", psim.text());
    // Thumbnails: JPEG, bounded, EXIF-oriented, cached.
    let t = s.get(&format!("/v1/items/{key}/thumbnail"));
    assert_eq!(t.status, 200, "{}", t.text());
    assert_eq!(t.header("content-type"), Some("image/jpeg"));
    let img = image::load_from_memory(&t.body).unwrap();
    assert!(
        img.width().max(img.height()) <= 256,
        "{}x{}",
        img.width(),
        img.height()
    );
    let small = image::load_from_memory(&s.get(&format!("/v1/items/{key}/thumbnail?size=64")).body)
        .unwrap();
    assert!(small.width().max(small.height()) <= 64);
    let again = s.get(&format!("/v1/items/{key}/thumbnail"));
    assert_eq!(again.body, t.body);
    let rotated = store().0.path().join("extra/rotated.jpg");
    let rotated = rotated.canonicalize().unwrap();
    let r = s.get(&format!(
        "/v1/items/{}/thumbnail",
        url_encode(rotated.to_str().unwrap())
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let up = image::load_from_memory(&r.body).unwrap().to_rgb8();
    assert_eq!(up.dimensions(), (32, 64), "EXIF orientation applied");
    let (top, bottom) = (up.get_pixel(16, 8), up.get_pixel(16, 56));
    assert!(top[0] > 150 && top[2] < 100, "red on top: {top:?}");
    assert!(bottom[2] > 150 && bottom[0] < 100, "blue below: {bottom:?}");
    // A product's thumbnail is its image.
    let pt = s.get(&format!(
        "/v1/items/{}/thumbnail",
        product["key"].as_str().unwrap()
    ));
    assert_eq!(pt.status, 200);
    // A passage has none: 404 with a reason.
    let notes = s
        .get("/v1/search?q=yellow%20star&type=text&all=true")
        .json();
    let note = &hits(&notes)[0];
    let m = expect_error(
        &s.get(&format!(
            "/v1/items/{}/thumbnail",
            note["key"].as_str().unwrap()
        )),
        404,
    );
    assert!(m.contains("no picture"), "{m}");
    // Stats: counts, the model, and the fields filters can name.
    let st = s.get("/v1/stats").json();
    assert!(st["items"]["image"].as_u64().unwrap() >= 120, "{st}");
    let fields: Vec<&str> = st["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"kind") && fields.contains(&"brand"),
        "{fields:?}"
    );
}

#[test]
fn bad_requests_get_json_errors() {
    let s = server();
    let post = |body: &str| {
        s.req(
            "POST",
            "/v1/search",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    };
    assert!(expect_error(&post("{\"text\": "), 400).contains("JSON"));
    assert!(expect_error(&post("{\"txet\": \"x\"}"), 400).contains("txet"));
    assert!(expect_error(&post("{}"), 400).contains("empty query"));
    assert!(expect_error(&post("{\"text\": \"x\", \"limit\": 100000}"), 400).contains("limit"));
    assert!(expect_error(&post("{\"text\": \"x\", \"limit\": 0}"), 400).contains("limit"));
    assert!(expect_error(&post("{\"text\": \"x\", \"offset\": 99999999}"), 400).contains("offset"));
    assert!(expect_error(&post("{\"text\": \"x\", \"type\": \"cat\"}"), 400).contains("type"));
    let m = expect_error(
        &post("{\"text\": \"x\", \"where\": \"price < \\\"cheap\\\"\"}"),
        400,
    );
    assert!(m.contains("price") && m.contains("column 9"), "{m}");
    let m = expect_error(&post("{\"text\": \"x\", \"where\": \"colour = 1\"}"), 400);
    assert!(m.contains("colour"), "{m}");
    assert!(expect_error(&post("{\"text\": \"x\", \"sort\": \"price:up\"}"), 400).contains("sort"));
    assert!(expect_error(&post("{\"text\": \"x\", \"mode\": \"magic\"}"), 400).contains("mode"));
    let r = s.req(
        "POST",
        "/v1/search",
        &[("content-type", "text/plain")],
        b"x",
    );
    expect_error(&r, 415);
    expect_error(&s.get("/v1/search?q=x&k=abc"), 400);
    expect_error(&s.get("/v1/search?q=x&bogus=1"), 400);
    expect_error(&s.get("/v1/nothing"), 404);
    expect_error(&s.req("DELETE", "/v1/search", &[], b""), 405);
    expect_error(&s.get("/v1/items/0123456789abcdef"), 404);
    expect_error(&s.get("/v1/items/0123456789abcdef/similar"), 404);
    let key = hits(&s.get("/v1/search?q=red&k=1&type=image&all=true").json())[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    expect_error(
        &s.get(&format!("/v1/items/{key}/thumbnail?size=99999")),
        400,
    );
    expect_error(&s.get(&format!("/v1/items/{key}/similar?q=x")), 400);
}

#[test]
fn large_bodies_are_refused() {
    let s = Server::start(db(), &["-q", "--max-body-mb", "1"]);
    let big = format!("{{\"text\": \"{}\"}}", "a".repeat(2 << 20));
    let r = s.req(
        "POST",
        "/v1/search",
        &[("content-type", "application/json")],
        big.as_bytes(),
    );
    expect_error(&r, 413);
    // The server still answers.
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn hostile_urls_never_reach_a_file_outside_the_store() {
    let s = server();
    let secret = tempdir();
    let outside = secret.path().join("outside.png");
    std::fs::copy(toy_corpus().join("images/img_002.png"), &outside).unwrap();
    let outside = outside.canonicalize().unwrap();
    let outside_enc = url_encode(outside.to_str().unwrap());
    let targets = [
        "/v1/items/..%2F..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        "/v1/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/thumbnail".to_string(),
        "/v1/items/%2Fetc%2Fpasswd".to_string(),
        "/v1/items/%2Fetc%2Fpasswd/thumbnail".to_string(),
        "/v1/items/%252Fetc%252Fpasswd/thumbnail".to_string(),
        "/v1/items/../../../../etc/passwd".to_string(),
        "/../../../../etc/passwd".to_string(),
        "/assets/../../../../etc/passwd".to_string(),
        "/assets/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "//etc/passwd".to_string(),
        format!("/v1/items/{outside_enc}"),
        format!("/v1/items/{outside_enc}/thumbnail"),
        format!("/v1/items/{outside_enc}/similar"),
        "/v1/items/%00/thumbnail".to_string(),
    ];
    for t in &targets {
        let r = s.get(t);
        assert!(
            (400..500).contains(&r.status),
            "{t}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("root:"), "{t}: {}", r.text());
        assert_ne!(r.header("content-type"), Some("image/jpeg"), "{t}");
    }
    // The same file inside the store is served (by its id): the lookup is by the store.
    let inside = toy_corpus()
        .join("images/img_002.png")
        .canonicalize()
        .unwrap();
    let r = s.get(&format!(
        "/v1/items/{}/thumbnail",
        url_encode(inside.to_str().unwrap())
    ));
    assert_eq!(r.status, 200);
}

#[test]
fn a_token_guards_the_api() {
    let s = Server::start(db(), &["-q", "--token", "s3cret"]);
    let r = s.get("/v1/stats");
    expect_error(&r, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    expect_error(
        &s.req(
            "GET",
            "/v1/stats",
            &[("authorization", "Bearer wrong")],
            b"",
        ),
        401,
    );
    expect_error(&s.get("/v1/search?q=red"), 401);
    let ok = s.req(
        "GET",
        "/v1/stats",
        &[("authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    // The page's cookie (an <img> cannot send a header).
    let c = s.req(
        "GET",
        "/v1/stats",
        &[("cookie", "a=b; jsearch_token=s3cret")],
        b"",
    );
    assert_eq!(c.status, 200);
    // The page and the health check need none.
    assert_eq!(s.get("/").status, 200);
    assert_eq!(s.get("/healthz").status, 200);
    // Another address than loopback without a token: refused before listening.
    let mut c = jsearch(db());
    c.args(["serve", "--addr", "0.0.0.0:0"])
        .env_remove("JSEARCH_TOKEN");
    let out = run(c, false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token"), "{err}");
}

#[test]
fn requests_are_logged_and_sigterm_stops_the_server() {
    let s = Server::start(db(), &[]);
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/v1/search?q=red&k=1").status, 200);
    let (status, log) = s.terminate();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("no token (loopback only)"), "{log}");
    assert!(log.contains("GET /healthz 200"), "{log}");
    // The path is logged, not the query string (what people searched for).
    assert!(
        log.contains("GET /v1/search 200") && !log.contains("q=red"),
        "{log}"
    );
    assert!(log.contains("stopped"), "{log}");
    // -q: no request lines.
    let q = Server::start(db(), &["-q"]);
    assert_eq!(q.get("/healthz").status, 200);
    let (_, log) = q.terminate();
    assert!(!log.contains("GET /healthz"), "{log}");
}

#[test]
fn concurrent_queries_agree() {
    let s = server();
    let want = s
        .get("/v1/search?q=ein%20blaues%20Herz&k=5&all=true")
        .json();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    s.get("/v1/search?q=ein%20blaues%20Herz&k=5&all=true")
                        .json()
                })
            })
            .collect();
        for h in handles {
            let got = h.join().unwrap();
            same_hits(hits(&got), hits(&want));
        }
    });
}

#[test]
fn an_index_run_writes_while_the_server_answers() {
    let dir = tempdir();
    let db = dir.path().join("live.jsearch");
    index(&db, &[&toy_corpus().join("images")], &[]);
    let s = Server::start(&db, &["-q"]);
    let before = s
        .get("/v1/search?q=a%20red%20circle&type=product&all=true")
        .json();
    assert_eq!(hits(&before).len(), 0, "no products yet");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answered = std::thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = s.get("/v1/search?q=a%20red%20circle&k=3&all=true");
                assert_eq!(r.status, 200, "during the index run: {}", r.text());
                n += 1;
            }
            n
        });
        // Another process writes the products while the server answers.
        index(&db, &[&toy_corpus().join("products.jsonl")], &[]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        poller.join().unwrap()
    });
    assert!(answered > 0);
    let after = s
        .get("/v1/search?q=a%20red%20circle&type=product&all=true")
        .json();
    assert!(
        !hits(&after).is_empty(),
        "new items after their commit: {after}"
    );
}

/// Headless Chromium (Debian's `chromium`; `.ci/run` installs it) with the flags a closed
/// network needs.
fn chromium(args: &[&str], profile: &Path) -> std::process::Output {
    let bin = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("no chromium: install Debian's chromium (.ci/run does)");
    let mut c = std::process::Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args);
    c.output().expect("run chromium")
}

#[test]
fn the_page_shows_results_as_pictures_in_a_browser() {
    let s = server();
    let profile = tempdir();
    let url = format!("http://{}/?q=ein+roter+Kreis&type=image", s.addr);
    let out = chromium(
        &["--window-size=1280,900", "--dump-dom", &url],
        profile.path(),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("data-state=\"done\""), "{dom}");
    // The query came from the URL, and the result pictures loaded (thumbnails from the API).
    assert!(
        dom.contains("<title>ein roter Kreis – jsearch</title>"),
        "{dom}"
    );
    let loaded = dom.matches("data-loaded=\"1\"").count();
    assert!(loaded >= 3, "{loaded} pictures loaded:\n{dom}");
    assert!(dom.matches("data-kind=\"image\"").count() >= 3, "{dom}");
    // Products as cards with their attributes, and facets from the catalog's fields.
    let url = format!("http://{}/?q=red+circle+mug&type=product", s.addr);
    let out = chromium(
        &["--window-size=1280,900", "--dump-dom", &url],
        profile.path(),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("data-kind=\"product\""), "{dom}");
    assert!(dom.contains("class=\"price\""), "{dom}");
    assert!(dom.contains("<h3>brand</h3>"), "{dom}");
    // Photos: the date-taken range (the store's images have `taken`) filters through the URL;
    // nothing in this store was taken before 2000.
    let url = format!(
        "http://{}/?q=ein+roter+Kreis&type=image&all=1&before=2000-01-01",
        s.addr
    );
    let out = chromium(
        &["--window-size=1280,900", "--dump-dom", &url],
        profile.path(),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<div id=\"taken\">"), "{dom}");
    assert!(dom.contains("Nothing found."), "{dom}");
    // A phone-sized window renders the same results.
    let url = format!("http://{}/?q=ein+roter+Kreis&type=image", s.addr);
    let out = chromium(
        &["--window-size=390,844", "--dump-dom", &url],
        profile.path(),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.matches("data-loaded=\"1\"").count() >= 1, "{dom}");
}
