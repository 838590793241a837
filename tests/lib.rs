//! Helpers for the end-to-end tests: build and run the real `jsearch` binary on the bundled toy
//! model and corpus, in temporary stores.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The toy model folder.
pub fn toy_model() -> PathBuf {
    repo_root().join("datasets/toy-shapes/model")
}

/// The toy corpus folder.
pub fn toy_corpus() -> PathBuf {
    repo_root().join("datasets/toy-shapes/corpus")
}

/// Path of the `jsearch` binary, built once per test process with the same profile as the tests
/// (`cargo build --profile test -p jsearch-cli`, a no-op when up to date), so the tests never run
/// a stale binary.
pub fn jsearch_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile> folder")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "jsearch-cli", "--bin", "jsearch"])
            .current_dir(repo_root());
        // The features the test build itself was given (scripts/test.sh says which), so that
        // this build finds the binary that build made instead of compiling another. A
        // `package/feature` needs its package selected too (its features then unify into the
        // CLI's build, as in the workspace's test build).
        if let Some(f) = std::env::var("JSEARCH_TEST_FEATURES")
            .ok()
            .filter(|f| !f.is_empty())
        {
            for package in f
                .split([',', ' '])
                .filter_map(|x| x.split_once('/'))
                .map(|x| x.0)
            {
                cmd.args(["-p", package]);
            }
            cmd.args(["--features", &f]);
        }
        // Same profile as the tests themselves (`test` shares target/debug with `dev`).
        if release {
            cmd.arg("--release");
        } else {
            cmd.args(["--profile", "test"]);
        }
        if let Some(target_dir) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target_dir);
        }
        let status = cmd
            .status()
            .expect("running cargo build for the jsearch binary");
        assert!(status.success(), "cargo build -p jsearch-cli failed");
        let bin = profile_dir.join(format!("jsearch{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}

/// A `jsearch` command on the toy model and the given store, environment cleared of JSEARCH_*.
pub fn jsearch(db: &Path) -> Command {
    jsearch_with_model(db, &toy_model())
}

/// A `jsearch` command on the given model and store.
pub fn jsearch_with_model(db: &Path, model: &Path) -> Command {
    let mut c = jsearch_without_model(db);
    c.arg("--model").arg(model);
    c
}

/// A `jsearch` command on the given store, on the CPU, offline, with no model named: the model
/// comes from wherever the binary looks by itself (`$HF_HOME`'s cache, ...).
pub fn jsearch_without_model(db: &Path) -> Command {
    let mut c = Command::new(jsearch_bin());
    c.env_remove("JSEARCH_DB")
        .env_remove("JSEARCH_MODEL")
        .env_remove("JSEARCH_DEVICE")
        .env("HF_HUB_OFFLINE", "1")
        .arg("--db")
        .arg(db)
        .arg("--device")
        .arg("cpu")
        .stdin(Stdio::null());
    c
}

/// Runs a command, returning its output; panics with stderr when `expect_ok` and it failed.
pub fn run(mut cmd: Command, expect_ok: bool) -> Output {
    let out = cmd.output().expect("spawning jsearch");
    if expect_ok && !out.status.success() {
        panic!(
            "{:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "jsearch panicked:\n{stderr}");
    out
}

/// Runs `cmd` with its stdout closed before it writes anything (a reader that went away, as
/// `| head -0`); returns its output (stderr captured).
pub fn run_with_closed_stdout(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning jsearch");
    drop(child.stdout.take());
    child.wait_with_output().expect("waiting for jsearch")
}

/// `jsearch index ARGS... --json`: the summary object.
pub fn index(db: &Path, args: &[&Path], extra: &[&str]) -> (Value, String) {
    let mut c = jsearch(db);
    c.arg("index").args(args).args(extra).arg("--json");
    let out = run(c, false);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "index --json printed no JSON ({e}, {}): {}\n{stderr}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        )
    });
    // Exit status 3 exactly when some file or record could not be used.
    let expected = if summary["problems"].as_u64() > Some(0) {
        3
    } else {
        0
    };
    assert_eq!(out.status.code(), Some(expected), "{summary}\n{stderr}");
    (summary, stderr)
}

/// Indexes the corpus images, its product catalog and `more` into `db` (a mixed store); the
/// run's summary, in which no file failed.
pub fn index_mixed(db: &Path, more: &[&Path]) -> Value {
    let corpus = toy_corpus();
    let (images, products) = (corpus.join("images"), corpus.join("products.jsonl"));
    let paths: Vec<&Path> = [images.as_path(), products.as_path()]
        .into_iter()
        .chain(more.iter().copied())
        .collect();
    let (s, _) = index(db, &paths, &[]);
    assert_eq!(s["failed"], 0, "{s}");
    s
}

/// `jsearch query ... --json`: the hits, every one up to the limit (`--all`, unless the
/// arguments set `--min-score` or `--all`): these tests are about ranking and filters, not the
/// cut.
pub fn query_json(db: &Path, args: &[&str]) -> Vec<Value> {
    if args.contains(&"--min-score") || args.contains(&"--all") {
        query_json_cut(db, args)
    } else {
        query_json_cut(db, &[args, &["--all"]].concat())
    }
}

/// `jsearch query ... --json` as given (with the default relevance cut): the hits.
pub fn query_json_cut(db: &Path, args: &[&str]) -> Vec<Value> {
    let mut c = jsearch(db);
    c.arg("query").args(args).arg("--json");
    let out = run(c, false);
    let hits = json_lines(&out.stdout);
    // Exit status 1 exactly when nothing was found.
    let expected = if hits.is_empty() { 1 } else { 0 };
    assert_eq!(
        out.status.code(),
        Some(expected),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hits
}

/// Runs `query --queries FILE --json` with `extra`: the hits of each query text, in order.
pub fn query_batch(db: &Path, texts: &[String], extra: &[&str]) -> Vec<Vec<Value>> {
    let dir = tempdir();
    let file = dir.path().join("q.jsonl");
    let lines: String = texts
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{}\n", serde_json::json!({"id": i.to_string(), "text": t})))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let mut c = jsearch(db);
    c.arg("query")
        .arg("--queries")
        .arg(&file)
        .args(extra)
        .arg("--json");
    let out = run(c, false);
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut per: Vec<Vec<Value>> = vec![Vec::new(); texts.len()];
    for h in json_lines(&out.stdout) {
        if h.get("facets").is_some() {
            continue;
        }
        let i: usize = h["query"].as_str().unwrap().parse().unwrap();
        per[i].push(h);
    }
    per
}

/// The ids of hits.
pub fn ids(hits: &[Value]) -> Vec<String> {
    hits.iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

/// Parses JSON lines.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// `jsearch stats --json`.
pub fn stats(db: &Path) -> Value {
    let mut c = jsearch(db);
    c.arg("stats").arg("--json");
    serde_json::from_slice(&run(c, true).stdout).expect("stats JSON")
}

/// Reads a JSON-lines file of the corpus.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    json_lines(&std::fs::read(path).expect("reading corpus file"))
}

/// Copies the first `n` corpus images (sorted by name) into `dir`; returns their new paths.
pub fn copy_images(dir: &Path, n: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut names: Vec<PathBuf> = std::fs::read_dir(toy_corpus().join("images"))
        .expect("corpus images")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    names
        .into_iter()
        .take(n)
        .map(|src| {
            let dst = dir.join(src.file_name().expect("file name"));
            std::fs::copy(&src, &dst).expect("copy image");
            dst
        })
        .collect()
}

/// A new temporary folder.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Starts `index PATH ARGS… -q` (throttled by the caller's ARGS), waits until at least `min`
/// vectors are committed, and kills it with SIGKILL.
pub fn kill_mid_index(db: &Path, path: &Path, args: &[&str], min: u64) {
    let mut c = jsearch(db);
    c.arg("index")
        .arg(path)
        .args(args)
        .arg("-q")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("spawning jsearch");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut sc = jsearch(db);
        sc.args(["stats", "--json"]);
        let out = sc.output().expect("spawning jsearch stats");
        if out.status.success() {
            let st: Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
            if st["vectors"].as_u64().unwrap_or(0) >= min {
                break;
            }
        }
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// A `jsearch serve` child on 127.0.0.1 (a free port), stopped when dropped.
pub struct Server {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Everything the server printed on stderr so far (its start-up line, request log lines).
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `jsearch serve --addr 127.0.0.1:0 EXTRA…` on `db` and the toy model; waits for its
    /// start-up line.
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        Self::start_cmd(jsearch(db), extra)
    }

    /// [`Server::start`] with a prepared command (its `serve` arguments are appended).
    pub fn start_cmd(mut c: Command, extra: &[&str]) -> Server {
        use std::io::BufRead;
        c.args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn jsearch serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("serve did not start:\n{}", log.lock().unwrap());
            }
        };
        Server { child, addr, log }
    }

    /// A request to this server.
    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        http(&self.addr, method, path, headers, body)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path, &[], b"")
    }

    /// `POST path` with a JSON body.
    pub fn post_json(&self, path: &str, body: &Value) -> Resp {
        self.req(
            "POST",
            path,
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// Sends SIGTERM and waits: the exit status and the log.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().expect("wait for serve");
        // Let the reader thread take the last lines.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Resp {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request over a fresh connection, the target sent exactly as given (no
/// normalisation of `..` or percent-escapes: the tests send hostile URLs on purpose).
pub fn http(addr: &str, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the server");
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) and close before it has read a large body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + size]);
            rest = &rest[nl + 2 + size + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// Percent-encodes every byte outside `A-Za-z0-9-._~` (one URL path segment or query value).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Inserts an EXIF APP1 segment with the given orientation right after SOI.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0");
    tiff.extend_from_slice(&8u32.to_le_bytes()); // IFD0 offset
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[path = "postgres_server.rs"]
pub mod postgres_server;

#[path = "milvus_server.rs"]
pub mod milvus_server;

#[path = "backends.rs"]
pub mod backends;
