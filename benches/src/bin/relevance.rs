//! Relevance scores on held-out data: fits a model's calibration constants (`--fit`) and
//! measures, for the store-relative scores of before (`JSEARCH_RELEVANCE=relative`, same run)
//! and the calibrated ones, Recall@5 of the toy corpus' real queries and how many out-of-domain
//! queries return any hit above the default cut, on an image store and on a mixed store
//! (images + a product catalog + text notes).
//!
//! ```text
//! cargo run --release -p jsearch-benches --bin relevance [-- --fit] [--cut 0.5]
//! ```
//!
//! Split: the calibration is fitted on the even-numbered queries, every image as an image query
//! and `datasets/relevance/out_of_domain_fit.txt` (+ 20 generated textures as out-of-domain
//! images); it is measured on the odd-numbered queries and `out_of_domain_test.txt` (+ 20 other
//! textures). With a real model, the same recipe applies with a captioned held-out set in its
//! place (see docs/relevance.md).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;
use jsearch::search::relevance;
use jsearch::{Engine, IndexOptions, Kind, OpenOptions, Query, SearchMode};
use rand::{Rng, SeedableRng};

/// The hub weight of text items the fit assumes (the table entry's `hub_weight[0]`); the weight
/// of images is fitted (`hub_weight[1]`).
const TEXT_HUB_WEIGHT: f32 = 0.5;

#[derive(Parser)]
struct Args {
    /// Fit the constants and print the table entry (else: evaluate the shipped ones).
    #[arg(long)]
    fit: bool,
    /// The cut to evaluate (the CLI's default --min-score).
    #[arg(long, default_value_t = 0.5)]
    cut: f32,
    /// Write every text query's cosines to every corpus image as JSON to this file (to study
    /// a calibration offline) and exit.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Work folder (stores, generated textures).
    #[arg(long, default_value = "/tmp/jsearch-relevance")]
    dir: PathBuf,
}

struct RealQuery {
    n: usize,
    text: String,
    lang: String,
    /// Relevant image file names and product ids.
    relevant: HashSet<String>,
    images: HashSet<String>,
    products: HashSet<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn lines(p: &Path) -> Result<Vec<String>> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| p.display().to_string())?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn real_queries(corpus: &Path) -> Result<Vec<RealQuery>> {
    let mut out = Vec::new();
    for (n, l) in lines(&corpus.join("queries.jsonl"))?.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l)?;
        let set = |k: &str| -> HashSet<String> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        let (images, products) = (set("relevant_images"), set("relevant_products"));
        out.push(RealQuery {
            n,
            text: v["text"].as_str().unwrap_or_default().to_string(),
            lang: v["lang"].as_str().unwrap_or_default().to_string(),
            relevant: images.union(&products).cloned().collect(),
            images,
            products,
        });
    }
    Ok(out)
}

/// Out-of-domain images: noise, gradients, stripes and checkers in random colours.
fn textures(dir: &Path, seed: u64, n: usize) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for i in 0..n {
        let (w, h) = (rng.random_range(160..400u32), rng.random_range(160..400u32));
        let c1 = [rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()];
        let c2 = [rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()];
        let period = rng.random_range(4..40u32);
        let kind = i % 4;
        let mut img = image::RgbImage::new(w, h);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let t = match kind {
                0 => rng.random::<f32>(),
                1 => x as f32 / w as f32,
                2 => ((x / period) % 2) as f32,
                _ => (((x / period) + (y / period)) % 2) as f32,
            };
            for c in 0..3 {
                p.0[c] = (c1[c] as f32 * (1.0 - t) + c2[c] as f32 * t) as u8;
            }
        }
        let p = dir.join(format!("texture_{seed}_{i:02}.png"));
        img.save(&p)?;
        out.push(p);
    }
    Ok(out)
}

fn norm(mut v: Vec<f32>) -> Vec<f32> {
    jsearch::normalize(&mut v);
    v
}

/// Normalised embeddings of texts (as queries when `query`).
fn embed_texts<'a>(
    engine: &Engine,
    texts: impl IntoIterator<Item = &'a str>,
    query: bool,
) -> Result<Vec<Vec<f32>>> {
    let texts: Vec<&str> = texts.into_iter().collect();
    Ok(engine
        .embed(&texts, &[], query)?
        .texts
        .into_iter()
        .map(norm)
        .collect())
}

