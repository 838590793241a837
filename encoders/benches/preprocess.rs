//! Preprocessing benchmarks (placeholder, filled below).
fn main() {}
