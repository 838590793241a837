//! A store of generated products (the `export` and `scale` benches): 1024-d vectors from the
//! [`crate::synth`] generator, written through the engine's product path with a title and the
//! attributes brand / category / price / in_stock.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use jsearch::bench::ProductWriter;
use jsearch::Record;
use jsearch_index::{Batch, Store, StoreSettings};

use crate::synth::{generate, make_centers};

/// Dimension of the generated vectors.
pub const DIM: usize = 1024;
const BRANDS: [&str; 6] = ["Korrin", "Lumo", "Vexa", "Ostra", "Pellin", "Tarnu"];
const CATEGORIES: [&str; 5] = ["card", "sticker", "poster", "mug", "shirt"];

/// Product `i`; `version` changes its price (an update for a sync to find).
pub fn product(i: usize, version: usize) -> Record {
    let mut metadata = serde_json::Map::new();
    metadata.insert("brand".into(), BRANDS[i % 6].into());
    metadata.insert("category".into(), CATEGORIES[(i / 6) % 5].into());
    let cents = (i * 7919 + version * 131) % 10000;
    metadata.insert("price".into(), (cents as f64 / 100.0).into());
    metadata.insert("in_stock".into(), (!i.is_multiple_of(3)).into());
    Record {
        id: format!("p{i:07}"),
        title: Some(format!(
            "{} {} no. {i}",
            BRANDS[i % 6],
            CATEGORIES[(i / 6) % 5]
        )),
        metadata,
        ..Record::default()
    }
}

/// The generator's cluster centres of the products (and of queries near them).
pub fn centers() -> Vec<f32> {
    make_centers(5, 1000, DIM)
}

/// Writes products `ids` (at `version`) with their vectors into the store at `path` (created
/// when missing). Returns the seconds it took.
pub fn write_products(path: &Path, ids: &[usize], version: usize) -> Result<f64> {
    let centers = centers();
    let mut store = Store::open(path, StoreSettings::new("bench", "export", DIM))?;
    let t = Instant::now();
    for chunk in ids.chunks(20_000) {
        let mut batch = Batch::new();
        let mut w = ProductWriter::new(false);
        for &i in chunk {
            // Row i of stream 1: the same vector whichever run writes it.
            let v = generate(5, 1 + i as u64, 1, DIM, &centers);
            w.add(&mut batch, "bench.jsonl", &product(i, version), v)?;
        }
        w.finish(&store, &mut batch)?;
        store.commit(batch)?;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Deletes products `ids` from the store at `path` (their vectors and item records; the bench
/// stores have no keyword documents).
pub fn delete_products(path: &Path, ids: &[usize]) -> Result<()> {
    let mut store = Store::open(path, StoreSettings::new("bench", "export", DIM))?;
    let mut batch = Batch::new();
    for &i in ids {
        batch.delete(jsearch::bench::product_id(
            "bench.jsonl",
            &format!("p{i:07}"),
        ));
    }
    store.commit(batch)?;
    Ok(())
}

/// A new store of products `0..n` at `path`.
pub fn build(path: &Path, n: usize) -> Result<f64> {
    let _ = std::fs::remove_file(path);
    write_products(path, &(0..n).collect::<Vec<_>>(), 0)
}
