//! The linear-layer products of jina-clip-v2 at the real sizes, one kernel at a time: candle's
//! f32 matmul (what `--precision f32` runs), the bf16 kernel on AMX tiles or AVX512-BF16 (`--precision bf16` on the
//! CPU) and the int8 kernel (`--precision int8`: AMX-INT8, AVX512-VNNI or AVX2, candle's Q8_0 on
//! other CPUs), with GFLOP/s, the speed ratio to f32 and the relative RMS error against f32. Prints a
//! markdown table; `--stream` measures one query's products with weights from memory instead,
//! `--peaks` the instruction rates the kernels are made of.
//!
//! `cargo run --release -p jsearch-benches --bin gemm -- [--reps 5]`

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Module, Tensor};
use clap::Parser;
use jsearch_encoders::bench::Linear;

#[derive(Parser)]
#[command(
    about = "linear-layer kernels at jina-clip-v2 sizes: f32 vs bf16 (AMX / AVX512-BF16) vs int8"
)]
struct Args {
    /// Timed repetitions per kernel and shape (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Instead of the shapes: one 8-token query through the text tower's 96 products with
    /// distinct weights (every weight read from memory once per pass), with the bytes read per
    /// second.
    #[arg(long)]
    stream: bool,
    /// With `--stream`: the first layer's four weights serve all 24 layers (12 MB of int8, 25 MB
    /// of bf16: from the caches instead of memory), to see what is not memory.
    #[arg(long)]
    hot: bool,
    /// Instead of the shapes: the multiply-adds a nanosecond of each kernel's inner step on one
    /// core, registers only (f32 FMA, the AVX2 int8 steps, `vpdpbusd`): the ceilings the
    /// kernels' rates sit under.
    #[arg(long)]
    peaks: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, f: &dyn Fn() -> Result<Tensor>) -> Result<(f64, Tensor)> {
    let out = f()?;
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    Ok((median(ts), out))
}

fn rel_rms(a: &Tensor, b: &Tensor) -> Result<f64> {
    let d = (a - b)?.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
    let r = a.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
    Ok((d / r).sqrt())
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.stream {
        return stream(a.reps, a.hot);
    }
    if a.peaks {
        println!("| inner step (products per instruction group) | products / ns, one core |");
        println!("|---|---:|");
        for p in jsearch_benches::peaks::measure() {
            println!("| {} | {:.1} |", p.step, p.per_ns);
        }
        return Ok(());
    }
    let dev = Device::Cpu;
    // (label, rows, in, out): vision at 512 px has 1025 tokens; texts of 512 tokens; a query.
    let shapes = [
        ("vision qkv", 1025, 1024, 3072),
        ("vision SwiGLU w1+w2", 1025, 1024, 5460),
        ("vision SwiGLU w3", 1025, 2730, 1024),
        ("text fc1 (512 tokens)", 512, 1024, 4096),
        ("text fc2 (512 tokens)", 512, 4096, 1024),
        ("text fc1 (query, 8 tokens)", 8, 1024, 4096),
    ];
    println!(
        "threads: {}; bf16 kernel: {} (JSEARCH_CPU_TIER=avx512bf16 keeps it off AMX)\n",
        rayon::current_num_threads(),
        jsearch_encoders::bf16_kernel().unwrap_or("none")
    );
    println!(
        "| product | rows x in -> out | kernel | ms | GFLOP/s | vs f32 | rel. RMS error vs f32 |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, m, k, n) in shapes {
        let w = Tensor::randn(0f32, 0.03, (n, k), &dev)?;
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
        let flops = 2.0 * (m * n * k) as f64;
        let dense = Linear::new(w.clone(), None);
        let (t32, y32) = time(a.reps, &|| Ok(dense.forward(&x)?))?;
        let mut rows = vec![("f32 (candle)", t32, 0.0)];
        let mut bf = Linear::new(w.clone(), None);
        if bf.pack_bf16()? {
            let (t, y) = time(a.reps, &|| Ok(bf.forward(&x)?))?;
            rows.push((bf16_label(), t, rel_rms(&y32, &y)?));
        }
        let mut q = Linear::new(w, None);
        if q.quantize_q8()? {
            let (t, y) = time(a.reps, &|| Ok(q.forward(&x)?))?;
            rows.push((int8_label(), t, rel_rms(&y32, &y)?));
        } else {
            rows.push((
                "int8: stays f32 (inputs not a multiple of 32)",
                f64::NAN,
                0.0,
            ));
        }
        for (kernel, t, err) in rows {
            if t.is_nan() {
                println!("| {label} | {m} x {k} -> {n} | {kernel} | - | - | - | - |");
                continue;
            }
            println!(
                "| {label} | {m} x {k} -> {n} | {kernel} | {:.2} | {:.1} | {:.2}x | {:.1e} |",
                t * 1e3,
                flops / t / 1e9,
                t32 / t,
                err
            );
        }
    }
    Ok(())
}

