//! Model location and download against a local HTTP server serving the fixture model.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jsearch_encoders::hub::{
    check_model_dir, download_with, find_cached, repo_folder_name, resolve_model_dir_with,
    DownloadOptions, HubEnv, DEFAULT_REPO, REQUIRED_FILES,
};
use jsearch_encoders::EncoderError;
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/jina-clip-v2-tiny/model")
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// How the server answers one file.
#[derive(Clone)]
enum Mode {
    Normal,
    Status(u16),
    /// Declares the full length but closes after half the bytes.
    Truncated,
    /// Sends a wrong sha256 ETag.
    BadChecksum,
}

/// Requested paths with their `Authorization` header.
type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Server {
    endpoint: String,
    log: RequestLog,
}

/// Serves `datasets/jina-clip-v2-tiny/model/<file>` at `/<repo>/resolve/main/<file>` like the
/// hub: `X-Repo-Commit`, a sha256 `X-Linked-Etag` for the weights (behind a redirect to a
/// "CDN" path, as the hub does for LFS files) and a git-style ETag for the others.
fn serve(modes: Vec<(&'static str, Mode)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let log: RequestLog = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut auth = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_string());
                    }
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            log2.lock().expect("log").push((path.clone(), auth));
            let file = path.rsplit('/').next().unwrap_or("").to_string();
            let mode = modes
                .iter()
                .find(|(f, _)| *f == file)
                .map(|(_, m)| m.clone())
                .unwrap_or(Mode::Normal);
            let bytes = std::fs::read(model_dir().join(&file)).ok();
            let resolve_prefix = format!("/{DEFAULT_REPO}/resolve/main/");
            let mut head: String;
            let mut body: Vec<u8> = Vec::new();
            match (&mode, bytes) {
                (Mode::Status(code), _) => {
                    head = format!("HTTP/1.1 {code} Oops\r\nContent-Length: 5\r\n");
                    body = b"error".to_vec();
                }
                (_, None) => {
                    head = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n".into();
                }
                (_, Some(bytes)) => {
                    let lfs = file == "model.safetensors";
                    if lfs && path.starts_with(&resolve_prefix) {
                        // The hub answers LFS files with a redirect carrying the metadata.
                        let etag = match mode {
                            Mode::BadChecksum => sha256_hex(b"something else"),
                            _ => sha256_hex(&bytes),
                        };
                        head = format!(
                            "HTTP/1.1 302 Found\r\nLocation: /cdn/{file}\r\nX-Repo-Commit: {COMMIT}\r\n\
                             X-Linked-Etag: \"{etag}\"\r\nContent-Length: 0\r\n"
                        );
                    } else {
                        let declared = bytes.len();
                        let sent = match mode {
                            Mode::Truncated => &bytes[..bytes.len() / 2],
                            _ => &bytes[..],
                        };
                        head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nX-Repo-Commit: {COMMIT}\r\n\
                             ETag: \"{}\"\r\n",
                            &sha256_hex(&bytes)[..40]
                        );
                        body = sent.to_vec();
                    }
                }
            }
            head.push_str("Connection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
        }
    });
    Server {
        endpoint: format!("http://{addr}"),
        log,
    }
}

fn opts(server: &Server) -> DownloadOptions {
    DownloadOptions {
        endpoint: server.endpoint.clone(),
        progress: false,
        ..DownloadOptions::default()
    }
}

