//! Export bench: `jsearch export` (Parquet) throughput on a store of generated products, beside
//! pyarrow writing the same table in the same run.
//!
//! ```text
//! cargo run --release -p jsearch-benches --bin export [-- --n 100000]
//! ```
//!
//! The store is built through the engine's write path for products (1024-d vectors from the
//! `ann` bench's generator, attributes brand / category / price / in_stock, a title), then
//! exported with f32 and with f16 vectors. The peer: pyarrow (system `python3`, or
//! `$JSEARCH_PEER_PYTHON`) reads the f32 export into memory and writes it again with the same
//! compression (zstd) and row-group size: the time to write a table that is already in memory,
//! where jsearch's figure also reads every vector and item from the store. Prints a table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use jsearch::{Engine, OpenOptions};
use jsearch_benches::products::{build, DIM};
use jsearch_scale::{export_parquet, ExportOptions, VectorType};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "jsearch export bench: Parquet throughput vs pyarrow")]
struct Args {
    /// Products (one vector each).
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Work folder (the store and the exports).
    #[arg(long, default_value = "/tmp/jsearch-bench-export")]
    work: PathBuf,
    /// Keep the store of an earlier run with the same --n.
    #[arg(long)]
    reuse: bool,
}

fn dir_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum()
}

const PEER: &str = r#"
import sys, time, json
import pyarrow, pyarrow.parquet as pq
src, dst, group = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = pq.read_table(src)
t0 = time.perf_counter()
pq.write_table(t, dst, compression="zstd", row_group_size=group)
w = time.perf_counter() - t0
print(json.dumps({"rows": t.num_rows, "seconds": w, "pyarrow": pyarrow.__version__}))
"#;

fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.work)?;
    let db = a.work.join(format!("export-{}.jsearch", a.n));
    let build_s = if a.reuse && db.exists() {
        f64::NAN
    } else {
        eprintln!("building a store of {} products…", a.n);
        build(&db, a.n)?
    };
    let engine = Engine::open(OpenOptions {
        db: db.clone(),
        ..OpenOptions::default()
    })?;
    let mut rows = Vec::new();
    let mut f32_file = None;
    for vt in [VectorType::F32, VectorType::F16] {
        let out = a.work.join(format!("out-{}", vt.as_str()));
        let _ = std::fs::remove_dir_all(&out);
        let s = export_parquet(
            &engine,
            &out,
            &ExportOptions {
                vector_type: vt,
                ..ExportOptions::default()
            },
        )?;
        let bytes = dir_bytes(&s.files);
        if vt == VectorType::F32 {
            f32_file = s.files.first().cloned();
        }
        rows.push((
            format!("jsearch export ({}, reads the store)", vt.as_str()),
            s.rows,
            s.seconds,
            bytes,
        ));
    }
    // The peer: pyarrow writing the f32 table it has read into memory.
    let python = std::env::var("JSEARCH_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut peer_note = String::new();
    if let Some(src) = f32_file {
        let dst = a.work.join("pyarrow.parquet");
        let out = std::process::Command::new(&python)
            .args(["-c", PEER])
            .arg(&src)
            .arg(&dst)
            .arg(ExportOptions::default().rows_per_group.to_string())
            .output()
            .with_context(|| format!("running {python}"))?;
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            rows.push((
                format!(
                    "pyarrow {} write_table (f32, table in memory)",
                    v["pyarrow"].as_str().unwrap_or("?")
                ),
                v["rows"].as_u64().unwrap_or(0) as usize,
                v["seconds"].as_f64().unwrap_or(f64::NAN),
                std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0),
            ));
        } else {
            peer_note = format!(
                "peer skipped: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("pyarrow failed")
            );
        }
    }
    println!(
        "\nexport bench · {} products, {DIM}-d vectors + 256-d heads + 5 attributes · store built in {build_s:.1} s\n",
        a.n
    );
    println!("| system | rows | seconds | vectors/s | MB | bytes per vector | vs pyarrow |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let peer_rate = rows
        .iter()
        .find(|r| r.0.starts_with("pyarrow"))
        .map(|r| r.1 as f64 / r.2);
    for (name, n, secs, bytes) in &rows {
        let rate = *n as f64 / secs;
        println!(
            "| {name} | {n} | {secs:.2} | {rate:.0} | {:.1} | {:.0} | {} |",
            *bytes as f64 / 1e6,
            *bytes as f64 / (*n).max(1) as f64,
            peer_rate.map_or("-".into(), |p| format!("{:.2}x", rate / p))
        );
    }
    if !peer_note.is_empty() {
        println!("\n{peer_note}");
    }
    Ok(())
}
