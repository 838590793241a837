//! Load bench of `jsearch serve`: queries per second and p50/p99 latency at 1, 4 and 16
//! concurrent clients (keep-alive HTTP/1.1 on 127.0.0.1), beside `Engine::search` called
//! directly by as many threads on the same engine in the same run (the server's overhead), and
//! the CLI's time for one query (a process per query: model load included).
//!
//! ```text
//! cargo run --release -p jsearch-benches --bin serve                 # toy model
//! cargo run --release -p jsearch-benches --bin serve -- --model real # real-size random weights
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use jsearch_benches::checkpoint;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// `toy` (the bundled model) or `real` (the real-size random-weight checkpoint).
    #[arg(long, default_value = "toy")]
    model: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Rounds per cell, the direct and the server measurement alternating (the machine's noise
    /// hits both alike); the table shows the round with the median server / direct ratio.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent clients, comma-separated.
    #[arg(long, default_value = "1,4,16")]
    clients: String,
    /// Catalog records indexed for the real-size model (text only: encoding them is the slow
    /// part of the set-up, and the query cost does not depend on the store's size here).
    #[arg(long, default_value_t = 60)]
    real_records: usize,
}

/// The corpus queries (any language).
fn queries(root: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(root.join("datasets/toy-shapes/corpus/queries.jsonl"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(v["text"].as_str().unwrap_or("red circle").to_string())
        })
        .collect()
}

/// A keep-alive HTTP/1.1 client for JSON `POST`s whose answers carry a Content-Length.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    host: String,
}

impl Client {
    fn new(addr: &str) -> Result<Client> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Client {
            r: BufReader::new(s.try_clone()?),
            w: s,
            host: addr.to_string(),
        })
    }

    fn post(&mut self, path: &str, body: &serde_json::Value) -> Result<Vec<u8>> {
        let body = body.to_string();
        write!(
            self.w,
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        )?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        if !line.contains(" 200 ") {
            bail!("{path}: {line}");
        }
        let mut len = 0;
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body)?;
        Ok(body)
    }
}

