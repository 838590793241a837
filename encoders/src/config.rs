//! Configuration files of a jina-clip-v2 checkpoint (`config.json`, `preprocessor_config.json`).
//!
//! The text tower hyper-parameters are resolved like the upstream `HFTextEncoder`: the
//! `jinaai/jina-embeddings-v3` config (spec §1.2, rotary base **20000**) is the base, and
//! `text_config.hf_model_config_kwargs` is applied on top of it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EncoderError, Result};

/// The `retrieval.query` instruction of jina-clip-v2 (trailing space included, spec §3.1).
pub const RETRIEVAL_QUERY_INSTRUCTION: &str =
    "Represent the query for retrieving evidence documents: ";

/// Name of the only LoRA task of jina-clip-v2.
pub const RETRIEVAL_QUERY_TASK: &str = "retrieval.query";

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(|source| EncoderError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| EncoderError::Config {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

/// Top-level `config.json` of a jina-clip-v2 checkpoint (`JinaCLIPConfig`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipConfig {
    /// Effective text tower configuration.
    pub text_config: TextConfig,
    /// Vision tower configuration.
    pub vision_config: VisionConfig,
    /// `add_projections` (false for jina-clip-v2: projections are Identity).
    #[serde(default)]
    pub add_projections: bool,
    /// `projection_dim` (informational; projections are Identity).
    #[serde(default)]
    pub projection_dim: Option<usize>,
    /// Initial `logit_scale` (the trained value is a checkpoint tensor).
    #[serde(default = "default_logit_scale")]
    pub logit_scale_init_value: f64,
    /// Matryoshka dimensions advertised by the model.
    #[serde(default)]
    pub matryoshka_dimensions: Vec<usize>,
    /// Default truncation dimension (null for the real model).
    #[serde(default)]
    pub truncate_dim: Option<usize>,
    /// `torch_dtype` of the checkpoint, informational.
    #[serde(default)]
    pub torch_dtype: Option<String>,
}

fn default_logit_scale() -> f64 {
    2.6592
}

impl ClipConfig {
    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let value = read_json(path)?;
        Self::from_value(value).map_err(|message| EncoderError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses a `config.json` already in memory (`path`-less errors are plain strings).
    pub fn from_value(mut value: serde_json::Value) -> std::result::Result<Self, String> {
        let obj = value
            .as_object_mut()
            .ok_or_else(|| "top level is not a JSON object".to_string())?;
        let text = obj
            .remove("text_config")
            .ok_or_else(|| "missing `text_config`".to_string())?;
        let text_config = TextConfig::from_value(text)?;
        obj.insert(
            "text_config".into(),
            serde_json::to_value(&text_config).map_err(|e| e.to_string())?,
        );
        let cfg: ClipConfig = serde_json::from_value(value).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.add_projections {
            return Err("add_projections=true is not supported (jina-clip-v2 has none)".into());
        }
        self.text_config.validate()?;
        self.vision_config.validate()?;
        if self.text_config.embed_dim != self.vision_config.embed_dim {
            return Err(format!(
                "text embed_dim {} != vision embed_dim {}",
                self.text_config.embed_dim, self.vision_config.embed_dim
            ));
        }
        Ok(())
    }

    /// Output embedding dimension (both towers; projections are Identity).
    pub fn embed_dim(&self) -> usize {
        self.text_config.embed_dim
    }
}

/// Effective text tower configuration (XLM-RoBERTa with rotary embeddings and LoRA).
///
/// Deserialised from `config.json`'s `text_config`; the architecture fields are the
/// jina-embeddings-v3 defaults overridden by `hf_model_config_kwargs` (spec §1.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextConfig {
    /// Output dimension of the text tower (`text_config.embed_dim`).
    pub embed_dim: usize,
    /// `pooler_type` (only `mean_pooler` is supported).
    #[serde(default = "default_pooler")]
    pub pooler_type: String,
    /// `proj_type` (only null / Identity is supported).
    #[serde(default)]
    pub proj_type: Option<String>,
    /// LoRA task applied to every text (`retrieval.query`).
    #[serde(default = "default_lora_task")]
    pub default_lora_task: Option<String>,
    /// Instruction task applied by default (null: documents get no prefix).
    #[serde(default)]
    pub default_instruction_task: Option<String>,
    /// Vocabulary size (250002 real).
    pub vocab_size: usize,
    /// Hidden width (1024 real).
    pub hidden_size: usize,
    /// Number of encoder layers (24 real).
    pub num_hidden_layers: usize,
    /// Attention heads (16 real).
    pub num_attention_heads: usize,
    /// MLP inner width (4096 real).
    pub intermediate_size: usize,
    /// Activation (`gelu` = exact erf form).
    pub hidden_act: String,
    /// LayerNorm epsilon (1e-5).
    pub layer_norm_eps: f64,
    /// Token type vocabulary (1).
    pub type_vocab_size: usize,
    /// Padding id (1); the attention mask is `ids != pad_token_id`.
    pub pad_token_id: u32,
    /// `<s>` id.
    pub bos_token_id: u32,
    /// `</s>` id.
    pub eos_token_id: u32,
    /// Maximum positions (rotary, informational).
    pub max_position_embeddings: usize,
    /// `rotary` (the only supported kind).
    pub position_embedding_type: String,
    /// Rotary base: **20000** for jina-embeddings-v3 (not the class default 10000).
    pub rotary_emb_base: f64,
    /// LoRA adapters in the checkpoint (index 0 is applied).
    pub lora_adaptations: Vec<String>,
    /// LoRA alpha (4).
    pub lora_alpha: f64,
    /// LoRA rank (4). Scaling is `lora_alpha / lora_rank`.
    pub lora_rank: usize,
    /// Instruction prefixes per task.
    pub task_instructions: BTreeMap<String, String>,
}

fn default_pooler() -> String {
    "mean_pooler".into()
}

fn default_lora_task() -> Option<String> {
    Some(RETRIEVAL_QUERY_TASK.into())
}

/// jina-embeddings-v3 `config.json` values (spec §1.2) that the text tower starts from.
fn jina_embeddings_v3_defaults() -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "vocab_size": 250002,
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "type_vocab_size": 1,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "max_position_embeddings": 8194,
        "position_embedding_type": "rotary",
        "rotary_emb_base": 20000.0,
        "lora_adaptations": [RETRIEVAL_QUERY_TASK],
        "lora_alpha": 1,
        "lora_rank": 4,
        "task_instructions": { RETRIEVAL_QUERY_TASK: RETRIEVAL_QUERY_INSTRUCTION },
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("literal object"),
    }
}

