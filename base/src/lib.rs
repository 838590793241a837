//! # jsearch-base
//!
//! What the encoders and the store share, kept in one place so that they cannot drift apart:
//!
//! * [`cpu`]: which SIMD kernels this CPU can run, detected once per process, with
//!   `JSEARCH_CPU_TIER` to force a lower tier (to measure or test the fallbacks on one machine).
//! * [`normalize`] / [`truncate_normalize`]: the reference's L2 and Matryoshka steps
//!   (truncate **then** normalise), accumulated in f64.

pub mod cpu;
pub mod ids;
mod vector;

pub use vector::{norm, normalize, truncate_normalize, DimOutOfRange};