struct Run {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// `clients` threads calling `one(client, query index)` for `seconds`.
fn load<C>(
    clients: usize,
    seconds: f64,
    make: impl Fn() -> Result<C> + Sync,
    one: impl Fn(&mut C, usize) -> Result<()> + Sync,
) -> Result<Run> {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let lat: Vec<Vec<f64>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, make, one) = (&stop, &make, &one);
                s.spawn(move || -> Result<Vec<f64>> {
                    let mut client = make()?;
                    let mut out = Vec::new();
                    let mut i = c * 7;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        one(&mut client, i)?;
                        out.push(t.elapsed().as_secs_f64() * 1e3);
                        i += 1;
                    }
                    Ok(out)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect::<Result<Vec<_>>>()
    })?;
    let wall = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = lat.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize];
    Ok(Run {
        qps: all.len() as f64 / wall,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let root = checkpoint::repo_root();
    let bin = jsearch_benches::release_jsearch(&root)?;
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("bench.jsearch");
    let corpus = root.join("datasets/toy-shapes/corpus");
    let model = match args.model.as_str() {
        "toy" => root.join("datasets/toy-shapes/model"),
        "real" => checkpoint::ensure_random_checkpoint(&checkpoint::default_checkpoint_dir())?,
        m => bail!("--model {m}: toy or real"),
    };
    // The store: the toy corpus (images + products) on the toy model; a text catalog on the
    // real-size one.
    let mut idx = std::process::Command::new(&bin);
    idx.arg("--db")
        .arg(&db)
        .arg("--model")
        .arg(&model)
        .args(["-q", "index"]);
    if args.model == "toy" {
        idx.arg(corpus.join("images"))
            .arg(corpus.join("products.jsonl"));
    } else {
        let text = std::fs::read_to_string(root.join("datasets/toy-shop/catalog.jsonl"))?;
        let part: String = text
            .lines()
            .take(args.real_records)
            .map(|l| format!("{l}\n"))
            .collect();
        let cat = dir.path().join("catalog.jsonl");
        std::fs::write(&cat, part)?;
        idx.arg(&cat);
    }
    let t = Instant::now();
    if !idx.status()?.success() {
        bail!("indexing failed");
    }
    eprintln!("indexed in {:.1} s", t.elapsed().as_secs_f64());
    let qs = Arc::new(queries(&root)?);

    // The CLI: one process per query (median of 3).
    let mut cli = Vec::new();
    for q in qs.iter().take(3) {
        let t = Instant::now();
        let out = std::process::Command::new(&bin)
            .arg("--db")
            .arg(&db)
            .arg("--model")
            .arg(&model)
            .args(["-q", "query", q, "--all"])
            .output()?;
        if !out.status.success() {
            bail!("jsearch query: {}", String::from_utf8_lossy(&out.stderr));
        }
        cli.push(t.elapsed().as_secs_f64() * 1e3);
    }
    cli.sort_by(f64::total_cmp);

    let engine = Arc::new(jsearch::Engine::open(jsearch::OpenOptions {
        db: db.clone(),
        model_dir: Some(model.clone()),
        device: jsearch::DeviceChoice::Cpu,
        ..Default::default()
    })?);
    engine.preload()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?.to_string();
    let opts = jsearch_serve::ServeOptions {
        quiet: true,
        timeout: Duration::from_secs(600),
        ..Default::default()
    };
    let app = jsearch_serve::router(engine.clone(), opts);
    rt.spawn(async move { axum::serve(listener, app).await });

    let request =
        |i: usize| serde_json::json!({"text": qs[i % qs.len()], "limit": 10, "all": true});
    let search_query = |i: usize| {
        let mut q = jsearch::Query::text(qs[i % qs.len()].clone()).limit(10);
        q.min_score = None;
        q
    };
    // Warm both paths (background queries, calibration, connection set-up).
    for i in 0..3 {
        engine.search(&search_query(i))?;
        Client::new(&addr)?.post("/v1/search", &request(i))?;
    }
    let cpu = jsearch::cpu_tier();
    println!(
        "serve load bench · model {} · CPU tier {cpu:?} · {} s per cell, {} rounds · store {} items",
        args.model,
        args.seconds,
        args.rounds,
        engine.stats()?.items.values().sum::<usize>()
    );
    println!(
        "CLI, one process per query: {:.0} ms (median of 3; model load included)",
        cli[1]
    );
    println!();
    println!(
        "| clients | server q/s | p50 ms | p99 ms | Engine::search q/s | p50 ms | p99 ms | server / direct q/s (every round) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in args.clients.split(',') {
        let c: usize = c.trim().parse().context("--clients")?;
        let mut rounds = Vec::new();
        for _ in 0..args.rounds.max(1) {
            let direct = load(
                c,
                args.seconds,
                || Ok(()),
                |_, i| {
                    engine
                        .search(&search_query(i))
                        .map(|_| ())
                        .map_err(Into::into)
                },
            )?;
            let server = load(
                c,
                args.seconds,
                || Client::new(&addr),
                |cl, i| cl.post("/v1/search", &request(i)).map(|_| ()),
            )?;
            rounds.push((server, direct));
        }
        rounds.sort_by(|a, b| (a.0.qps / a.1.qps).total_cmp(&(b.0.qps / b.1.qps)));
        let ratios: Vec<String> = rounds
            .iter()
            .map(|(s, d)| format!("{:.3}", s.qps / d.qps))
            .collect();
        let (server, direct) = &rounds[rounds.len() / 2];
        println!(
            "| {c} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} ({}) |",
            server.qps,
            server.p50_ms,
            server.p99_ms,
            direct.qps,
            direct.p50_ms,
            direct.p99_ms,
            server.qps / direct.qps,
            ratios.join(", ")
        );
    }
    Ok(())
}