const TEXT_ARCH_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "type_vocab_size",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "max_position_embeddings",
    "position_embedding_type",
    "rotary_emb_base",
    "lora_adaptations",
    "lora_alpha",
    "lora_rank",
    "task_instructions",
];

impl TextConfig {
    /// Resolves a `text_config` JSON object: jina-embeddings-v3 defaults, then
    /// `hf_model_config_kwargs` on top, then the `text_config` keys of the CLIP wrapper.
    pub fn from_value(value: serde_json::Value) -> std::result::Result<Self, String> {
        let serde_json::Value::Object(mut tc) = value else {
            return Err("`text_config` is not an object".into());
        };
        if let Some(name) = tc.get("hf_model_name_or_path").and_then(|v| v.as_str()) {
            if !name.contains("jina-embeddings-v3") && !name.contains("xlm-roberta") {
                return Err(format!(
                    "unsupported text tower hf_model_name_or_path {name:?} (expected jina-embeddings-v3)"
                ));
            }
        }
        let mut merged = jina_embeddings_v3_defaults();
        if let Some(kwargs) = tc.remove("hf_model_config_kwargs") {
            match kwargs {
                serde_json::Value::Object(kw) => {
                    for (k, v) in kw {
                        if TEXT_ARCH_KEYS.contains(&k.as_str()) {
                            merged.insert(k, v);
                        }
                    }
                }
                serde_json::Value::Null => {}
                _ => return Err("`hf_model_config_kwargs` is not an object".into()),
            }
        }
        // A resolved (re-serialised) config carries the architecture keys at top level.
        for key in TEXT_ARCH_KEYS {
            if let Some(v) = tc.remove(*key) {
                merged.insert((*key).to_string(), v);
            }
        }
        for (k, v) in tc {
            merged.insert(k, v);
        }
        if !merged.contains_key("embed_dim") {
            let h = merged.get("hidden_size").cloned().unwrap_or_default();
            merged.insert("embed_dim".into(), h);
        }
        let cfg: TextConfig = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| format!("text_config: {e}"))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err("text_config: hidden_size / num_attention_heads must be > 0".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "text_config: hidden_size {} not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err("text_config: head dim must be even for rotary".into());
        }
        if self.position_embedding_type != "rotary" {
            return Err(format!(
                "text_config: position_embedding_type {:?} unsupported (rotary expected)",
                self.position_embedding_type
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "text_config: hidden_act {:?} unsupported (gelu expected)",
                self.hidden_act
            ));
        }
        if self.pooler_type != "mean_pooler" {
            return Err(format!(
                "text_config: pooler_type {:?} unsupported (mean_pooler expected)",
                self.pooler_type
            ));
        }
        if self.proj_type.is_some() {
            return Err("text_config: proj_type must be null (Identity)".into());
        }
        if self.embed_dim != self.hidden_size {
            return Err(format!(
                "text_config: embed_dim {} != hidden_size {} needs a projection (unsupported)",
                self.embed_dim, self.hidden_size
            ));
        }
        if self.type_vocab_size == 0 {
            return Err("text_config: type_vocab_size must be >= 1".into());
        }
        if self.lora_rank == 0 {
            return Err("text_config: lora_rank must be > 0".into());
        }
        Ok(())
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// LoRA scaling `lora_alpha / lora_rank` (1.0 for jina-clip-v2).
    pub fn lora_scaling(&self) -> f64 {
        self.lora_alpha / self.lora_rank as f64
    }

