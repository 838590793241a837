//! Scale-out bench: a store of generated products synced into PostgreSQL + pgvector, and the
//! two-stage query there beside the local store, same machine, same run.
//!
//! ```text
//! scripts/ensure-test-servers.sh   # PostgreSQL 18 + pgvector 0.8, milvus-lite 2.4, Milvus 2.3
//! cargo run --release -p jsearch-benches --bin scale [-- --n 100000 --queries 200]
//! ```
//!
//! Steps: build the store (1024-d vectors, 256-d heads, brand / category / price / in_stock);
//! export it to Parquet (f16); start a PostgreSQL server on 127.0.0.1 (the tests' launcher) and
//! sync the store into it (rows, then the HNSW and GIN indexes), and into milvus-lite 2.4 and
//! Milvus 2.3 standalone; change 1 % of the products' prices, add 0.5 % and remove 0.5 %, and
//! sync again (incremental). Then `--queries` query vectors (near the products' clusters): the
//! local exact search (every vector's full cosine) is the truth, and the local store (graph +
//! re-rank), PostgreSQL's two-stage query (HNSW on the heads, re-rank by the full vectors, one
//! query at a time over one connection) and Milvus's two-stage searches are timed and scored (recall@10), unfiltered and with `price < 20 AND in_stock = true` (about
//! 13 % of the products pass). Prints two tables.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use jsearch::{Engine, Filter, Kind, OpenOptions, Query, SearchMode};
use jsearch_benches::products::{build, centers, delete_products, write_products, DIM};
use jsearch_benches::synth::generate;
use jsearch_scale::milvus::{self, MilvusBackend};
use jsearch_scale::postgres::{self, BackendQuery, PgBackend};
use jsearch_scale::{export_parquet, ExportOptions, VectorType};
use jsearch_tests::milvus_server::{MilvusServer, MilvusStandalone};
use jsearch_tests::postgres_server::PgServer;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    about = "jsearch scale bench: sync to PostgreSQL + pgvector, two-stage query vs the local store"
)]
struct Args {
    /// Products (one vector each).
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Query vectors.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Work folder (the stores and the export).
    #[arg(long, default_value = "/tmp/jsearch-bench-scale")]
    work: PathBuf,
    /// Keep the base store of an earlier run with the same --n.
    #[arg(long)]
    reuse: bool,
}

const K: usize = 10;
const FILTER: &str = "price < 20 AND in_stock = true";

fn passes(meta: &serde_json::Map<String, serde_json::Value>) -> bool {
    meta.get("price")
        .and_then(|p| p.as_f64())
        .is_some_and(|p| p < 20.0)
        && meta.get("in_stock") == Some(&serde_json::Value::Bool(true))
}

struct Run {
    name: String,
    qps: f64,
    recall: f64,
}

fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.work)?;
    let base = a.work.join(format!("scale-{}.jsearch", a.n));
    let build_s = if a.reuse && base.exists() {
        f64::NAN
    } else {
        eprintln!("building a store of {} products…", a.n);
        build(&base, a.n)?
    };
    let db = a.work.join("work.jsearch");
    std::fs::copy(&base, &db).context("copying the base store")?;
    let open = || {
        Engine::open(OpenOptions {
            db: db.clone(),
            ..OpenOptions::default()
        })
    };
    let mut throughput: Vec<(String, usize, f64, String)> = Vec::new();

    let engine = open()?;
    let out = a.work.join("export");
    let _ = std::fs::remove_dir_all(&out);
    let s = export_parquet(
        &engine,
        &out,
        &ExportOptions {
            vector_type: VectorType::F16,
            ..ExportOptions::default()
        },
    )?;
    throughput.push((
        "export to Parquet (f16)".into(),
        s.rows,
        s.seconds,
        format!("{:.0} MB", s.bytes as f64 / 1e6),
    ));

    eprintln!("starting PostgreSQL…");
    let pg = PgServer::start().map_err(|e| anyhow::anyhow!("PostgreSQL: {e}"))?;
    let url = pg.url();
    let pg_version = pg.query("SHOW server_version");
    let pgv = pg.query("SELECT extversion FROM pg_extension WHERE extname = 'vector'");
    eprintln!("full sync…");
    let opts = postgres::SyncOptions {
        replace: true,
        ..postgres::SyncOptions::default()
    };
    let s = postgres::sync(&engine, &url, &opts)?;
    let size = pg.query("SELECT pg_total_relation_size('jsearch_items')");
    throughput.push((
        "sync to PostgreSQL, first (COPY, then HNSW + GIN build)".into(),
        s.inserted,
        s.seconds,
        format!(
            "table + indexes {:.0} MB (store {:.0} MB)",
            size.parse::<f64>().unwrap_or(0.0) / 1e6,
            std::fs::metadata(&db)?.len() as f64 / 1e6
        ),
    ));
    eprintln!("starting Milvus (milvus-lite 2.4 and 2.3 standalone)…");
    let lite = MilvusServer::start().map_err(|e| anyhow::anyhow!("milvus-lite: {e}"))?;
    let standalone =
        MilvusStandalone::start().map_err(|e| anyhow::anyhow!("Milvus standalone: {e}"))?;
    // (name, how the two stages run there, URL)
    let milvuses = [
        (
            "milvus-lite 2.4.12",
            "one collection, FLAT heads (milvus-lite has no other index)",
            lite.url(),
        ),
        (
            "Milvus 2.3.5 standalone",
            "heads (HNSW) and full vectors in two collections",
            standalone.url(),
        ),
    ];
    for (name, how, murl) in &milvuses {
        eprintln!("full sync to {name}…");
        let s = milvus::sync(&engine, murl, &opts)?;
        throughput.push((
            format!("sync to {name}, first (upserts of 1000 rows)"),
            s.inserted,
            s.seconds,
            (*how).into(),
        ));
    }
    drop(engine);

    // 1 % changed, 0.5 % new, 0.5 % removed.
    let changed: Vec<usize> = (0..a.n).step_by(100).collect();
    let added: Vec<usize> = (a.n..a.n + a.n / 200).collect();
    let removed: Vec<usize> = (50..a.n).step_by(200).collect();
    write_products(&db, &changed, 1)?;
    write_products(&db, &added, 0)?;
    delete_products(&db, &removed)?;
    let engine = open()?;
    eprintln!("incremental sync…");
    let s = postgres::sync(&engine, &url, &postgres::SyncOptions::default())?;
    throughput.push((
        "sync to PostgreSQL, incremental (digests, upsert, delete)".into(),
        s.inserted + s.updated + s.deleted,
        s.seconds,
        format!(
            "{} inserted, {} updated, {} deleted, {} unchanged",
            s.inserted, s.updated, s.deleted, s.unchanged
        ),
    ));

    for (name, _, murl) in &milvuses {
        let s = milvus::sync(&engine, murl, &postgres::SyncOptions::default())?;
        throughput.push((
            format!("sync to {name}, incremental (digests, upsert, delete)"),
            s.inserted + s.updated + s.deleted,
            s.seconds,
            format!(
                "{} inserted, {} updated, {} deleted, {} unchanged",
                s.inserted, s.updated, s.deleted, s.unchanged
            ),
        ));
    }

    // The truth: every vector's full cosine.
    eprintln!("queries…");
    let mut ids: Vec<String> = Vec::new();
    let mut ok: Vec<bool> = Vec::new();
    let mut flat: Vec<f32> = Vec::new();
    engine.for_each_vector(|_, item, _, v| {
        ids.push(item.id.clone());
        ok.push(passes(&item.metadata));
        flat.extend_from_slice(v);
        Ok(())
    })?;
    let queries = generate(5, 2, a.queries, DIM, &centers());
    let truth = |q: &[f32], filtered: bool| -> HashSet<String> {
        let mut s: Vec<(f32, usize)> = flat
            .chunks(DIM)
            .enumerate()
            .filter(|(i, _)| !filtered || ok[*i])
            .map(|(i, v)| (v.iter().zip(q).map(|(x, y)| x * y).sum::<f32>(), i))
            .collect();
        s.sort_by(|x, y| y.0.total_cmp(&x.0));
        s.iter().take(K).map(|p| ids[p.1].clone()).collect()
    };
    let truths: Vec<[HashSet<String>; 2]> = queries
        .chunks(DIM)
        .map(|q| [truth(q, false), truth(q, true)])
        .collect();
    let filter = Filter::parse(FILTER)?;
    let mut runs = Vec::new();
    for filtered in [false, true] {
        let label = if filtered { " + filter" } else { "" };
        // Local store: graph walk + re-rank.
        let mut q = Query::default()
            .limit(K)
            .kinds(&[Kind::Product])
            .mode(SearchMode::Vector);
        q.min_score = None;
        if filtered {
            q = q.filter(filter.clone());
        }
        // Times `search` over every query vector and scores its ids against the truth.
        let mut measure = |name: String, search: &mut dyn FnMut(&[f32]) -> Result<Vec<String>>| {
            let t = Instant::now();
            let mut found = 0;
            for (j, qv) in queries.chunks(DIM).enumerate() {
                found += search(qv)?
                    .iter()
                    .filter(|id| truths[j][filtered as usize].contains(*id))
                    .count();
            }
            runs.push(Run {
                name: format!("{name}{label}"),
                qps: a.queries as f64 / t.elapsed().as_secs_f64(),
                recall: found as f64 / (K * a.queries) as f64,
            });
            anyhow::Ok(())
        };
        measure("local store (graph + re-rank)".into(), &mut |qv| {
            let r = engine.search_vector(qv.to_vec(), None, &q)?;
            Ok(r.hits.into_iter().map(|h| h.id).collect())
        })?;
        let query_for = |candidates: usize| {
            let mut bq = BackendQuery::new(K);
            bq.candidates = Some(candidates);
            if filtered {
                bq.filter = Some(filter.clone());
            }
            bq
        };
        // PostgreSQL two-stage query.
        for candidates in [100, 200] {
            let mut backend = PgBackend::connect(&url, postgres::DEFAULT_TABLE)?;
            let bq = query_for(candidates);
            measure(
                format!(
                    "PostgreSQL {pg_version} + pgvector {pgv}, two-stage, {candidates} candidates"
                ),
                &mut |qv| Ok(backend.search(qv, &bq)?.into_iter().map(|h| h.id).collect()),
            )?;
        }
        // Milvus two-stage search: FLAT on the heads in milvus-lite (an exact first stage),
        // HNSW on 2.3 standalone, whose full vectors are a second request by key.
        for (name, how, murl) in &milvuses {
            let mut backend = MilvusBackend::connect(murl, postgres::DEFAULT_TABLE)?;
            let bq = query_for(100);
            measure(
                format!("{name}, two-stage ({how}), 100 candidates"),
                &mut |qv| Ok(backend.search(qv, &bq)?.into_iter().map(|h| h.id).collect()),
            )?;
        }
    }

    println!(
        "\nscale bench · {} products ({DIM}-d vectors, 256-d heads, 4 attributes) · store built in {build_s:.1} s · {} queries, k = {K}\n",
        a.n, a.queries
    );
    println!("| step | vectors | seconds | vectors/s | notes |");
    println!("|---|---:|---:|---:|---|");
    for (name, n, secs, note) in &throughput {
        println!(
            "| {name} | {n} | {secs:.2} | {:.0} | {note} |",
            *n as f64 / secs
        );
    }
    println!("\n| search | QPS | recall@10 | QPS vs local store |");
    println!("|---|---:|---:|---:|");
    for filtered in [false, true] {
        let label = if filtered { " + filter" } else { "" };
        let local = runs
            .iter()
            .find(|r| r.name == format!("local store (graph + re-rank){label}"))
            .map_or(f64::NAN, |r| r.qps);
        for r in runs
            .iter()
            .filter(|r| r.name.ends_with(" + filter") == filtered)
        {
            println!(
                "| {} | {:.0} | {:.4} | {:.2}x |",
                r.name,
                r.qps,
                r.recall,
                r.qps / local
            );
        }
    }
    println!("\nfilter: `{FILTER}`");
    Ok(())
}
