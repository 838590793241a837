//! Shared helpers of the jsearch benchmark binaries (`encoders`, `ann`, `ingest`).

pub mod checkpoint;
