//! Cold start of `jsearch query` at the REAL model size (the `encoders` bench's random-weight
//! checkpoint): wall time, fixed start-up cost and peak RSS of the whole process, for the first
//! run (the weight cache is built) and later runs (the cache is mapped), beside PyTorch's load +
//! one query on the same checkpoint in the same run.
//!
//! ```text
//! cargo build --release -p jsearch-cli -p jsearch-benches
//! target/release/coldstart [--runs 5] [--precision auto,f32]
//! ```
//!
//! Fixed start-up cost = the process's wall time minus encoding the query and searching, which
//! is measured in a warm process (this binary's `--worker` mode: the engine loaded once, then
//! the same query timed). The page cache is warm for every run after the first (the checkpoint
//! and the cache file were just read); the first run's figure includes writing the cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use jsearch::{Engine, OpenOptions, Precision, Query};
use jsearch_benches::{checkpoint, measure_child};

#[derive(Debug, Parser)]
#[command(about = "cold start of `jsearch query` at the real model size, vs PyTorch")]
struct Args {
    /// Runs per precision (the first builds the weight cache).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Precisions to measure (`--precision` values).
    #[arg(long, default_value = "auto,f32", value_delimiter = ',')]
    precision: Vec<String>,
    /// The jsearch binary [default: target/release/jsearch].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Checkpoint folder (generated there when missing).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Skip the PyTorch peer.
    #[arg(long)]
    no_peer: bool,
    /// Internal: time the query in a warm process (store, precision).
    #[arg(long, hide = true, num_args = 2)]
    worker: Option<Vec<String>>,
}

const QUERY: &str = "roter Schuh";

