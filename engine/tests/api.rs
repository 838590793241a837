//! The library API exercised directly (no binary): open, index folders and records, query with
//! each filter, similar, remove, stats, reopen, a model mismatch, and one `Arc<Engine>` queried
//! from several threads at once. Runs on the bundled toy model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsearch::{Engine, Error, IndexOptions, Kind, OpenOptions, Query, Record};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

fn toy_model() -> PathBuf {
    repo().join("datasets/toy-shapes/model")
}

fn open(db: &Path, model: &Path) -> Engine {
    Engine::open(OpenOptions {
        db: db.to_path_buf(),
        model_dir: Some(model.to_path_buf()),
        ..OpenOptions::default()
    })
    .unwrap()
}

/// A folder with `n` toy images and one text note.
fn corpus(root: &Path, n: usize) {
    let src = repo().join("datasets/toy-shapes/corpus/images");
    std::fs::create_dir_all(root.join("img")).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in names.iter().take(n) {
        std::fs::copy(p, root.join("img").join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        root.join("note.md"),
        "# Shapes\n\nA red circle next to a blue square, and a yellow star above them.\n",
    )
    .unwrap();
}

fn record(id: &str, title: &str, image: Option<PathBuf>) -> Record {
    Record {
        id: id.into(),
        title: Some(title.into()),
        description: None,
        text: None,
        image,
        metadata: [("price".to_string(), serde_json::json!(9.5))]
            .into_iter()
            .collect(),
    }
}

/// A store with `n` toy images and the note, indexed by a fresh engine: (corpus root, db, engine).
fn indexed(dir: &Path, n: usize) -> (PathBuf, PathBuf, Engine) {
    let root = dir.join("corpus");
    corpus(&root, n);
    let db = dir.join("store.jsearch");
    let mut engine = open(&db, &toy_model());
    engine
        .index(
            std::slice::from_ref(&root),
            &IndexOptions::default(),
            &mut |_| {},
        )
        .unwrap();
    (root, db, engine)
}

#[test]
fn index_query_filter_similar_remove_stats_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    corpus(&root, 12);
    let db = dir.path().join("api.jsearch");
    let mut engine = open(&db, &toy_model());

    // Reading before anything is indexed: a typed error, no file created.
    assert!(matches!(engine.stats(), Err(Error::NoStore(_))));
    assert!(!db.exists());

    let mut problems = Vec::new();
    let s = engine
        .index(
            std::slice::from_ref(&root),
            &IndexOptions::default(),
            &mut |ev| {
                if let jsearch::IndexEvent::Problem { path, message } = ev {
                    problems.push(format!("{}: {message}", path.display()));
                }
            },
        )
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!((s.indexed, s.failed), (13, 0));
    let first_image = std::fs::read_dir(root.join("img"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let s = engine
        .index_records(
            "shop",
            vec![
                record("p-1", "red circle sticker", Some(first_image.clone())),
                record("p-2", "blue square card", None),
            ],
            &IndexOptions::default(),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(s.items, 2);

    let stats = engine.stats().unwrap();
    assert_eq!(stats.items["image"], 12);
    assert_eq!(stats.items["product"], 2);
    assert!(stats.items["text"] >= 1);
    assert_eq!(stats.files, 14);
    assert_eq!(stats.vectors, 12 + stats.items["text"] + 3);

    // Unfiltered, limited.
    let hits = engine.query(&Query::text("roter Kreis").limit(5)).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(
        hits.iter().map(|h| h.rank).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    // Each filter: kinds, path prefix, min score.
    for kind in Kind::ALL {
        let hits = engine
            .query(&Query::text("red circle").limit(20).kinds(&[kind]))
            .unwrap();
        assert!(!hits.is_empty(), "{kind}");
        assert!(hits.iter().all(|h| h.kind == kind), "{kind}");
    }
    let mut q = Query::text("a shape").limit(50);
    q.path_prefix = Some(root.join("img"));
    let hits = engine.query(&q).unwrap();
    assert_eq!(hits.len(), 12);
    assert!(hits.iter().all(|h| h.path.contains("/img/")));
    let mut q = Query::text("red circle").limit(50);
    q.min_score = Some(0.5);
    let hits = engine.query(&q).unwrap();
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| h.score >= 0.5));
    let all = engine.query(&Query::text("red circle").limit(50)).unwrap();
    assert!(hits.len() < all.len());
    // Scores are relevances: between 0 and 1.
    assert!(all.iter().all(|h| (0.0..=1.0).contains(&h.score)));
    // Products keep their metadata.
    let products = engine
        .query(&Query::text("sticker").limit(5).kinds(&[Kind::Product]))
        .unwrap();
    assert!(products.iter().all(|h| h.metadata["price"] == 9.5));

    // Similar: the file itself is excluded.
    let sim = engine
        .similar(&first_image, &Query::default().limit(5))
        .unwrap();
    assert_eq!(sim.len(), 5);
    assert!(sim.iter().all(|h| h.path != first_image.to_string_lossy()));
    assert!(matches!(
        engine.similar(&root.join("absent.png"), &Query::default()),
        Err(Error::NotIndexed(_))
    ));

    // Remove a folder: its images leave the store, the rest stays.
    let r = engine.remove(&[root.join("img")]).unwrap();
    assert_eq!((r.removed, r.not_indexed.len()), (12, 0));
    let stats = engine.stats().unwrap();
    assert_eq!(stats.items["image"], 0);
    assert_eq!(stats.items["product"], 2);
    // Removing again (a killed `rm` re-run) reports the path and removes nothing else.
    let r = engine.remove(&[root.join("img")]).unwrap();
    assert_eq!(r.removed, 0);
    assert_eq!(r.not_indexed, vec![root.join("img")]);
    assert_eq!(engine.stats().unwrap().items["product"], 2);
    drop(engine);

    // Reopen: the same store, readable without loading anything but the text tower.
    let engine = open(&db, &toy_model());
    assert_eq!(engine.stats().unwrap().items["product"], 2);
    let hits = engine
        .query(&Query::text("blue square").limit(3).kinds(&[Kind::Product]))
        .unwrap();
    assert_eq!(hits.len(), 2);
}

#[test]
fn another_model_is_refused_for_reading_and_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (root, db, engine) = indexed(dir.path(), 3);
    drop(engine);
    let other = repo().join("datasets/jina-clip-v2-tiny/model");
    let mut engine = open(&db, &other);
    assert!(matches!(
        engine.query(&Query::text("x")),
        Err(Error::ModelMismatch(_))
    ));
    assert!(matches!(
        engine.index(&[root], &IndexOptions::default(), &mut |_| {}),
        Err(Error::ModelMismatch(_))
    ));
}

#[test]
fn one_engine_answers_queries_from_several_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (_root, db, engine) = indexed(dir.path(), 20);
    let queries = [
        "roter Kreis",
        "blue square",
        "gelber Stern",
        "green triangle",
    ];
    let expected: Vec<Vec<String>> = queries
        .iter()
        .map(|q| {
            engine
                .query(&Query::text(*q).limit(5))
                .unwrap()
                .into_iter()
                .map(|h| h.id)
                .collect()
        })
        .collect();
    drop(engine);

    // A fresh engine: the threads race for the first load of the store and the text tower.
    let engine = Arc::new(open(&db, &toy_model()));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for round in 0..3 {
                    let q = queries[(t + round) % queries.len()];
                    let ids: Vec<String> = engine
                        .query(&Query::text(q).limit(5))
                        .unwrap()
                        .into_iter()
                        .map(|h| h.id)
                        .collect();
                    got.push(((t + round) % queries.len(), ids));
                }
                let stats = engine.stats().unwrap();
                (got, stats.items["image"])
            })
        })
        .collect();
    for h in handles {
        let (got, images) = h.join().unwrap();
        assert_eq!(images, 20);
        for (qi, ids) in got {
            assert_eq!(ids, expected[qi], "query {:?}", queries[qi]);
        }
    }
}
