//! Locating the model on disk, and downloading it from the Hugging Face hub.
//!
//! Resolution order ([`resolve_model_dir`]):
//! 1. an explicit directory (`--model`),
//! 2. `$JSEARCH_MODEL`,
//! 3. the Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//!    `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`):
//!    `models--jinaai--jina-clip-v2/snapshots/<rev>/`, the revision named by `refs/main` first,
//! 4. a download of `jinaai/jina-clip-v2` into that cache (unless `HF_HUB_OFFLINE=1`),
//! 5. otherwise one error saying what to download and where to put it.
//!
//! A directory given explicitly (or by `JSEARCH_MODEL`) that lacks a required file is an error
//! naming the file; an incomplete cache snapshot is simply not used.
//!
//! ## Why an own client instead of `hf-hub`
//! The needs are small (six files, one revision), and owning the ~200 lines buys what the tests
//! and the engine need: every environment value comes from an explicit [`HubEnv`] (tests run in
//! parallel without touching process variables), `HF_ENDPOINT`/`HF_TOKEN`/`HF_HUB_OFFLINE`
//! handled the same way as `huggingface_hub`, a plain `http://127.0.0.1` test server works (no
//! HEAD/redirect/metadata choreography to mimic), downloads are atomic (temporary file, size and
//! sha256 check, rename) and errors are typed. `ureq` (blocking, rustls) keeps the dependency
//! tree small and async-free. The on-disk result is the standard HF cache layout
//! (`blobs/`, `snapshots/<commit>/` symlinks, `refs/main`), so Python tools share it.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{EncoderError, Result};

/// The Hugging Face repository of the model.
pub const DEFAULT_REPO: &str = "jinaai/jina-clip-v2";
/// Default hub endpoint (override with `HF_ENDPOINT`).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Files a model directory must contain.
pub const REQUIRED_FILES: [&str; 6] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
];
/// Licence reminder printed where the weights are downloaded.
pub const LICENSE_NOTE: &str = "note: jina-clip-v2 weights are licensed CC BY-NC 4.0 \
     (non-commercial use only); see https://huggingface.co/jinaai/jina-clip-v2";

/// Environment values the resolution depends on, passed explicitly so callers (and tests)
/// control them. [`HubEnv::from_process`] reads the real environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubEnv {
    /// `JSEARCH_MODEL`: a model directory.
    pub jsearch_model: Option<PathBuf>,
    /// `HF_HUB_CACHE` (or the legacy `HUGGINGFACE_HUB_CACHE`): the hub cache itself.
    pub hf_hub_cache: Option<PathBuf>,
    /// `HF_HOME`: the cache is `$HF_HOME/hub`.
    pub hf_home: Option<PathBuf>,
    /// `XDG_CACHE_HOME`: the cache is `$XDG_CACHE_HOME/huggingface/hub`.
    pub xdg_cache_home: Option<PathBuf>,
    /// The home directory (`HOME`, or `USERPROFILE` on Windows).
    pub home: Option<PathBuf>,
    /// `HF_ENDPOINT` (default [`DEFAULT_ENDPOINT`]).
    pub endpoint: Option<String>,
    /// `HF_HUB_OFFLINE` is truthy (`1`, `true`, `yes`, `on`).
    pub offline: bool,
    /// `HF_TOKEN`, sent as a bearer token to the endpoint (never to redirect targets).
    pub token: Option<String>,
}

fn non_empty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl HubEnv {
    /// Reads the process environment.
    pub fn from_process() -> Self {
        HubEnv {
            jsearch_model: non_empty("JSEARCH_MODEL").map(PathBuf::from),
            hf_hub_cache: non_empty("HF_HUB_CACHE")
                .or_else(|| non_empty("HUGGINGFACE_HUB_CACHE"))
                .map(PathBuf::from),
            hf_home: non_empty("HF_HOME").map(PathBuf::from),
            xdg_cache_home: non_empty("XDG_CACHE_HOME").map(PathBuf::from),
            home: non_empty("HOME")
                .or_else(|| non_empty("USERPROFILE"))
                .map(PathBuf::from),
            endpoint: non_empty("HF_ENDPOINT"),
            offline: non_empty("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            token: non_empty("HF_TOKEN"),
        }
    }

    /// The hub cache directory (`…/huggingface/hub`), if one can be determined.
    pub fn cache_root(&self) -> Option<PathBuf> {
        if let Some(c) = &self.hf_hub_cache {
            return Some(c.clone());
        }
        if let Some(h) = &self.hf_home {
            return Some(h.join("hub"));
        }
        if let Some(x) = &self.xdg_cache_home {
            return Some(x.join("huggingface").join("hub"));
        }
        self.home
            .as_ref()
            .map(|h| h.join(".cache").join("huggingface").join("hub"))
    }

    /// The endpoint without a trailing slash.
    pub fn endpoint(&self) -> &str {
        self.endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
    }
}

/// `models--org--name`, the cache folder of a repository.
pub fn repo_folder_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// Checks that `dir` is a directory with every [`REQUIRED_FILES`] entry; the error names the
/// first missing file (or says the directory does not exist).
pub fn check_model_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(EncoderError::ModelNotFound(format!(
            "model directory {} does not exist (expected a directory with {})",
            dir.display(),
            REQUIRED_FILES.join(", ")
        )));
    }
    for f in REQUIRED_FILES {
        if !dir.join(f).is_file() {
            return Err(EncoderError::ModelNotFound(format!(
                "model directory {} is missing {f} (a jina-clip-v2 directory needs {})",
                dir.display(),
                REQUIRED_FILES.join(", ")
            )));
        }
    }
    Ok(())
}

