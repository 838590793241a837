//! jina-clip-v2 text and image encoders, re-implemented in candle.
//!
//! * [`ClipModel`] loads a checkpoint directory (Hugging Face layout) and encodes texts
//!   ([`TextRole::Document`] / [`TextRole::Query`]) and preprocessed images.
//! * [`text::TextModel`] / [`vision::VisionModel`] are the towers; each block is a struct with
//!   `new(cfg, vb)` + `forward`, built from any `candle_nn::VarBuilder` (memory-mapped
//!   safetensors, in-memory tensors, random weights).
//! * [`preprocess`]: image decoding and the reference's resize, crop and normalisation.
//! * [`hub`]: finding (or downloading) the model folder.
//! * [`normalize`] / [`truncate_normalize`] implement the reference's L2 and Matryoshka steps.
//!
//! | module | holds |
//! |---|---|
//! | `config` | the checkpoint's configs ([`ClipConfig`] and its parts) |
//! | `model` | [`ClipModel`]: loading, towers, identity, encoding |
//! | [`text`], [`vision`] | the two towers |
//! | `nn` | shared layers: linear (f32, bf16-packed, int8-packed, Q8), LayerNorm, attention, LoRA merge |
//! | `bf16_gemm`, `cpu_attention` | the AVX512-BF16 matmul and fused attention kernels (crate-private) |
//! | `int8_gemm`, `amx` | the int8 matmul (AMX-INT8 tiles or AVX512-VNNI) and the AMX tile block both products share (crate-private) |
//! | `tokenizer` | [`TextTokenizer`] |
//! | `weight_cache` | the prepared-weights cache file (byte format, verification, atomic writes) |
//! | `word_table` | the text word-embedding table, read per row from the mapped checkpoint |
//!
//! `docs/jina-clip-v2-spec.md` (repository root) describes the reference behaviour reproduced here.

mod amx;
mod bf16_gemm;
mod config;
mod cpu_attention;
mod cpu_layers;
mod cuda_libs;
mod deviation;
mod error;
mod f32_gemm;
pub mod hub;
mod int8_gemm;
mod model;
mod nn;
pub mod preprocess;
pub mod text;
mod tokenizer;
pub mod vision;
mod vmath;
mod weight_cache;
mod weights_hash;
mod word_table;

pub use config::{ClipConfig, PreprocessorConfig, TextConfig, VisionConfig};
pub use cuda_libs::cuda_libraries;
#[cfg(feature = "trap-tests")]
pub use deviation::Deviations;
pub use error::{EncoderError, Result};
pub use model::{
    clip_logits, model_identity, normalize, truncate_normalize, ClipModel, LoadOptions, LoadReport,
    ModelIdentity, TextRole, TowerSource, Towers, WeightCache,
};
pub use nn::{random_var_builder, Adapter};
pub use tokenizer::TextTokenizer;

/// Whether this CPU runs the AVX512-BF16 matmul kernel (what `--precision bf16` uses on a CPU).
pub fn bf16_kernel_available() -> bool {
    bf16_gemm::available()
}

/// The bf16 matmul kernel this process runs: `"AMX"` (tiles, Sapphire Rapids and later),
/// `"AVX512-BF16"`, or `None` (no bf16 kernel: `--precision bf16` is refused on the CPU).
pub fn bf16_kernel() -> Option<&'static str> {
    if bf16_gemm::uses_amx() {
        Some("AMX")
    } else if bf16_gemm::available() {
        Some("AVX512-BF16")
    } else {
        None
    }
}

/// The int8 matmul kernel this process runs for `--precision int8`: `"AMX-INT8"` (tiles,
/// Sapphire Rapids and later), `"AVX512-VNNI"`, `"AVX-VNNI"` or `"AVX2"`, all our packing
/// (int8 per output column and per row), or `"Q8_0"` (candle's quantised matmul, every other
/// CPU).
pub fn int8_kernel() -> &'static str {
    if int8_gemm::uses_amx() {
        "AMX-INT8"
    } else if int8_gemm::uses_vnni() {
        "AVX512-VNNI"
    } else if jsearch_base::cpu::features().avx_vnni {
        "AVX-VNNI"
    } else if int8_gemm::available() {
        "AVX2"
    } else {
        "Q8_0"
    }
}

/// Internals the `gemm` bench measures on their own. Not part of the stable API.
#[doc(hidden)]
pub mod bench {
    pub use crate::nn::Linear;
}
