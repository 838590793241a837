//! `jsearch export`: a store's vectors and attributes in Parquet, read back with the parquet
//! crate's Arrow reader (what pyarrow, polars and DuckDB read too).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use jsearch_tests::{jsearch, json_lines, repo_root, run, stats, tempdir};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Every row of the files, and the first file's key-value metadata.
fn read(files: &[PathBuf]) -> (Vec<RecordBatch>, HashMap<String, String>) {
    let mut batches = Vec::new();
    let mut kv = HashMap::new();
    for f in files {
        let b = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap()).unwrap();
        if kv.is_empty() {
            for e in b.metadata().file_metadata().key_value_metadata().unwrap() {
                kv.insert(e.key.clone(), e.value.clone().unwrap_or_default());
            }
        }
        for batch in b.build().unwrap() {
            batches.push(batch.unwrap());
        }
    }
    (batches, kv)
}

fn export(db: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut c = jsearch(db);
    c.arg("export").arg(out).arg("--json").args(extra);
    json_lines(&run(c, true).stdout).remove(0)
}

/// The backend tests' store: 12 toy images, 3 notes, 40 products of the toy shop's catalog
/// (typed fields: a number, a bool, strings, a list).
fn store(dir: &Path) -> PathBuf {
    jsearch_tests::backends::store(dir).0
}

#[test]
fn export_reads_back_as_the_store() {
    let dir = tempdir();
    let db = store(dir.path());
    let st = stats(&db);
    let out = dir.path().join("out");
    let s = export(&db, &out, &["--rows-per-file", "20"]);
    let files: Vec<PathBuf> = s["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| PathBuf::from(f.as_str().unwrap()))
        .collect();
    let rows = st["vectors"].as_u64().unwrap() as usize;
    assert_eq!(s["rows"].as_u64().unwrap() as usize, rows, "{s}");
    assert_eq!(files.len(), rows.div_ceil(20), "{s}");
    // Only finished files: no temporary left behind.
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("part-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let (batches, kv) = read(&files);
    assert_eq!(kv["jsearch.format"], "1");
    assert_eq!(
        kv["jsearch.model_fingerprint"],
        st["model_fingerprint"].as_str().unwrap()
    );
    let dim: usize = kv["jsearch.dim"].parse().unwrap();
    assert_eq!(dim, st["dim"].as_u64().unwrap() as usize);
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), rows);

    // Per row: the vector is unit length, the head is its first dims renormalised, ids unique,
    // a product's attributes are the catalog's with their types.
    let catalog: HashMap<String, serde_json::Value> =
        std::fs::read_to_string(repo_root().join("datasets/toy-shop/catalog.jsonl"))
            .unwrap()
            .lines()
            .take(40)
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["id"].as_str().unwrap().to_string(), v))
            .collect();
    let mut keys = std::collections::HashSet::new();
    let (mut products, mut images, mut texts) = (0, 0, 0);
    let mut image_vectors: HashMap<String, Vec<f32>> = HashMap::new();
    for b in &batches {
        let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("column {n}"));
        let key = col("key").as_primitive::<UInt64Type>();
        let id = col("id").as_string::<i32>();
        let kind = col("kind").as_string::<i32>();
        let modality = col("modality").as_string::<i32>();
        let vector = col("vector").as_fixed_size_list();
        let head = col("head").as_fixed_size_list();
        let price = col("price").as_primitive::<Float64Type>();
        let in_stock = col("in_stock").as_boolean();
        let brand = col("brand").as_string::<i32>();
        for r in 0..b.num_rows() {
            assert!(keys.insert(key.value(r)), "key {} twice", key.value(r));
            let v: Vec<f32> = vector
                .value(r)
                .as_primitive::<Float32Type>()
                .values()
                .to_vec();
            assert_eq!(v.len(), dim);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 2e-3, "{} norm {norm}", id.value(r));
            let h: Vec<f32> = head
                .value(r)
                .as_primitive::<Float32Type>()
                .values()
                .to_vec();
            let hn: f32 = v[..h.len()].iter().map(|x| x * x).sum::<f32>().sqrt();
            for (a, x) in h.iter().zip(&v) {
                assert!((a - x / hn).abs() < 1e-5);
            }
            match kind.value(r) {
                "product" => {
                    products += 1;
                    let want = &catalog[id.value(r)];
                    assert_eq!(price.value(r), want["price"].as_f64().unwrap());
                    assert_eq!(in_stock.value(r), want["in_stock"].as_bool().unwrap());
                    assert_eq!(brand.value(r), want["brand"].as_str().unwrap());
                    assert_eq!(modality.value(r), "text");
                }
                "image" => {
                    images += 1;
                    assert!(price.is_null(r) && brand.is_null(r));
                    assert_eq!(modality.value(r), "image");
                    image_vectors.insert(id.value(r).to_string(), v);
                }
                "text" => texts += 1,
                other => panic!("kind {other}"),
            }
        }
    }
    assert_eq!((products, images, texts), (40, 12, 3));

    // The exported vectors are the store's: an image's equals a fresh embedding within what
    // `--precision auto` keeps (cosine >= 0.999 to f32: on a CPU with AVX512-BF16 the index run
    // may encode images in bf16, while `embed` always answers in f32) and f16 storage.
    let (path, v) = image_vectors.iter().next().unwrap();
    let mut c = jsearch(&db);
    c.args(["embed", "--image", path]);
    let e: Vec<f64> = json_lines(&run(c, true).stdout)[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let en: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    let cos: f64 = e.iter().zip(v).map(|(a, b)| a / en * *b as f64).sum();
    assert!(cos > 0.999, "{path}: cosine {cos} to a fresh embedding");
}

#[test]
fn f16_vectors_and_a_folder_that_holds_an_export() {
    let dir = tempdir();
    let db = store(dir.path());
    let out = dir.path().join("out16");
    let s = export(&db, &out, &["--vectors", "f16"]);
    let files = vec![PathBuf::from(s["files"][0].as_str().unwrap())];
    let (batches, kv) = read(&files);
    assert_eq!(kv["jsearch.vector_type"], "f16");
    let v = batches[0]
        .column_by_name("vector")
        .unwrap()
        .as_fixed_size_list()
        .value(0);
    let v = v.as_primitive::<Float16Type>();
    let norm: f32 = v
        .values()
        .iter()
        .map(|x| x.to_f32().powi(2))
        .sum::<f32>()
        .sqrt();
    assert!((norm - 1.0).abs() < 3e-3, "{norm}");
    // A second export into the same folder is refused, naming it; the first is untouched.
    let before = std::fs::read(&files[0]).unwrap();
    let mut c = jsearch(&db);
    c.arg("export").arg(&out);
    let o = run(c, false);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("already holds an export") && err.contains("out16"),
        "{err}"
    );
    assert_eq!(std::fs::read(&files[0]).unwrap(), before);
}