fn is_complete(dir: &Path) -> bool {
    REQUIRED_FILES.iter().all(|f| dir.join(f).is_file())
}

/// A complete snapshot of `repo` in the hub cache at `cache_root`: the one named by
/// `refs/main` if complete, else the most recently modified complete snapshot.
pub fn find_cached(cache_root: &Path, repo: &str) -> Option<PathBuf> {
    let repo_dir = cache_root.join(repo_folder_name(repo));
    let snapshots = repo_dir.join("snapshots");
    if let Ok(rev) = fs::read_to_string(repo_dir.join("refs").join("main")) {
        let rev = rev.trim();
        if !rev.is_empty() && !rev.contains(['/', '\\']) {
            let dir = snapshots.join(rev);
            if is_complete(&dir) {
                return Some(dir);
            }
        }
    }
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in fs::read_dir(&snapshots).ok()?.flatten() {
        let dir = entry.path();
        if !is_complete(&dir) {
            continue;
        }
        let mtime = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _)| mtime > *t) {
            best = Some((mtime, dir));
        }
    }
    best.map(|(_, d)| d)
}

fn not_found_message(env: &HubEnv, searched: &[String], why: &str) -> String {
    let target = env
        .cache_root()
        .map(|c| {
            c.join(repo_folder_name(DEFAULT_REPO))
                .join("snapshots")
                .join("main")
                .display()
                .to_string()
        })
        .unwrap_or_else(|| {
            "~/.cache/huggingface/hub/models--jinaai--jina-clip-v2/snapshots/main".into()
        });
    format!(
        "jina-clip-v2 model not found ({why}). Searched: {}.\n\
         Download these files from {}/{DEFAULT_REPO} (CC BY-NC 4.0, non-commercial use only):\n  {}\n\
         and either put them in {target}/ or in any directory passed with --model <dir> \
         (or JSEARCH_MODEL=<dir>).",
        if searched.is_empty() {
            "nothing".to_string()
        } else {
            searched.join("; ")
        },
        env.endpoint(),
        REQUIRED_FILES.join(", ")
    )
}

/// Resolves the model directory using the process environment (see the module docs).
pub fn resolve_model_dir(explicit: Option<&Path>, progress: bool) -> Result<PathBuf> {
    resolve_model_dir_with(explicit, &HubEnv::from_process(), progress)
}

/// [`resolve_model_dir`] with explicit environment values.
pub fn resolve_model_dir_with(
    explicit: Option<&Path>,
    env: &HubEnv,
    progress: bool,
) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        check_model_dir(dir)?;
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = &env.jsearch_model {
        check_model_dir(dir).map_err(|e| {
            EncoderError::ModelNotFound(format!("JSEARCH_MODEL={}: {e}", dir.display()))
        })?;
        return Ok(dir.clone());
    }
    let mut searched = Vec::new();
    let cache_root = env.cache_root();
    if let Some(root) = &cache_root {
        if let Some(dir) = find_cached(root, DEFAULT_REPO) {
            return Ok(dir);
        }
        searched.push(format!(
            "Hugging Face cache {}",
            root.join(repo_folder_name(DEFAULT_REPO)).display()
        ));
    }
    if env.offline {
        return Err(EncoderError::ModelNotFound(not_found_message(
            env,
            &searched,
            "HF_HUB_OFFLINE is set, so nothing is downloaded",
        )));
    }
    let Some(root) = cache_root else {
        return Err(EncoderError::ModelNotFound(not_found_message(
            env,
            &searched,
            "no cache directory: set HF_HOME or HOME",
        )));
    };
    let opts = DownloadOptions {
        endpoint: env.endpoint().to_string(),
        token: env.token.clone(),
        progress,
        ..DownloadOptions::default()
    };
    download_with(DEFAULT_REPO, &root, &opts).map_err(|e| match e {
        EncoderError::Download { url, message } => EncoderError::ModelNotFound(format!(
            "{}\n(download of {url} failed: {message})",
            not_found_message(env, &searched, "and the download failed")
        )),
        other => other,
    })
}

