//! `jsearch embed`: embeddings from the shell, one JSON object per input.

/// Arguments of `jsearch embed`.
#[derive(Debug, clap::Args)]
pub struct EmbedArgs {}

/// Runs `jsearch embed`.
pub fn run(_args: EmbedArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
