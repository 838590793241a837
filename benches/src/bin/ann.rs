//! `ann`: the jsearch-index bench. Generates MRL-like data (or reads .fvecs), computes exact 1024-d
//! ground truth, builds a store (redb file, HNSW over 256-d f16, 1024-d f16 re-rank), reopens it in a
//! child process (load time, RSS), sweeps ef x k' (recall@k vs QPS, 1 thread and all threads),
//! compares graph implementations in memory (this crate's HNSW, usearch, hnsw_rs) and runs the
//! hnswlib peer (Python) on the same vectors, printing ratios.
//!
//! `cargo run --release -p jsearch-benches --bin ann -- --n 100000 --queries 1000`

/// The same allocator as the `jsearch` binary (see `cli/src/main.rs`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use jsearch_benches::usearch_graph::USearch;
use jsearch_index::bench::{AnnGraph, GraphParams, Hnsw};
use jsearch_index::vecmath::{self, dot_f16, dot_f32, F16};
use jsearch_index::{Batch, HnswParams, SearchParams, Store, StoreSettings};
use rayon::prelude::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Parser, Clone)]
#[command(about = "jsearch-index ANN bench (store vs hnswlib; graph implementations side by side)")]
struct Args {
    /// Base vectors to generate (ignored with --base).
    #[arg(long, default_value_t = 100_000)]
    n: usize,
    /// Number of queries to generate, or a .fvecs file of queries (1024-d, L2-normalised).
    #[arg(long, default_value = "1000")]
    queries: String,
    /// External base vectors (.fvecs, L2-normalised); ids are row numbers.
    #[arg(long)]
    base: Option<PathBuf>,
    /// Write the top-k ids returned for each query (.ivecs) at --ef / --candidates.
    #[arg(long)]
    ids_out: Option<PathBuf>,
    /// k of recall@k and of --ids-out.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// ef for --ids-out.
    #[arg(long, default_value_t = 64)]
    ef: usize,
    /// k' (re-ranked candidates) for --ids-out; default jsearch_index::default_candidates(k).
    #[arg(long)]
    candidates: Option<usize>,
    /// ef sweep.
    #[arg(long, default_value = "16,32,64,128")]
    efs: String,
    /// k' sweep (candidates re-ranked at full dimension: for the store, the best of the beam by
    /// sketch, read from the file; for hnswlib-256, its nearest k' by 256-d distance).
    #[arg(long, default_value = "10,15,20,30")]
    kprimes: String,
    /// HNSW M.
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// HNSW ef_construction.
    #[arg(long, default_value_t = 200)]
    efc: usize,
    /// Matryoshka dimension of the graph.
    #[arg(long, default_value_t = 256)]
    ann_dim: usize,
    /// Vectors per committed batch while building the store.
    #[arg(long, default_value_t = 50_000)]
    batch: usize,
    /// Working directory (data, ground truth, store file).
    #[arg(long, default_value = "/tmp/jsearch-ann")]
    work: PathBuf,
    /// In-memory graph comparison: any of native,usearch,hnsw_rs ("" for none).
    #[arg(long, default_value = "native,usearch,hnsw_rs")]
    graphs: String,
    /// Peers run by benches/scripts/ann_hnswlib.sh: "hnswlib" or "" for none.
    #[arg(long, default_value = "hnswlib")]
    peers: String,
    /// hnswlib dimensions (full, and the truncated one + re-rank).
    #[arg(long, default_value = "1024,256")]
    peer_dims: String,
    /// hnswlib-256 k' sweep (candidates it re-ranks from RAM); "" = --kprimes plus every --efs
    /// value (re-ranking the whole beam).
    #[arg(long, default_value = "")]
    peer_kprimes: String,
    /// Timed passes over the queries per sweep point (best one reported, same for the peer).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Reuse the store and the peer's indexes built by an earlier run on the same data and
    /// parameters (with the build times that run measured) and only measure the searches.
    #[arg(long)]
    reuse_builds: bool,
    /// Rounds of (store sweep, peer sweep), alternating; each point reports its best round.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Queries used to measure the recall of the exact f16 scan (f16 vs f32 cost).
    #[arg(long, default_value_t = 100)]
    exact_queries: usize,
    /// Data seed.
    #[arg(long, default_value_t = 20240607)]
    seed: u64,
    /// Cluster centres of the generator.
    #[arg(long, default_value_t = 4096)]
    centers: usize,
    /// Store sweep: read every one of the k' candidates instead of skipping those whose sketch
    /// score cannot reach the top k (`SearchParams::exhaustive_rerank`).
    #[arg(long)]
    exhaustive_rerank: bool,
    /// Internal: serve mode (child process) on this store file.
    #[arg(long, hide = true)]
    serve: Option<PathBuf>,
}

