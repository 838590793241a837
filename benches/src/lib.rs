//! Shared helpers of the jsearch benchmark binaries (`encoders`, `ann`, `ingest`).

pub mod checkpoint;
pub mod synth;

/// The candle device a bench's `--device` names: `cpu`, `cuda` or `cuda:N` (a `--features cuda`
/// build; the CUDA libraries are checked first, so a machine without them gets a sentence).
pub fn open_device(name: &str) -> anyhow::Result<candle_core::Device> {
    use anyhow::Context;
    if name == "cpu" {
        return Ok(candle_core::Device::Cpu);
    }
    let n = match name.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("--device {name}: expected cpu, cuda or cuda:N"))?,
        None => anyhow::bail!("--device {name}: expected cpu, cuda or cuda:N"),
    };
    jsearch_encoders::cuda_libraries().map_err(|why| anyhow::anyhow!("cuda:{n}: {why}"))?;
    Ok(candle_core::Device::new_cuda(n)?)
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
