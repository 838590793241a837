//! Speed and memory of the jina-clip-v2 encoders at the REAL model size (random weights generated
//! on the fly, official layout), against PyTorch on the same inputs in the same run.
//!
//! ```text
//! cargo run --release -p jsearch-benches --bin encoders
//! cargo run --release -p jsearch-benches --bin encoders -- --dtypes f32,bf16 --peer-dtypes float32,bfloat16
//! # on a GPU (a `--features cuda` build; what scripts/gpu-check.sh runs):
//! encoders --device cuda --dtypes f32,bf16 --peer-dtypes float32,bfloat16 --speed-vs "pytorch bfloat16" \
//!     --image-batch 1,8,32,64 --query-batch 64 --passage-batch 16
//! ```
//!
//! Cases: model load (from the bf16 safetensors, LoRA merged), one query of 8 tokens (latency),
//! 32 queries of 8 tokens (throughput), passages of 512 tokens, images at 512x512. Every Rust
//! dtype runs in a child process of its own (so that peak RSS is its own), then the PyTorch peer
//! (`benches/scripts/encoders_torch.sh`: a compact torch implementation of the same architecture,
//! checked against the golden fixtures by `check_torch_peer.py`) runs the same token ids and pixels
//! from the same checkpoint. The table gives per-case times, the ratio to PyTorch f32 (or
//! `--speed-vs`), and the agreement of each path with PyTorch f32 (minimum cosine over the case's
//! outputs); on a GPU also each system's peak GPU memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Parser;
use jsearch_benches::{checkpoint, cosine, open_device};
use jsearch_encoders::preprocess::PixelValues;
use jsearch_encoders::{ClipModel, LoadOptions, Towers, WeightCache};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde_json::{json, Value};

/// The allocator the `jsearch` binary runs with, so that the jsearch rows measure what it does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "jina-clip-v2 encoder speed at the real size, vs PyTorch")]
struct Args {
    /// Rust paths to measure: f32, bf16, f16, int8 (Q8_0 linear layers, f32 elsewhere), bf16mm
    /// (linear layers through the bf16 kernel: AMX tiles or AVX512-BF16, f32 elsewhere), auto (per case what
    /// `--precision auto` runs on this CPU, loaded from the weight cache as `jsearch serve`
    /// loads it: packed weights copied into memory, see `--auto-mapped`; the others are
    /// prepared from the checkpoint at load).
    #[arg(long, default_value = "f32,int8", value_delimiter = ',')]
    dtypes: Vec<String>,
    /// Peers to measure: PyTorch float32, bfloat16; ONNX Runtime onnx-float32, onnx-int8 (the
    /// same float32 model exported with torch.onnx, dynamically quantised for int8); empty for
    /// none.
    #[arg(long, default_value = "float32", value_delimiter = ',')]
    peer_dtypes: Vec<String>,
    /// Cases: load, q1, q32, p512, img.
    #[arg(long, default_value = "load,q1,q32,p512,img")]
    cases: String,
    /// Timed repetitions of the batched cases (q1 always gets at least 10).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Passages per 512-token batch.
    #[arg(long, default_value_t = 2)]
    passage_batch: usize,
    /// Queries per batch of the `q32` case.
    #[arg(long, default_value_t = 32)]
    query_batch: usize,
    /// Images per batch; a list (`1,8,32,64`) runs one case per size.
    #[arg(long, default_value = "1", value_delimiter = ',')]
    image_batch: Vec<usize>,
    /// Where both sides run: `cpu` or `cuda` (`cuda:N`; needs a `--features cuda` build). On a
    /// GPU the table adds each system's peak GPU memory (nvidia-smi, sampled every 50 ms).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The system the speed column divides by (accuracy is always against pytorch float32).
    #[arg(long, default_value = "pytorch float32")]
    speed_vs: String,
    /// `auto` with the weight cache mapped in place, as a one-shot `jsearch query` loads it
    /// (instead of copied into memory as a long-lived process does: `LoadOptions::resident`).
    #[arg(long)]
    auto_mapped: bool,
    /// Threads for both sides (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Checkpoint folder (generated there when missing).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Folder for the shared inputs and the embeddings of each side.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Internal: run one Rust dtype and print JSON lines.
    #[arg(long, hide = true)]
    worker: Option<String>,
}

