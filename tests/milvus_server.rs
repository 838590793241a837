//! A throw-away Milvus (milvus-lite 2.4, a gRPC server) on 127.0.0.1 for the tests and benches,
//! from the wheel `scripts/ensure-test-servers.sh` unpacks; killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres_server::{servers_dir, servers_required};

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
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())?;
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