// ---------- data ----------

use jsearch_benches::synth::{generate, make_centers};

fn read_fvecs(path: &Path) -> Result<(Vec<f32>, usize)> {
    let mut b = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("open {}", path.display()))?
        .read_to_end(&mut b)?;
    if b.len() < 4 {
        bail!("{} is empty", path.display());
    }
    let d = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let row = 4 + 4 * d;
    if d == 0 || b.len() % row != 0 {
        bail!(
            "{} is not an .fvecs file (dim {d}, {} bytes)",
            path.display(),
            b.len()
        );
    }
    let mut out = Vec::with_capacity(b.len() / row * d);
    for r in b.chunks_exact(row) {
        if u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize != d {
            bail!("{}: rows of different dimensions", path.display());
        }
        out.extend(
            r[4..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
    Ok((out, d))
}

fn write_vecs<T: Copy>(
    path: &Path,
    data: &[T],
    dim: usize,
    bytes: impl Fn(T) -> [u8; 4],
) -> Result<()> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    for row in data.chunks_exact(dim) {
        w.write_all(&(dim as u32).to_le_bytes())?;
        for &x in row {
            w.write_all(&bytes(x))?;
        }
    }
    w.flush()?;
    Ok(())
}

fn read_ivecs(path: &Path) -> Result<Vec<Vec<u32>>> {
    let (v, d) = read_fvecs(path)?;
    Ok(v.chunks_exact(d)
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect())
}

/// Exact top-k by inner product at full dimension, f32 (simsimd), blocked over queries, rayon.
fn ground_truth(base: &[f32], q: &[f32], dim: usize, k: usize) -> Vec<Vec<u32>> {
    let nq = q.len() / dim;
    let block = 32;
    let blocks: Vec<Vec<Vec<u32>>> = (0..nq.div_ceil(block))
        .into_par_iter()
        .map(|b| {
            let qs: Vec<&[f32]> = (b * block..((b + 1) * block).min(nq))
                .map(|i| &q[i * dim..(i + 1) * dim])
                .collect();
            let mut tops: Vec<Vec<(f32, u32)>> = vec![Vec::with_capacity(k + 1); qs.len()];
            for (n, v) in base.chunks_exact(dim).enumerate() {
                for (qi, qv) in qs.iter().enumerate() {
                    let s = dot_f32(qv, v);
                    let t = &mut tops[qi];
                    if t.len() < k || s > t[t.len() - 1].0 {
                        let pos = t.partition_point(|x| x.0 >= s);
                        t.insert(pos, (s, n as u32));
                        t.truncate(k);
                    }
                }
            }
            tops.into_iter()
                .map(|t| t.into_iter().map(|x| x.1).collect())
                .collect()
        })
        .collect();
    blocks.into_iter().flatten().collect()
}

fn recall(found: &[Vec<u64>], gt: &[Vec<u32>], k: usize) -> f64 {
    let mut hit = 0usize;
    for (f, g) in found.iter().zip(gt) {
        let g = &g[..k.min(g.len())];
        hit += f
            .iter()
            .take(k)
            .filter(|id| g.contains(&(**id as u32)))
            .count();
    }
    hit as f64 / (found.len() * k) as f64
}

fn rss_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn list(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

// ---------- graph adapters ----------

struct DotF16;
impl hnsw_rs::anndists::dist::Distance<F16> for DotF16 {
    fn eval(&self, a: &[F16], b: &[F16]) -> f32 {
        (1.0 - dot_f16(a, b)).max(0.0)
    }
}

struct HnswRs {
    h: hnsw_rs::hnsw::Hnsw<'static, F16, DotF16>,
    dim: usize,
}

impl AnnGraph for HnswRs {
    fn len(&self) -> usize {
        self.h.get_nb_point()
    }
    fn add_batch(&mut self, vectors: &[F16]) {
        let start = self.len();
        let data: Vec<(&[F16], usize)> = vectors
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(i, v)| (v, start + i))
            .collect();
        self.h.parallel_insert_slice(&data);
    }
    fn search(
        &self,
        q: &[F16],
        k: usize,
        ef: usize,
        accept: &(dyn Fn(u32) -> bool + Sync),
    ) -> Vec<(f32, u32)> {
        self.h
            .search(q, k, ef)
            .into_iter()
            .filter(|n| accept(n.d_id as u32))
            .map(|n| (n.distance, n.d_id as u32))
            .collect()
    }
}

// ---------- serve (child process) ----------

fn sweep_point(
    name: &str,
    nq: usize,
    gt: &[Vec<u32>],
    k: usize,
    repeats: usize,
    search: &(dyn Fn(usize) -> Vec<u64> + Sync),
) -> (f64, f64, f64) {
    for i in 0..20.min(nq) {
        search(i);
    }
    // Best of `repeats` passes (this machine is shared and noisy); the peer script does the same.
    let (mut qps1, mut qpsn) = (0f64, 0f64);
    let (mut res1, mut resn) = (Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        res1 = (0..nq).map(search).collect::<Vec<Vec<u64>>>();
        qps1 = qps1.max(nq as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        resn = (0..nq)
            .into_par_iter()
            .map(search)
            .collect::<Vec<Vec<u64>>>();
        qpsn = qpsn.max(nq as f64 / t.elapsed().as_secs_f64());
    }
    let r = recall(&res1, gt, k);
    let rn = recall(&resn, gt, k);
    if (r - rn).abs() > 1e-9 {
        eprintln!("warning: {name}: recall 1-thread {r} != all-threads {rn}");
    }
    (r, qps1, qpsn)
}

fn serve(a: &Args, store_path: &Path) -> Result<()> {
    let rss0 = rss_kib("VmRSS:");
    let t = Instant::now();
    let store = Store::open_read_only(store_path)?;
    let load_s = t.elapsed().as_secs_f64();
    let rss_open = rss_kib("VmRSS:");
    let (q, dim) = read_fvecs(&a.work.join("queries.fvecs"))?;
    let gt = read_ivecs(&a.work.join("gt.ivecs"))?;
    let nq = q.len() / dim;
    let stats = store.stats()?;
    println!(
        "{}",
        json!({"kind": "open", "load_s": load_s, "rss_before_mib": rss0 as f64 / 1024.0,
               "rss_open_mib": rss_open as f64 / 1024.0, "graph_mib": stats.graph_memory_bytes as f64 / 1048576.0,
               "sketch_mib": stats.sketch_memory_bytes as f64 / 1048576.0})
    );
    for ef in list(&a.efs) {
        for kp in list(&a.kprimes) {
            let p = SearchParams {
                ef,
                candidates: Some(kp),
                filter: None,
                exhaustive_rerank: a.exhaustive_rerank,
            };
            let f = |i: usize| -> Vec<u64> {
                match store.search(&q[i * dim..(i + 1) * dim], a.k, &p) {
                    Ok(h) => h.iter().map(|h| h.id).collect(),
                    Err(e) => panic!("search failed: {e}"),
                }
            };
            let reads0 = store.stats()?.rerank_reads;
            let (r, q1, qn) = sweep_point("store", nq, &gt, a.k, a.repeats, &f);
            // sweep_point runs 20 warm-up queries, then `repeats` x (1 thread + all threads) passes.
            let passes = (20.min(nq) + 2 * a.repeats.max(1) * nq) as f64;
            let reads = (store.stats()?.rerank_reads - reads0) as f64 / passes;
            println!(
                "{}",
                json!({"kind": "point", "system": "jsearch-index (store)", "ef": ef, "kprime": kp,
                       "recall": r, "qps_1t": q1, "qps_all": qn, "reads": reads})
            );
        }
    }
    println!(
        "{}",
        json!({"kind": "rss", "rss_after_search_mib": rss_kib("VmRSS:") as f64 / 1024.0,
               "peak_rss_mib": rss_kib("VmHWM:") as f64 / 1024.0, "threads": rayon::current_num_threads()})
    );
    if let Some(out) = &a.ids_out {
        let p = SearchParams {
            ef: a.ef,
            candidates: a.candidates,
            filter: None,
            exhaustive_rerank: false,
        };
        let ids: Vec<Vec<u32>> = (0..nq)
            .into_par_iter()
            .map(|i| {
                store
                    .search(&q[i * dim..(i + 1) * dim], a.k, &p)
                    .map(|h| h.iter().map(|h| h.id as u32).collect())
            })
            .collect::<std::result::Result<_, _>>()?;
        let mut w = BufWriter::new(std::fs::File::create(out)?);
        for r in &ids {
            w.write_all(&(r.len() as u32).to_le_bytes())?;
            for id in r {
                w.write_all(&id.to_le_bytes())?;
            }
        }
        w.flush()?;
        let found: Vec<Vec<u64>> = ids
            .iter()
            .map(|r| r.iter().map(|&x| x as u64).collect())
            .collect();
        println!(
            "{}",
            json!({"kind": "ids_out", "path": out.display().to_string(), "ef": a.ef,
                   "recall": recall(&found, &gt, a.k)})
        );
    }
    Ok(())
}

// ---------- main ----------

/// Merge a round's sweep points into `acc`: the same (system, ef, k') keeps its best QPS.
fn merge_best(acc: &mut Vec<Value>, round: Vec<Value>) {
    for p in round {
        let same = |q: &&mut Value| {
            q["system"] == p["system"] && q["ef"] == p["ef"] && q["kprime"] == p["kprime"]
        };
        match acc.iter_mut().find(|q| same(q)) {
            Some(q) => {
                for key in ["qps_1t", "qps_all"] {
                    let best = q[key]
                        .as_f64()
                        .unwrap_or(0.0)
                        .max(p[key].as_f64().unwrap_or(0.0));
                    q[key] = json!(best);
                }
            }
            None => acc.push(p),
        }
    }
}

fn best_at(points: &[Value], system: &str, min_recall: f64, key: &str) -> Option<(f64, String)> {
    points
        .iter()
        .filter(|p| p["system"] == system && p["recall"].as_f64().unwrap_or(0.0) >= min_recall)
        .filter_map(|p| {
            Some((
                p[key].as_f64()?,
                format!("ef={} k'={}", p["ef"], p["kprime"]),
            ))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(p) = &a.serve {
        return serve(&a, p);
    }
    std::fs::create_dir_all(&a.work)?;
    let threads = rayon::current_num_threads();
    let t_all = Instant::now();
    // data
    let (base, q, dim, tag) = if let Some(bp) = &a.base {
        let (b, d) = read_fvecs(bp)?;
        let (q, dq) =
            read_fvecs(Path::new(&a.queries)).context("--base needs --queries FILE.fvecs")?;
        if d != dq {
            bail!("base dim {d} != query dim {dq}");
        }
        let tag = format!("ext-{}-{}", b.len() / d, q.len() / d);
        (b, q, d, tag)
    } else {
        let nq: usize = a
            .queries
            .parse()
            .context("--queries: a count, or a file with --base")?;
        let t = Instant::now();
        let centers = make_centers(a.seed, a.centers, 1024);
        let b = generate(a.seed, 1, a.n, 1024, &centers);
        let q = generate(a.seed, 2, nq, 1024, &centers);
        eprintln!(
            "generated {} x 1024 + {nq} queries in {:.1}s",
            a.n,
            t.elapsed().as_secs_f64()
        );
        (
            b,
            q,
            1024,
            format!("gen-{}-{}-{}-{}", a.n, nq, a.seed, a.centers),
        )
    };
    let n = base.len() / dim;
    let nq = q.len() / dim;
    let ann_dim = a.ann_dim.min(dim);
    let energy: f64 = base
        .chunks_exact(dim)
        .take(10_000)
        .map(|v| v[..ann_dim].iter().map(|x| (x * x) as f64).sum::<f64>())
        .sum::<f64>()
        / n.min(10_000) as f64;
    eprintln!(
        "energy in first {ann_dim} of {dim} dims: {:.1}%",
        energy * 100.0
    );
    // ground truth (cached per data set)
    let gt_cache = a.work.join(format!("gt-{tag}-k{}.ivecs", a.k.max(10)));
    let gt_k = a.k.max(10);
    let gt = if gt_cache.exists() {
        read_ivecs(&gt_cache)?
    } else {
        let t = Instant::now();
        let g = ground_truth(&base, &q, dim, gt_k);
        eprintln!(
            "exact ground truth ({nq} queries x {n}) in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let flat: Vec<u32> = g.iter().flatten().copied().collect();
        write_vecs(&gt_cache, &flat, gt_k, |x: u32| x.to_le_bytes())?;
        g
    };
    std::fs::copy(&gt_cache, a.work.join("gt.ivecs"))?;
    write_vecs(&a.work.join("queries.fvecs"), &q, dim, |x: f32| {
        x.to_le_bytes()
    })?;
    let base_file = a.work.join(format!("base-{tag}.fvecs"));
    if !a.peers.is_empty() && !base_file.exists() {
        write_vecs(&base_file, &base, dim, |x: f32| x.to_le_bytes())?;
    }

    // build the store (or, with --reuse-builds, take the one an earlier run built on this data)
    let store_path = a.work.join("store.redb");
    let builds_file = a
        .work
        .join(format!("store-{tag}-M{}-efc{}.json", a.m, a.efc));
    let reuse = a.reuse_builds && store_path.exists() && builds_file.exists();
    if !reuse {
        let _ = std::fs::remove_file(&store_path);
        let _ = std::fs::remove_file(&builds_file);
    }
    let mut settings = StoreSettings::new("ann-bench", tag.clone(), dim);
    settings.ann_dim = ann_dim;
    settings.hnsw = HnswParams {
        m: a.m,
        ef_construction: a.efc,
        ef_search: 64,
    };
    let t = Instant::now();
    let mut store = Store::open(&store_path, settings)?;
    let (build_s, before_compact, compact_s) = if reuse {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&builds_file)?)?;
        let f = |k: &str| {
            v[k].as_f64()
                .with_context(|| format!("{k} missing in {builds_file:?}"))
        };
        eprintln!("reusing {store_path:?} (built by an earlier run, {builds_file:?})");
        (f("build_s")?, f("before_compact")? as u64, f("compact_s")?)
    } else {
        for s in (0..n).step_by(a.batch.max(1)) {
            let mut b = Batch::new();
            for i in s..(s + a.batch).min(n) {
                b.upsert(i as u64, base[i * dim..(i + 1) * dim].to_vec(), Vec::new());
            }
            store.commit(b)?;
            eprintln!(
                "  committed {} / {n} ({:.0}s)",
                (s + a.batch).min(n),
                t.elapsed().as_secs_f64()
            );
        }
        let build_s = t.elapsed().as_secs_f64();
        let before_compact = std::fs::metadata(&store_path)?.len();
        let t = Instant::now();
        // renumber nodes in graph order (re-rank locality) and give free pages back
        store.compact()?;
        let compact_s = t.elapsed().as_secs_f64();
        std::fs::write(
            &builds_file,
            json!({"build_s": build_s, "before_compact": before_compact, "compact_s": compact_s})
                .to_string(),
        )?;
        (build_s, before_compact, compact_s)
    };
    // exact f16 scan vs exact f32 ground truth: the recall cost of storing f16
    let ne = a.exact_queries.min(nq);
    let t = Instant::now();
    let ex: Vec<Vec<u64>> = (0..ne)
        .map(|i| {
            store
                .exact_search(&q[i * dim..(i + 1) * dim], a.k, None)
                .map(|h| h.iter().map(|h| h.id).collect())
        })
        .collect::<std::result::Result<_, _>>()?;
    let exact_qps = ne as f64 / t.elapsed().as_secs_f64();
    let f16_recall = recall(&ex, &gt[..ne], a.k);
    drop(store);
    let file_bytes = std::fs::metadata(&store_path)?.len();

    // serve in a child process (clean RSS, real reopen)
    let serve_round = || -> Result<(Value, Value, Value, Vec<Value>)> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(std::env::args().skip(1))
            .arg("--serve")
            .arg(&store_path)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut points: Vec<Value> = Vec::new();
        let (mut open, mut rss, mut ids_out) = (Value::Null, Value::Null, Value::Null);
        for line in BufReader::new(child.stdout.take().context("child stdout")?).lines() {
            let v: Value = serde_json::from_str(&line?)?;
            match v["kind"].as_str() {
                Some("point") => points.push(v),
                Some("open") => open = v,
                Some("rss") => rss = v,
                Some("ids_out") => ids_out = v,
                _ => {}
            }
        }
        if !child.wait()?.success() {
            bail!("serve child failed");
        }
        Ok((open, rss, ids_out, points))
    };

    // graph implementations side by side (in memory, same f16 vectors, same re-rank)
    let full16: Vec<F16> = vecmath::to_f16(&base);
    let ann16: Vec<F16> = full16
        .par_chunks_exact(dim)
        .flat_map_iter(|f| vecmath::ann_from_full(f, ann_dim))
        .collect();
    let q16: Vec<F16> = vecmath::to_f16(&q);
    let qann: Vec<Vec<F16>> = q
        .chunks_exact(dim)
        .map(|v| vecmath::ann_from_decoded(v, ann_dim))
        .collect();
    let mut graph_rows: Vec<Value> = Vec::new();
    for g in a.graphs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut graph: Box<dyn AnnGraph> = match g {
            "native" => Box::new(Hnsw::new(
                ann_dim,
                GraphParams {
                    m: a.m,
                    ef_construction: a.efc,
                    seed: 1,
                },
            )),
            "usearch" => Box::new(USearch::new(ann_dim, a.m, a.efc)?),
            "hnsw_rs" => Box::new(HnswRs {
                h: hnsw_rs::hnsw::Hnsw::new(a.m, n, 16, a.efc, DotF16),
                dim: ann_dim,
            }),
            other => bail!("unknown graph {other}"),
        };
        let t = Instant::now();
        graph.add_batch(&ann16);
        let gb = t.elapsed().as_secs_f64();
        eprintln!("graph {g}: built {n} in {gb:.1}s");
        for ef in list(&a.efs) {
            for kp in list(&a.kprimes) {
                let gr = &*graph;
                let f = |i: usize| -> Vec<u64> {
                    let c = gr.search(&qann[i], kp, ef.max(kp), &|_| true);
                    let qf = &q16[i * dim..(i + 1) * dim];
                    let mut s: Vec<(f32, u64)> = c
                        .iter()
                        .map(|&(_, nd)| {
                            (
                                dot_f16(qf, &full16[nd as usize * dim..(nd as usize + 1) * dim]),
                                nd as u64,
                            )
                        })
                        .collect();
                    s.sort_by(|x, y| y.0.total_cmp(&x.0));
                    s.iter().take(a.k).map(|x| x.1).collect()
                };
                let (r, q1, qn) = sweep_point(g, nq, &gt, a.k, a.repeats, &f);
                graph_rows.push(
                    json!({"system": format!("graph:{g}"), "ef": ef, "kprime": kp, "recall": r,
                                       "qps_1t": q1, "qps_all": qn, "build_s": gb}),
                );
            }
        }
    }
    drop(full16);
    drop(ann16);

    // hnswlib peer (its indexes are saved in round 1 and loaded in later rounds)
    let with_peer = a.peers.split(',').any(|p| p.trim() == "hnswlib");
    let peer_round = || -> Result<Vec<Value>> {
        let mut peer_points: Vec<Value> = Vec::new();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ann_hnswlib.sh");
        // The peer re-ranks from RAM, so re-ranking its whole beam (k' = ef) is cheap for it and
        // often its best point: sweep those too unless told otherwise.
        let peer_kprimes = if a.peer_kprimes.is_empty() {
            let mut v = list(&a.kprimes);
            v.extend(list(&a.efs));
            v.sort_unstable();
            v.dedup();
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        } else {
            a.peer_kprimes.clone()
        };
        let out = Command::new("bash")
            .arg(&script)
            .args(["--base", &base_file.display().to_string()])
            .args([
                "--queries",
                &a.work.join("queries.fvecs").display().to_string(),
            ])
            .args(["--gt", &a.work.join("gt.ivecs").display().to_string()])
            .args([
                "--k",
                &a.k.to_string(),
                "--dims",
                &a.peer_dims,
                "--efs",
                &a.efs,
                "--kprimes",
                &peer_kprimes,
                "--repeats",
                &a.repeats.to_string(),
                "--index-dir",
                &a.work.display().to_string(),
                "--tag",
                &tag,
            ])
            .args([
                "--m",
                &a.m.to_string(),
                "--efc",
                &a.efc.to_string(),
                "--threads",
                &threads.to_string(),
            ])
            .stderr(Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("hnswlib peer failed");
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                peer_points.push(v);
            }
        }
        Ok(peer_points)
    };

    // Rounds: store sweep, then peer sweep, again and again; each point keeps its best QPS
    // (this machine's speed drifts by tens of percent over minutes; alternating gives both
    // systems the same chances).
    let mut points: Vec<Value> = Vec::new();
    let mut peer_points: Vec<Value> = Vec::new();
    let (mut open, mut rss, mut ids_out) = (Value::Null, Value::Null, Value::Null);
    // Round 1 builds the peer's indexes afresh (its build time is measured in this run), unless
    // --reuse-builds.
    for e in std::fs::read_dir(&a.work)?.flatten() {
        if !a.reuse_builds
            && e.file_name()
                .to_string_lossy()
                .starts_with(&format!("hnswlib-{tag}-"))
        {
            std::fs::remove_file(e.path())?;
        }
    }
    for round in 0..a.rounds.max(1) {
        eprintln!("round {} of {}", round + 1, a.rounds.max(1));
        let (o, r, ids, pts) = serve_round()?;
        if round == 0 {
            (open, ids_out) = (o, ids);
        }
        let peak = |v: &Value| v["peak_rss_mib"].as_f64().unwrap_or(0.0);
        if peak(&r) >= peak(&rss) {
            rss = r;
        }
        merge_best(&mut points, pts);
        if with_peer {
            merge_best(&mut peer_points, peer_round()?);
        }
    }

    // report
    let mib = |b: f64| b / 1048576.0;
    println!("\n## jsearch-index ann bench: n={n} dim={dim} ann_dim={ann_dim} queries={nq} k={} M={} efC={} threads={threads}", a.k, a.m, a.efc);
    println!(
        "data: {tag}; energy in first {ann_dim} dims {:.1}%\n",
        energy * 100.0
    );
    println!("| store | value |\n|---|---|");
    println!(
        "| build (commits of {} vectors, {threads} threads) | {build_s:.1} s ({:.0} vectors/s){} |",
        a.batch,
        n as f64 / build_s,
        if reuse {
            "; store built by an earlier run and reused (--reuse-builds; so are hnswlib's indexes where that run left them)"
        } else {
            ""
        }
    );
    println!(
        "| file size | {:.1} MiB after `compact` (locality renumbering + vacuum, {compact_s:.1} s); {:.1} MiB before |",
        mib(file_bytes as f64),
        mib(before_compact as f64)
    );
    println!("| bytes per vector | {:.0} |", file_bytes as f64 / n as f64);
    let load_s = open["load_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "| reopen (load graph, no rebuild) | {load_s:.2} s = {:.1}% of build |",
        100.0 * load_s / build_s
    );
    println!(
        "| RSS after open (process total) | {:.0} MiB (graph {:.0} MiB, re-rank sketches {:.0} MiB, redb cache <= {} MiB) |",
        open["rss_open_mib"].as_f64().unwrap_or(0.0),
        open["graph_mib"].as_f64().unwrap_or(0.0),
        open["sketch_mib"].as_f64().unwrap_or(0.0),
        std::env::var("JSEARCH_STORE_CACHE_MIB").unwrap_or_else(|_| "64".into())
    );
    println!(
        "| peak RSS during search | {:.0} MiB |",
        rss["peak_rss_mib"].as_f64().unwrap_or(0.0)
    );
    println!("| exact f16 scan: recall@{} vs exact f32 (f16 cost) | {f16_recall:.4} ({ne} queries, {exact_qps:.1} QPS) |", a.k);
    if !ids_out.is_null() {
        println!(
            "| --ids-out | {} (ef={}, recall {:.4}) |",
            ids_out["path"],
            ids_out["ef"],
            ids_out["recall"].as_f64().unwrap_or(0.0)
        );
    }
    let mut all: Vec<Value> = points.clone();
    all.extend(peer_points.iter().cloned());
    all.extend(graph_rows.iter().cloned());
    println!("\n| system | ef | k' | recall@{} | QPS 1 thread | QPS {threads} threads | build s | vector reads / query |\n|---|---|---|---|---|---|---|---|", a.k);
    for p in &all {
        let bs = p["build_s"]
            .as_f64()
            .map_or(format!("{build_s:.1}"), |b| format!("{b:.1}"));
        let reads = p["reads"]
            .as_f64()
            .map_or("-".to_string(), |r| format!("{r:.1}"));
        println!(
            "| {} | {} | {} | {:.4} | {:.0} | {:.0} | {bs} | {reads} |",
            p["system"].as_str().unwrap_or("?"),
            p["ef"],
            p["kprime"],
            p["recall"].as_f64().unwrap_or(0.0),
            p["qps_1t"].as_f64().unwrap_or(0.0),
            p["qps_all"].as_f64().unwrap_or(0.0)
        );
    }
    let mut systems: Vec<String> = Vec::new();
    for p in &all {
        let s = p["system"].as_str().unwrap_or("?").to_string();
        if !systems.contains(&s) {
            systems.push(s);
        }
    }
    let ours = "jsearch-index (store)";
    let peer = systems
        .iter()
        .find(|s| s.starts_with("hnswlib-") && s.contains("rerank"))
        .cloned();
    let peer_full = systems
        .iter()
        .find(|s| s.starts_with("hnswlib-") && !s.contains("rerank"))
        .cloned();
    for key in ["qps_1t", "qps_all"] {
        println!(
            "\n| best {key} at recall@{} >= | {} | ratio store / {} | ratio store / {} |\n|---|{}---|---|",
            a.k,
            systems.join(" | "),
            peer.clone().unwrap_or("-".into()),
            peer_full.clone().unwrap_or("-".into()),
            "---|".repeat(systems.len())
        );
        for th in [0.95, 0.98, 0.99] {
            let cells: Vec<String> = systems
                .iter()
                .map(|s| {
                    best_at(&all, s, th, key).map_or("-".into(), |(v, at)| format!("{v:.0} ({at})"))
                })
                .collect();
            let o = best_at(&all, ours, th, key).map(|x| x.0);
            let ratio = |p: &Option<String>| match (
                o,
                p.as_ref().and_then(|p| best_at(&all, p, th, key)),
            ) {
                (Some(o), Some(b)) => format!("{:.2}", o / b.0),
                _ => "-".into(),
            };
            println!(
                "| {th} | {} | {} | {} |",
                cells.join(" | "),
                ratio(&peer),
                ratio(&peer_full)
            );
        }
    }
    eprintln!("total {:.0}s", t_all.elapsed().as_secs_f64());
    Ok(())
}
