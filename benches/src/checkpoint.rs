//! A jina-clip-v2 checkpoint at the REAL sizes with random weights, written in the official layout.
//!
//! The 1.7 GB real weights cannot be shipped or fetched in CI, but speed and memory only depend on the
//! shapes: this writes `config.json` (the real one: text architecture from jina-embeddings-v3 defaults),
//! `model.safetensors` (bf16, every tensor of `data/jina-clip-v2-state-dict.tsv`, 865M parameters),
//! `preprocessor_config.json` (512 px) and a tokenizer (the bundled toy tokenizer: only ids matter here).
//! The loader under test therefore runs exactly the code path of the real checkpoint: bf16 → f32 upcast,
//! LoRA merge, text hyper-parameters from defaults.

use anyhow::{bail, Context, Result};
use half::bf16;
use rand::{rngs::SmallRng, Rng, SeedableRng};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const STATE_DICT: &str = include_str!("../data/jina-clip-v2-state-dict.tsv");
const CONFIG: &str = include_str!("../data/jina-clip-v2-config.json");
const PREPROCESSOR: &str = include_str!("../data/jina-clip-v2-preprocessor_config.json");

/// The repository root: `$JSEARCH_REPO` when set (a bench binary carried to another machine,
/// e.g. by `scripts/gpu-check.sh`), else the checkout it was built in (benches/..).
pub fn repo_root() -> PathBuf {
    match std::env::var_os("JSEARCH_REPO") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

/// One tensor of the official state dict.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// Official tensor name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

/// Parses the bundled state-dict listing (name, shape).
pub fn state_dict() -> Result<Vec<TensorSpec>> {
    let mut out = Vec::new();
    for line in STATE_DICT.lines().skip(1) {
        let (name, shape) = line.split_once('\t').context("bad state-dict line")?;
        let shape = shape.trim().trim_start_matches('[').trim_end_matches(']');
        let shape = if shape.is_empty() {
            Vec::new()
        } else {
            shape
                .split(',')
                .map(|s| s.trim().parse::<usize>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("bad shape for {name}"))?
        };
        out.push(TensorSpec {
            name: name.to_string(),
            shape,
        });
    }
    Ok(out)
}

/// Standard deviation (and mean) used to initialise a tensor, chosen so that activations stay sane
/// through 24 layers: LayerNorm weights ~1, biases ~0, matrices N(0, 0.02), LoRA factors small.
fn init_for(name: &str) -> (f32, f32) {
    if name == "logit_scale" {
        return (2.6592, 0.0);
    }
    let is_norm = name.contains("norm") || name.contains("_ln");
    if is_norm && name.ends_with(".weight") {
        (1.0, 0.02)
    } else if name.ends_with("bias") {
        (0.0, 0.02)
    } else if name.contains("lora_") {
        (0.0, 0.01)
    } else {
        (0.0, 0.02)
    }
}

fn random_bf16(n: usize, mean: f32, std: f32, seed: u64) -> Vec<u8> {
    const CHUNK: usize = 1 << 20;
    let mut out = vec![0u8; n * 2];
    out.par_chunks_mut(CHUNK * 2)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let mut rng =
                SmallRng::seed_from_u64(seed ^ (ci as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for pair in chunk.chunks_exact_mut(2) {
                // Irwin-Hall(4) approximation of a normal: fast and bounded, good enough for benchmark weights.
                let s: f32 = (0..4).map(|_| rng.random::<f32>()).sum::<f32>() - 2.0;
                let v = mean + std * s * 1.732_050_8;
                pair.copy_from_slice(&bf16::from_f32(v).to_le_bytes());
            }
        });
    out
}

/// Writes the checkpoint into `dir` unless a complete one is already there; returns `dir`.
pub fn ensure_random_checkpoint(dir: &Path) -> Result<PathBuf> {
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(dir.to_path_buf());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let specs = state_dict()?;
    if specs.len() != 999 {
        bail!(
            "expected 999 tensors in the state-dict listing, found {}",
            specs.len()
        );
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = specs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let n: usize = t.shape.iter().product::<usize>().max(1);
            let (mean, std) = init_for(&t.name);
            (
                t.name.clone(),
                t.shape.clone(),
                random_bf16(n, mean, std, 1_000 + i as u64),
            )
        })
        .collect();
    let views: HashMap<String, safetensors::tensor::TensorView<'_>> = data
        .iter()
        .map(|(name, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::BF16,
                shape.clone(),
                bytes,
            )
            .with_context(|| format!("tensor view {name}"));
            view.map(|v| (name.clone(), v))
        })
        .collect::<Result<_>>()?;
    let tmp = dir.join("model.safetensors.tmp");
    safetensors::serialize_to_file(&views, None, &tmp).context("writing model.safetensors")?;
    std::fs::rename(&tmp, dir.join("model.safetensors"))?;
    std::fs::write(dir.join("config.json"), CONFIG)?;
    std::fs::write(dir.join("preprocessor_config.json"), PREPROCESSOR)?;
    let toy = repo_root().join("datasets/toy-shapes/model");
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(toy.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
    }
    std::fs::write(&done, b"ok")?;
    Ok(dir.to_path_buf())
}

/// Default location of the generated checkpoint (outside the repo: 1.7 GB).
pub fn default_checkpoint_dir() -> PathBuf {
    std::env::temp_dir().join("jsearch-bench-jina-clip-v2-random")
}

/// Peak resident set size of this process in MiB (VmHWM), if the OS reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
