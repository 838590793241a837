//! jina-clip-v2 text and image encoders, re-implemented in candle.
//!
//! See `docs/api-contracts.md` for the public surface.

pub mod config;
pub mod error;
pub mod hub;
pub mod preprocess;

pub use config::{ClipConfig, PreprocessorConfig, TextConfig, VisionConfig};
pub use error::{EncoderError, Result};
