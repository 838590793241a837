//! Shared helpers of the jsearch benchmark binaries (`encoders`, `ann`, `ingest`).

pub mod checkpoint;
pub mod peaks;
pub mod products;
pub mod synth;
pub mod usearch_graph;

/// The candle device a bench's `--device` names: `cpu`, `cuda` or `cuda:N` (a `--features cuda`
/// build), resolved as `jsearch --device` resolves it (an unavailable GPU is an error that says
/// why).
pub fn open_device(name: &str) -> anyhow::Result<candle_core::Device> {
    let choice: jsearch::DeviceChoice = name.parse()?;
    Ok(choice.resolve()?.device)
}

/// Cosine of two vectors, accumulated in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += (*x as f64) * (*y as f64);
        aa += (*x as f64) * (*x as f64);
        bb += (*y as f64) * (*y as f64);
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-30)
}

/// Builds the release `jsearch` binary of the workspace at `root` (cargo's own, so the bench
/// measures the current code) and returns its path.
pub fn release_jsearch(root: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .args(["build", "--release", "-q", "-p", "jsearch-cli"])
        .current_dir(root)
        .status()?;
    if !st.success() {
        anyhow::bail!("building jsearch failed");
    }
    Ok(root.join("target/release/jsearch"))
}

/// Runs `cmd` to its end, returning (exit code, peak RSS in MiB from `wait4`'s rusage, wall
/// seconds). The caller sets up stdin/stdout/stderr.
pub fn measure_child(mut cmd: std::process::Command) -> anyhow::Result<(i32, f64, f64)> {
    use anyhow::Context;
    let t = std::time::Instant::now();
    let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, zero is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; the pointers are valid for the call.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        anyhow::bail!("wait4 failed");
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // ru_maxrss is in KiB on Linux.
    Ok((
        code,
        usage.ru_maxrss as f64 / 1024.0,
        t.elapsed().as_secs_f64(),
    ))
}
