//! Catalog bench: filtered, keyword and hybrid search on generated products.
//!
//! Products get vectors from the `ann` bench's generator (1024-d, graph over the 256-d heads),
//! and generated attributes (brand, category, price, in_stock) and titles. The bench builds the
//! store through the engine's own write path (item records, modality keys, keyword documents
//! committed together), then measures, per filter selectivity (50 % … 0.01 %, `price < x` on a
//! uniform price): QPS and recall@10 of vector mode against an exact filtered scan (f32, in
//! memory), QPS of keyword and hybrid mode, facet time, and the keyword index's size and build
//! time (the same build without keyword documents is the baseline). Prints a table.
//!
//! Peers on the same products and queries: **usearch** (HNSW in memory over the same 256-d
//! heads, its `filtered_search` checking the filter during the walk as hnswlib's filter function
//! does, 40 candidates re-ranked at full dimension as jsearch does) for vector mode, and
//! **tantivy** (BM25 over the same text, `price` as an indexed fast field, the filter as a
//! required range clause) for keyword mode.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use jsearch::bench::ProductWriter;
use jsearch::{Engine, Filter, OpenOptions, Query, Record, SearchMode};
use jsearch_benches::synth::{generate, make_centers, Rng};
use jsearch_index::{Batch, Store, StoreSettings};
use rayon::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "jsearch catalog bench: filters, keyword, hybrid, facets")]
struct Args {
    /// Products.
    #[arg(long, default_value_t = 1_000_000)]
    n: usize,
    /// Queries per measurement.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Work folder (stores are built here).
    #[arg(long, default_value = "/tmp/jsearch-bench-catalog")]
    work: PathBuf,
    /// Keep stores of an earlier run with the same --n.
    #[arg(long)]
    reuse: bool,
    /// Peers measured on the same data: any of usearch,tantivy ("" for none).
    #[arg(long, default_value = "usearch,tantivy")]
    peers: String,
}

const DIM: usize = 1024;
const BRANDS: [&str; 6] = ["Korrin", "Lumo", "Vexa", "Ostra", "Pellin", "Tarnu"];
const COLOURS: [&str; 8] = [
    "red", "green", "blue", "yellow", "orange", "purple", "black", "white",
];
const CATEGORIES: [&str; 10] = [
    "card", "sticker", "poster", "mug", "shirt", "sign", "bag", "cap", "pin", "book",
];

/// A pseudo-word from a 5000-word vocabulary.
fn word(i: u64) -> String {
    const SYL: [&str; 16] = [
        "ka", "lo", "mi", "ra", "te", "su", "vo", "ne", "pi", "da", "ru", "ge", "bo", "li", "fa",
        "zo",
    ];
    let i = i % 5000;
    format!(
        "{}{}{}",
        SYL[(i % 16) as usize],
        SYL[((i / 16) % 16) as usize],
        SYL[((i / 256) % 16) as usize]
    )
}

fn product(i: usize) -> (Record, f64) {
    let mut r = Rng::new(11, 3, i as u64);
    let brand = BRANDS[(r.next() % 6) as usize];
    let colour = COLOURS[(r.next() % 8) as usize];
    let cat = CATEGORIES[(r.next() % 10) as usize];
    let price = (r.unif() * 100.0 * 10000.0).floor() / 10000.0;
    let (w1, w2) = (word(r.next()), word(r.next()));
    let mut metadata = serde_json::Map::new();
    metadata.insert("sku".into(), serde_json::json!(format!("SKU-{i:07}")));
    metadata.insert("brand".into(), serde_json::json!(brand));
    metadata.insert("category".into(), serde_json::json!(cat));
    metadata.insert("price".into(), serde_json::json!(price));
    metadata.insert("in_stock".into(), serde_json::json!(r.next() % 10 < 7));
    (
        Record {
            id: format!("p{i}"),
            title: Some(format!("{brand} {colour} {w1} {cat}")),
            description: Some(format!("A {colour} {w1} {w2} {cat} by {brand}.")),
            metadata,
            ..Record::default()
        },
        price,
    )
}