fn offline_env(cache: &Path) -> HubEnv {
    HubEnv {
        hf_hub_cache: Some(cache.to_path_buf()),
        offline: true,
        ..HubEnv::default()
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn download_lands_in_hf_cache_layout_and_resolves_afterwards() {
    let server = serve(vec![]);
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("hub");
    let snap = download_with(DEFAULT_REPO, &cache, &opts(&server)).expect("download");
    let repo_dir = cache.join(repo_folder_name(DEFAULT_REPO));
    assert_eq!(snap, repo_dir.join("snapshots").join(COMMIT));
    for f in REQUIRED_FILES {
        let got = std::fs::read(snap.join(f)).expect("file");
        let want = std::fs::read(model_dir().join(f)).expect("fixture");
        assert!(got == want, "{f} differs");
        #[cfg(unix)]
        assert!(
            std::fs::symlink_metadata(snap.join(f))
                .expect("meta")
                .file_type()
                .is_symlink(),
            "{f} should link into blobs/"
        );
    }
    let refs = std::fs::read_to_string(repo_dir.join("refs/main")).expect("refs/main");
    assert_eq!(refs, COMMIT);
    let blobs = files_in(&repo_dir.join("blobs"));
    assert_eq!(blobs.len(), REQUIRED_FILES.len(), "{blobs:?}");
    let weights = std::fs::read(model_dir().join("model.safetensors")).expect("weights");
    assert!(
        blobs.contains(&sha256_hex(&weights)),
        "LFS blob named by sha256"
    );
    assert!(blobs.iter().all(|b| !b.contains("incomplete")));

    // The token went only to the endpoint's resolve URLs.
    let requests = server.log.lock().expect("log").len();
    assert_eq!(
        requests,
        REQUIRED_FILES.len() + 1,
        "one redirect for the weights"
    );

    // Resolution finds it offline, and a second download fetches nothing.
    let env = offline_env(&cache);
    assert_eq!(
        resolve_model_dir_with(None, &env, false).expect("resolve"),
        snap
    );
    assert_eq!(find_cached(&cache, DEFAULT_REPO), Some(snap.clone()));
    download_with(DEFAULT_REPO, &cache, &opts(&server)).expect("again");
    assert_eq!(server.log.lock().expect("log").len(), requests);
    check_model_dir(&snap).expect("complete");
}

#[test]
fn resolve_downloads_when_absent_with_token_and_endpoint_from_env() {
    let server = serve(vec![]);
    let tmp = tempfile::tempdir().expect("tmp");
    let env = HubEnv {
        hf_home: Some(tmp.path().join("hf")),
        endpoint: Some(format!("{}/", server.endpoint)),
        token: Some("secret".into()),
        ..HubEnv::default()
    };
    let dir = resolve_model_dir_with(None, &env, false).expect("resolve + download");
    assert!(dir.starts_with(tmp.path().join("hf/hub")));
    check_model_dir(&dir).expect("complete");
    let log = server.log.lock().expect("log");
    for (path, auth) in log.iter() {
        assert_eq!(auth.as_deref(), Some("Bearer secret"), "{path}");
    }
}

#[test]
fn offline_and_absent_gives_one_clear_message() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = tmp.path().join("hub");
    let err = resolve_model_dir_with(None, &offline_env(&cache), false).expect_err("absent");
    let msg = err.to_string();
    assert!(matches!(err, EncoderError::ModelNotFound(_)), "{msg}");
    for needle in [
        "HF_HUB_OFFLINE",
        "model.safetensors",
        "preprocessor_config.json",
        "--model",
        "JSEARCH_MODEL",
        "jinaai/jina-clip-v2",
        "models--jinaai--jina-clip-v2",
        "non-commercial",
    ] {
        assert!(msg.contains(needle), "message lacks {needle:?}: {msg}");
    }
    assert!(msg.contains(&cache.display().to_string()), "{msg}");
}

#[test]
fn server_errors_are_clear_and_leave_no_half_file() {
    for (file, mode, needle) in [
        ("tokenizer.json", Mode::Status(404), "HTTP 404"),
        ("model.safetensors", Mode::Status(500), "HTTP 500"),
        ("tokenizer.json", Mode::Truncated, "tokenizer.json"),
        ("model.safetensors", Mode::BadChecksum, "checksum mismatch"),
    ] {
        let server = serve(vec![(file, mode)]);
        let tmp = tempfile::tempdir().expect("tmp");
        let cache = tmp.path().join("hub");
        let err = download_with(DEFAULT_REPO, &cache, &opts(&server)).expect_err("must fail");
        let msg = err.to_string();
        assert!(matches!(err, EncoderError::Download { .. }), "{msg}");
        assert!(msg.contains(needle), "{file}: {msg}");
        let repo_dir = cache.join(repo_folder_name(DEFAULT_REPO));
        let blobs = files_in(&repo_dir.join("blobs"));
        assert!(
            blobs.iter().all(|b| !b.contains("incomplete")),
            "temporary left behind: {blobs:?}"
        );
        let snap = repo_dir.join("snapshots").join(COMMIT);
        assert!(!snap.join(file).exists(), "{file} must not look downloaded");
        assert!(
            !repo_dir.join("refs/main").exists(),
            "refs/main only after success"
        );
        // Nothing complete: offline resolution still reports the model as absent.
        assert!(resolve_model_dir_with(None, &offline_env(&cache), false).is_err());

        // Through resolve, the error keeps the advice and the HTTP reason.
        let env = HubEnv {
            hf_hub_cache: Some(cache.clone()),
            endpoint: Some(server.endpoint.clone()),
            ..HubEnv::default()
        };
        let msg = resolve_model_dir_with(None, &env, false)
            .expect_err("fails")
            .to_string();
        assert!(msg.contains(needle) && msg.contains("--model"), "{msg}");
    }
}

fn copy_model(to: &Path, skip: Option<&str>) {
    std::fs::create_dir_all(to).expect("mkdir");
    for f in REQUIRED_FILES {
        if Some(f) != skip {
            std::fs::copy(model_dir().join(f), to.join(f)).expect("copy");
        }
    }
}

#[test]
fn precedence_explicit_then_env_then_cache() {
    let tmp = tempfile::tempdir().expect("tmp");
    let explicit = tmp.path().join("explicit");
    let from_env = tmp.path().join("from_env");
    copy_model(&explicit, None);
    copy_model(&from_env, None);
    let cache = tmp.path().join("hub");
    let snap = cache
        .join(repo_folder_name(DEFAULT_REPO))
        .join("snapshots/abc");
    copy_model(&snap, None);

    let mut env = offline_env(&cache);
    env.jsearch_model = Some(from_env.clone());
    assert_eq!(
        resolve_model_dir_with(Some(&explicit), &env, false).expect("explicit"),
        explicit
    );
    assert_eq!(
        resolve_model_dir_with(None, &env, false).expect("env"),
        from_env
    );
    env.jsearch_model = None;
    assert_eq!(
        resolve_model_dir_with(None, &env, false).expect("cache"),
        snap
    );

    // refs/main wins over a newer snapshot; an incomplete one is never chosen.
    let other = cache
        .join(repo_folder_name(DEFAULT_REPO))
        .join("snapshots/def");
    copy_model(&other, None);
    let partial = cache
        .join(repo_folder_name(DEFAULT_REPO))
        .join("snapshots/partial");
    copy_model(&partial, Some("model.safetensors"));
    let refs = cache.join(repo_folder_name(DEFAULT_REPO)).join("refs");
    std::fs::create_dir_all(&refs).expect("refs");
    std::fs::write(refs.join("main"), "abc\n").expect("ref");
    assert_eq!(find_cached(&cache, DEFAULT_REPO), Some(snap.clone()));
    std::fs::write(refs.join("main"), "partial").expect("ref");
    let found = find_cached(&cache, DEFAULT_REPO).expect("some complete snapshot");
    assert_ne!(found, partial);
}

#[test]
fn directory_missing_a_file_names_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("model");
    copy_model(&dir, Some("tokenizer.json"));
    let env = offline_env(&tmp.path().join("hub"));
    let msg = resolve_model_dir_with(Some(&dir), &env, false)
        .expect_err("missing")
        .to_string();
    assert!(msg.contains("missing tokenizer.json"), "{msg}");
    let env2 = HubEnv {
        jsearch_model: Some(dir.clone()),
        ..env.clone()
    };
    let msg = resolve_model_dir_with(None, &env2, false)
        .expect_err("missing")
        .to_string();
    assert!(
        msg.contains("JSEARCH_MODEL") && msg.contains("missing tokenizer.json"),
        "{msg}"
    );
    let msg = resolve_model_dir_with(Some(&tmp.path().join("nope")), &env, false)
        .expect_err("absent dir")
        .to_string();
    assert!(msg.contains("does not exist"), "{msg}");
}