    /// Index of the LoRA adapter used for every text (the default LoRA task).
    pub fn lora_task_index(&self) -> Option<usize> {
        let task = self.default_lora_task.as_deref()?;
        self.lora_adaptations.iter().position(|t| t == task)
    }

    /// Instruction prefix of the query role (`retrieval.query`).
    pub fn query_instruction(&self) -> &str {
        self.task_instructions
            .get(RETRIEVAL_QUERY_TASK)
            .map(String::as_str)
            .unwrap_or(RETRIEVAL_QUERY_INSTRUCTION)
    }
}

/// Vision tower configuration (EVA02, `vision_config`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Output dimension (= width; head is Identity).
    pub embed_dim: usize,
    /// Transformer width (1024 real).
    pub width: usize,
    /// Number of blocks (24 real).
    pub layers: usize,
    /// Per-head width (64 → 16 heads).
    pub head_width: usize,
    /// MLP ratio; SwiGLU hidden = `int(width * mlp_ratio)`.
    pub mlp_ratio: f64,
    /// Input resolution (512 real).
    pub image_size: usize,
    /// Patch size (14).
    pub patch_size: usize,
    /// Pre-training grid used to rescale RoPE positions (16).
    #[serde(default = "default_pt_hw")]
    pub pt_hw_seq_len: usize,
    /// RoPE position interpolation (`t = r * pt_hw_seq_len / grid`).
    #[serde(default = "default_true")]
    pub intp_freq: bool,
    /// 2D RoPE on q/k (must be true).
    #[serde(default = "default_true")]
    pub rope_embeddings: bool,
    /// SwiGLU MLP (must be true).
    #[serde(default = "default_true")]
    pub naive_swiglu: bool,
    /// Sub-LayerNorms (must be true).
    #[serde(default = "default_true")]
    pub subln: bool,
    /// q/v biases (must be true).
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    /// Post-norm blocks (must be false).
    #[serde(default)]
    pub post_norm: bool,
    /// Layer scale (must be null).
    #[serde(default)]
    pub ls_init_value: Option<f64>,
    /// Projection type (must be null).
    #[serde(default)]
    pub proj_type: Option<String>,
}

fn default_pt_hw() -> usize {
    16
}

fn default_true() -> bool {
    true
}

