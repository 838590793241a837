//! The prepared-weights cache: a model loaded from its cache gives bit-identical embeddings to
//! one prepared from the checkpoint, in every layout this CPU runs; a truncated, damaged or stale
//! cache file is rebuilt (with a message), never used; two processes building it at once leave
//! one valid file.

mod model_support;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use jsearch_encoders::preprocess::PixelValues;
use jsearch_encoders::{ClipModel, LoadOptions, TextRole, TowerSource, Towers, WeightCache};
use model_support::{fixture_model_dir, toy_model_dir};

thread_local! {
    /// Messages of this thread's loads (the notify hook is a plain fn; tests run in parallel).
    static NOTES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn note(m: &str) {
    NOTES.with(|n| n.borrow_mut().push(m.to_string()));
}

fn take_notes() -> Vec<String> {
    NOTES.with(|n| std::mem::take(&mut *n.borrow_mut()))
}

fn opts(cache: WeightCache, int8: bool, bf16: bool) -> LoadOptions {
    LoadOptions {
        cache,
        int8,
        bf16_matmul: bf16,
        notify: Some(note),
        ..LoadOptions::default()
    }
}

fn embed(m: &ClipModel) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let texts = m
        .encode_texts_raw(
            &["a red circle", "ein blaues Quadrat über dem Meer"],
            TextRole::Query,
        )
        .unwrap();
    let s = m.image_size();
    let px: Vec<PixelValues> = (0..2)
        .map(|i| PixelValues {
            size: s,
            data: (0..3 * s * s)
                .map(|j| ((j * 7 + i * 13) % 101) as f32 / 50.0 - 1.0)
                .collect(),
        })
        .collect();
    (texts, m.encode_pixels_raw(&px).unwrap())
}

fn sources(m: &ClipModel) -> Vec<TowerSource> {
    m.load_report()
        .towers
        .iter()
        .map(|(_, s)| s.clone())
        .collect()
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "jsw"));
    v.sort();
    v
}

/// Same embeddings, bit for bit, from the checkpoint, from a fresh cache, and from the cache
/// on the next load; in f32, int8 and (where the CPU has it) bf16.
#[test]
fn cached_towers_give_bit_identical_embeddings_in_every_layout() {
    for dir in [fixture_model_dir(), toy_model_dir()] {
        for (int8, bf16) in [(false, false), (true, false), (false, true)] {
            let cache = tempfile::tempdir().unwrap();
            let off = ClipModel::load(&dir, &opts(WeightCache::Off, int8, bf16)).unwrap();
            assert!(sources(&off)
                .iter()
                .all(|s| matches!(s, TowerSource::Checkpoint(_))));
            let reference = embed(&off);
            drop(off);
            take_notes();
            let first = ClipModel::load(
                &dir,
                &opts(WeightCache::Dir(cache.path().into()), int8, bf16),
            )
            .unwrap();
            assert!(
                sources(&first).iter().all(
                    |s| matches!(s, TowerSource::Built { reason, .. } if reason == "not built yet")
                ),
                "{:?}",
                sources(&first)
            );
            let notes = take_notes();
            assert_eq!(notes.len(), 2, "one line per tower built: {notes:?}");
            assert_eq!(
                embed(&first),
                reference,
                "{} int8={int8} bf16={bf16}: first",
                dir.display()
            );
            drop(first);
            assert_eq!(cache_files(cache.path()).len(), 2, "text + vision files");
            let second = ClipModel::load(
                &dir,
                &opts(WeightCache::Dir(cache.path().into()), int8, bf16),
            )
            .unwrap();
            assert!(
                sources(&second)
                    .iter()
                    .all(|s| matches!(s, TowerSource::Cache(_))),
                "{:?}",
                sources(&second)
            );
            assert!(take_notes().is_empty(), "a cache hit says nothing");
            assert_eq!(
                embed(&second),
                reference,
                "{} int8={int8} bf16={bf16}: cached",
                dir.display()
            );
        }
    }
}

