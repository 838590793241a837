//! `jsearch`: search your images, text and catalogs in any language, from one file on disk.
//!
//! A thin front end over the `jsearch` library: `main` parses the flags once into typed values,
//! then one function per command opens the engine, calls it and prints (`output`, `progress`,
//! `embed`). Exit codes (`AFTER_HELP`): 0 success (also when stdout is closed early, e.g.
//! `| head -1`), 1 a query found nothing, 2 an error (message on stderr) or a usage error (clap),
//! 3 an index run in which some files or records could not be used.

mod embed;
mod output;
mod preview;
mod progress;
mod style;

/// mimalloc: the store's re-rank reads allocate and free a page buffer each; glibc's allocator
/// kept handing that memory back to the kernel and faulting it in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use jsearch::{
    AttrType, CmpOp, DeviceChoice, Engine, Filter, Fusion, IndexOptions, Kind, OpenOptions,
    Precision, Query, SearchMode, SortBy,
};

const AFTER_HELP: &str = "\
Scores: a hit's score is the probability that it is relevant to the query (0 to 1, fitted per
model, the same scale for images, texts and products); `query` shows hits of 0.5 or more
(\"probably relevant\"; --min-score S sets the cut, --all shows every hit).

Exit status:
  0  success (also when the output pipe closes early, e.g. `| head -1`)
  1  a query or `similar` found nothing
  2  an error or a usage error (also when `check` finds damage)
  3  an index run finished, but some files or records could not be used (named on stderr)

Examples:
  jsearch index ~/Pictures ~/notes shop.jsonl
  jsearch query \"roter Schuh\" -n 20
  jsearch query \"red mug\" --where 'price < 20' --columns price,brand
  jsearch query --image a.jpg --text \"in red\"
  echo \"ein roter Kreis\" | jsearch query -
  jsearch similar ~/Pictures/cat.jpg
  jsearch rm SKU-1234
  jsearch serve              # http://127.0.0.1:8080/
  jsearch stats";

/// Help heading of the options every command takes.
const GLOBAL_OPTIONS: &str = "Global options";
/// Help heading of the options that choose and run the model: taken before the command, or
/// after it by the commands that load a model (the others do not list them).
const MODEL_OPTIONS: &str = "Model options";

/// clap value parser for the engine's typed flags (`DeviceChoice`, `Precision`, `Kind`): the
/// engine's message names the valid values.
fn parse_typed<T: std::str::FromStr<Err = jsearch::Error>>(
    s: &str,
) -> std::result::Result<T, String> {
    s.parse().map_err(|e: jsearch::Error| e.to_string())
}

/// How a command that did not fail ended (its exit status; errors are 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// 0: done.
    Done,
    /// 1: a query or `similar` found nothing.
    NothingFound,
    /// 3: an index run finished, but some files or records could not be used.
    SomeFailed,
    /// 2: `check` found damage.
    Damaged,
}

impl Status {
    fn of_hits(found: bool) -> Status {
        if found {
            Status::Done
        } else {
            Status::NothingFound
        }
    }

    fn code(self) -> ExitCode {
        match self {
            Status::Done => ExitCode::SUCCESS,
            Status::NothingFound => ExitCode::from(1),
            Status::SomeFailed => ExitCode::from(3),
            Status::Damaged => ExitCode::from(ERROR_EXIT),
        }
    }
}

/// Exit status of an error (and of clap's usage errors).
const ERROR_EXIT: u8 = 2;

/// clap value parser: a finite number (`NaN` and `inf` are refused).
fn finite(s: &str) -> std::result::Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("must be a finite number".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// clap value parser for `--min-score`: a finite number, or `-inf` (no cut).
fn min_score(s: &str) -> std::result::Result<f32, String> {
    match s.trim() {
        "-inf" | "-infinity" | "-Inf" => Ok(f32::NEG_INFINITY),
        other => finite(other),
    }
}

/// The default `--min-score` of `query` ("probably relevant").
const DEFAULT_MIN_SCORE: f32 = 0.5;

/// clap value parser: a finite number above 0.
fn positive_finite(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a finite number above 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// clap value parser: `field=type,field=type`.
fn parse_csv_types(
    s: &str,
) -> std::result::Result<std::collections::HashMap<String, AttrType>, String> {
    let mut out = std::collections::HashMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, ty) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected FIELD=TYPE"))?;
        let ty: AttrType = ty.parse().map_err(|e: jsearch::Error| e.to_string())?;
        out.insert(field.trim().to_string(), ty);
    }
    Ok(out)
}

/// clap value parser: a finite number, 0 or more.
fn non_negative(s: &str) -> std::result::Result<f32, String> {
    match finite(s)? {
        v if v >= 0.0 => Ok(v),
        _ => Err("must be 0 or more".into()),
    }
}

/// clap value parser of `--shard I/N`.
fn parse_shard(s: &str) -> std::result::Result<jsearch_scale::shard::ShardSpec, String> {
    s.parse()
}

/// clap value parser: a number from 0 to 1.
fn unit_interval(s: &str) -> std::result::Result<f32, String> {
    match finite(s)? {
        v if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("must be between 0 and 1".into()),
    }
}

/// Embedded multilingual text + image search (jina-clip-v2, one file, no server).
#[derive(Debug, Parser)]
#[command(name = "jsearch", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    /// Store file [default: <data dir>/jsearch/index.jsearch].
    #[arg(long, global = true, env = "JSEARCH_DB", value_name = "FILE", help_heading = GLOBAL_OPTIONS)]
    db: Option<PathBuf>,
    /// Print only results and errors (no progress, no summary).
    #[arg(long, short = 'q', global = true, help_heading = GLOBAL_OPTIONS)]
    quiet: bool,
    /// Also print the device, timings and each hit's raw cosine.
    #[arg(long, short = 'v', global = true, conflicts_with = "quiet", help_heading = GLOBAL_OPTIONS)]
    verbose: bool,
    /// Colour the output: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto", help_heading = GLOBAL_OPTIONS)]
    color: style::ColorChoice,
    /// Model folder [default: $JSEARCH_MODEL, the one the store was built with, the Hugging
    /// Face cache, else download].
    #[arg(long, env = "JSEARCH_MODEL", value_name = "DIR", help_heading = MODEL_OPTIONS)]
    model: Option<PathBuf>,
    /// Compute device: auto, cpu, cuda or cuda:N.
    #[arg(long, env = "JSEARCH_DEVICE", default_value = "auto", value_parser = parse_typed::<DeviceChoice>, help_heading = MODEL_OPTIONS)]
    device: DeviceChoice,
    /// Compute precision: auto (bf16 on a GPU; on a CPU the fastest path that keeps cosine ≥
    /// 0.999 to f32 for this CPU and command, said once on stderr), f32 (the exact reference),
    /// bf16 (on a CPU with AVX512-BF16 or AMX: bf16 linear layers, f32 elsewhere), f16 or int8 (CPU:
    /// 8-bit linear layers). The store records no precision, so it can change between runs.
    #[arg(long, env = "JSEARCH_PRECISION", default_value = "auto", value_parser = parse_typed::<Precision>, help_heading = MODEL_OPTIONS)]
    precision: Precision,
    #[command(subcommand)]
    command: Command,
}

