//! jina-clip-v2 text and image encoders, re-implemented in candle.
//!
//! * [`ClipModel`] loads a checkpoint directory (Hugging Face layout) and encodes texts
//!   ([`TextRole::Document`] / [`TextRole::Query`]) and preprocessed images.
//! * [`text::TextModel`] / [`vision::VisionModel`] are the towers; they build from any
//!   `candle_nn::VarBuilder` (memory-mapped safetensors, in-memory tensors, random weights).
//! * [`normalize`] / [`truncate_normalize`] implement the reference's L2 and Matryoshka steps.
//!
//! See `docs/api-contracts.md` for the public surface and
//! `docs/jina-clip-v2-spec.md` (repository root) for the reference behaviour reproduced here.

pub mod bf16_gemm;
pub mod config;
pub mod cpu_attention;
#[doc(hidden)]
pub mod deviation;
pub mod error;
pub mod hub;
pub mod model;
pub mod nn;
pub mod preprocess;
pub mod text;
pub mod tokenizer;
pub mod vision;

pub use config::{ClipConfig, PreprocessorConfig, TextConfig, VisionConfig};
pub use error::{EncoderError, Result};
pub use model::{
    clip_logits, normalize, truncate_normalize, ClipModel, LoadOptions, ModelIdentity, TextRole,
    Towers,
};
pub use nn::Adapter;
pub use tokenizer::TextTokenizer;