/// Truncated, bit-flipped, foreign and stale files are detected, reported and rebuilt; the
/// rebuilt model still gives the reference embeddings.
#[test]
fn damaged_or_stale_files_are_rebuilt_with_a_message() {
    let dir = fixture_model_dir();
    let cache = tempfile::tempdir().unwrap();
    let o = opts(WeightCache::Dir(cache.path().into()), false, false);
    let reference = embed(&ClipModel::load(&dir, &o).unwrap());
    take_notes();
    let files = cache_files(cache.path());
    let text = files
        .iter()
        .find(|p| p.to_string_lossy().contains("-text-"))
        .unwrap()
        .clone();
    let good = std::fs::read(&text).unwrap();
    let damages: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() - 100].to_vec()),
        ("flipped data byte", {
            let mut b = good.clone();
            // The file ends with its last entry's data (padding only ever precedes an entry).
            let i = b.len() - 1;
            b[i] ^= 0x01;
            b
        }),
        ("flipped header byte", {
            let mut b = good.clone();
            b[40] ^= 0x01;
            b
        }),
        ("empty", Vec::new()),
        ("other format version", {
            let mut b = good.clone();
            b[8] = 99;
            b
        }),
    ];
    for (what, bytes) in damages {
        std::fs::write(&text, &bytes).unwrap();
        let m = ClipModel::load(&dir, &o).unwrap();
        let notes = take_notes();
        assert!(
            notes.len() == 1 && notes[0].contains("rebuilding"),
            "{what}: {notes:?}"
        );
        assert!(
            matches!(&sources(&m)[0], TowerSource::Built { reason, .. } if reason != "not built yet"),
            "{what}: {:?}",
            sources(&m)
        );
        assert_eq!(embed(&m), reference, "{what}");
        assert_eq!(
            std::fs::read(&text).unwrap(),
            good,
            "{what}: rebuilt byte for byte"
        );
    }
    // Another model's file under this model's name: stale (another fingerprint).
    let toy_cache = tempfile::tempdir().unwrap();
    let to = opts(WeightCache::Dir(toy_cache.path().into()), false, false);
    drop(ClipModel::load(&toy_model_dir(), &to).unwrap());
    let toy_text = cache_files(toy_cache.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("-text-"))
        .unwrap();
    std::fs::copy(&toy_text, &text).unwrap();
    take_notes();
    let m = ClipModel::load(&dir, &o).unwrap();
    let notes = take_notes();
    assert!(notes.len() == 1 && notes[0].contains("stale"), "{notes:?}");
    assert_eq!(embed(&m), reference);
}

/// A cache folder that cannot be written: the model still loads (from the checkpoint), says so
/// once, and gives the same embeddings.
#[test]
fn an_unwritable_cache_folder_only_costs_speed() {
    let base = tempfile::tempdir().unwrap();
    let file = base.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let o = opts(WeightCache::Dir(file.join("sub")), false, false);
    take_notes();
    let m = ClipModel::load(&toy_model_dir(), &o).unwrap();
    let notes = take_notes();
    assert!(notes.iter().any(|n| n.contains("not written")), "{notes:?}");
    assert!(sources(&m)
        .iter()
        .all(|s| matches!(s, TowerSource::Checkpoint(_))));
    let reference =
        embed(&ClipModel::load(&toy_model_dir(), &opts(WeightCache::Off, false, false)).unwrap());
    assert_eq!(embed(&m), reference);
}

/// Several loads building the same cache at once (threads here; `tests/` of the workspace
/// does it with processes): every load works and the folder ends with exactly one valid file
/// per tower and no temporary files.
#[test]
fn concurrent_builders_leave_one_valid_file() {
    let cache = tempfile::tempdir().unwrap();
    let dir = toy_model_dir();
    let o = LoadOptions {
        towers: Towers::Text,
        cache: WeightCache::Dir(cache.path().into()),
        ..LoadOptions::default()
    };
    let reference = ClipModel::load(
        &dir,
        &LoadOptions {
            cache: WeightCache::Off,
            ..o.clone()
        },
    )
    .unwrap()
    .encode_texts_raw(&["a red circle"], TextRole::Query)
    .unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let m = ClipModel::load(&dir, &o).unwrap();
                assert_eq!(
                    m.encode_texts_raw(&["a red circle"], TextRole::Query)
                        .unwrap(),
                    reference
                );
            });
        }
    });
    let all: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(all.len(), 1, "one file, no leftovers: {all:?}");
    let m = ClipModel::load(&dir, &o).unwrap();
    assert!(matches!(sources(&m)[0], TowerSource::Cache(_)));
}
