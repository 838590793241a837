//! The linear-layer products of jina-clip-v2 at the real sizes, one kernel at a time: candle's
//! f32 matmul (what `--precision f32` runs), the bf16 kernel on AMX tiles or AVX512-BF16 (`--precision bf16` on the
//! CPU) and candle's Q8_0 matmul (`--precision int8`), with GFLOP/s, the speed ratio to f32 and
//! the relative RMS error against f32. Prints a markdown table.
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
    let bf16_label = match jsearch_encoders::bf16_kernel() {
        Some("AMX") => "bf16 (AMX)",
        _ => "bf16 (AVX512-BF16)",
    };
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
            rows.push((bf16_label, t, rel_rms(&y32, &y)?));
        }
        let mut q = Linear::new(w, None);
        if q.quantize_q8()? {
            let (t, y) = time(a.reps, &|| Ok(q.forward(&x)?))?;
            rows.push(("int8 (candle Q8_0)", t, rel_rms(&y32, &y)?));
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
