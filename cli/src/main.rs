//! `jsearch`: search your images, text and catalogs in any language, from one file on disk.

mod embed;

use clap::{Parser, Subcommand};

/// Embedded multilingual text + image search (jina-clip-v2, one file, no server).
#[derive(Debug, Parser)]
#[command(name = "jsearch", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print embeddings of texts and images as JSON lines.
    Embed(embed::EmbedArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(args) => embed::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