/// Normalised embeddings of image files.
fn embed_images(engine: &Engine, paths: &[PathBuf]) -> Result<Vec<Vec<f32>>> {
    Ok(engine
        .embed(&[], paths, false)?
        .images
        .into_iter()
        .map(norm)
        .collect())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn quantile(mut v: Vec<f32>, p: f32) -> f32 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[(((v.len() - 1) as f32) * p).round() as usize]
}

/// `cut` between the negatives' upper tail and the relevant's lower tail: the midpoint of the
/// negatives' best cosines at quantile `q` (out-of-domain queries': 0.98; for image queries,
/// the best item of other objects: 0.5) and the relevant's best cosines at their 10th
/// percentile (never below the former); `scale` so that the median best relevant cosine scores
/// 0.9.
fn anchors(name: &str, best_relevant: Vec<f32>, best_ood: Vec<f32>, q: f32) -> (f32, f32) {
    let ood_q = quantile(best_ood.clone(), q);
    let rel10 = quantile(best_relevant.clone(), 0.10);
    let cut = ood_q.max((ood_q + rel10) / 2.0);
    let c90 = quantile(best_relevant.clone(), 0.5);
    let scale = ((c90 - cut) / 9f32.ln()).max(0.02);
    println!(
        "  {name}: {} relevant (best cos 5th pct {:.3}, 10th {rel10:.3}, median {c90:.3}), {} out-of-domain (best cos median {:.3}, max {:.3}, {:.0}th pct {ood_q:.3}) -> cut {cut:.3}, scale {scale:.3}",
        best_relevant.len(),
        quantile(best_relevant.clone(), 0.05),
        best_ood.len(),
        quantile(best_ood.clone(), 0.5),
        quantile(best_ood, 1.0),
        q * 100.0
    );
    (cut, scale)
}

/// The cut that best separates, on the fit data, the best relevant cosines from the
/// out-of-domain queries' best cosines: the largest `share(relevant ≥ cut) − share(ood ≥ cut)`
/// (Youden's J), in the middle of the interval where it is reached; with it, J.
fn youden_cut(best_relevant: &[f32], best_ood: &[f32]) -> (f32, f32) {
    let share = |v: &[f32], c: f32| v.iter().filter(|x| **x >= c).count() as f32 / v.len() as f32;
    let mut cands: Vec<f32> = best_relevant.iter().chain(best_ood).copied().collect();
    cands.sort_by(|a, b| a.total_cmp(b));
    cands.dedup();
    let j: Vec<f32> = cands
        .iter()
        .map(|&c| share(best_relevant, c) - share(best_ood, c))
        .collect();
    let best = j.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // The maximising thresholds: (cands[first − 1], cands[last]] (J is constant between them).
    let first = j.iter().position(|x| *x == best).unwrap_or(0);
    let last = first + j[first..].iter().take_while(|x| **x == best).count() - 1;
    let low = if first > 0 {
        cands[first - 1]
    } else {
        cands[0] - 0.01
    };
    ((low + cands[last]) / 2.0, best)
}

/// `cut` by [`youden_cut`], `scale` so that the median best relevant cosine scores 0.9.
fn separating(name: &str, best_relevant: Vec<f32>, best_ood: Vec<f32>) -> (f32, f32) {
    let (cut, j) = youden_cut(&best_relevant, &best_ood);
    let med = quantile(best_relevant.clone(), 0.5);
    let scale = ((med - cut) / 9f32.ln()).max(0.02);
    let above = |v: &[f32]| v.iter().filter(|x| **x >= cut).count();
    println!(
        "  {name}: {} relevant (best cos 5th pct {:.3}, median {med:.3}), {} out-of-domain (best cos median {:.3}, 98th pct {:.3}, max {:.3}) -> cut {cut:.3} (J {j:.3}: {} relevant and {} out-of-domain above), scale {scale:.3}",
        best_relevant.len(),
        quantile(best_relevant.clone(), 0.05),
        best_ood.len(),
        quantile(best_ood.clone(), 0.5),
        quantile(best_ood.clone(), 0.98),
        quantile(best_ood.clone(), 1.0),
        above(&best_relevant),
        above(&best_ood),
    );
    (cut, scale)
}