/// Options of [`download_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadOptions {
    /// Hub endpoint, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// Branch, tag or commit to download (`main`).
    pub revision: String,
    /// Bearer token for gated/private repositories.
    pub token: Option<String>,
    /// Show a progress bar (bytes, rate, ETA) on stderr.
    pub progress: bool,
    /// Files to fetch.
    pub files: Vec<String>,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            revision: "main".to_string(),
            token: None,
            progress: true,
            files: REQUIRED_FILES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Downloads the model files of `repo` from `endpoint` into the HF cache at `cache_root`
/// and returns the snapshot directory.
pub fn download(repo: &str, endpoint: &str, cache_root: &Path, progress: bool) -> Result<PathBuf> {
    let opts = DownloadOptions {
        endpoint: endpoint.to_string(),
        progress,
        ..DownloadOptions::default()
    };
    download_with(repo, cache_root, &opts)
}

/// Removes a temporary file unless it was persisted.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EncoderError + '_ {
    move |source| EncoderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Writes `contents` to `path` atomically (temporary file in the same directory, then rename).
fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = TempFile {
        path: path.with_extension(format!("tmp-{}", unique_suffix())),
        keep: false,
    };
    fs::write(&tmp.path, contents).map_err(io_err(&tmp.path))?;
    fs::rename(&tmp.path, path).map_err(io_err(path))
}

/// Makes `link` point at `blob` (relative symlink on Unix, hard link or copy elsewhere),
/// atomically replacing whatever was there.
fn link_into_snapshot(blob: &Path, link: &Path) -> Result<()> {
    let tmp = TempFile {
        path: link.with_extension(format!("tmp-{}", unique_suffix())),
        keep: false,
    };
    #[cfg(unix)]
    let linked = blob
        .file_name()
        .map(|name| Path::new("../../blobs").join(name))
        .is_some_and(|target| std::os::unix::fs::symlink(target, &tmp.path).is_ok());
    #[cfg(not(unix))]
    let linked = false;
    if !linked && fs::hard_link(blob, &tmp.path).is_err() {
        fs::copy(blob, &tmp.path).map_err(io_err(&tmp.path))?;
    }
    fs::rename(&tmp.path, link).map_err(io_err(link))
}

/// What the first response of a resolve request told us.
struct FileMeta {
    commit: Option<String>,
    etag: Option<String>,
}

fn clean_etag(v: &str) -> String {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (access denied: accept the model terms on the hub and set HF_TOKEN)",
        404 => " (not found: check the repository name and HF_ENDPOINT)",
        429 => " (rate limited: retry later)",
        500..=599 => " (server error: retry later)",
        _ => "",
    }
}

/// GET `url`, following up to 5 redirects by hand so the hub's metadata headers of the first
/// response are kept and the token is only sent to the endpoint's own host.
fn get_following(
    agent: &ureq::Agent,
    url: &str,
    endpoint: &str,
    token: Option<&str>,
) -> Result<(ureq::http::Response<ureq::Body>, FileMeta, String)> {
    let mut current = url.to_string();
    let mut meta = FileMeta {
        commit: None,
        etag: None,
    };
    for _ in 0..6 {
        let mut req = agent.get(&current);
        if let Some(t) = token {
            if current.starts_with(endpoint) {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
        }
        let resp = req.call().map_err(|e| EncoderError::Download {
            url: current.clone(),
            message: e.to_string(),
        })?;
        if meta.commit.is_none() {
            meta.commit = header(&resp, "x-repo-commit");
        }
        if meta.etag.is_none() {
            meta.etag = header(&resp, "x-linked-etag")
                .or_else(|| header(&resp, "etag"))
                .map(|e| clean_etag(&e));
        }
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            let location = header(&resp, "location").ok_or_else(|| EncoderError::Download {
                url: current.clone(),
                message: format!("HTTP {status} without a Location header"),
            })?;
            current = if location.starts_with("http://") || location.starts_with("https://") {
                location
            } else if location.starts_with('/') {
                let origin_end = current
                    .find("://")
                    .and_then(|i| current[i + 3..].find('/').map(|j| i + 3 + j))
                    .unwrap_or(current.len());
                format!("{}{location}", &current[..origin_end])
            } else {
                return Err(EncoderError::Download {
                    url: current,
                    message: format!("unsupported redirect to {location:?}"),
                });
            };
            continue;
        }
        if !(200..300).contains(&status) {
            return Err(EncoderError::Download {
                url: current,
                message: format!("HTTP {status}{}", status_hint(status)),
            });
        }
        return Ok((resp, meta, current));
    }
    Err(EncoderError::Download {
        url: url.to_string(),
        message: "too many redirects".into(),
    })
}

