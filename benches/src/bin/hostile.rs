//! Peak memory of the `jsearch` binary on hostile inputs, against a peer run on a normal input in
//! the same run: a 1 GiB text file, 50 and 200 MiB text files (read in 4 MiB parts; with redb's
//! cache at 16 MiB the peak shows what follows the file), `/dev/zero` as a query image and as a
//! catalog image, a catalog with a 10 MiB field.
//! Each case is one child process; its peak RSS comes from `wait4`'s rusage.
//!
//! ```sh
//! cargo build --release -p jsearch-cli && cargo run --release -p jsearch-benches --bin hostile
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The jsearch binary [default: target/release/jsearch].
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Model folder [default: the bundled toy model].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Work folder (large files are written here) [default: a temporary folder].
    #[arg(long)]
    work: Option<PathBuf>,
}

/// Builds the command of one case.
type MakeCommand<'a> = Box<dyn Fn() -> Command + 'a>;

/// Runs `cmd` (output discarded), returning (exit code, peak RSS in MiB, seconds).
fn measure(mut cmd: Command) -> Result<(i32, f64, f64)> {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    jsearch_benches::measure_child(cmd)
}

fn write_big_text(path: &Path, bytes: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let para = "Ein roter Kreis liegt neben einem blauen Quadrat. A yellow star above a green \
                triangle. Синее сердце и фиолетовый круг.\n\n";
    let mut written = 0u64;
    while written < bytes {
        f.write_all(para.as_bytes())?;
        written += para.len() as u64;
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("repo root")?
        .to_path_buf();
    let bin = a.bin.unwrap_or_else(|| root.join("target/release/jsearch"));
    let model = a
        .model
        .unwrap_or_else(|| root.join("datasets/toy-shapes/model"));
    let tmp = tempfile::tempdir()?;
    let work = a.work.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&work)?;
    // Stores of an earlier run (maybe another build) would change what is measured.
    for e in std::fs::read_dir(&work)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "jsearch") {
            std::fs::remove_file(&p)?;
        }
    }
    let js = |db: &Path| {
        let mut c = Command::new(&bin);
        c.arg("--db")
            .arg(db)
            .arg("--model")
            .arg(&model)
            .args(["--device", "cpu", "-q"])
            .env("HF_HUB_OFFLINE", "1");
        c
    };

    // Inputs.
    let normal = work.join("normal");
    std::fs::create_dir_all(&normal)?;
    std::fs::write(
        normal.join("note.txt"),
        "Ein roter Kreis neben einem blauen Quadrat.",
    )?;
    let gb = work.join("gb");
    std::fs::create_dir_all(&gb)?;
    write_big_text(&gb.join("huge.txt"), 1 << 30)?;
    let mb200 = work.join("mb200");
    std::fs::create_dir_all(&mb200)?;
    write_big_text(&mb200.join("big.txt"), 200 << 20)?;
    let mb50 = work.join("mb50");
    std::fs::create_dir_all(&mb50)?;
    write_big_text(&mb50.join("big.txt"), 50 << 20)?;
    let zero_cat = work.join("zero");
    std::fs::create_dir_all(&zero_cat)?;
    std::fs::write(
        zero_cat.join("c.jsonl"),
        "{\"id\": \"z\", \"title\": \"roter Kreis\", \"image\": \"/dev/zero\"}\n",
    )?;
    let field = work.join("field");
    std::fs::create_dir_all(&field)?;
    {
        let mut line = String::from("{\"id\": \"big\", \"text\": \"");
        line.push_str(&"a".repeat(10 << 20));
        line.push_str("\"}\n{\"id\": \"ok\", \"title\": \"roter Kreis\"}\n");
        std::fs::write(field.join("c.jsonl"), line)?;
    }

    let cases: Vec<(&str, MakeCommand)> = vec![
        (
            "peer: index one small note",
            Box::new(|| {
                let mut c = js(&work.join("peer.jsearch"));
                c.arg("index").arg(&normal);
                c
            }),
        ),
        (
            "index a 1 GiB text file (default limit: skipped)",
            Box::new(|| {
                let mut c = js(&work.join("gb.jsearch"));
                c.arg("index").arg(&gb);
                c
            }),
        ),
        (
            "index a 200 MiB text file, --max-text-mb 256",
            Box::new(|| {
                let mut c = js(&work.join("mb200.jsearch"));
                c.arg("index").arg(&mb200).args(["--max-text-mb", "256"]);
                c
            }),
        ),
        (
            "index a 50 MiB text file, store cache 16 MiB",
            Box::new(|| {
                let mut c = js(&work.join("mb50.jsearch"));
                c.arg("index")
                    .arg(&mb50)
                    .env("JSEARCH_STORE_CACHE_MIB", "16");
                c
            }),
        ),
        (
            "index a 200 MiB text file, --max-text-mb 256, store cache 16 MiB",
            Box::new(|| {
                let mut c = js(&work.join("mb200c.jsearch"));
                c.arg("index")
                    .arg(&mb200)
                    .args(["--max-text-mb", "256"])
                    .env("JSEARCH_STORE_CACHE_MIB", "16");
                c
            }),
        ),
        (
            "query --image /dev/zero",
            Box::new(|| {
                let mut c = js(&work.join("peer.jsearch"));
                c.args(["query", "--image", "/dev/zero"]);
                c
            }),
        ),
        (
            "catalog image /dev/zero (--catalog-root /)",
            Box::new(|| {
                let mut c = js(&work.join("zero.jsearch"));
                c.arg("index")
                    .arg(zero_cat.join("c.jsonl"))
                    .args(["--catalog-root", "/"]);
                c
            }),
        ),
        (
            "catalog with a 10 MiB field",
            Box::new(|| {
                let mut c = js(&work.join("field.jsearch"));
                c.arg("index").arg(field.join("c.jsonl"));
                c
            }),
        ),
    ];
    println!("| case | exit | peak RSS MiB | x peer | seconds |\n|---|---|---|---|---|");
    let mut peer = None;
    for (name, make) in &cases {
        let (code, rss, secs) = measure(make())?;
        let base = *peer.get_or_insert(rss);
        println!(
            "| {name} | {code} | {rss:.0} | {:.2} | {secs:.1} |",
            rss / base
        );
    }
    Ok(())
}
