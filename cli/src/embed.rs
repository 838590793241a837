//! `jsearch embed`: embeddings from the shell, one JSON object per input.
//!
//! ```text
//! jsearch embed --model DIR [--text TEXT]... [--image FILE]... [--query] [--dim N] [--raw]
//! ```
//!
//! Prints `{"kind":"text"|"image","input":"...","dim":N,"embedding":[...]}` per input, in the
//! order the `--text` / `--image` options appear on the command line. Embeddings are
//! L2-normalised; `--dim N` keeps the first N values and re-normalises (Matryoshka); `--raw`
//! prints the un-normalised pooled vector (with `--dim`, its first N values).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use jsearch_encoders::preprocess::DecodeOptions;
use jsearch_encoders::{normalize, ClipModel, TextRole, Towers};

/// Arguments of `jsearch embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Model folder (config.json, tokenizer.json, model.safetensors, ...) [default:
    /// $JSEARCH_MODEL, the Hugging Face cache, else download].
    #[arg(long, env = "JSEARCH_MODEL", value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Text to embed (repeatable).
    #[arg(long = "text", value_name = "TEXT")]
    pub texts: Vec<String>,
    /// Image file to embed (repeatable).
    #[arg(long = "image", value_name = "FILE")]
    pub images: Vec<PathBuf>,
    /// Embed the texts as search queries (adds the retrieval.query instruction).
    #[arg(long)]
    pub query: bool,
    /// Matryoshka dimension: keep the first N values, then re-normalise.
    #[arg(long, value_name = "N")]
    pub dim: Option<usize>,
    /// Print the raw (un-normalised) pooled vector.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Image,
}

/// Order in which `--text` / `--image` appeared on the command line. Falls back to all texts
/// then all images when the command line cannot be matched unambiguously.
fn input_order(n_texts: usize, n_images: usize) -> Vec<Kind> {
    let fallback = || {
        let mut v = vec![Kind::Text; n_texts];
        v.extend(std::iter::repeat_n(Kind::Image, n_images));
        v
    };
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(start) = args.iter().position(|a| a == "embed") else {
        return fallback();
    };
    let mut order = Vec::new();
    let mut i = start + 1;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--" => break,
            "--text" => {
                order.push(Kind::Text);
                i += 1;
            }
            "--image" => {
                order.push(Kind::Image);
                i += 1;
            }
            _ if a.starts_with("--text=") => order.push(Kind::Text),
            _ if a.starts_with("--image=") => order.push(Kind::Image),
            "--model" | "--dim" | "--db" | "--device" | "--precision" => i += 1,
            _ => {}
        }
        i += 1;
    }
    let t = order.iter().filter(|k| **k == Kind::Text).count();
    if t == n_texts && order.len() - t == n_images {
        order
    } else {
        fallback()
    }
}

/// Runs `jsearch embed` on `device` (`auto`, `cpu`, `cuda[:N]`) at `precision` (`auto`, `f32`, ...).
pub fn run(args: &EmbedArgs, device: &str, precision: &str) -> Result<()> {
    let choice: jsearch::DeviceChoice = device.parse().context("--device")?;
    let precision: jsearch::Precision = precision.parse().context("--precision")?;
    if args.texts.is_empty() && args.images.is_empty() {
        bail!("nothing to embed: give at least one --text or --image");
    }
    if let Some(dir) = &args.model {
        if !dir.is_dir() {
            bail!("model folder {} does not exist", dir.display());
        }
    }
    // --model / $JSEARCH_MODEL, else the Hugging Face cache, else a download (see `hub`).
    let dir = jsearch_encoders::hub::resolve_model_dir(args.model.as_deref(), true)
        .context("cannot locate the model")?;
    let towers = match (args.texts.is_empty(), args.images.is_empty()) {
        (false, true) => Towers::Text,
        (true, false) => Towers::Vision,
        _ => Towers::Both,
    };
    let device = jsearch::device::resolve(choice)?.device;
    let opts = precision.load_options(device, towers);
    let model = ClipModel::load(&dir, &opts)
        .with_context(|| format!("cannot load the model from {}", dir.display()))?;
    if let Some(d) = args.dim {
        if d == 0 || d > model.embed_dim() {
            bail!("--dim {d} out of range 1..={}", model.embed_dim());
        }
    }

    // Decode every image first, so that a bad file fails before any output.
    let decode = DecodeOptions::default();
    let mut pixels = Vec::with_capacity(args.images.len());
    for path in &args.images {
        let px = model
            .preprocessor()
            .preprocess_path(path, &decode)
            .with_context(|| format!("cannot embed image {}", path.display()))?;
        pixels.push(px);
    }
    let role = if args.query {
        TextRole::Query
    } else {
        TextRole::Document
    };
    let refs: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let text_vecs = if refs.is_empty() {
        Vec::new()
    } else {
        model
            .encode_texts_raw(&refs, role)
            .context("text encoding failed")?
    };
    let image_vecs = if pixels.is_empty() {
        Vec::new()
    } else {
        model
            .encode_pixels_raw(&pixels)
            .context("image encoding failed")?
    };

    let finish = |mut v: Vec<f32>| -> Vec<f32> {
        if let Some(d) = args.dim {
            v.truncate(d);
        }
        if !args.raw {
            normalize(&mut v);
        }
        v
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut ti, mut ii) = (0, 0);
    for kind in input_order(args.texts.len(), args.images.len()) {
        let (kind_name, input, vec) = match kind {
            Kind::Text => {
                ti += 1;
                ("text", args.texts[ti - 1].clone(), &text_vecs[ti - 1])
            }
            Kind::Image => {
                ii += 1;
                (
                    "image",
                    args.images[ii - 1].to_string_lossy().into_owned(),
                    &image_vecs[ii - 1],
                )
            }
        };
        let embedding = finish(vec.clone());
        let line = serde_json::json!({
            "kind": kind_name,
            "input": input,
            "dim": embedding.len(),
            "embedding": embedding,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}
