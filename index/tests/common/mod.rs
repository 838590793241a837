//! Shared helpers of the integration tests.
#![allow(dead_code)]

use jsearch_index::{Batch, StoreSettings};

/// Deterministic pseudo-random vector for (seed, id): clustered, energy in leading dims.
pub fn vector(seed: u64, id: u64, dim: usize) -> Vec<f32> {
    let mut s = seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5
    };
    let cluster = (id % 37) as f32;
    (0..dim)
        .map(|i| {
            let w = 1.0 / (1.0 + i as f32 / 8.0);
            w * (next() + 0.5 * ((cluster * 0.7 + i as f32 * 0.3).sin()))
        })
        .collect()
}

pub fn settings(dim: usize) -> StoreSettings {
    let mut s = StoreSettings::new("test-model", "fp-1", dim);
    s.hnsw.ef_construction = 64;
    s.hnsw.m = 12;
    s
}

pub fn batch(seed: u64, ids: impl Iterator<Item = u64>, dim: usize) -> Batch {
    let mut b = Batch::new();
    for id in ids {
        b.upsert(id, vector(seed, id, dim), id.to_le_bytes().to_vec());
    }
    b
}

pub fn tmp(name: &str) -> (tempdir::TempDir, std::path::PathBuf) {
    let d = tempdir::TempDir::new();
    let p = d.0.join(name);
    (d, p)
}

pub mod tempdir {
    /// Minimal self-deleting temp dir (no extra dependency).
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "jsearch-index-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
