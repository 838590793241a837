//! Throw-away Milvus servers on 127.0.0.1 for the tests and benches, from the wheels
//! `scripts/ensure-test-servers.sh` unpacks, killed when dropped: milvus-lite 2.4 (a gRPC
//! server, several vector fields per collection) and Milvus 2.3 standalone (PyPI `milvus`,
//! `milvus-server --data DIR`: one vector field per collection, HNSW).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres_server::{free_port, servers_dir, servers_required};

/// The newest unpacked milvus-lite's server binary.
fn binary() -> Option<PathBuf> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir(servers_dir())
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("milvus-lite-"))
        })
        .map(|p| p.join("milvus_lite/lib/milvus"))
        .filter(|p| p.exists())
        .collect();
    bins.sort();
    bins.pop()
}

/// A running server; killed (and its data removed) when dropped.
pub struct MilvusServer {
    child: Child,
    _dir: tempfile::TempDir,
    /// The port on 127.0.0.1.
    pub port: u16,
}

impl MilvusServer {
    /// Starts a server on a free port, or says why it cannot.
    pub fn start() -> Result<MilvusServer, String> {
        let bin = binary().ok_or_else(|| {
            format!(
                "no milvus-lite under {}: run scripts/ensure-test-servers.sh",
                servers_dir().display()
            )
        })?;
        let lib = bin.parent().map(PathBuf::from).unwrap_or_default();
        let dir = tempfile::Builder::new()
            .prefix("jsearch-milvus-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port()?;
        let mut child = Command::new(&bin)
            .arg(dir.path().join("milvus.db"))
            .arg(format!("127.0.0.1:{port}"))
            .arg("ERROR")
            .env("LD_LIBRARY_PATH", &lib)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(MilvusServer {
                    child,
                    _dir: dir,
                    port,
                });
            }
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("milvus-lite exited at start: {st}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("milvus-lite did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `milvus://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("milvus://127.0.0.1:{}", self.port)
    }
}

impl Drop for MilvusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server, or prints why not and returns `None` (a failure instead when the test
/// servers are required).
pub fn milvus_or_skip(test: &str) -> Option<MilvusServer> {
    match MilvusServer::start() {
        Ok(s) => Some(s),
        Err(why) if !servers_required() => {
            eprintln!("SKIPPED {test}: Milvus cannot start here: {why}");
            None
        }
        Err(why) => panic!("{test}: Milvus cannot start: {why}"),
    }
}

/// The newest unpacked Milvus standalone wheel (its `milvus` Python package).
fn standalone_package() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(servers_dir())
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .map(|p| p.join("milvus"))
        .filter(|p| p.join("data/bin/milvus.lzma").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// A running Milvus standalone (2.3): its launcher and the server it started, one process
/// group, killed when dropped. Only one runs at a time on a machine (its embedded etcd's peer
/// port, 2380, is fixed): a lock file in the servers' folder serialises them.
pub struct MilvusStandalone {
    launcher: Child,
    _lock: std::fs::File,
    _dir: tempfile::TempDir,
    /// The port on 127.0.0.1.
    pub port: u16,
}

impl MilvusStandalone {
    /// Starts a server on a free port (waiting for another test's to stop), or says why not.
    pub fn start() -> Result<MilvusStandalone, String> {
        Self::start_with(&[])
    }

    /// Starts a server with more `milvus-server` options (e.g. `--authorization-enabled true`,
    /// `--tls-mode 1 --server-pem-path … --server-key-path …`).
    pub fn start_with(options: &[&str]) -> Result<MilvusStandalone, String> {
        use std::os::unix::process::CommandExt;
        let pkg = standalone_package().ok_or_else(|| {
            format!(
                "no Milvus standalone wheel under {}: run scripts/ensure-test-servers.sh",
                servers_dir().display()
            )
        })?;
        let lock_path = servers_dir().join("milvus-standalone.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        lock.lock()
            .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("jsearch-milvus23-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let port = free_port()?;
        let site = pkg.parent().map(PathBuf::from).unwrap_or_default();
        let script = "import sys; sys.path.insert(0, sys.argv[1]); import milvus; \
             sys.argv = ['milvus-server', '--data', sys.argv[2], '--proxy-port', sys.argv[3]] \
             + sys.argv[4:]; milvus.main()";
        let banner = dir.path().join("launcher.log");
        let log = std::fs::File::create(&banner).map_err(|e| e.to_string())?;
        let mut launcher = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&site)
            .arg(dir.path().join("milvus"))
            .arg(port.to_string())
            .args(options)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("python3 (Milvus launcher): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            // The launcher prints its banner once the server's health check says OK.
            let said = std::fs::read_to_string(&banner).unwrap_or_default();
            if said.contains("Ctrl+C") && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return Ok(MilvusStandalone {
                    launcher,
                    _lock: lock,
                    _dir: dir,
                    port,
                });
            }
            let exited = matches!(launcher.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline || said.contains("timeout") {
                kill_group(&mut launcher);
                let server_log =
                    std::fs::read_to_string(dir.path().join("milvus/logs/milvus-stdout.log"))
                        .unwrap_or_default();
                let errors: Vec<&str> = server_log
                    .lines()
                    .filter(|l| l.contains("[ERROR]"))
                    .take(3)
                    .collect();
                return Err(format!(
                    "Milvus standalone did not start within 180 s: {} {}",
                    said.trim(),
                    errors.join(" | ")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `milvus://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("milvus://127.0.0.1:{}", self.port)
    }
}

/// Kills a launcher and everything it started (its process group).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for MilvusStandalone {
    fn drop(&mut self) {
        kill_group(&mut self.launcher);
    }
}

/// Starts a Milvus standalone, or prints why not and returns `None` (a failure instead when the
/// test servers are required).
pub fn milvus_standalone_or_skip(test: &str, options: &[&str]) -> Option<MilvusStandalone> {
    match MilvusStandalone::start_with(options) {
        Ok(s) => Some(s),
        Err(why) if !servers_required() => {
            eprintln!("SKIPPED {test}: Milvus standalone cannot start here: {why}");
            None
        }
        Err(why) => panic!("{test}: Milvus standalone cannot start: {why}"),
    }
}
