//! Filtered search on a store large enough for the graph (over `EXACT_SEARCH_BELOW` items):
//! selectivities from 100 % down to one item, so both routes run (the filtered graph walk and
//! the exact scan of the passing items), in every mode. Exactly `k` hits whenever `k` pass, none
//! failing the filter. Also the library's filter builder, facets and `SearchResult`.

use std::path::{Path, PathBuf};

use jsearch::{CmpOp, Engine, Facet, Filter, IndexOptions, OpenOptions, Query, Record, SearchMode};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

const N: usize = 3000;
const COLOURS: [&str; 8] = [
    "red", "green", "blue", "yellow", "orange", "purple", "black", "white",
];
const SHAPES: [&str; 8] = [
    "circle", "square", "triangle", "star", "heart", "cross", "moon", "shoe",
];

fn record(i: usize) -> Record {
    let c = COLOURS[i % 8];
    let s = SHAPES[(i / 8) % 8];
    let mut metadata = serde_json::Map::new();
    metadata.insert("n".into(), serde_json::json!(i));
    metadata.insert("bucket".into(), serde_json::json!(format!("b{}", i % 10)));
    metadata.insert("even".into(), serde_json::json!(i.is_multiple_of(2)));
    Record {
        id: format!("r{i}"),
        title: Some(format!("{c} {s} shop item")),
        metadata,
        ..Record::default()
    }
}

#[test]
fn filters_return_exactly_k_passing_hits_through_the_graph_and_the_scan() {
    // Filters passing more than 1000 of the 3000 items take the filtered graph walk, the others
    // the exact scan of the passing items (the default limit is far above this store's size).
    std::env::set_var("JSEARCH_FILTER_SCAN_MAX", "1000");
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::open(OpenOptions {
        db: dir.path().join("f.jsearch"),
        model_dir: Some(repo().join("datasets/toy-shapes/model")),
        ..OpenOptions::default()
    })
    .unwrap();
    let records: Vec<Record> = (0..N).map(record).collect();
    engine
        .index_records("gen.jsonl", records, &IndexOptions::default(), &mut |_| {})
        .unwrap();
    // (filter, items passing)
    type Case = (Filter, usize, Box<dyn Fn(usize) -> bool>);
    let cases: Vec<Case> = vec![
        (Filter::cmp("n", CmpOp::Ge, 0i64), N, Box::new(|_| true)),
        (Filter::eq("even", true), N / 2, Box::new(|i| i % 2 == 0)),
        (
            Filter::eq("bucket", "B3"),
            N / 10,
            Box::new(|i| i % 10 == 3),
        ),
        (
            Filter::cmp("n", CmpOp::Lt, 60i64).and(Filter::eq("even", false)),
            30,
            Box::new(|i| i < 60 && i % 2 == 1),
        ),
        (
            Filter::is_in("bucket", ["b1", "b2"]).and(Filter::eq("even", true).not()),
            N / 10,
            Box::new(|i| (i % 10 == 1 || i % 10 == 2) && i % 2 == 1),
        ),
        (Filter::eq("n", 1234i64), 1, Box::new(|i| i == 1234)),
        // Passes 90 %: the graph walks with the filter.
        (
            Filter::eq("bucket", "b0").not(),
            N * 9 / 10,
            Box::new(|i| i % 10 != 0),
        ),
    ];
    for (f, passing, pass) in &cases {
        for mode in [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid] {
            for k in [10usize, 40] {
                let q = Query::text("red circle shop")
                    .limit(k)
                    .mode(mode)
                    .filter(f.clone());
                let hits = engine.query(&q).unwrap();
                assert_eq!(hits.len(), k.min(*passing), "{mode:?} k={k} {f}");
                for h in &hits {
                    let i: usize = h.id[1..].parse().unwrap();
                    assert!(pass(i), "{mode:?} {f}: {} leaked", h.id);
                }
            }
        }
    }
    // Facets over every passing item, through the library.
    let r = engine
        .search(
            &Query::text("red circle")
                .limit(3)
                .filter(Filter::eq("even", true))
                .facet("bucket")
                .facet("n"),
        )
        .unwrap();
    assert_eq!(r.hits.len(), 3);
    let Facet::Values(b) = &r.facets[0].1 else {
        panic!("{:?}", r.facets)
    };
    assert_eq!(b.len(), 5, "even items are in 5 buckets: {b:?}");
    assert!(b.iter().all(|(_, n)| *n == N / 10), "{b:?}");
    assert_eq!(
        r.facets[1].1,
        Facet::Range {
            min: 0.0,
            max: (N - 2) as f64,
            count: N / 2
        }
    );
    // Parsed filters work the same; the graph route (50 % pass, above the scan's limit) keeps its
    // recall: the filtered top 10 against the unfiltered ranking of every item, filtered here.
    let q = Query::text("red circle").limit(10).mode(SearchMode::Vector);
    let a = engine
        .query(&q.clone().filter_str("even = true").unwrap())
        .unwrap();
    let b = engine
        .query(&q.clone().filter(Filter::eq("even", true)))
        .unwrap();
    let ids = |h: &[jsearch::SearchHit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    let all = engine.query(&q.clone().limit(N)).unwrap();
    assert_eq!(all.len(), N);
    // Many records share a title (identical vectors): compare scores rank by rank, not ids.
    let truth: Vec<f32> = all
        .iter()
        .filter(|h| h.id[1..].parse::<usize>().unwrap() % 2 == 0)
        .take(10)
        .map(|h| h.score)
        .collect();
    let got: Vec<f32> = a.iter().map(|h| h.score).collect();
    assert_eq!(got.len(), 10);
    for (g, t) in got.iter().zip(&truth) {
        assert!((g - t).abs() < 1e-3, "filtered {got:?} vs exact {truth:?}");
    }
}