fn build(path: &std::path::Path, vectors: &[f32], n: usize, keywords: bool) -> Result<f64> {
    let _ = std::fs::remove_file(path);
    let mut store = Store::open(path, StoreSettings::new("bench", "catalog", DIM))?;
    let t = Instant::now();
    let step = 50_000;
    for start in (0..n).step_by(step) {
        let mut batch = Batch::new();
        let mut w = ProductWriter::new(keywords);
        for i in start..(start + step).min(n) {
            let (rec, _) = product(i);
            let v = vectors[i * DIM..(i + 1) * DIM].to_vec();
            w.add(&mut batch, "bench.jsonl", &rec, v)?;
        }
        w.finish(&store, &mut batch)?;
        store.commit(batch)?;
        eprintln!(
            "  {} / {n} ({:.0} s)",
            (start + step).min(n),
            t.elapsed().as_secs_f64()
        );
    }
    // As `jsearch index` ends a large run: the file gives back its commits' copy-on-write pages.
    store.compact()?;
    Ok(t.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.work)?;
    let n = a.n;
    eprintln!("generating {n} vectors ({DIM}-d)…");
    let centers = make_centers(5, 1000, DIM);
    let vectors = generate(5, 1, n, DIM, &centers);
    let queries = generate(5, 2, a.queries, DIM, &centers);
    let prices: Vec<f64> = (0..n).map(|i| product(i).1).collect();
    let db = a.work.join(format!("catalog-{n}.jsearch"));
    let plain = a.work.join(format!("plain-{n}.jsearch"));
    let (build_s, plain_s) = if a.reuse && db.exists() && plain.exists() {
        (f64::NAN, f64::NAN)
    } else {
        eprintln!("building the store with keyword documents…");
        let b = build(&db, &vectors, n, true)?;
        eprintln!("building the same store without them…");
        let p = build(&plain, &vectors, n, false)?;
        (b, p)
    };
    let peers: Vec<&str> = a.peers.split(',').map(str::trim).collect();
    let usearch = if peers.contains(&"usearch") {
        eprintln!("building the usearch peer…");
        Some(peer::Vectors::build(&vectors, n)?)
    } else {
        None
    };
    let tantivy = if peers.contains(&"tantivy") {
        eprintln!("building the tantivy peer…");
        Some(peer::Keywords::build(
            &a.work.join(format!("tantivy-{n}")),
            n,
        )?)
    } else {
        None
    };
    // Exact filtered top 10 per selectivity and query (f32, in memory), computed once.
    let truths: std::sync::Mutex<std::collections::HashMap<u64, Arc<Vec<HashSet<usize>>>>> =
        Default::default();
    let truth_for = |s: f64| -> Arc<Vec<HashSet<usize>>> {
        let threshold = 100.0 * s;
        let mut cache = truths.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(s.to_bits())
            .or_insert_with(|| {
                Arc::new(
                    (0..a.queries)
                        .map(|j| {
                            let qv = &queries[j * DIM..(j + 1) * DIM];
                            let mut top: Vec<(f32, usize)> = (0..n)
                                .into_par_iter()
                                .filter(|&i| s >= 1.0 || prices[i] < threshold)
                                .map(|i| {
                                    let v = &vectors[i * DIM..(i + 1) * DIM];
                                    (v.iter().zip(qv).map(|(x, y)| x * y).sum::<f32>(), i)
                                })
                                .collect();
                            top.sort_by(|x, y| y.0.total_cmp(&x.0));
                            top.iter().take(10).map(|(_, i)| *i).collect()
                        })
                        .collect(),
                )
            })
            .clone()
    };
    let size = std::fs::metadata(&db)?.len();
    let plain_size = std::fs::metadata(&plain)?.len();
    let engine = Engine::open(OpenOptions {
        db: db.clone(),
        ..OpenOptions::default()
    })?;
    let t = Instant::now();
    engine.search_vector(
        queries[..DIM].to_vec(),
        None,
        &Query::default().filter_str("price < 50")?,
    )?;
    let first_filter_s = t.elapsed().as_secs_f64();

    println!(
        "# catalog bench: {n} products, {DIM}-d vectors (graph over 256-d heads), {} queries",
        a.queries
    );
    println!("# CPU: {}", cpu_line());
    println!();
    println!("| what | value |");
    println!("|---|---|");
    println!("| build with keyword documents (compacted at the end, as `jsearch index` does) | {build_s:.1} s |");
    println!("| build without them (same items and attributes) | {plain_s:.1} s |");
    println!(
        "| store size with keyword index + attributes / without | {:.1} MiB / {:.1} MiB (+{:.0} %, {:.0} bytes per product) |",
        size as f64 / 1048576.0,
        plain_size as f64 / 1048576.0,
        100.0 * (size as f64 / plain_size as f64 - 1.0),
        (size - plain_size.min(size)) as f64 / n as f64
    );
    println!("| first filtered query (loads the attribute table) | {first_filter_s:.2} s |");
    if let Some(t) = &tantivy {
        println!(
            "| tantivy peer: build, index size | {:.1} s, {:.1} MiB ({:.0} bytes per product) |",
            t.build_s,
            t.bytes as f64 / 1048576.0,
            t.bytes as f64 / n as f64
        );
    }
    if let Some(u) = &usearch {
        println!(
            "| usearch peer: build (256-d f16 heads, in memory) | {:.1} s |",
            u.build_s
        );
    }
    println!();
    println!(
        "| mode | system | filter | pass | recall@10 | QPS | QPS / unfiltered | jsearch / peer |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut peer_base: std::collections::HashMap<&str, f64> = std::collections::HashMap::new();
    let selectivities = [1.0, 0.5, 0.1, 0.01, 0.001, 0.0001];
    let texts: Vec<String> = (0..a.queries)
        .map(|j| {
            let mut r = Rng::new(17, 4, j as u64);
            format!("{} {}", COLOURS[(r.next() % 8) as usize], word(r.next()))
        })
        .collect();
    for mode in [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid] {
        let mut base_qps = f64::NAN;
        for &s in &selectivities {
            let threshold = 100.0 * s;
            let q0 = Query::default().limit(10).mode(mode);
            let q = if s < 1.0 {
                q0.filter(Filter::cmp("price", jsearch::CmpOp::Lt, threshold))
            } else {
                q0
            };
            let pass = prices
                .iter()
                .filter(|p| **p < threshold || s >= 1.0)
                .count();
            // Warm-up, then timed.
            for j in 0..5.min(a.queries) {
                engine.search_vector(
                    queries[j * DIM..(j + 1) * DIM].to_vec(),
                    Some(&texts[j]),
                    &q,
                )?;
            }
            let t = Instant::now();
            let mut results = Vec::with_capacity(a.queries);
            for j in 0..a.queries {
                let r = engine.search_vector(
                    queries[j * DIM..(j + 1) * DIM].to_vec(),
                    Some(&texts[j]),
                    &q,
                )?;
                results.push(r.hits);
            }
            let qps = a.queries as f64 / t.elapsed().as_secs_f64();
            if s >= 1.0 {
                base_qps = qps;
            }
            // Exact filtered ground truth (vector mode), and the no-leak / exact-k check.
            let mut recall = String::from("–");
            let want = 10.min(pass);
            for hits in &results {
                if mode != SearchMode::Keyword {
                    assert_eq!(hits.len(), want, "{mode:?} {s}: short");
                }
                for h in hits {
                    let i: usize = h.id[1..].parse()?;
                    assert!(s >= 1.0 || prices[i] < threshold, "{} leaked", h.id);
                }
            }
            if mode == SearchMode::Vector {
                let truth = truth_for(s);
                let found: usize = results
                    .iter()
                    .zip(truth.iter())
                    .map(|(hits, t)| {
                        hits.iter()
                            .filter(|h| h.id[1..].parse::<usize>().is_ok_and(|i| t.contains(&i)))
                            .count()
                    })
                    .sum();
                recall = format!("{:.4}", found as f64 / (want * a.queries).max(1) as f64);
            }
            let peer = match mode {
                SearchMode::Vector => usearch
                    .as_ref()
                    .map(|u| u.measure(&queries, &vectors, &prices, threshold, &truth_for(s))),
                SearchMode::Keyword => tantivy.as_ref().map(|t| t.measure(&texts, threshold)),
                _ => None,
            };
            let filter = if s >= 1.0 {
                "none".to_string()
            } else {
                format!("price < {threshold}")
            };
            let pass_s = format!("{:.2} % ({pass})", 100.0 * pass as f64 / n as f64);
            let vs = peer
                .as_ref()
                .map_or("–".to_string(), |p| format!("{:.2}x", qps / p.qps));
            println!(
                "| {} | jsearch | {filter} | {pass_s} | {recall} | {qps:.0} | {:.2} | {vs} |",
                mode.as_str(),
                qps / base_qps
            );
            if let Some(p) = peer {
                let base = peer_base.entry(p.name).or_insert(p.qps);
                println!(
                    "| {} | {} | {filter} | {pass_s} | {} | {:.0} | {:.2} | |",
                    mode.as_str(),
                    p.name,
                    p.recall.map_or("–".to_string(), |r| format!("{r:.4}")),
                    p.qps,
                    p.qps / *base
                );
            }
        }
    }
    // Facets: brand and price over the items passing a 50 % filter.
    let q = Query::default()
        .limit(10)
        .mode(SearchMode::Vector)
        .filter(Filter::cmp("price", jsearch::CmpOp::Lt, 50.0))
        .facet("brand")
        .facet("price");
    let plain_q = Query::default()
        .limit(10)
        .mode(SearchMode::Vector)
        .filter(Filter::cmp("price", jsearch::CmpOp::Lt, 50.0));
    let reps = 20.min(a.queries);
    let t = Instant::now();
    for j in 0..reps {
        engine.search_vector(queries[j * DIM..(j + 1) * DIM].to_vec(), None, &q)?;
    }
    let with = t.elapsed().as_secs_f64() / reps as f64;
    let t = Instant::now();
    for j in 0..reps {
        engine.search_vector(queries[j * DIM..(j + 1) * DIM].to_vec(), None, &plain_q)?;
    }
    let without = t.elapsed().as_secs_f64() / reps as f64;
    println!();
    println!(
        "| facets brand + price over the 50 % passing | {:.2} ms a query ({:.2} ms with, {:.2} ms without) |",
        1000.0 * (with - without),
        1000.0 * with,
        1000.0 * without
    );
    println!("|---|---|");
    Ok(())
}

fn cpu_line() -> String {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = flags
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let feats: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
        .into_iter()
        .filter(|f| has(f))
        .collect();
    format!(
        "{model}, {} threads, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        feats.join(" ")
    )
}

/// The peers: usearch for filtered vector search, tantivy for filtered BM25.
mod peer {
    use std::collections::HashSet;
    use std::ops::Bound;
    use std::path::Path;
    use std::time::Instant;

    use anyhow::Result;
    use jsearch_benches::usearch_graph::USearch;
    use jsearch_index::bench::AnnGraph;
    use jsearch_index::vecmath::{self, F16};
    use tantivy::query::{BooleanQuery, Occur, Query, RangeQuery, TermQuery};
    use tantivy::schema::{IndexRecordOption, Schema, FAST, INDEXED, TEXT};
    use tantivy::{doc, Index, IndexWriter, Term};

    use super::{product, DIM};

    /// One measurement of a peer.
    pub struct Measured {
        pub name: &'static str,
        pub qps: f64,
        pub recall: Option<f64>,
    }

    const HEAD: usize = 256;
    /// Candidates re-ranked at full dimension (jsearch's default for k = 10).
    const CANDIDATES: usize = 40;

    /// usearch over the normalised 256-d heads, as jsearch's graph.
    pub struct Vectors {
        graph: USearch,
        pub build_s: f64,
    }

    impl Vectors {
        pub fn build(vectors: &[f32], n: usize) -> Result<Self> {
            let t = Instant::now();
            let mut graph = USearch::new(HEAD, 16, 200)?;
            let heads: Vec<F16> = (0..n)
                .flat_map(|i| head(&vectors[i * DIM..i * DIM + HEAD]))
                .collect();
            graph.add_batch(&heads);
            Ok(Vectors {
                graph,
                build_s: t.elapsed().as_secs_f64(),
            })
        }

        /// QPS and recall@10 of `price < threshold` searches (one thread, as jsearch's).
        pub fn measure(
            &self,
            queries: &[f32],
            vectors: &[f32],
            prices: &[f64],
            threshold: f64,
            truth: &[HashSet<usize>],
        ) -> Measured {
            let nq = truth.len();
            let accept = |i: u32| prices[i as usize] < threshold;
            let search = |j: usize| -> Vec<usize> {
                let qv = &queries[j * DIM..(j + 1) * DIM];
                let mut c: Vec<(f32, usize)> = self
                    .graph
                    .search(&head(&qv[..HEAD]), CANDIDATES, 64.max(CANDIDATES), &accept)
                    .into_iter()
                    .map(|(_, i)| {
                        let v = &vectors[i as usize * DIM..(i as usize + 1) * DIM];
                        (vecmath::dot_f32(v, qv), i as usize)
                    })
                    .collect();
                c.sort_by(|x, y| y.0.total_cmp(&x.0));
                c.truncate(10);
                c.into_iter().map(|x| x.1).collect()
            };
            for j in 0..5.min(nq) {
                search(j);
            }
            let t = Instant::now();
            let results: Vec<Vec<usize>> = (0..nq).map(search).collect();
            let qps = nq as f64 / t.elapsed().as_secs_f64();
            let (mut found, mut want) = (0usize, 0usize);
            for (r, t) in results.iter().zip(truth) {
                found += r.iter().filter(|i| t.contains(i)).count();
                want += t.len();
            }
            Measured {
                name: "usearch",
                qps,
                recall: Some(found as f64 / want.max(1) as f64),
            }
        }
    }

    fn head(v: &[f32]) -> Vec<F16> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        vecmath::to_f16(&v.iter().map(|x| x / norm).collect::<Vec<_>>())
    }

    /// tantivy over the text jsearch's keyword index holds for a product (title, description,
    /// id and string attributes), with `price` as an indexed fast field.
    pub struct Keywords {
        index: Index,
        reader: tantivy::IndexReader,
        body: tantivy::schema::Field,
        pub build_s: f64,
        pub bytes: u64,
    }

    impl Keywords {
        pub fn build(dir: &Path, n: usize) -> Result<Self> {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir)?;
            let mut sb = Schema::builder();
            let body = sb.add_text_field("body", TEXT);
            let price = sb.add_f64_field("price", INDEXED | FAST);
            let index = Index::create_in_dir(dir, sb.build())?;
            let t = Instant::now();
            let mut w: IndexWriter = index.writer_with_num_threads(2, 1 << 30)?;
            for i in 0..n {
                let (rec, p) = product(i);
                let mut text = format!(
                    "{} {} {}",
                    rec.title.as_deref().unwrap_or(""),
                    rec.description.as_deref().unwrap_or(""),
                    rec.id
                );
                for v in rec.metadata.values() {
                    if let Some(s) = v.as_str() {
                        text.push(' ');
                        text.push_str(s);
                    }
                }
                w.add_document(doc!(body => text, price => p))?;
            }
            w.commit()?;
            w.wait_merging_threads()?;
            let build_s = t.elapsed().as_secs_f64();
            let bytes = dir_size(dir)?;
            let reader = index.reader()?;
            Ok(Keywords {
                index,
                reader,
                body,
                build_s,
                bytes,
            })
        }

        /// QPS of BM25 top-10 searches for `texts` among the products with `price < threshold`.
        pub fn measure(&self, texts: &[String], threshold: f64) -> Measured {
            let searcher = self.reader.searcher();
            let price = self.index.schema().get_field("price").ok();
            let query = |text: &str| -> Box<dyn Query> {
                let terms: Vec<(Occur, Box<dyn Query>)> = text
                    .split_whitespace()
                    .map(|w| {
                        let q: Box<dyn Query> = Box::new(TermQuery::new(
                            Term::from_field_text(self.body, &w.to_lowercase()),
                            IndexRecordOption::WithFreqs,
                        ));
                        (Occur::Should, q)
                    })
                    .collect();
                let text_q: Box<dyn Query> = Box::new(BooleanQuery::new(terms));
                match price {
                    Some(f) if threshold < 100.0 => Box::new(BooleanQuery::new(vec![
                        (Occur::Must, text_q),
                        (
                            Occur::Must,
                            Box::new(RangeQuery::new(
                                Bound::Unbounded,
                                Bound::Excluded(Term::from_field_f64(f, threshold)),
                            )),
                        ),
                    ])),
                    _ => text_q,
                }
            };
            let top = tantivy::collector::TopDocs::with_limit(10);
            for t in texts.iter().take(5) {
                let _ = searcher.search(&*query(t), &top);
            }
            let t0 = Instant::now();
            for t in texts {
                let _ = searcher.search(&*query(t), &top);
            }
            Measured {
                name: "tantivy",
                qps: texts.len() as f64 / t0.elapsed().as_secs_f64(),
                recall: None,
            }
        }
    }

    fn dir_size(dir: &Path) -> Result<u64> {
        let mut total = 0;
        for e in std::fs::read_dir(dir)? {
            let m = e?.metadata()?;
            if m.is_file() {
                total += m.len();
            }
        }
        Ok(total)
    }
}