fn progress_bar(total: Option<u64>, name: &str, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::no_length(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(name.to_string());
    pb
}

/// Downloads `opts.files` of `repo` into the HF cache layout under `cache_root`
/// (`models--org--name/{blobs,snapshots/<commit>,refs/<revision>}`) and returns the snapshot
/// directory. Files already present in the snapshot `refs/<revision>` points to are skipped.
///
/// Every file is streamed to a temporary file in `blobs/`, checked (length, and sha256 when
/// the hub gives one), then renamed: an interrupted or failed download never leaves a file
/// that looks complete. `refs/<revision>` is written last.
pub fn download_with(repo: &str, cache_root: &Path, opts: &DownloadOptions) -> Result<PathBuf> {
    let repo_dir = cache_root.join(repo_folder_name(repo));
    let blobs = repo_dir.join("blobs");
    let refs = repo_dir.join("refs");
    for d in [&blobs, &refs, &repo_dir.join("snapshots")] {
        fs::create_dir_all(d).map_err(io_err(d))?;
    }
    let endpoint = opts.endpoint.trim_end_matches('/');
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .user_agent(concat!("jsearch/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let ref_path = refs.join(&opts.revision);
    let mut commit: Option<String> = fs::read_to_string(&ref_path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(['/', '\\']));

    eprintln!("{LICENSE_NOTE}");
    for file in &opts.files {
        if let Some(c) = &commit {
            if repo_dir.join("snapshots").join(c).join(file).is_file() {
                continue;
            }
        }
        let url = format!("{endpoint}/{repo}/resolve/{}/{file}", opts.revision);
        let (resp, meta, final_url) = get_following(&agent, &url, endpoint, opts.token.as_deref())?;
        let dl_err = |message: String| EncoderError::Download {
            url: final_url.clone(),
            message,
        };
        let compressed = header(&resp, "content-encoding").is_some_and(|e| e != "identity");
        let mut body = resp.into_body();
        let expected_len = if compressed {
            None
        } else {
            body.content_length()
        };
        let snapshot_commit = commit
            .clone()
            .or(meta.commit.clone())
            .unwrap_or_else(|| opts.revision.clone());
        if snapshot_commit.contains(['/', '\\']) || snapshot_commit.starts_with('.') {
            return Err(dl_err(format!("invalid revision {snapshot_commit:?}")));
        }

        let tmp = TempFile {
            path: blobs.join(format!("{}.incomplete", unique_suffix())),
            keep: false,
        };
        let mut out = fs::File::create(&tmp.path).map_err(io_err(&tmp.path))?;
        let pb = progress_bar(expected_len, file, opts.progress);
        let mut hasher = Sha256::new();
        let mut reader = body.as_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| dl_err(format!("connection failed after {written} bytes: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(&tmp.path))?;
            written += n as u64;
            pb.inc(n as u64);
        }
        out.sync_all().map_err(io_err(&tmp.path))?;
        drop(out);
        pb.finish_and_clear();
        if let Some(len) = expected_len {
            if written != len {
                return Err(dl_err(format!("received {written} of {len} bytes")));
            }
        }
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let blob_name = match &meta.etag {
            Some(e) if is_sha256_hex(e) => {
                if !e.eq_ignore_ascii_case(&digest) {
                    return Err(dl_err(format!(
                        "checksum mismatch: expected sha256 {e}, got {digest}"
                    )));
                }
                e.to_ascii_lowercase()
            }
            Some(e)
                if !e.is_empty()
                    && e.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                e.clone()
            }
            _ => digest,
        };
        let blob = blobs.join(&blob_name);
        fs::rename(&tmp.path, &blob).map_err(io_err(&blob))?;
        let snapshot = repo_dir.join("snapshots").join(&snapshot_commit);
        fs::create_dir_all(&snapshot).map_err(io_err(&snapshot))?;
        link_into_snapshot(&blob, &snapshot.join(file))?;
        commit = Some(snapshot_commit);
    }
    let commit = commit.unwrap_or_else(|| opts.revision.clone());
    let snapshot = repo_dir.join("snapshots").join(&commit);
    fs::create_dir_all(&snapshot).map_err(io_err(&snapshot))?;
    write_atomic(&ref_path, commit.as_bytes())?;
    Ok(snapshot)
}
