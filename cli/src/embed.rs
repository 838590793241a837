//! `jsearch embed`: embeddings from the shell, one JSON object per input.
//!
//! ```text
//! jsearch embed [--model DIR] [--text TEXT]... [--image FILE]... [--query] [--dim N] [--raw]
//! ```
//!
//! Prints `{"kind":"text"|"image","input":"...","dim":N,"embedding":[...]}` per input, in the
//! order the `--text` / `--image` options appear on the command line. Embeddings are
//! L2-normalised; `--dim N` keeps the first N values and re-normalises (Matryoshka); `--raw`
//! prints the un-normalised pooled vector (with `--dim`, its first N values).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use jsearch::{normalize, Engine};

/// Arguments of `jsearch embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {
    /// Text to embed (repeatable; - reads one text per line from stdin).
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
    #[command(flatten)]
    pub model: crate::ModelArgs,
}

/// What an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A `--text`.
    Text,
    /// An `--image`.
    Image,
}

/// The order in which `--text` and `--image` appeared, from clap's argument indices.
pub fn input_order(m: &clap::ArgMatches) -> Vec<Input> {
    let indices = |id: &str, kind: Input| -> Vec<(usize, Input)> {
        m.indices_of(id)
            .map(|it| it.map(|i| (i, kind)).collect())
            .unwrap_or_default()
    };
    let mut all = indices("texts", Input::Text);
    all.extend(indices("images", Input::Image));
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, k)| k).collect()
}

/// Runs `jsearch embed` on `engine`, printing the inputs in `order`.
pub fn run(engine: &Engine, args: &EmbedArgs, order: &[Input]) -> Result<()> {
    if args.texts.is_empty() && args.images.is_empty() {
        bail!("nothing to embed: give at least one --text or --image");
    }
    if let Some(d) = args.dim {
        let full = engine
            .embed_dim()
            .context("cannot read the model's config")?;
        if d == 0 || d > full {
            bail!("--dim {d} out of range 1..={full}");
        }
    }
    // Fall back to all texts, then all images, if the order does not cover every input.
    let fallback: Vec<Input>;
    let order = if order.len() == args.texts.len() + args.images.len() {
        order
    } else {
        fallback = std::iter::repeat_n(Input::Text, args.texts.len())
            .chain(std::iter::repeat_n(Input::Image, args.images.len()))
            .collect();
        &fallback
    };
    // `--text -`: one text per line of stdin, in its place.
    let stdin_texts: Vec<String> = if args.texts.iter().any(|t| t == "-") {
        crate::read_stdin(crate::MAX_STDIN_TEXTS, "--text -")?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    } else {
        Vec::new()
    };
    let mut texts: Vec<&str> = Vec::new();
    let mut expanded: Vec<Input> = Vec::new();
    let (mut ti, mut ii) = (0, 0);
    for kind in order {
        match kind {
            Input::Text => {
                let t = args.texts[ti].as_str();
                ti += 1;
                if t == "-" {
                    texts.extend(stdin_texts.iter().map(String::as_str));
                    expanded.extend(std::iter::repeat_n(Input::Text, stdin_texts.len()));
                    continue;
                }
                texts.push(t);
            }
            Input::Image => ii += 1,
        }
        expanded.push(*kind);
    }
    debug_assert_eq!(ii, args.images.len());
    if texts.is_empty() && args.images.is_empty() {
        bail!("nothing to embed: stdin had no text");
    }
    // Every image is decoded before anything is printed, so a bad file fails with no output.
    let emb = engine
        .embed(&texts, &args.images, args.query)
        .context("cannot embed the inputs")?;
    let finish = |mut v: Vec<f32>| -> Vec<f32> {
        if let Some(d) = args.dim {
            v.truncate(d);
        }
        if !args.raw {
            normalize(&mut v);
        }
        v
    };
    let order = &expanded;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut ti, mut ii) = (0, 0);
    for kind in order {
        let (kind_name, input, vec) = match kind {
            Input::Text => {
                ti += 1;
                ("text", texts[ti - 1].to_string(), &emb.texts[ti - 1])
            }
            Input::Image => {
                ii += 1;
                (
                    "image",
                    args.images[ii - 1].to_string_lossy().into_owned(),
                    &emb.images[ii - 1],
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