fn main() -> Result<()> {
    let mut a = Args::parse();
    if a.threads == 0 {
        a.threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
    }
    let ckpt = match &a.checkpoint {
        Some(d) => d.clone(),
        None => checkpoint::default_checkpoint_dir(),
    };
    let work = a
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("jsearch-bench-encoders"));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    if let Some(dtype) = &a.worker {
        return worker(&a, &ckpt, &work, dtype);
    }
    let t = Instant::now();
    // A given checkpoint with weights is used as it is (a small one: gpu-check.sh --no-gpu uses
    // the fixture model); else the real-size random one is generated there.
    if !(a.checkpoint.is_some() && ckpt.join("model.safetensors").exists()) {
        checkpoint::ensure_random_checkpoint(&ckpt)?;
    }
    eprintln!(
        "checkpoint ready in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        ckpt.display()
    );
    write_inputs(&a, &ckpt, &work)?;

    // rows[(case, system)] = result object; systems in run order.
    let mut rows: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut systems = Vec::new();
    let script = checkpoint::repo_root().join("benches/scripts/encoders_torch.sh");
    for dtype in a.peer_dtypes.iter().filter(|d| !d.is_empty()) {
        let onnx = dtype.strip_prefix("onnx-");
        let sys = match onnx {
            Some(d) => format!("onnxruntime {d}"),
            None => format!("pytorch {dtype}"),
        };
        let mut cmd = Command::new(&script);
        cmd.arg("--model")
            .arg(&ckpt)
            .args(["--threads", &a.threads.to_string(), "--dtype", dtype])
            .args(["--cases", &a.cases, "--iters", &a.iters.to_string()])
            .args(["--passage-batch", &a.passage_batch.to_string()])
            .args(["--query-batch", &a.query_batch.to_string()])
            .args(["--image-batch", &list(&a.image_batch)])
            .args(["--device", &a.device])
            .arg("--inputs")
            .arg(work.join("inputs.json"))
            .arg("--out-embeddings")
            .arg(work.join(format!("emb-{}.json", sys.replace(' ', "-"))));
        if onnx.is_some() {
            // Export (and quantise) once, so that the timed run is a deployment's process:
            // sessions created from the exported files, no torch weights in memory.
            eprintln!("exporting {sys} (once per checkpoint) ...");
            let out = Command::new(&script)
                .arg("--model")
                .arg(&ckpt)
                .args(["--threads", &a.threads.to_string(), "--dtype", dtype])
                .args(["--cases", &a.cases, "--iters", "1"])
                .arg("--inputs")
                .arg(work.join("inputs.json"))
                .output()?;
            if !out.status.success() {
                bail!(
                    "{sys} export failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        systems.push(run_system(&sys, cmd, &work, &mut rows, &a.device)?);
    }
    let exe = std::env::current_exe()?;
    for dtype in &a.dtypes {
        if dtype == "auto" {
            // Build auto's weight cache first, so that its rows time mapped loads.
            let out = Command::new(&exe)
                .args(std::env::args().skip(1))
                .args(["--worker", dtype])
                .env("RAYON_NUM_THREADS", a.threads.to_string())
                .output()?;
            if !out.status.success() {
                bail!(
                    "auto warm-up failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let mut cmd = Command::new(&exe);
        cmd.args(std::env::args().skip(1))
            .args(["--worker", dtype])
            .env("RAYON_NUM_THREADS", a.threads.to_string());
        systems.push(run_system(
            &format!("jsearch {dtype}"),
            cmd,
            &work,
            &mut rows,
            &a.device,
        )?);
    }
    report(&a, &work, &systems, &rows)
}

/// Token ids and pixels that every system reads, so that outputs can be compared.
fn write_inputs(a: &Args, ckpt: &Path, work: &Path) -> Result<()> {
    let cfg = jsearch_encoders::ClipConfig::load(&ckpt.join("config.json"))?;
    let s = cfg.vision_config.image_size;
    let vocab = cfg.text_config.vocab_size as u32;
    let mut rng = SmallRng::seed_from_u64(7);
    let mut ids = |b: usize, l: usize| -> Vec<Vec<u32>> {
        (0..b)
            .map(|_| {
                (0..l)
                    .map(|i| match i {
                        0 => 0,
                        _ if i == l - 1 => 2,
                        _ => rng.random_range(5..vocab - 1),
                    })
                    .collect()
            })
            .collect()
    };
    let (q1, q32, p) = (ids(1, 8), ids(a.query_batch, 8), ids(a.passage_batch, 512));
    let n = a.image_batch.iter().copied().max().unwrap_or(1) * 3 * s * s;
    let mut bytes = Vec::with_capacity(n * 4);
    for _ in 0..n {
        // Irwin-Hall(4) ~ N(0, 1): the scale of normalised pixels.
        let v: f32 = ((0..4).map(|_| rng.random::<f32>()).sum::<f32>() - 2.0) * 1.732_050_8;
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let px = work.join("pixels.f32");
    std::fs::write(&px, bytes)?;
    let inputs = json!({"ids_q1": q1, "ids_q32": q32, "ids_p": p, "pixels_f32": px});
    std::fs::write(work.join("inputs.json"), inputs.to_string())?;
    Ok(())
}

/// Runs one system's command, keeps its JSON lines in `work` and in `rows`; returns its name.
fn run_system(
    sys: &str,
    mut cmd: Command,
    work: &Path,
    rows: &mut BTreeMap<(String, String), Value>,
    device: &str,
) -> Result<String> {
    eprintln!("running {sys} ...");
    let sampler = device.starts_with("cuda").then(GpuMemory::start);
    let out = cmd.output().with_context(|| format!("running {sys}"))?;
    let gpu_peak = sampler.map(GpuMemory::stop);
    if !out.status.success() {
        bail!(
            "{sys} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let file = work.join(format!("rows-{}.jsonl", sys.replace(' ', "-")));
    std::fs::write(file, &out.stdout)?;
    collect(&out.stdout, sys, rows)?;
    if let Some(Some(mib)) = gpu_peak {
        for ((_, s), row) in rows.iter_mut() {
            if s == sys {
                row["peak_gpu_mb"] = json!(mib);
            }
        }
    }
    Ok(sys.to_string())
}

/// The most GPU memory in use while a system ran, above what was in use before it started
/// (`nvidia-smi`, every 50 ms; the same measure for every framework, CUDA context included).
struct GpuMemory {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<f64>>,
}

impl GpuMemory {
    fn used_mib() -> Option<f64> {
        let out = Command::new("nvidia-smi")
            .args([
                "--query-gpu=memory.used",
                "--format=csv,noheader,nounits",
                "-i",
                "0",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    fn start() -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let before = Self::used_mib()?;
            let mut peak = before;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(Self::used_mib().unwrap_or(peak));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Some(peak - before)
        });
        Self { stop, thread }
    }

    fn stop(self) -> Option<f64> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
}

/// A list as the peer takes it (`1,8,32`).
fn list(v: &[usize]) -> String {
    v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

fn collect(stdout: &[u8], sys: &str, rows: &mut BTreeMap<(String, String), Value>) -> Result<()> {
    for line in String::from_utf8_lossy(stdout).lines() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{sys}: {line}"))?;
        let case = v["case"].as_str().context("row without case")?.to_string();
        rows.insert((case, sys.to_string()), v);
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Load options of a Rust system name (compute dtype, int8, bf16 matmul) on `device`.
fn rust_options(name: &str, device: &Device) -> Result<LoadOptions> {
    let (dtype, int8, bf16_matmul) = match name {
        "f32" => (DType::F32, false, false),
        "bf16" => (DType::BF16, false, false),
        "f16" => (DType::F16, false, false),
        "int8" => (DType::F32, true, false),
        "bf16mm" => (DType::F32, false, true),
        other => bail!("unknown dtype {other} (f32, bf16, f16, int8, bf16mm)"),
    };
    if (int8 || bf16_matmul) && !device.is_cpu() {
        bail!("{name} is a CPU path (f32, bf16 or f16 on a GPU)");
    }
    Ok(LoadOptions {
        device: device.clone(),
        dtype,
        towers: Towers::Both,
        int8,
        bf16_matmul,
        cache: WeightCache::Off,
        ..LoadOptions::default()
    })
}

/// The Rust path `--precision auto` runs for a bench case on this CPU (see
/// `jsearch::auto_precision`): `(dtype name, towers)`.
fn auto_path(case: &str) -> (&'static str, Towers) {
    use jsearch::auto_precision::{choose, Workload};
    let (workload, towers) = match case {
        "load" | "q1" => (Workload::Query, Towers::Text),
        "q32" | "p512" => (Workload::Index, Towers::Text),
        _ => (Workload::Index, Towers::Vision),
    };
    let name = match choose(jsearch::cpu_tier(), workload, towers).precision {
        jsearch::Precision::Int8 => "int8",
        jsearch::Precision::Bf16 => "bf16mm",
        _ => "f32",
    };
    (name, towers)
}

/// One Rust dtype: load, then every case; JSON lines on stdout, embeddings to a file.
fn worker(a: &Args, ckpt: &Path, work: &Path, name: &str) -> Result<()> {
    let cases: Vec<&str> = a.cases.split(',').collect();
    let inputs: Value = serde_json::from_str(&std::fs::read_to_string(work.join("inputs.json"))?)?;
    let ids = |k: &str| -> Result<Vec<Vec<u32>>> { Ok(serde_json::from_value(inputs[k].clone())?) };
    let emit = |mut row: Value| {
        row["peak_rss_mb"] = json!(checkpoint::peak_rss_mib().unwrap_or(f64::NAN));
        println!("{row}");
    };
    // `auto` loads, per case, what `--precision auto` would, from the weight cache (built by a
    // warm-up run of the same worker); the other paths load once, prepared from the checkpoint.
    let auto = name == "auto";
    let device = open_device(&a.device)?;
    let load = |case: &str| -> Result<ClipModel> {
        let (dtype, towers) = if auto {
            auto_path(case)
        } else {
            (name, Towers::Both)
        };
        let mut opts = rust_options(dtype, &device)?;
        if opts.bf16_matmul && !jsearch_encoders::bf16_kernel_available() {
            bail!("bf16mm: this CPU has no AVX512-BF16 (nor AMX)");
        }
        if auto {
            opts.towers = towers;
            opts.cache = WeightCache::Dir(work.join("weight-cache"));
            opts.resident = !a.auto_mapped;
        }
        Ok(ClipModel::load(ckpt, &opts)?)
    };
    let t = Instant::now();
    let mut model = load("load")?;
    if cases.contains(&"load") {
        let mut row = json!({"case": "load", "seconds": t.elapsed().as_secs_f64()});
        if auto {
            row["path"] = json!(auto_path("load").0);
        }
        emit(row);
    }
    let mut saved: BTreeMap<String, Vec<Vec<f32>>> = BTreeMap::new();
    let mut timed =
        |case: &str, n: usize, iters: usize, f: &dyn Fn() -> Result<Vec<Vec<f32>>>| -> Result<()> {
            let out = f()?; // warm-up
            let ts: Vec<f64> = (0..iters)
                .map(|_| {
                    let t = Instant::now();
                    f().map(|_| t.elapsed().as_secs_f64())
                })
                .collect::<Result<_>>()?;
            let m = median(ts);
            emit(json!({"case": case, "batch": n, "median_ms": m * 1000.0, "per_s": n as f64 / m}));
            saved.insert(case.to_string(), out);
            Ok(())
        };
    if cases.contains(&"q1") {
        if auto {
            drop(model);
            model = load("q1")?;
        }
        let q = ids("ids_q1")?;
        timed("query_1x8", 1, a.iters.max(10), &|| {
            Ok(model.encode_ids_raw(&q)?)
        })?;
    }
    if cases.contains(&"q32") {
        if auto {
            drop(model);
            model = load("q32")?;
        }
        let q = ids("ids_q32")?;
        timed(&format!("queries_{}x8", q.len()), q.len(), a.iters, &|| {
            Ok(model.encode_ids_raw(&q)?)
        })?;
    }
    if cases.contains(&"p512") {
        if auto {
            drop(model);
            model = load("p512")?;
        }
        let p = ids("ids_p")?;
        let case = format!("passages_{}x512", p.len());
        timed(&case, p.len(), a.iters.saturating_sub(1).max(1), &|| {
            Ok(model.encode_ids_raw(&p)?)
        })?;
    }
    if cases.contains(&"img") {
        if auto {
            drop(model);
            model = load("img")?;
        }
        let s = model.image_size();
        let path = inputs["pixels_f32"].as_str().context("pixels_f32")?;
        let raw = std::fs::read(path)?;
        let floats: Vec<f32> = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let all: Vec<PixelValues> = floats
            .chunks_exact(3 * s * s)
            .map(|d| PixelValues {
                size: s,
                data: d.to_vec(),
            })
            .collect();
        for &b in &a.image_batch {
            let px = &all[..b.min(all.len())];
            let case = format!("images_{}x{s}", px.len());
            timed(&case, px.len(), a.iters.saturating_sub(2).max(1), &|| {
                Ok(model.encode_pixels_raw(px)?)
            })?;
        }
    }
    let emb = work.join(format!("emb-jsearch-{name}.json"));
    std::fs::write(&emb, serde_json::to_string(&saved)?)?;
    Ok(())
}

/// The GPU's name, as nvidia-smi gives it.
fn gpu_name() -> Option<String> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader", "-i", "0"])
        .output()
        .ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!name.is_empty()).then_some(name)
}

type Embeddings = BTreeMap<String, Vec<Vec<f32>>>;

fn load_emb(work: &Path, sys: &str) -> Option<Embeddings> {
    let file = work.join(format!("emb-{}.json", sys.replace(' ', "-")));
    serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()
}

/// The checkpoint folder's name, for the table's title.
fn ckpt_name(a: &Args) -> String {
    a.checkpoint
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Minimum cosine between the outputs of two systems for a case (`None` when either is missing).
fn agreement(a: &Embeddings, b: &Embeddings, key: &str) -> Option<f64> {
    let (x, y) = (a.get(key)?, b.get(key)?);
    (x.len() == y.len() && !x.is_empty()).then(|| {
        x.iter()
            .zip(y)
            .map(|(u, v)| cosine(u, v))
            .fold(f64::INFINITY, f64::min)
    })
}

fn report(
    a: &Args,
    work: &Path,
    systems: &[String],
    rows: &BTreeMap<(String, String), Value>,
) -> Result<()> {
    let reference = systems.iter().find(|s| s.as_str() == a.speed_vs);
    let ref_emb = systems
        .iter()
        .find(|s| s.as_str() == "pytorch float32")
        .and_then(|r| load_emb(work, r));
    let cuda = a.device.starts_with("cuda");
    let mut cases: Vec<String> = Vec::new();
    for (c, _) in rows.keys() {
        if !cases.contains(c) {
            cases.push(c.clone());
        }
    }
    let order = ["load", "query_1x8", "queries_", "passages", "images"];
    // Cases in the order above, then by batch size (images_8x512 before images_32x512).
    let batch = |c: &str| -> usize {
        c.split('_')
            .nth(1)
            .and_then(|b| b.split('x').next())
            .and_then(|b| b.parse().ok())
            .unwrap_or(0)
    };
    cases.sort_by_key(|c| {
        (
            order.iter().position(|o| c.starts_with(o)).unwrap_or(9),
            batch(c),
        )
    });
    let place = if cuda {
        format!(
            "{} ({})",
            a.device,
            gpu_name().unwrap_or_else(|| "GPU".into())
        )
    } else {
        format!("CPU, {} threads", a.threads)
    };
    let model = if a.checkpoint.is_some() {
        format!("checkpoint {}", ckpt_name(a))
    } else {
        "the real size (random weights)".to_string()
    };
    println!("\njina-clip-v2 encoders at {model}, {place}\n");
    let (gpu_head, gpu_rule) = if cuda {
        (" peak GPU MiB |", "---|")
    } else {
        ("", "")
    };
    println!(
        "| case | system | time | per second | peak RSS MiB |{gpu_head} speed vs {} | min cosine vs pytorch float32 |",
        a.speed_vs
    );
    println!("|---|---|---|---|---|{gpu_rule}---|---|");
    for c in &cases {
        let base = reference.and_then(|r| rows.get(&(c.clone(), r.clone())));
        for s in systems {
            let Some(r) = rows.get(&(c.clone(), s.clone())) else {
                continue;
            };
            let (time, per_s, ratio) = if c == "load" {
                let secs = r["seconds"].as_f64().unwrap_or(f64::NAN);
                let ratio = base.and_then(|b| b["seconds"].as_f64()).map(|b| b / secs);
                (format!("{secs:.2} s"), "-".to_string(), ratio)
            } else {
                let ms = r["median_ms"].as_f64().unwrap_or(f64::NAN);
                let ps = r["per_s"].as_f64().unwrap_or(f64::NAN);
                let ratio = base.and_then(|b| b["per_s"].as_f64()).map(|b| ps / b);
                (format!("{ms:.1} ms"), format!("{ps:.3}"), ratio)
            };
            let agree = match (&ref_emb, load_emb(work, s)) {
                (Some(r), Some(e)) if c != "load" => agreement(&e, r, c),
                _ => None,
            };
            let gpu = if cuda {
                format!(" {:.0} |", r["peak_gpu_mb"].as_f64().unwrap_or(f64::NAN))
            } else {
                String::new()
            };
            println!(
                "| {c} | {s} | {time} | {per_s} | {:.0} |{gpu} {} | {} |",
                r["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
                ratio.map_or("-".into(), |x| format!("{x:.2}x")),
                agree.map_or("-".into(), |x| format!("{x:.6}")),
            );
        }
    }
    Ok(())
}