fn bf16_label() -> &'static str {
    match jsearch_encoders::bf16_kernel() {
        Some("AMX") => "bf16 (AMX)",
        _ => "bf16 (AVX512-BF16)",
    }
}

fn int8_label() -> &'static str {
    match jsearch_encoders::int8_kernel() {
        "AMX-INT8" => "int8 (AMX-INT8)",
        "AVX512-VNNI" => "int8 (AVX512-VNNI)",
        "AVX-VNNI" => "int8 (AVX-VNNI)",
        "AVX2" => "int8 (AVX2)",
        _ => "int8 (candle Q8_0)",
    }
}

/// The text tower's linear layers (24 × qkv, output, fc1, fc2) for one query of 8 tokens, each
/// kernel on its own copy of the weights: a pass reads every weight once, as a query does
/// (with `hot`, the first layer's weights 24 times).
fn stream(reps: usize, hot: bool) -> Result<()> {
    let dev = Device::Cpu;
    let (m, h, f) = (8, 1024, 4096);
    let shapes: Vec<(usize, usize)> = (0..24)
        .flat_map(|_| [(3 * h, h), (h, h), (f, h), (h, f)])
        .collect();
    let x = Tensor::randn(0f32, 1.0, (m, h), &dev)?;
    let xf = Tensor::randn(0f32, 1.0, (m, f), &dev)?;
    let params: usize = shapes.iter().map(|(n, k)| n * k).sum();
    println!(
        "one 8-token query through the text tower's {} products ({:.0} M weights), threads: {}\n",
        shapes.len(),
        params as f64 / 1e6,
        rayon::current_num_threads()
    );
    println!("| kernel | ms per pass | weight bytes | GB/s | vs f32 |");
    println!("|---|---|---|---|---|");
    let mut t32 = f64::NAN;
    for kind in ["f32 (candle)", "bf16", "int8"] {
        let mut layers: Vec<(Linear, usize)> = Vec::new();
        for (i, &(n, k)) in shapes.iter().enumerate() {
            if hot && i >= 4 {
                let l = layers[i % 4].0.clone();
                layers.push((l, k));
                continue;
            }
            let mut l = Linear::new(Tensor::randn(0f32, 0.03, (n, k), &dev)?, None);
            let ok = match kind {
                "bf16" => l.pack_bf16()?,
                "int8" => l.quantize_q8()?,
                _ => true,
            };
            if !ok {
                println!("| {kind} | not on this CPU | - | - | - |");
                break;
            }
            layers.push((l, k));
        }
        if layers.len() != shapes.len() {
            continue;
        }
        let bytes_per_weight = match kind {
            "bf16" => 2.0,
            // i8 values (and 8 bytes per output column), or one f16 scale per 32 (Q8_0).
            "int8" if jsearch_encoders::int8_kernel() != "Q8_0" => 1.0,
            "int8" => 34.0 / 32.0,
            _ => 4.0,
        };
        let pass = || -> Result<()> {
            // On a worker of the pool, as the encoders run a forward pass.
            rayon::scope(|_| {
                for (l, k) in &layers {
                    l.forward(if *k == h { &x } else { &xf })?;
                }
                Ok(())
            })
        };
        pass()?;
        let mut ts = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t = Instant::now();
            pass()?;
            ts.push(t.elapsed().as_secs_f64());
        }
        let t = median(ts);
        if kind.starts_with("f32") {
            t32 = t;
        }
        let label = match kind {
            "bf16" => bf16_label(),
            "int8" => int8_label(),
            k => k,
        };
        let gb = params as f64 * bytes_per_weight / 1e9;
        println!(
            "| {label} | {:.1} | {:.0} MB | {:.1} | {:.2}x |",
            t * 1e3,
            gb * 1e3,
            gb / t,
            t32 / t
        );
    }
    Ok(())
}