impl VisionConfig {
    fn validate(&self) -> std::result::Result<(), String> {
        let mut bad = Vec::new();
        if !self.rope_embeddings {
            bad.push("rope_embeddings=false");
        }
        if !self.naive_swiglu {
            bad.push("naive_swiglu=false");
        }
        if !self.subln {
            bad.push("subln=false");
        }
        if !self.qkv_bias {
            bad.push("qkv_bias=false");
        }
        if self.post_norm {
            bad.push("post_norm=true");
        }
        if self.ls_init_value.is_some() {
            bad.push("ls_init_value set");
        }
        if self.proj_type.is_some() {
            bad.push("proj_type set");
        }
        if !bad.is_empty() {
            return Err(format!(
                "vision_config: unsupported variant ({})",
                bad.join(", ")
            ));
        }
        if self.head_width == 0 || !self.width.is_multiple_of(self.head_width) {
            return Err(format!(
                "vision_config: width {} not divisible by head_width {}",
                self.width, self.head_width
            ));
        }
        if !self.head_width.is_multiple_of(4) {
            return Err("vision_config: head_width must be a multiple of 4 (2D RoPE)".into());
        }
        // 512 is not a multiple of 14: like the reference's stride-14 conv, the grid is
        // floor(512 / 14) = 36 and the last 8 rows/columns of pixels are never read.
        if self.patch_size == 0 || self.image_size < self.patch_size {
            return Err(format!(
                "vision_config: image_size {} smaller than patch_size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.embed_dim != self.width {
            return Err(format!(
                "vision_config: embed_dim {} != width {} needs a head (unsupported)",
                self.embed_dim, self.width
            ));
        }
        Ok(())
    }

    /// Number of attention heads.
    pub fn num_heads(&self) -> usize {
        self.width / self.head_width
    }

    /// Patches per side, `floor(image_size / patch_size)` (36 real).
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// SwiGLU hidden width, `int(width * mlp_ratio)` (2730 real).
    pub fn mlp_hidden(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
}

/// `preprocessor_config.json` (`JinaCLIPImageProcessor`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreprocessorConfig {
    /// Output side length (512 real).
    pub size: usize,
    /// Per-channel mean (OpenAI CLIP constants).
    pub mean: [f32; 3],
    /// Per-channel std.
    pub std: [f32; 3],
    /// Resampling filter (`bicubic`).
    #[serde(default = "default_interp")]
    pub interpolation: String,
    /// `shortest` (the only supported mode).
    #[serde(default = "default_resize_mode")]
    pub resize_mode: String,
    /// Fill colour (only used by resize_mode `longest`).
    #[serde(default)]
    pub fill_color: u8,
}

fn default_interp() -> String {
    "bicubic".into()
}

fn default_resize_mode() -> String {
    "shortest".into()
}

impl PreprocessorConfig {
    /// Reads and validates `preprocessor_config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let value = read_json(path)?;
        let err = |message: String| EncoderError::Config {
            path: path.to_path_buf(),
            message,
        };
        let cfg: PreprocessorConfig =
            serde_json::from_value(value).map_err(|e| err(e.to_string()))?;
        if cfg.interpolation != "bicubic" {
            return Err(err(format!(
                "interpolation {:?} unsupported (bicubic expected)",
                cfg.interpolation
            )));
        }
        if cfg.resize_mode != "shortest" {
            return Err(err(format!(
                "resize_mode {:?} unsupported (shortest expected)",
                cfg.resize_mode
            )));
        }
        if cfg.size == 0 || cfg.std.iter().any(|s| *s <= 0.0) {
            return Err(err("size must be > 0 and std > 0".into()));
        }
        Ok(cfg)
    }
}

impl Default for PreprocessorConfig {
    /// The real jina-clip-v2 values (spec §1.4).
    // The constants are written as in preprocessor_config.json (parsed to the same f32).
    #[allow(clippy::excessive_precision)]
    fn default() -> Self {
        Self {
            size: 512,
            mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            std: [0.268_629_54, 0.261_302_58, 0.275_777_1],
            interpolation: default_interp(),
            resize_mode: default_resize_mode(),
            fill_color: 0,
        }
    }
}