/// The model options after a command that loads a model (`jsearch query x --model DIR`); they
/// win over the same options before the command.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = MODEL_OPTIONS)]
pub(crate) struct ModelArgs {
    /// Model folder [default: $JSEARCH_MODEL, the one the store was built with, the Hugging
    /// Face cache, else download].
    #[arg(long = "model", value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Compute device: auto, cpu, cuda or cuda:N [default: $JSEARCH_DEVICE, else auto].
    #[arg(long = "device", value_parser = parse_typed::<DeviceChoice>)]
    device_choice: Option<DeviceChoice>,
    /// Compute precision: auto, f32, bf16, f16 or int8 (see `jsearch --help`) [default:
    /// $JSEARCH_PRECISION, else auto].
    #[arg(long = "precision", value_parser = parse_typed::<Precision>)]
    precision_choice: Option<Precision>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Index folders (recursively), images, text files and catalogs (.jsonl/.csv). Incremental.
    Index(IndexArgs),
    /// Search by text (any language), by image, or both.
    Query(QueryArgs),
    /// Items similar to an indexed file, a product id, or a new file (embedded on the fly).
    Similar(SimilarArgs),
    /// Remove files, everything under folders, or products (by id) from the store.
    Rm(RmArgs),
    /// Counts by kind, model, dimensions and size of the store.
    Stats(StatsArgs),
    /// Print embeddings of texts and images as JSON lines.
    Embed(embed::EmbedArgs),
    /// Duplicate photos in the store: exact copies (the same bytes) and near-duplicates
    /// (re-encoded, resized, lightly edited, burst shots), optionally only under PATHs.
    Dupes(DupesArgs),
    /// Write the store's vectors (full and 256-d head) and the items' attributes to Parquet files
    /// in OUT, one row per vector: for pandas, polars, DuckDB, Spark, LanceDB and other engines.
    Export(ExportArgs),
    /// Encode one shard of a catalog into a Parquet file, without a store: for encoding a big
    /// catalog on many machines, then `index CATALOG --from-parquet SHARDS…` builds the store.
    /// Resumable (run it again after an interruption) and deterministic.
    EmbedShard(EmbedShardArgs),
    /// Make a PostgreSQL + pgvector table (postgres://…) or a Milvus collection (milvus://…) hold
    /// the store's vectors and attributes (created on the first run; later runs upsert what
    /// changed and delete what is gone), and print the two-stage query. `query --backend URL`
    /// runs it.
    Sync(SyncArgs),
    /// Serve the store over HTTP: a JSON API and a web page (read-only; the model stays loaded;
    /// `index` may write meanwhile, each request sees the last commit). Stop with Ctrl-C.
    Serve(ServeArgs),
    /// Verify the whole store (every row's checksum, the graph, items against vectors, the
    /// records of indexed files); lists what is damaged. Exit status 2 when something is.
    Check(StatsArgs),
    /// Rebuild a damaged store from its intact rows; the damaged file is kept as FILE.damaged,
    /// files that lost items are listed and re-encoded by the next `index` of them.
    Repair(StatsArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
API (JSON; every /v1 request needs `Authorization: Bearer TOKEN` when a token is set):
  POST /v1/search                {text, image (base64), type, where, limit, offset, facets, sort, ...}
  GET  /v1/search?q=TEXT&k=10
  GET  /v1/items/KEY             KEY: a hit's key, or its id percent-encoded
  GET  /v1/items/KEY/similar
  GET  /v1/items/KEY/thumbnail?size=256
  GET  /v1/stats, /healthz
The README documents every field.")]
struct ServeArgs {
    /// Address to listen on (port 0: a free port, named at start-up). Any address other than a
    /// loopback one needs --token.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "IP:PORT")]
    addr: std::net::SocketAddr,
    /// Token every API request must carry (`Authorization: Bearer TOKEN`); the web page asks
    /// for it once.
    #[arg(
        long,
        env = "JSEARCH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Time limit of one request, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    /// Engine calls (queries, thumbnails) at once; more wait their turn.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=4096))]
    jobs: u16,
    /// Largest request body (an uploaded image), in MiB.
    #[arg(long, default_value_t = 16, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_body_mb: u64,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct DupesArgs {
    /// Only images under these files or folders [default: every image in the store].
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Cosine at or above which two images are near-duplicates (0-1; higher: only closer
    /// copies).
    #[arg(long, default_value_t = jsearch::DEFAULT_NEAR_THRESHOLD, value_name = "COSINE", value_parser = unit_interval)]
    threshold: f32,
    /// One JSON document: {"exact": [[{path, cosine, metadata}, …], …], "near": […], "threshold"}.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct IndexArgs {
    /// Folders, files and catalogs to index.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Skip files matching this gitignore-style pattern (repeatable), e.g. '*.tmp' or 'drafts/';
    /// '!PATTERN' re-includes what an earlier --exclude excluded. Blank patterns are refused.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Let this run remove more than half (and at least 100) of the files indexed under a
    /// folder because they are gone or excluded; without it such a run stops and changes nothing.
    #[arg(long, visible_alias = "yes")]
    prune: bool,
    /// Index camera RAW files (.CR2, .NEF, .DNG, …) also when a processed image of the same
    /// name is beside them (by default only the processed one is indexed).
    #[arg(long)]
    raw_siblings: bool,
    /// Image paths in catalogs must lie inside this folder [default: each catalog's own folder].
    #[arg(long, value_name = "DIR")]
    catalog_root: Option<PathBuf>,
    /// Types of CSV columns, e.g. sku=string,price=number,tags=list (types: string, number,
    /// bool, list with '|' between values). Without it: true/false are booleans, numbers are
    /// numbers (not codes with a leading zero such as 007), the rest strings; a header
    /// `price:number` declares a type too.
    #[arg(long, value_name = "FIELD=TYPE,…", value_parser = parse_csv_types)]
    csv_types: Option<std::collections::HashMap<String, AttrType>>,
    /// Skip image files above this size in MiB (checked before reading).
    #[arg(long, default_value_t = 256, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_image_mb: u64,
    /// Skip text files above this size in MiB (checked before reading).
    #[arg(long, default_value_t = 64, value_name = "MIB", value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_text_mb: u64,
    /// Skip catalog lines (JSONL) and records (CSV) above this size in KiB.
    #[arg(long, default_value_t = 1024, value_name = "KIB", value_parser = clap::value_parser!(u64).range(1..=1 << 22))]
    max_record_kb: u64,
    /// Skip images above this many megapixels (checked before decoding).
    #[arg(long, default_value_t = 100.0, value_name = "MP", value_parser = positive_finite)]
    max_megapixels: f64,
    /// Vectors per model batch and per commit (1-4096) [default: 32 on the CPU, 64 on a GPU].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    batch_size: Option<u16>,
    /// Threads for reading, decoding and preprocessing (0 = one per core; at most 256).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256))]
    threads: u16,
    /// Decode big JPEGs at reduced scale before the exact resize (much faster, not bit-exact).
    /// Default: on when encoding on a GPU, off on the CPU.
    #[arg(long, overrides_with = "exact_jpeg")]
    fast_jpeg: bool,
    /// Decode every JPEG at full size (the reference's pixels), also on a GPU.
    #[arg(long, overrides_with = "fast_jpeg")]
    exact_jpeg: bool,
    /// Take the vectors from these `jsearch embed-shard` files instead of running the model (no
    /// model tower is loaded; the model folder still names the store's model). An item whose
    /// vector none of them holds is an error.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    from_parquet: Vec<PathBuf>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Pause after each commit, in milliseconds (for testing interrupted runs).
    #[arg(long, hide = true, default_value_t = 0)]
    throttle_ms: u64,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Number of results (1-10000; -n and --top are aliases).
    #[arg(short = 'k', long = "limit", visible_short_alias = 'n', visible_alias = "top", value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=10000))]
    limit: u16,
    /// Only this kind: image, text or product (repeatable).
    #[arg(long = "type", value_name = "KIND", value_parser = parse_typed::<Kind>)]
    kinds: Vec<Kind>,
    /// Only items whose file path starts with PREFIX.
    #[arg(long = "path", value_name = "PREFIX")]
    path_prefix: Option<PathBuf>,
    /// Drop hits scoring below this. A score is the probability that the hit is relevant (0 to
    /// 1, the same scale for every kind) [query's default: 0.5, "probably relevant"; -inf or
    /// --all: no cut].
    #[arg(long, value_name = "SCORE", allow_hyphen_values = true, value_parser = min_score)]
    min_score: Option<f32>,
    /// Every hit up to the limit, however low it scores (no --min-score cut).
    #[arg(long, conflicts_with = "min_score")]
    all: bool,
    /// Only items passing this filter, e.g. 'price < 20 AND in_stock = true AND category IN
    /// ("card", "sticker")'. Operators: = != < <= > >= IN (…) EXISTS, NOT, AND, OR, ( ).
    #[arg(long = "where", value_name = "EXPR")]
    filter: Option<String>,
    /// Only photos taken on or after DATE (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM): the
    /// `taken` attribute, from EXIF, else the file's time. Same as --where 'taken >= "DATE"'.
    #[arg(long, value_name = "DATE", value_parser = jsearch::photo::parse_date)]
    after: Option<String>,
    /// Only photos taken before DATE (same forms as --after; `--before 2024` ends with 2023).
    #[arg(long, value_name = "DATE", value_parser = jsearch::photo::parse_date)]
    before: Option<String>,
    /// Only photos taken within KM kilometres (default 10) of a place, by their EXIF GPS
    /// position: LAT,LON[,KM] in decimal degrees, e.g. 48.8584,2.2945,5.
    #[arg(long, value_name = "LAT,LON[,KM]", value_parser = parse_near, allow_hyphen_values = true)]
    near: Option<(f64, f64, f64)>,
    /// auto (hybrid where the store has a keyword index, else vector), vector, keyword, hybrid.
    #[arg(long, default_value = "auto", value_parser = parse_typed::<SearchMode>)]
    mode: SearchMode,
    /// Weight of the keyword side in hybrid mode (0 = vector only; at the default 0.5 a perfect
    /// keyword match is worth 2 calibrated vector units).
    #[arg(long, default_value_t = 0.5, value_name = "W", value_parser = non_negative)]
    keyword_weight: f32,
    /// How hybrid mode fuses the two sides: blend (scores add up) or rrf (reciprocal ranks).
    #[arg(long, default_value = "blend", value_parser = parse_typed::<Fusion>)]
    fusion: Fusion,
    /// Count the values of FIELD over every item that passes the filter (repeatable); printed
    /// after the hits (--json: a final line {"facets": …}).
    #[arg(long = "facet", value_name = "FIELD")]
    facets: Vec<String>,
    /// Skip the first N hits (paging: --offset 10 --limit 10 is page 2).
    #[arg(long, default_value_t = 0, value_name = "N")]
    offset: usize,
    /// Order the relevant hits (above --min-score, else the top offset+limit) by a field:
    /// FIELD, FIELD:asc or FIELD:desc.
    #[arg(long, value_name = "FIELD[:asc|desc]", value_parser = parse_typed::<SortBy>)]
    sort: Option<SortBy>,
    /// One JSON object per hit (rank, score, kind, id, path, title, metadata, ...).
    #[arg(long, conflicts_with = "paths")]
    json: bool,
    /// Print paths only, one per line (for pipes).
    #[arg(long)]
    paths: bool,
    /// Attributes shown for products, e.g. price,brand [default: the catalog's most common
    /// short fields, up to 3].
    #[arg(long, value_name = "FIELD,…", value_delimiter = ',')]
    columns: Vec<String>,
    /// Keep the query's own item and its twins (byte-identical copies, the catalog record of the
    /// same image) in the results.
    #[arg(long)]
    include_self: bool,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// Query text, in any language (- reads it from stdin).
    #[arg(value_name = "TEXT")]
    text: Option<String>,
    /// Query text (alternative to the positional TEXT, e.g. with --image).
    #[arg(long = "text", value_name = "TEXT", conflicts_with = "text")]
    text_opt: Option<String>,
    /// Search by this image (image-to-image); with a text, both are combined.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Weight of the image when combined with a text (0..1; the text gets the rest).
    #[arg(long, default_value_t = 0.5, value_name = "W", value_parser = unit_interval)]
    image_weight: f32,
    /// Show each hit's picture under its row: auto (the terminal's protocol; nothing into a
    /// pipe), kitty, iterm, sixel, blocks (half blocks, any colour terminal), none.
    #[arg(long, value_name = "HOW", num_args = 0..=1, default_missing_value = "auto", value_enum)]
    preview: Option<preview::Protocol>,
    /// Query arithmetic: add a text or an image file to the query ("more of this"), repeatable;
    /// `W:ITEM` weighs it (default 1), e.g. --plus 0.5:sunset --plus ref.jpg. Images named
    /// here are left out of the results.
    #[arg(long, value_name = "[W:]TEXT|FILE", value_parser = parse_adjust)]
    plus: Vec<(f32, String)>,
    /// Query arithmetic: take a text or an image away ("less of this"), e.g. --minus people.
    #[arg(long, value_name = "[W:]TEXT|FILE", value_parser = parse_adjust)]
    minus: Vec<(f32, String)>,
    /// Run many text queries from a file (- for stdin): one per line, plain text or JSON with
    /// "text" (and "id"). Hits of each query are printed in turn; with --json each carries a
    /// "query" field.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["text", "text_opt", "image"])]
    queries: Option<PathBuf>,
    /// Run the query on a table or collection `jsearch sync` wrote instead of the store:
    /// postgres://… or milvus://… (the query is encoded here; hits ranked by cosine, best vector
    /// per item; --where, --type and -k apply).
    #[arg(long, value_name = "URL", conflicts_with_all = ["queries", "plus", "minus"])]
    backend: Option<String>,
    /// The backend's table (collection).
    #[arg(long, default_value = jsearch_scale::postgres::DEFAULT_TABLE, value_name = "NAME", requires = "backend")]
    table: String,
    /// Candidates the backend's HNSW stage passes to the re-rank [default: 10 × limit, at least
    /// 100].
    #[arg(long, value_name = "N", requires = "backend", value_parser = clap::value_parser!(u16).range(1..=10000))]
    candidates: Option<u16>,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct SimilarArgs {
    /// An indexed file, a product id, or any image or text file.
    #[arg(value_name = "FILE|ID")]
    path: PathBuf,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
struct RmArgs {
    /// Files, folders or product ids to remove from the store (the files themselves are not
    /// touched). Every one that matches is removed; the others are named on stderr.
    #[arg(required = true, value_name = "PATH|ID")]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Columns: key, item_key, id, kind, modality, path, title, vector, head, then one per attribute
(typed as the store types it). Files: OUT/part-00000.parquet, ... (the README's 'Export' section).")]
struct ExportArgs {
    /// Folder for the files (created when missing; must not hold an export already).
    #[arg(value_name = "OUT")]
    out: PathBuf,
    /// File format (only parquet so far).
    #[arg(long, default_value = "parquet", value_parser = ["parquet"])]
    format: String,
    /// Element type of the vectors: f32 (every reader) or f16 (half the size, exactly what the
    /// store holds; older readers may refuse it).
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    vectors: String,
    /// Rows per file.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    rows_per_file: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "\
A record belongs to shard I of N by a hash of its id (the same on every machine, whatever the
order); with --files, a path by a hash of its line. Columns: id, modality, content_hash,
vector. Example, 4 shards on one machine:
  for i in 0 1 2 3; do jsearch embed-shard shop.jsonl --shard $i/4 --out shards/$i.parquet; done
  jsearch index shop.jsonl --from-parquet shards/*.parquet
A photo library, from a list of its files:
  find photos -type f > photos.txt
  jsearch embed-shard --files photos.txt --shard 0/2 --out shards/0.parquet   # one machine
  jsearch embed-shard --files photos.txt --shard 1/2 --out shards/1.parquet   # another
  jsearch index photos --from-parquet shards/*.parquet
The README's 'Encoding in shards' section has a Spark recipe.")]
struct EmbedShardArgs {
    /// The catalog (.jsonl or .csv), or with --files a list of paths (one per line: images,
    /// text files, folders; relative to the list's folder; blank lines and # comments skipped).
    #[arg(value_name = "CATALOG|LIST")]
    catalog: PathBuf,
    /// The input is a list of paths, not a catalog: their vectors are made as `index` makes
    /// them (text files in passages), in a scratch store in OUT.parts that an interrupted run
    /// resumes from.
    #[arg(long)]
    files: bool,
    /// Which shard: I/N, 0 <= I < N.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: jsearch_scale::shard::ShardSpec,
    /// The Parquet file to write (its .parts folder holds the work of an unfinished run).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Image paths in the catalog must lie inside this folder [default: the catalog's folder].
    #[arg(long, value_name = "DIR")]
    catalog_root: Option<PathBuf>,
    /// Types of CSV columns (as for `index`).
    #[arg(long, value_name = "FIELD=TYPE,…", value_parser = parse_csv_types)]
    csv_types: Option<std::collections::HashMap<String, AttrType>>,
    /// Vectors per model batch [default: 32 on the CPU, 64 on a GPU].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    batch_size: Option<u16>,
    /// Records per part file (the most work an interruption loses).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    part_records: u32,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
URL (or $JSEARCH_BACKEND):
  postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=CA.pem]
      sslmode as libpq: disable, prefer (default), require, verify-ca, verify-full. The user
      needs CREATE on the database's schema, and the pgvector extension installed (`CREATE
      EXTENSION vector` by a superuser once). A sync is one transaction: an interrupted one
      changes nothing.
  milvus://[USER:PASSWORD@]HOST[:PORT]  plain gRPC (port 19530 by default)
  https://[USER:PASSWORD@]HOST[:PORT][?ca=CA.pem&server_name=NAME]  Milvus over TLS
docs/scale.md explains the table, the collections and their queries.")]
struct SyncArgs {
    /// The backend: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, milvus://HOST[:PORT] or
    /// https://HOST[:PORT] (Milvus over TLS).
    #[arg(value_name = "URL", env = "JSEARCH_BACKEND", hide_env_values = true)]
    url: String,
    /// Table (PostgreSQL) or collection (Milvus) to write (lower-case letters, digits, _).
    #[arg(long, default_value = jsearch_scale::postgres::DEFAULT_TABLE, value_name = "NAME")]
    table: String,
    /// Drop the table first and load it again (a table of another model or layout).
    #[arg(long)]
    replace: bool,
    /// Print the summary as JSON (with the two-stage query as "query": SQL, or Milvus's search).
    #[arg(long)]
    json: bool,
}

/// Opens the store of `--db` with the model options (`m`'s, after the command, win over those
/// before it).
fn open_engine(cli: &Cli, m: Option<&ModelArgs>) -> Result<Engine> {
    open_engine_for(cli, m, false)
}

/// [`open_engine`]; `long_lived`: the process serves many requests, so the model's packed
/// weights are copied into memory at load (`OpenOptions::resident_weights`).
fn open_engine_for(cli: &Cli, m: Option<&ModelArgs>, long_lived: bool) -> Result<Engine> {
    let none = ModelArgs::default();
    let m = m.unwrap_or(&none);
    let db = cli.db.clone().unwrap_or_else(jsearch::default_db_path);
    if db.is_dir() {
        anyhow::bail!(
            "--db {}: is a folder; give the store's file (e.g. {})",
            db.display(),
            db.join(jsearch::DEFAULT_DB_NAME).display()
        );
    }
    Engine::open(OpenOptions {
        db,
        model_dir: m.model_dir.clone().or_else(|| cli.model.clone()),
        device: m.device_choice.unwrap_or(cli.device),
        precision: m.precision_choice.unwrap_or(cli.precision),
        download_progress: !cli.quiet && std::io::stderr().is_terminal(),
        notify: (!cli.quiet).then_some(say as fn(&str)),
        resident_weights: long_lived,
    })
    .context("opening the engine")
}

/// A line about loading the model (the precision auto chose, a weight cache built), on stderr.
fn say(line: &str) {
    eprintln!("{}", output::printable(line));
}

/// The device line: always for `index` (unless `-q`), for the other commands on `-v`.
fn log_device(engine: &Engine, show: bool) -> Result<()> {
    if show {
        let d = &engine.device()?.description;
        eprintln!("device: {d}");
    }
    Ok(())
}

/// `-v`: how long the parts of a command took, on stderr.
struct Timings {
    on: bool,
    start: std::time::Instant,
    parts: Vec<(&'static str, Duration)>,
}

impl Timings {
    fn new(on: bool) -> Self {
        Timings {
            on,
            start: std::time::Instant::now(),
            parts: Vec::new(),
        }
    }

    /// Runs `f`, remembering its time as `what`.
    fn time<T>(&mut self, what: &'static str, f: impl FnOnce() -> T) -> T {
        let t = std::time::Instant::now();
        let out = f();
        self.parts.push((what, t.elapsed()));
        out
    }

    fn report(&self) {
        if !self.on {
            return;
        }
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|(w, d)| format!("{w} {:.1} ms", d.as_secs_f64() * 1e3))
            .collect();
        eprintln!(
            "timings: {}; total {:.1} ms",
            parts.join(", "),
            self.start.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// The query of the flags; `default_min_score` applies unless `--min-score` or `--all` is given
/// (and not to RRF fusion, whose scores are rank sums).
fn build_query(mut q: Query, f: &FilterArgs, default_min_score: Option<f32>) -> Result<Query> {
    q.limit = usize::from(f.limit);
    q.kinds = f.kinds.clone();
    q.path_prefix = f.path_prefix.clone();
    let default = default_min_score.filter(|_| f.fusion != Fusion::Rrf);
    q.min_score = match (f.all, f.min_score) {
        (true, _) => None,
        (false, Some(m)) if m == f32::NEG_INFINITY => None,
        (false, Some(m)) => Some(m),
        (false, None) => default,
    };
    q.mode = f.mode;
    q.keyword_weight = f.keyword_weight;
    q.fusion = f.fusion;
    q.facets = f.facets.clone();
    q.offset = f.offset;
    q.sort = f.sort.clone();
    q.include_self = f.include_self;
    if let Some(w) = &f.filter {
        q = q.filter_str(w).context("--where")?;
    }
    // The photo sugar joins the --where filter (whose text keeps its error columns).
    let mut sugar = Vec::new();
    if let Some(d) = &f.after {
        sugar.push(Filter::cmp("taken", CmpOp::Ge, d.as_str()));
    }
    if let Some(d) = &f.before {
        sugar.push(Filter::cmp("taken", CmpOp::Lt, d.as_str()));
    }
    if let Some((lat, lon, km)) = f.near {
        sugar.push(Filter::near(lat, lon, km));
    }
    for s in sugar {
        q.filter = Some(match q.filter.take() {
            Some(f) => f.and(s),
            None => s,
        });
    }
    Ok(q)
}

/// clap value parser of `--plus`/`--minus`: `[W:]ITEM` (a weight only when the prefix is a
/// positive number, so `a:b.jpg` stays a name).
fn parse_adjust(s: &str) -> std::result::Result<(f32, String), String> {
    if let Some((w, rest)) = s.split_once(':') {
        if let Ok(w) = w.trim().parse::<f32>() {
            if !(w.is_finite() && w > 0.0) {
                return Err(format!(
                    "{s:?}: the weight before ':' must be a positive number"
                ));
            }
            if rest.trim().is_empty() {
                return Err(format!("{s:?}: nothing after the weight"));
            }
            return Ok((w, rest.to_string()));
        }
    }
    if s.trim().is_empty() {
        return Err("empty term".into());
    }
    Ok((1.0, s.to_string()))
}

/// clap value parser of `--near LAT,LON[,KM]`.
fn parse_near(s: &str) -> std::result::Result<(f64, f64, f64), String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let num = |t: &str| t.parse::<f64>().ok().filter(|v| v.is_finite());
    let bad = || {
        format!("{s:?}: expected LAT,LON or LAT,LON,KM in decimal degrees, e.g. 48.8584,2.2945,5")
    };
    let (lat, lon, km) = match parts.as_slice() {
        [a, b] => (num(a).ok_or_else(bad)?, num(b).ok_or_else(bad)?, 10.0),
        [a, b, c] => (
            num(a).ok_or_else(bad)?,
            num(b).ok_or_else(bad)?,
            num(c).ok_or_else(bad)?,
        ),
        _ => return Err(bad()),
    };
    if lat.abs() > 90.0 || lon.abs() > 180.0 || km < 0.0 {
        return Err(format!(
            "{s:?}: latitude must be -90 to 90, longitude -180 to 180, the radius 0 km or more"
        ));
    }
    Ok((lat, lon, km))
}

/// How hits are printed, from the flags.
fn output_options(cli: &Cli, f: &FilterArgs) -> output::Options {
    output::Options {
        json: f.json,
        paths: f.paths,
        verbose: cli.verbose,
        columns: f.columns.clone(),
        previews: Default::default(),
    }
}

/// `--preview`: each hit's picture (image, or a product's image) rendered for the terminal.
fn previews(
    engine: &Engine,
    hits: &[jsearch::SearchHit],
    how: Option<preview::Protocol>,
    opts: &output::Options,
) -> std::collections::HashMap<u64, String> {
    let protocol = how.map_or(preview::Protocol::None, preview::Protocol::resolve);
    if protocol == preview::Protocol::None || opts.json || opts.paths {
        return Default::default();
    }
    hits.iter()
        .filter_map(|h| {
            // A picture that cannot be read now (moved, damaged) just has no preview.
            let jpeg = engine.thumbnail(h.key, 256).ok()??;
            Some((h.key, preview::render(protocol, &jpeg)?))
        })
        .collect()
}

/// Largest query read from stdin (`query -`).
const MAX_STDIN_QUERY: u64 = 1 << 20;
/// Largest input of `embed --text -` (one text per line).
pub(crate) const MAX_STDIN_TEXTS: u64 = 64 << 20;

/// All of stdin as UTF-8, at most `limit` bytes; `what` names it in errors.
pub(crate) fn read_stdin(limit: u64, what: &str) -> Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what} from stdin"))?;
    if bytes.len() as u64 > limit {
        anyhow::bail!("{what} on stdin: larger than {} KiB", limit >> 10);
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{what} on stdin: not UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// `jsearch index`.
fn index(cli: &Cli, a: &IndexArgs) -> Result<Status> {
    let mut engine = open_engine(cli, Some(&a.model))?;
    log_device(&engine, !cli.quiet)?;
    let opts = IndexOptions {
        excludes: a.exclude.clone(),
        prune: a.prune,
        raw_siblings: a.raw_siblings,
        max_megapixels: Some(a.max_megapixels),
        max_image_bytes: a.max_image_mb << 20,
        max_text_bytes: a.max_text_mb << 20,
        max_record_bytes: (a.max_record_kb << 10) as usize,
        catalog_root: a.catalog_root.clone(),
        csv_types: a.csv_types.clone().unwrap_or_default(),
        batch_size: a.batch_size.map_or(0, usize::from),
        threads: usize::from(a.threads),
        batch_pause: (a.throttle_ms > 0).then(|| Duration::from_millis(a.throttle_ms)),
        fast_jpeg: match (a.fast_jpeg, a.exact_jpeg) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        precomputed: if a.from_parquet.is_empty() {
            None
        } else {
            let p = jsearch_scale::shard::read_shards(&a.from_parquet).context("--from-parquet")?;
            if !cli.quiet {
                eprintln!(
                    "vectors: {} from {} shard file(s) ({})",
                    p.len(),
                    a.from_parquet.len(),
                    p.model
                );
            }
            Some(std::sync::Arc::new(p))
        },
        ..IndexOptions::default()
    };
    let mut reporter = progress::Reporter::new(cli.quiet);
    let summary = engine
        .index(&a.paths, &opts, &mut |ev| reporter.event(ev))
        .with_context(|| format!("indexing into {}", engine.db_path().display()))?;
    reporter.finish();
    if a.json {
        use std::io::Write;
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string(&summary)?
        )?;
    }
    if !cli.quiet {
        eprintln!("{}", progress::summary_line(&summary));
    }
    Ok(if summary.problems > 0 {
        Status::SomeFailed
    } else {
        Status::Done
    })
}

/// One line of a `--queries` file: `(id, text)`.
fn parse_query_line(file: &std::path::Path, i: usize, line: &str) -> Result<(String, String)> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(o)) => {
            let text = o
                .get("text")
                .and_then(|t| t.as_str())
                .with_context(|| format!("{} line {}: no \"text\"", file.display(), i + 1))?
                .to_string();
            let id = match o.get("id") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => (i + 1).to_string(),
            };
            Ok((id, text))
        }
        _ => Ok(((i + 1).to_string(), line.to_string())),
    }
}

/// Largest `--queries` file read (64 MiB: about a million queries).
const MAX_QUERIES_FILE: u64 = 64 << 20;

/// A `--queries` file: a regular file (not a device or FIFO, which would never end or block), of
/// at most [`MAX_QUERIES_FILE`], in UTF-8.
fn read_queries_file(file: &std::path::Path) -> Result<String> {
    use std::io::Read;
    if file.as_os_str() == "-" {
        return read_stdin(MAX_QUERIES_FILE, "--queries");
    }
    let md = std::fs::metadata(file).with_context(|| format!("reading {}", file.display()))?;
    if !md.is_file() {
        anyhow::bail!(
            "--queries {}: not a regular file (a device, FIFO or socket)",
            file.display()
        );
    }
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_QUERIES_FILE + 1).read_to_end(&mut bytes))
        .with_context(|| format!("reading {}", file.display()))?;
    if bytes.len() as u64 > MAX_QUERIES_FILE {
        anyhow::bail!("--queries {}: larger than 64 MiB", file.display());
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "--queries {}: not UTF-8 (at byte {})",
            file.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// `jsearch query --queries FILE`.
fn query_batch(cli: &Cli, a: &QueryArgs, file: &std::path::Path) -> Result<Status> {
    let engine = open_engine(cli, Some(&a.model))?;
    log_device(&engine, cli.verbose)?;
    let content = read_queries_file(file)?;
    let opts = output_options(cli, &a.filter);
    let mut found = false;
    for (i, line) in content.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (id, text) = parse_query_line(file, i, line)?;
        let q = build_query(
            Query::text(text.clone()),
            &a.filter,
            Some(DEFAULT_MIN_SCORE),
        )?;
        let r = engine
            .search(&q)
            .with_context(|| format!("query {id} ({text:?})"))?;
        if !a.filter.json && !a.filter.paths {
            use std::io::Write;
            writeln!(std::io::stdout().lock(), "# {id}: {text}")?;
        }
        output::print_hits_for(&r.hits, &opts, Some(&id))?;
        output::print_facets(&r.facets, a.filter.json, Some(&id))?;
        found |= !r.hits.is_empty();
    }
    Ok(Status::of_hits(found))
}

/// `jsearch query`.
fn query(cli: &Cli, a: &QueryArgs) -> Result<Status> {
    if let Some(file) = &a.queries {
        return query_batch(cli, a, file);
    }
    let mut text = a.text.clone().or_else(|| a.text_opt.clone());
    if text.as_deref() == Some("-") {
        let t = read_stdin(MAX_STDIN_QUERY, "the query")?;
        let t = t.trim();
        if t.is_empty() {
            anyhow::bail!("the query on stdin is empty");
        }
        text = Some(t.to_string());
    }
    let mut timings = Timings::new(cli.verbose);
    let engine = timings.time("open", || open_engine(cli, Some(&a.model)))?;
    log_device(&engine, cli.verbose)?;
    let adjust_term = |sign: f32, (w, item): &(f32, String)| jsearch::Adjust {
        part: jsearch::AdjustPart::from_arg(item),
        weight: sign * w,
    };
    let adjust = a
        .plus
        .iter()
        .map(|t| adjust_term(1.0, t))
        .chain(a.minus.iter().map(|t| adjust_term(-1.0, t)))
        .collect();
    let q = Query {
        text,
        image: a.image.clone(),
        image_weight: a.image_weight,
        adjust,
        ..Query::default()
    };
    let q = build_query(q, &a.filter, Some(DEFAULT_MIN_SCORE))?;
    if let Some(url) = &a.backend {
        return backend_query(&engine, a, url, &q, timings, cli.verbose);
    }
    let r = timings
        .time("search (with model load)", || engine.search(&q))
        .context("query failed")?;
    let mut opts = output_options(cli, &a.filter);
    opts.previews = previews(&engine, &r.hits, a.preview, &opts);
    output::print_hits(&r.hits, &opts)?;
    output::print_facets(&r.facets, a.filter.json, None)?;
    timings.report();
    Ok(Status::of_hits(!r.hits.is_empty()))
}

/// `jsearch similar`.
fn similar(cli: &Cli, a: &SimilarArgs) -> Result<Status> {
    let mut timings = Timings::new(cli.verbose);
    let engine = timings.time("open", || open_engine(cli, Some(&a.model)))?;
    log_device(&engine, cli.verbose)?;
    let q = build_query(Query::default(), &a.filter, None)?;
    let r = timings
        .time("search", || engine.similar_search(&a.path, &q))
        .with_context(|| format!("similar to {}", a.path.display()))?;
    let opts = output_options(cli, &a.filter);
    output::print_hits(&r.hits, &opts)?;
    output::print_facets(&r.facets, a.filter.json, None)?;
    timings.report();
    Ok(Status::of_hits(!r.hits.is_empty()))
}

/// `jsearch dupes`: exit 1 when there is none.
fn dupes(cli: &Cli, a: &DupesArgs) -> Result<Status> {
    let engine = open_engine(cli, None)?;
    let d = engine
        .duplicates(&jsearch::DupesOptions {
            threshold: a.threshold,
            paths: a.paths.clone(),
        })
        .context("dupes")?;
    let found = !(d.exact.is_empty() && d.near.is_empty());
    if a.json {
        println!("{}", serde_json::to_string(&d)?);
        return Ok(Status::of_hits(found));
    }
    let show = |p: &str| output::printable(&output::shown_path(p)).into_owned();
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "exact duplicates (the same bytes): {} group(s)",
        d.exact.len()
    )?;
    for g in &d.exact {
        for it in g {
            writeln!(out, "  {}", show(&it.path))?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "near-duplicates (cosine >= {}): {} group(s)",
        d.threshold,
        d.near.len()
    )?;
    for g in &d.near {
        for it in g {
            writeln!(out, "  {:.4}  {}", it.cosine, show(&it.path))?;
        }
        writeln!(out)?;
    }
    Ok(Status::of_hits(found))
}

/// `jsearch serve`: until Ctrl-C or SIGTERM.
fn serve(cli: &Cli, a: &ServeArgs) -> Result<Status> {
    let engine = std::sync::Arc::new(open_engine_for(cli, Some(&a.model), true)?);
    let opts = jsearch_serve::ServeOptions {
        addr: a.addr,
        token: a.token.clone().filter(|t| !t.is_empty()),
        timeout: Duration::from_secs(a.timeout),
        max_body_bytes: usize::try_from(a.max_body_mb << 20).unwrap_or(usize::MAX),
        quiet: cli.quiet,
        jobs: usize::from(a.jobs),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime
        .block_on(jsearch_serve::serve(engine, opts))
        .context("serve")?;
    Ok(Status::Done)
}

/// `jsearch rm`.
fn rm(cli: &Cli, a: &RmArgs) -> Result<Status> {
    let mut engine = open_engine(cli, None)?;
    let r = engine.remove(&a.paths).context("rm failed")?;
    for p in &r.not_indexed {
        eprintln!(
            "warning: {} is not in the store (no such file, folder or product id): skipped",
            output::printable(&p.display().to_string())
        );
    }
    if !cli.quiet {
        let products = if r.products > 0 {
            format!(" and {} product(s)", r.products)
        } else {
            String::new()
        };
        eprintln!(
            "removed {} file(s){products} from {}",
            r.removed,
            engine.db_path().display()
        );
    }
    Ok(Status::Done)
}

/// `jsearch stats`.
fn stats(cli: &Cli, a: &StatsArgs) -> Result<Status> {
    let engine = open_engine(cli, None)?;
    output::print_stats(&engine.stats()?, a.json)?;
    Ok(Status::Done)
}

/// `jsearch export`.
fn export(cli: &Cli, a: &ExportArgs) -> Result<Status> {
    let engine = open_engine(cli, None)?;
    let opts = jsearch_scale::ExportOptions {
        vector_type: a.vectors.parse()?,
        rows_per_file: usize::try_from(a.rows_per_file).unwrap_or(usize::MAX),
        ..jsearch_scale::ExportOptions::default()
    };
    let s = jsearch_scale::export_parquet(&engine, &a.out, &opts)
        .with_context(|| format!("export to {} failed", a.out.display()))?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "exported {} vectors ({} attribute columns) to {} file(s) in {}: {:.1} MB in {:.1}s",
            s.rows,
            s.attributes.len(),
            s.files.len(),
            a.out.display(),
            s.bytes as f64 / 1e6,
            s.seconds
        );
    }
    Ok(Status::Done)
}

/// `jsearch embed-shard`.
fn embed_shard(cli: &Cli, a: &EmbedShardArgs) -> Result<Status> {
    use jsearch_scale::shard;
    let engine = open_engine(cli, Some(&a.model))?;
    log_device(&engine, cli.verbose)?;
    let opts = shard::ShardOptions {
        shard: a.shard,
        part_records: a.part_records as usize,
        index: IndexOptions {
            catalog_root: a.catalog_root.clone(),
            csv_types: a.csv_types.clone().unwrap_or_default(),
            batch_size: a.batch_size.map_or(0, usize::from),
            ..IndexOptions::default()
        },
    };
    let quiet = cli.quiet;
    let mut progress = |done: usize, total: usize| {
        if !quiet {
            let what = if a.files { "inputs" } else { "records" };
            eprintln!("shard {}: {done} of {total} {what}", a.shard);
        }
    };
    let s = if a.files {
        shard::embed_shard_files(&engine, &a.catalog, &a.out, &opts, &mut progress)
    } else {
        shard::embed_shard(&engine, &a.catalog, &a.out, &opts, &mut progress)
    }
    .with_context(|| format!("embed-shard {} of {}", a.shard, a.catalog.display()))?;
    if !quiet {
        for p in &s.problems {
            if a.files {
                eprintln!("skipped: {p}");
            } else {
                eprintln!("skipped: {}: {p}", a.catalog.display());
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else if !quiet {
        eprintln!(
            "shard {} of {}: {} of {} {}, {} vectors in {} ({} encoded, {} from an earlier run) in {:.1}s",
            s.shard,
            a.catalog.display(),
            s.records,
            s.catalog_records,
            if a.files { "paths" } else { "records" },
            s.vectors,
            s.out.display(),
            s.encoded,
            s.resumed,
            s.seconds
        );
    }
    Ok(if s.problems.is_empty() {
        Status::Done
    } else {
        Status::SomeFailed
    })
}

/// `jsearch sync`.
fn sync(cli: &Cli, a: &SyncArgs) -> Result<Status> {
    use jsearch_scale::{milvus, postgres};
    let engine = open_engine(cli, None)?;
    let opts = postgres::SyncOptions {
        table: a.table.clone(),
        replace: a.replace,
    };
    if is_milvus(&a.url) {
        let s = milvus::sync(&engine, &a.url, &opts).context("sync failed")?;
        let how = milvus::MilvusBackend::connect(&a.url, &a.table)
            .context("sync failed")?
            .plan();
        print_sync(cli, a, &s, "collection", None, &how)?;
    } else {
        let s = postgres::sync(&engine, &a.url, &opts).context("sync failed")?;
        let backend = postgres::PgBackend::connect(&a.url, &a.table).context("sync failed")?;
        let sql = format!("{};", backend.explain(&postgres::BackendQuery::new(10)));
        let intro = format!(
            "the two-stage query ($1: the query's {}-d head, $2: its {}-d vector, both halfvec and normalised; attribute filters go in WHERE, `query --backend -v --where …` prints them; session: SET hnsw.iterative_scan = relaxed_order; SET hnsw.ef_search = 100):",
            backend.info().head_dim,
            backend.info().dim
        );
        print_sync(cli, a, &s, "table", Some(&intro), &sql)?;
    }
    Ok(Status::Done)
}

/// A sync's summary (stderr, or JSON with the query as `query`) and its two-stage query (stdout).
fn print_sync(
    cli: &Cli,
    a: &SyncArgs,
    s: &jsearch_scale::backend::SyncSummary,
    what: &str,
    intro: Option<&str>,
    query: &str,
) -> Result<()> {
    let backend = jsearch_scale::backend::redact(&a.url);
    if a.json {
        let mut v = serde_json::to_value(s)?;
        v["backend"] = backend.into();
        v["query"] = query.into();
        println!("{v}");
        return Ok(());
    }
    if !cli.quiet {
        eprintln!(
            "synced {} vectors to {what} {} at {backend}{}: {} inserted, {} updated, {} deleted, {} unchanged in {:.1}s",
            s.rows,
            s.table,
            if s.created { " (created)" } else { "" },
            s.inserted,
            s.updated,
            s.deleted,
            s.unchanged,
            s.seconds
        );
        if let Some(intro) = intro {
            eprintln!("{intro}");
        }
    }
    println!("{query}");
    Ok(())
}

/// A connection `query --backend` searches.
enum Backend {
    Pg(jsearch_scale::postgres::PgBackend),
    Milvus(jsearch_scale::milvus::MilvusBackend),
}

impl Backend {
    fn info(&self) -> &jsearch_scale::postgres::TableInfo {
        match self {
            Backend::Pg(b) => b.info(),
            Backend::Milvus(b) => b.info(),
        }
    }
}

/// Whether a backend URL names Milvus (else PostgreSQL).
fn is_milvus(url: &str) -> bool {
    ["milvus://", "http://", "https://"]
        .iter()
        .any(|p| url.starts_with(p))
}

/// `jsearch query --backend URL`: encoded here, searched there.
fn backend_query(
    engine: &Engine,
    a: &QueryArgs,
    url: &str,
    q: &Query,
    mut timings: Timings,
    verbose: bool,
) -> Result<Status> {
    use jsearch_scale::postgres::{BackendQuery, PgBackend};
    let f = &a.filter;
    let unsupported = [
        (f.offset > 0, "--offset"),
        (!f.facets.is_empty(), "--facet"),
        (f.sort.is_some(), "--sort"),
        (f.path_prefix.is_some(), "--path"),
        (
            !matches!(f.mode, SearchMode::Auto | SearchMode::Vector),
            "--mode keyword/hybrid",
        ),
        (
            f.min_score.is_some(),
            "--min-score (the backend ranks by cosine)",
        ),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(on, _)| *on) {
        anyhow::bail!("{name} is not available with --backend (the local store's search only)");
    }
    let mut backend = timings
        .time("connect", || -> Result<Backend> {
            Ok(if is_milvus(url) {
                Backend::Milvus(jsearch_scale::milvus::MilvusBackend::connect(
                    url, &a.table,
                )?)
            } else {
                Backend::Pg(PgBackend::connect(url, &a.table)?)
            })
        })
        .context("query failed")?;
    let info = backend.info().clone();
    if !engine
        .model_info()?
        .made(&info.model, &info.fingerprint, info.dim)
    {
        anyhow::bail!(
            "query failed: {}: {} holds vectors of model {} (fingerprint {}, {}-d); the query would be encoded with another model: pass --model with the store's model",
            jsearch_scale::postgres::redact(url),
            info.table,
            info.model,
            info.fingerprint,
            info.dim
        );
    }
    let texts: Vec<&str> = q.text.as_deref().into_iter().collect();
    let images: Vec<PathBuf> = q.image.clone().into_iter().collect();
    let e = timings.time("encode (with model load)", || -> jsearch::Result<_> {
        let mut t = engine.embed(&texts, &[], true)?;
        let i = engine.embed(&[], &images, false)?;
        t.images = i.images;
        Ok(t)
    })?;
    let both = !e.texts.is_empty() && !e.images.is_empty();
    let mut v = vec![0f32; info.dim];
    for (x, w) in e
        .texts
        .iter()
        .map(|x| (x, if both { 1.0 - a.image_weight } else { 1.0 }))
        .chain(
            e.images
                .iter()
                .map(|x| (x, if both { a.image_weight } else { 1.0 })),
        )
    {
        let mut x = x.clone();
        jsearch::normalize(&mut x);
        for (o, y) in v.iter_mut().zip(&x) {
            *o += w * y;
        }
    }
    let bq = BackendQuery {
        limit: q.limit,
        candidates: a.candidates.map(usize::from),
        kinds: q.kinds.clone(),
        filter: q.filter.clone(),
    };
    if verbose {
        match &backend {
            Backend::Pg(b) => eprintln!("{};", b.explain(&bq)),
            Backend::Milvus(b) => eprintln!(
                "{}\nmilvus expression: {}",
                b.plan(),
                jsearch_scale::milvus::MilvusBackend::expr(&bq)?
            ),
        }
    }
    let hits = timings
        .time("backend search", || match &mut backend {
            Backend::Pg(b) => b.search(&v, &bq),
            Backend::Milvus(b) => b.search(&v, &bq),
        })
        .context("query failed")?;
    output::print_backend_hits(&hits, f.json, f.paths)?;
    timings.report();
    Ok(Status::of_hits(!hits.is_empty()))
}

/// `jsearch check`.
fn check(cli: &Cli, a: &StatsArgs) -> Result<Status> {
    let mut engine = open_engine(cli, None)?;
    let c = engine.check().context("check failed")?;
    output::print_check(&c, a.json)?;
    if c.damage.is_empty() {
        Ok(Status::Done)
    } else {
        Ok(Status::Damaged)
    }
}

/// `jsearch repair`.
fn repair(cli: &Cli, a: &StatsArgs) -> Result<Status> {
    let mut engine = open_engine(cli, None)?;
    let r = engine.repair().context("repair failed")?;
    output::print_repair(&r, engine.db_path(), a.json)?;
    Ok(Status::Done)
}

/// Whether the error is a write to a closed pipe (the reader went away: not a failure).
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Panics inside the storage layer on a damaged file are caught by the store and reported as
/// "damaged" errors; the default hook would print them as a crash first.
fn quiet_storage_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_some_and(|l| l.file().contains("redb-") || l.file().contains("/redb/"))
        {
            return;
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_storage_panics();
    // Parsed through `ArgMatches` so that `embed` can recover the order of `--text` / `--image`.
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    style::init(cli.color);
    let result = match &cli.command {
        Command::Index(a) => index(&cli, a),
        Command::Query(a) => query(&cli, a),
        Command::Similar(a) => similar(&cli, a),
        Command::Rm(a) => rm(&cli, a),
        Command::Serve(a) => serve(&cli, a),
        Command::Dupes(a) => dupes(&cli, a),
        Command::Stats(a) => stats(&cli, a),
        Command::Export(a) => export(&cli, a),
        Command::Sync(a) => sync(&cli, a),
        Command::EmbedShard(a) => embed_shard(&cli, a),
        Command::Check(a) => check(&cli, a),
        Command::Repair(a) => repair(&cli, a),
        Command::Embed(a) => {
            let order = matches
                .subcommand_matches("embed")
                .map(embed::input_order)
                .unwrap_or_default();
            open_engine(&cli, Some(&a.model))
                .and_then(|e| embed::run(&e, a, &order))
                .map(|()| Status::Done)
        }
    };
    match result {
        Ok(status) => status.code(),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", output::printable(&format!("{err:#}")));
            ExitCode::from(ERROR_EXIT)
        }
    }
}