fn main() -> Result<()> {
    let a = Args::parse();
    let ckpt = a
        .checkpoint
        .clone()
        .unwrap_or_else(checkpoint::default_checkpoint_dir);
    if let Some(w) = &a.worker {
        return worker(&ckpt, Path::new(&w[0]), &w[1]);
    }
    checkpoint::ensure_random_checkpoint(&ckpt)?;
    let root = checkpoint::repo_root();
    let bin = a
        .bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/jsearch"));
    if !bin.is_file() {
        bail!(
            "{} missing: cargo build --release -p jsearch-cli",
            bin.display()
        );
    }
    let work = tempfile::tempdir()?;
    let notes = work.path().join("notes");
    std::fs::create_dir_all(&notes)?;
    for (i, t) in [
        "ein roter Schuh im Schaufenster",
        "quarterly tax report",
        "a blue door",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(notes.join(format!("n{i}.txt")), t)?;
    }
    let db = work.path().join("store.jsearch");
    let cache = work.path().join("cache");
    let jsearch = |args: &[&str]| {
        let mut c = Command::new(&bin);
        c.arg("--model")
            .arg(&ckpt)
            .arg("--db")
            .arg(&db)
            .args(args)
            .env("JSEARCH_CACHE_DIR", &cache)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    eprintln!("indexing 3 notes ...");
    let (code, _, secs) = measure_child(jsearch(&["index", notes.to_str().context("path")?]))?;
    if code != 0 {
        bail!("index failed (exit {code})");
    }
    eprintln!("index: {secs:.1} s (text tower only, cache built for indexing)");

    println!(
        "\n`jsearch query \"{QUERY}\"` at the real size (random weights), CPU, {} threads\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| system | run | wall | fixed start-up | peak RSS MiB |");
    println!("|---|---|---|---|---|");
    for p in &a.precision {
        // The query path's cache files (other layouts than the index run's may be there).
        let _ = std::fs::remove_dir_all(cache.join("prepared"));
        let mut later = Vec::new();
        let mut first = (0.0, 0.0);
        for run in 0..a.runs.max(2) {
            // --all: the time of a query that prints its hits, whatever the relevance cut says
            // of a random-weight model's answers.
            let (code, rss, secs) =
                measure_child(jsearch(&["--precision", p, "query", QUERY, "--all"]))?;
            if code != 0 {
                bail!("query failed (exit {code})");
            }
            if run == 0 {
                first = (secs, rss);
            } else {
                later.push((secs, rss));
            }
        }
        // The query itself, timed in a warm process after the runs (the cache exists by then).
        let warm = warm_query_ms(&db, p)?;
        println!(
            "| jsearch {p} | first (cache built) | {:.0} ms | {:.0} ms | {:.0} |",
            first.0 * 1e3,
            first.0 * 1e3 - warm,
            first.1
        );
        let mut walls: Vec<f64> = later.iter().map(|l| l.0).collect();
        walls.sort_by(f64::total_cmp);
        let med = walls[walls.len() / 2];
        let rss = later.iter().map(|l| l.1).fold(0.0, f64::max);
        println!(
            "| jsearch {p} | later, median of {} | {:.0} ms | {:.0} ms (query itself {warm:.0} ms) | {rss:.0} |",
            walls.len(),
            med * 1e3,
            med * 1e3 - warm
        );
    }
    if !a.no_peer {
        peer(&root, &ckpt)?;
    }
    tokenizer_loads(&ckpt, work.path())?;
    let text_bytes = text_tower_bytes(&ckpt)?;
    println!(
        "\ntext tower in the checkpoint: {:.0} MiB (bf16); the weight cache files: {}",
        text_bytes / 1048576.0,
        cache_listing(&cache.join("prepared"))
    );
    Ok(())
}

/// Encoding the query and searching, in a warm process (median of 7, ms).
fn warm_query_ms(db: &Path, precision: &str) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(std::env::args().skip(1).filter(|a| a != "--no-peer"))
        .arg("--worker")
        .arg(db)
        .arg(precision)
        .env(
            "JSEARCH_CACHE_DIR",
            db.parent().context("db folder")?.join("cache"),
        )
        .output()?;
    if !out.status.success() {
        bail!("worker: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("worker output")
}

fn worker(ckpt: &Path, db: &Path, precision: &str) -> Result<()> {
    let engine = Engine::open(OpenOptions {
        db: db.to_path_buf(),
        model_dir: Some(ckpt.to_path_buf()),
        precision: precision.parse::<Precision>()?,
        ..OpenOptions::default()
    })?;
    let q = Query::text(QUERY);
    engine.query(&q)?;
    let mut t = Vec::new();
    for _ in 0..7 {
        let s = Instant::now();
        engine.query(&q)?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    println!("{}", t[3]);
    Ok(())
}

/// PyTorch f32: one process that loads the checkpoint and runs one query (the `encoders`
/// bench's peer); its own load and query times, and the process's wall time and RSS.
fn peer(root: &Path, ckpt: &Path) -> Result<()> {
    let script = root.join("benches/scripts/encoders_torch.sh");
    let out_file = tempfile::NamedTempFile::new()?;
    let mut cmd = Command::new(&script);
    cmd.arg("--model")
        .arg(ckpt)
        .args(["--cases", "load,q1", "--iters", "1", "--dtype", "float32"])
        .stdout(out_file.reopen()?)
        .stderr(Stdio::null());
    let (code, rss, secs) = measure_child(cmd)?;
    if code != 0 {
        eprintln!("pytorch peer failed (exit {code}); skipped");
        return Ok(());
    }
    let text = std::fs::read_to_string(out_file.path())?;
    let mut load = f64::NAN;
    let mut q1 = f64::NAN;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        match v["case"].as_str() {
            Some("load") => load = v["seconds"].as_f64().unwrap_or(f64::NAN) * 1e3,
            Some("query_1x8") => q1 = v["median_ms"].as_f64().unwrap_or(f64::NAN),
            _ => {}
        }
    }
    println!(
        "| pytorch float32 | load + one query (its own timers) | {:.0} ms | {load:.0} ms load | - |",
        load + q1
    );
    println!(
        "| pytorch float32 | whole process (python + import torch + load + 11 queries) | {:.0} ms | - | {rss:.0} |",
        secs * 1e3
    );
    Ok(())
}

/// Bytes of the text tower's tensors, from the safetensors header (nothing else is read).
fn text_tower_bytes(ckpt: &Path) -> Result<f64> {
    use std::io::Read;
    let mut f = std::fs::File::open(ckpt.join("model.safetensors"))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    f.read_exact(&mut header)?;
    let v: serde_json::Value = serde_json::from_slice(&header)?;
    let obj = v.as_object().context("safetensors header")?;
    Ok(obj
        .iter()
        .filter(|(n, _)| n.starts_with("text_model."))
        .filter_map(|(_, t)| {
            let o = t["data_offsets"].as_array()?;
            Some(o.get(1)?.as_f64()? - o.first()?.as_f64()?)
        })
        .sum())
}

fn cache_listing(dir: &Path) -> String {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return "none".into();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| {
            let len = e.metadata().map_or(0, |m| m.len());
            format!(
                "{} ({:.0} MiB)",
                e.file_name().to_string_lossy(),
                len as f64 / 1048576.0
            )
        })
        .collect();
    v.sort();
    v.join(", ")
}

/// Load time of the checkpoint's tokenizer and of a synthetic one with the real model's
/// vocabulary size (250 002 Unigram pieces: the checkpoint's pieces, then made-up ones; the real
/// XLM-R `tokenizer.json` cannot be fetched here), median of 3 loads each.
fn tokenizer_loads(ckpt: &Path, work: &Path) -> Result<()> {
    let src = ckpt.join("tokenizer.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&src)?)?;
    let vocab = v["model"]["vocab"]
        .as_array_mut()
        .context("a Unigram tokenizer")?;
    let mut i = 0u64;
    while vocab.len() < 250_002 {
        i += 1;
        // Distinct pieces of 3-9 letters, scores spread like a Unigram model's.
        let piece: String = std::iter::successors(Some(i), |x| (*x >= 26).then_some(x / 26))
            .map(|x| char::from(b'a' + (x % 26) as u8))
            .collect();
        vocab.push(serde_json::json!([
            format!("\u{2581}{piece}"),
            -8.0 - (i as f64).ln()
        ]));
    }
    let big = work.join("tokenizer-250k.json");
    std::fs::write(&big, serde_json::to_vec(&v)?)?;
    for (what, path) in [("the checkpoint's", src), ("synthetic 250k-piece", big)] {
        let size = std::fs::metadata(&path)?.len() as f64 / 1048576.0;
        let mut t = Vec::new();
        for _ in 0..3 {
            let s = Instant::now();
            jsearch_encoders::TextTokenizer::load(&path)?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
        t.sort_by(f64::total_cmp);
        println!(
            "\ntokenizer load ({what}, {size:.1} MiB): {:.0} ms (median of 3; it loads on its own thread beside the weights)",
            t[1]
        );
    }
    Ok(())
}