fn fit(engine: &Engine, corpus: &Path, work: &Path) -> Result<()> {
    let qs = real_queries(corpus)?;
    let fitq: Vec<&RealQuery> = qs.iter().filter(|q| q.n % 2 == 0).collect();
    let ood = lines(&repo().join("datasets/relevance/out_of_domain_fit.txt"))?;
    // Items: every corpus image, every product title.
    let mut names = Vec::new();
    let mut objects = Vec::new();
    for l in lines(&corpus.join("labels.jsonl"))? {
        let v: serde_json::Value = serde_json::from_str(&l)?;
        let img = v["image"].as_str().unwrap_or_default();
        names.push(img.trim_start_matches("images/").to_string());
        let mut o: Vec<String> = v["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x.to_string())
            .collect();
        o.sort();
        objects.push(o.join("+"));
    }
    let mut titles = Vec::new();
    let mut pids = Vec::new();
    for l in lines(&corpus.join("products.jsonl"))? {
        let v: serde_json::Value = serde_json::from_str(&l)?;
        // As the store embeds a product: title and description, one per line.
        titles.push(format!(
            "{}\n{}",
            v["title"].as_str().unwrap_or_default(),
            v["description"].as_str().unwrap_or_default()
        ));
        pids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| corpus.join("images").join(n))
        .collect();
    let iv = embed_images(engine, &paths)?;
    let tv = embed_texts(engine, titles.iter().map(String::as_str), false)?;
    let qv = embed_texts(engine, fitq.iter().map(|q| q.text.as_str()), true)?;
    let ov = embed_texts(engine, ood.iter().map(String::as_str), true)?;
    let tex = textures(&work.join("textures"), 1, 20)?;
    let xv = embed_images(engine, &tex)?;
    let best = |q: &[f32], items: &[Vec<f32>], keep: &dyn Fn(usize) -> bool| -> Option<f32> {
        items
            .iter()
            .enumerate()
            .filter(|(j, _)| keep(*j))
            .map(|(_, v)| dot(q, v))
            .max_by(|a, b| a.total_cmp(b))
    };
    let top = |q: &[f32], items: &[Vec<f32>]| best(q, items, &|_| true).unwrap_or(-1.0);
    println!(
        "fitting on {} queries, {} out-of-domain queries, {} images, {} textures:",
        fitq.len(),
        ov.len(),
        iv.len(),
        xv.len()
    );
    // Text queries: the cosine less a weight times the item's hubness (its closeness to the
    // background queries, as the engine computes it); cut where the fit queries' best relevant
    // items and the out-of-domain queries' best items separate best.
    let bv = embed_texts(engine, relevance::background_queries(), true)?;
    let hub = |v: &[f32]| relevance::hubness(v, &bv);
    let ht: Vec<f32> = tv.iter().map(|v| hub(v)).collect();
    let hi: Vec<f32> = iv.iter().map(|v| hub(v)).collect();
    let corr = |q: &[f32],
                items: &[Vec<f32>],
                h: &[f32],
                w: f32,
                keep: &dyn Fn(usize) -> bool|
     -> Option<f32> {
        items
            .iter()
            .enumerate()
            .filter(|(j, _)| keep(*j))
            .map(|(j, v)| dot(q, v) - w * h[j])
            .max_by(|a, b| a.total_cmp(b))
    };
    let relevant_t2t = |w: f32| -> Vec<f32> {
        fitq.iter()
            .zip(&qv)
            .filter_map(|(q, v)| corr(v, &tv, &ht, w, &|j| q.products.contains(&pids[j])))
            .collect()
    };
    let relevant_t2i = |w: f32| -> Vec<f32> {
        fitq.iter()
            .zip(&qv)
            .filter_map(|(q, v)| corr(v, &iv, &hi, w, &|j| q.images.contains(&names[j])))
            .collect()
    };
    let ood_best = |items: &[Vec<f32>], h: &[f32], w: f32| -> Vec<f32> {
        ov.iter()
            .filter_map(|o| corr(o, items, h, w, &|_| true))
            .collect()
    };
    let t2t = separating(
        "text->text",
        relevant_t2t(TEXT_HUB_WEIGHT),
        ood_best(&tv, &ht, TEXT_HUB_WEIGHT),
    );
    // The images' hub weight: the smallest that separates best (0 to 0.5 by 0.05).
    let mut image_w = (0.0f32, f32::NEG_INFINITY);
    for i in 0..=10 {
        let w = i as f32 * 0.05;
        let (_, j) = youden_cut(&relevant_t2i(w), &ood_best(&iv, &hi, w));
        println!("  text->image, image hub weight {w:.2}: J {j:.3}");
        if j > image_w.1 + 1e-6 {
            image_w = (w, j);
        }
    }
    let image_w = image_w.0;
    let t2i = separating(
        "text->image",
        relevant_t2i(image_w),
        ood_best(&iv, &hi, image_w),
    );
    // image -> image: the other images with the same objects against the best image of other
    // objects; image -> text: the same with titles.
    let i2i = anchors(
        "image->image",
        (0..iv.len())
            .filter_map(|i| best(&iv[i], &iv, &|j| j != i && objects[j] == objects[i]))
            .collect(),
        (0..iv.len())
            .filter_map(|i| best(&iv[i], &iv, &|j| objects[j] != objects[i]))
            .collect(),
        0.5,
    );
    let i2t = anchors(
        "image->text",
        (0..iv.len())
            .filter_map(|i| best(&iv[i], &tv, &|j| objects[j] == objects[i]))
            .collect(),
        (0..iv.len())
            .filter_map(|i| best(&iv[i], &tv, &|j| objects[j] != objects[i]))
            .collect(),
        0.5,
    );
    let tex_top: Vec<f32> = xv.iter().map(|x| top(x, &iv)).collect();
    println!("  (textures as image queries: best image cos median {:.3}; the corpus' backgrounds are such textures, so image queries are fitted against the median best item of other objects instead: the toy vision tower barely separates same-object from other-object images)", quantile(tex_top, 0.5));
    let fp = engine.stats()?.model_fingerprint;
    println!("\ntable entry (engine/src/search/relevance.rs), model fingerprint {fp}:");
    let pair = |(c, s): (f32, f32)| format!("PairCalibration {{ cut: {c:.3}, scale: {s:.3} }}");
    println!("hub_weight: [{TEXT_HUB_WEIGHT:.2}, {image_w:.2}]");
    println!(
        "[[{}, {}], [{}, {}]]",
        pair(t2t),
        pair(t2i),
        pair(i2t),
        pair(i2i)
    );
    Ok(())
}

/// Every text query's cosines to every corpus image (real queries with their relevant images,
/// and the three out-of-domain sets), as JSON.
fn dump(engine: &Engine, corpus: &Path, out: &Path) -> Result<()> {
    let mut names = Vec::new();
    for l in lines(&corpus.join("labels.jsonl"))? {
        let v: serde_json::Value = serde_json::from_str(&l)?;
        let img = v["image"].as_str().unwrap_or_default();
        names.push(img.trim_start_matches("images/").to_string());
    }
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| corpus.join("images").join(n))
        .collect();
    let iv = embed_images(engine, &paths)?;
    let cosines = |qv: &[Vec<f32>]| -> Vec<Vec<f32>> {
        qv.iter()
            .map(|q| iv.iter().map(|v| dot(q, v)).collect())
            .collect()
    };
    let qs = real_queries(corpus)?;
    let qv = embed_texts(engine, qs.iter().map(|q| q.text.as_str()), true)?;
    let real: Vec<serde_json::Value> = qs
        .iter()
        .zip(cosines(&qv))
        .map(|(q, c)| {
            serde_json::json!({"n": q.n, "text": q.text, "lang": q.lang,
                "relevant": names.iter().map(|n| q.images.contains(n)).collect::<Vec<bool>>(), "cos": c})
        })
        .collect();
    let mut sets = serde_json::Map::new();
    let bv = embed_texts(engine, relevance::background_queries(), true)?;
    sets.insert("background".into(), serde_json::json!(cosines(&bv)));
    for f in [
        "out_of_domain_fit",
        "out_of_domain_test",
        "out_of_domain_test2",
    ] {
        let o = lines(&repo().join(format!("datasets/relevance/{f}.txt")))?;
        let ov = embed_texts(engine, o.iter().map(String::as_str), true)?;
        sets.insert(f.into(), serde_json::json!(cosines(&ov)));
    }
    std::fs::write(
        out,
        serde_json::to_string(&serde_json::json!({"images": names, "real": real, "ood": sets}))?,
    )?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Recall@5 of the real queries (any relevant hit in the top 5; with the cut: above it too)
/// and the share of out-of-domain queries with any hit above the cut.
struct Figures {
    recall: f64,
    recall_cut: f64,
    ood_any: f64,
    per_lang: Vec<(String, f64, f64)>,
}

fn measure(
    engine: &Engine,
    qs: &[&RealQuery],
    ood: &[String],
    cut: f32,
    kinds: &[Kind],
) -> Result<Figures> {
    let mut langs: Vec<(String, usize, usize, usize)> = Vec::new();
    let (mut hit, mut hit_cut) = (0usize, 0usize);
    for q in qs {
        let r = engine.search(
            &Query::text(q.text.clone())
                .limit(5)
                .kinds(kinds)
                .mode(SearchMode::Auto),
        )?;
        let rel = |h: &jsearch::SearchHit| {
            let file = Path::new(&h.path)
                .file_name()
                .map(|f| f.to_string_lossy().to_string())
                .unwrap_or_default();
            q.relevant.contains(&file) || q.relevant.contains(&h.id)
        };
        let a = r.hits.iter().any(rel);
        let b = r.hits.iter().any(|h| h.score >= cut && rel(h));
        hit += usize::from(a);
        hit_cut += usize::from(b);
        if a && !b && std::env::var_os("RELEVANCE_DEBUG").is_some() {
            let h: Vec<String> = r
                .hits
                .iter()
                .map(|h| {
                    format!(
                        "{}{} {:.3} cos {:.3}",
                        if rel(h) { "*" } else { "" },
                        h.id,
                        h.score,
                        h.cosine
                    )
                })
                .collect();
            println!("  below cut: {:?} ({}) -> {}", q.text, q.lang, h.join(", "));
        }
        match langs.iter_mut().find(|l| l.0 == q.lang) {
            Some(l) => {
                l.1 += 1;
                l.2 += usize::from(a);
                l.3 += usize::from(b);
            }
            None => langs.push((q.lang.clone(), 1, usize::from(a), usize::from(b))),
        }
    }
    let mut any = 0usize;
    for o in ood {
        let r = engine.search(
            &Query::text(o.clone())
                .limit(1)
                .kinds(kinds)
                .mode(SearchMode::Auto),
        )?;
        any += usize::from(r.hits.first().is_some_and(|h| h.score >= cut));
        if std::env::var_os("RELEVANCE_DEBUG").is_some() {
            if let Some(h) = r.hits.first().filter(|h| h.score >= cut) {
                println!("  ood {o:?} -> {} {:.3} cos {:.3}", h.id, h.score, h.cosine);
            }
        }
    }
    let n = qs.len().max(1) as f64;
    Ok(Figures {
        recall: hit as f64 / n,
        recall_cut: hit_cut as f64 / n,
        ood_any: any as f64 / ood.len().max(1) as f64,
        per_lang: langs
            .into_iter()
            .map(|(l, n, a, b)| (l, a as f64 / n as f64, b as f64 / n as f64))
            .collect(),
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let corpus = repo().join("datasets/toy-shapes/corpus");
    let model = repo().join("datasets/toy-shapes/model");
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let open = |name: &str| {
        Engine::open(OpenOptions {
            db: args.dir.join(name),
            model_dir: Some(model.clone()),
            ..OpenOptions::default()
        })
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"]
        .into_iter()
        .filter(|f| cpu.split_whitespace().any(|w| w == *f))
        .collect();
    println!("CPU features: {}", flags.join(" "));
    // Stores: the corpus images; mixed: images + the product catalog + text notes.
    let mut images = open("images.jsearch")?;
    images.index(
        &[corpus.join("images")],
        &IndexOptions::default(),
        &mut |_| {},
    )?;
    let notes = args.dir.join("notes");
    std::fs::create_dir_all(&notes)?;
    std::fs::write(
        notes.join("groceries.txt"),
        "Milk, eggs, bread, apples and coffee for the week.\n",
    )?;
    std::fs::write(
        notes.join("meeting.md"),
        "# Project meeting\n\nWe agreed on the budget for next quarter and the hiring plan.\n",
    )?;
    let mut mixed = open("mixed.jsearch")?;
    mixed.index(
        &[
            corpus.join("images"),
            corpus.join("products.jsonl"),
            notes.clone(),
        ],
        &IndexOptions::default(),
        &mut |_| {},
    )?;
    if args.fit {
        return fit(&images, &corpus, &args.dir);
    }
    if let Some(out) = &args.dump {
        return dump(&images, &corpus, out);
    }
    let qs = real_queries(&corpus)?;
    let test: Vec<&RealQuery> = qs.iter().filter(|q| q.n % 2 == 1).collect();
    let all: Vec<&RealQuery> = qs.iter().collect();
    // The first held-out set was looked at once (with the previous fit rule); the second was
    // written after that and never used to choose anything.
    let ood = lines(&repo().join("datasets/relevance/out_of_domain_test.txt"))?;
    let ood2 = lines(&repo().join("datasets/relevance/out_of_domain_test2.txt"))?;
    // The third was written before the image-side hubness and the separating cut, and used
    // only to measure them.
    let ood3 = lines(&repo().join("datasets/relevance/out_of_domain_test3.txt"))?;
    println!(
        "{} real queries ({} held out: odd-numbered), out-of-domain test queries: {} (set 1) + {} (set 2) + {} (set 3), cut {}\n",
        all.len(),
        test.len(),
        ood.len(),
        ood2.len(),
        ood3.len(),
        args.cut
    );
    println!("| store | scores | queries | R@5 (no cut) | R@5 above cut | out-of-domain set 1 with a hit above cut | set 2 | set 3 |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut per_lang = Vec::new();
    for (store_name, engine, kinds) in [("images", &images, vec![]), ("mixed", &mixed, vec![])] {
        for relative in [true, false] {
            if relative {
                std::env::set_var("JSEARCH_RELEVANCE", "relative");
            } else {
                std::env::remove_var("JSEARCH_RELEVANCE");
            }
            // The store-relative scores' cut: z = 3 is relevance 0.5 there too.
            for (set_name, set) in [("held-out", &test), ("all", &all)] {
                let f = measure(engine, set, &ood, args.cut, &kinds)?;
                let f2 = measure(engine, &[], &ood2, args.cut, &kinds)?;
                let f3 = measure(engine, &[], &ood3, args.cut, &kinds)?;
                println!(
                    "| {store_name} | {} | {set_name} ({}) | {:.3} | {:.3} | {:.3} ({}/{}) | {:.3} ({}/{}) | {:.3} ({}/{}) |",
                    if relative {
                        "store-relative (before)"
                    } else {
                        "calibrated"
                    },
                    set.len(),
                    f.recall,
                    f.recall_cut,
                    f.ood_any,
                    (f.ood_any * ood.len() as f64).round(),
                    ood.len(),
                    f2.ood_any,
                    (f2.ood_any * ood2.len() as f64).round(),
                    ood2.len(),
                    f3.ood_any,
                    (f3.ood_any * ood3.len() as f64).round(),
                    ood3.len()
                );
                if set_name == "all" {
                    per_lang.push((store_name, relative, f.per_lang));
                }
            }
        }
    }
    std::env::remove_var("JSEARCH_RELEVANCE");
    println!("\nR@5 per language, all queries (no cut / above cut):\n");
    let langs: Vec<String> = per_lang[0].2.iter().map(|l| l.0.clone()).collect();
    println!("| store | scores | {} |", langs.join(" | "));
    println!("|---|---|{}", "---|".repeat(langs.len()));
    for (s, rel, pl) in &per_lang {
        let cells: Vec<String> = pl
            .iter()
            .map(|(_, a, b)| format!("{a:.2} / {b:.2}"))
            .collect();
        println!(
            "| {s} | {} | {} |",
            if *rel { "before" } else { "calibrated" },
            cells.join(" | ")
        );
    }
    // Out-of-domain images (textures) through the image tower.
    let tex = textures(&args.dir.join("textures"), 2, 20)?;
    let mut any = 0;
    for t in &tex {
        let r = images.search(&Query::image(t).limit(1))?;
        any += usize::from(r.hits.first().is_some_and(|h| h.score >= args.cut));
    }
    println!("\nout-of-domain images (generated textures) with a hit above the cut on the image store: {any}/{}", tex.len());
    Ok(())
}
