//! `ClipModel`: the jina-clip-v2 checkpoint (tokenizer, text tower, vision tower, preprocessor
//! settings) loaded from a directory in the Hugging Face layout.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use sha2::{Digest, Sha256};

use crate::config::{ClipConfig, PreprocessorConfig};
use crate::error::{EncoderError, Result};
use crate::nn::Adapter;
use crate::preprocess::{PixelValues, Preprocessor};
use crate::text::TextModel;
use crate::tokenizer::TextTokenizer;
use crate::vision::VisionModel;
use crate::weight_cache::{self, CacheError, CacheFile, CacheWriter, Layout};
use crate::word_table::Checkpoint;

/// Token budget (batch × padded length) of one text forward pass.
const TEXT_CHUNK_TOKENS: usize = 8192;
/// Maximum texts per forward pass.
const TEXT_CHUNK_MAX: usize = 64;
/// Maximum images per forward pass.
const IMAGE_CHUNK_MAX: usize = 16;

/// Which towers to load; the other one is never read from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Towers {
    /// Text tower and tokenizer only.
    Text,
    /// Vision tower only.
    Vision,
    /// Both towers.
    #[default]
    Both,
    /// Neither: configs, preprocessor settings and the identity only (e.g. an index run with
    /// nothing to encode).
    None,
}

impl Towers {
    /// Whether the text tower is included.
    pub fn text(self) -> bool {
        matches!(self, Towers::Text | Towers::Both)
    }

    /// Whether the vision tower is included.
    pub fn vision(self) -> bool {
        matches!(self, Towers::Vision | Towers::Both)
    }
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where tensors live (CPU by default).
    pub device: Device,
    /// Compute dtype; weights on disk (f32/f16/bf16) are converted to it. LayerNorm and
    /// softmax always run in f32.
    pub dtype: DType,
    /// Towers to load.
    pub towers: Towers,
    /// Quantise the linear layers to 8 bits (Q8_0: blocks of 32 weights with one scale; the
    /// activations are quantised the same way on the fly). CPU and f32 compute only; the accuracy
    /// against f32 is measured by the `encoders` bench and `tests/loading.rs`.
    pub int8: bool,
    /// Run the linear layers through the AVX512-BF16 kernel (`bf16_gemm`): weights
    /// packed to bf16 at load, activations rounded to bf16 for each product, f32 accumulation;
    /// LayerNorm, softmax, attention and pooling stay f32. CPU and f32 compute only. On a CPU
    /// without AVX512-BF16 the layers stay f32 ([`ClipModel::pack_bf16`] returns 0); the accuracy
    /// against f32 is measured by the `encoders` bench and `tests/loading.rs`.
    pub bf16_matmul: bool,
    /// Where prepared weights are cached (see [`WeightCache`]).
    pub cache: WeightCache,
    /// Copy the packed weights read from the weight cache into this process's memory instead
    /// of using the mapping in place: a one-off copy at load (the int8 text tower on a
    /// Sapphire Rapids: load 0.04 → 0.10–0.12 s) for faster forward passes after it (one query
    /// 18.8 → 16.8 ms there: the mapping's 4 KiB page-cache pages cost TLB misses on every
    /// weight read, the copy lands on huge pages). For long-lived processes (a server, an app); a one-shot
    /// command keeps the mapping.
    pub resident: bool,
    /// Called with one line for each thing a user should hear about the load (a weight cache
    /// built for the first time, rebuilt because it was stale or damaged, or not writable).
    pub notify: Option<fn(&str)>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            towers: Towers::Both,
            int8: false,
            bf16_matmul: false,
            cache: WeightCache::Default,
            resident: false,
            notify: None,
        }
    }
}

/// Where a CPU load keeps the towers' prepared weights (LoRA merged, converted, packed or
/// quantised for the chosen kernel), so that later loads map them instead of preparing them
/// again. GPU loads and non-f32 compute dtypes never use the cache.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WeightCache {
    /// `$JSEARCH_CACHE_DIR/prepared`, else `$XDG_CACHE_HOME/jsearch/prepared`, else
    /// `~/.cache/jsearch/prepared`; off when `JSEARCH_WEIGHT_CACHE=off` or no folder is known.
    #[default]
    Default,
    /// This folder.
    Dir(PathBuf),
    /// Prepare the weights in memory at every load.
    Off,
}

/// How one tower was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TowerSource {
    /// Mapped from a verified weight cache file.
    Cache(PathBuf),
    /// Prepared from the checkpoint and written to a new cache file (`reason`: why no usable
    /// file was there: not built yet, stale, corrupt).
    Built {
        /// The file written.
        path: PathBuf,
        /// Why it had to be built.
        reason: String,
    },
    /// Prepared from the checkpoint; no cache (off, a GPU, a non-f32 dtype, or not writable).
    Checkpoint(String),
}

/// What a load did: per tower, where its weights came from, and how long it took.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// `("text" | "vision", source)` per loaded tower.
    pub towers: Vec<(&'static str, TowerSource)>,
    /// Wall time of the whole load.
    pub elapsed: std::time::Duration,
}

/// Texts are documents (no prefix) or queries (the `retrieval.query` instruction prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextRole {
    /// Indexed text: encoded as is.
    #[default]
    Document,
    /// A search query: prefixed with "Represent the query for retrieving evidence documents: ".
    Query,
}

/// Stable identity of a set of weights.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelIdentity {
    /// Human-readable name (`jina-clip-v2` for the real architecture size).
    pub name: String,
    /// Hex sha256 over the configs, the tokenizer, the safetensors headers + sizes and the
    /// weights' content hashes: any changed weight gives another fingerprint.
    pub fingerprint: String,
    /// The fingerprint of stores written before the weights' content was hashed (configs,
    /// tokenizer, safetensors headers + sizes only): such a store is accepted once and then
    /// records [`ModelIdentity::fingerprint`].
    pub legacy_fingerprint: String,
}

/// The jina-clip-v2 model: tokenizer, text tower, vision tower.
pub struct ClipModel {
    config: ClipConfig,
    preprocessor: Preprocessor,
    tokenizer: Option<TextTokenizer>,
    text: Option<TextModel>,
    vision: Option<VisionModel>,
    logit_scale: Option<f32>,
    identity: ModelIdentity,
    report: LoadReport,
    device: Device,
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel")
            .field("identity", &self.identity)
            .field("text", &self.text.is_some())
            .field("vision", &self.vision.is_some())
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EncoderError + '_ {
    move |source| EncoderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn require(path: PathBuf) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(EncoderError::Io {
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            path,
        })
    }
}

/// The safetensors files of a model directory: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let bytes = std::fs::read(&index).map_err(io_err(&index))?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| EncoderError::Config {
                path: index.clone(),
                message: e.to_string(),
            })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| EncoderError::Config {
                path: index.clone(),
                message: "missing `weight_map`".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        return files.into_iter().map(|f| require(dir.join(f))).collect();
    }
    Err(EncoderError::Io {
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        path: single,
    })
}

/// Reads the JSON header of a safetensors file (for fingerprints and quick validation).
fn safetensors_header(path: &Path) -> Result<(Vec<u8>, u64)> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let size = f.metadata().map_err(io_err(path))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| EncoderError::Weights {
        path: path.to_path_buf(),
        message: "truncated file (no safetensors header)".into(),
    })?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 || n + 8 > size {
        return Err(EncoderError::Weights {
            path: path.to_path_buf(),
            message: format!("corrupt safetensors header length {n} (file size {size})"),
        });
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io_err(path))?;
    if serde_json::from_slice::<serde_json::Value>(&header).is_err() {
        return Err(EncoderError::Weights {
            path: path.to_path_buf(),
            message: "corrupt safetensors header (not JSON)".into(),
        });
    }
    Ok((header, size))
}

/// Name and fingerprint of a model directory: hashes the configs, the tokenizer, the
/// safetensors headers and the weights' content (the content hash is computed once per file
/// version and cached, see `weights_hash`).
pub fn model_identity(dir: &Path, config: &ClipConfig) -> Result<ModelIdentity> {
    let mut h = Sha256::new();
    for name in ["config.json", "preprocessor_config.json", "tokenizer.json"] {
        let p = dir.join(name);
        let bytes = std::fs::read(&p).map_err(io_err(&p))?;
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let files = safetensors_files(dir)?;
    for p in &files {
        let (header, size) = safetensors_header(p)?;
        h.update(b"safetensors");
        h.update(size.to_le_bytes());
        h.update(&header);
    }
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let legacy_fingerprint = hex(&h.clone().finalize());
    for p in &files {
        h.update(b"content");
        h.update(crate::weights_hash::content_hash(p)?.as_bytes());
    }
    Ok(ModelIdentity {
        name: default_name(config),
        fingerprint: hex(&h.finalize()),
        legacy_fingerprint,
    })
}

fn default_name(config: &ClipConfig) -> String {
    let t = &config.text_config;
    let v = &config.vision_config;
    if t.hidden_size == 1024 && t.num_hidden_layers == 24 && v.width == 1024 && v.layers == 24 {
        "jina-clip-v2".into()
    } else {
        format!("jina-clip-v2-arch-{}d", config.embed_dim())
    }
}

impl ClipModel {
    /// Loads a model directory in the Hugging Face layout (`config.json`,
    /// `preprocessor_config.json`, `tokenizer.json`, `model.safetensors`). Weights are
    /// memory-mapped; only the requested towers' tensors are read. The LoRA `retrieval.query`
    /// adapter is merged into the text weights.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let started = std::time::Instant::now();
        if opts.int8 && (opts.dtype != DType::F32 || !opts.device.is_cpu()) {
            return Err(EncoderError::InvalidArgument(
                "int8 quantisation runs on the CPU with f32 compute only".into(),
            ));
        }
        if opts.bf16_matmul && (opts.dtype != DType::F32 || !opts.device.is_cpu() || opts.int8) {
            return Err(EncoderError::InvalidArgument(
                "bf16 matmul runs on the CPU with f32 compute only, and not with int8".into(),
            ));
        }
        let config = ClipConfig::load(&dir.join("config.json"))?;
        let pre_cfg = PreprocessorConfig::load(&dir.join("preprocessor_config.json"))?;
        // The tokenizer (a large JSON for the real model) loads on its own thread while the
        // weights are mapped and verified.
        let (tokenizer, towers) = std::thread::scope(|s| {
            let tok = opts
                .towers
                .text()
                .then(|| s.spawn(|| TextTokenizer::load(&dir.join("tokenizer.json"))));
            let towers = Self::load_towers(dir, &config, opts);
            let tokenizer = tok
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(EncoderError::InvalidArgument(
                            "tokenizer load panicked".into(),
                        ))
                    })
                })
                .transpose();
            (tokenizer, towers)
        });
        let tokenizer = tokenizer?;
        let (identity, text, vision, logit_scale, sources) = towers?;
        if pre_cfg.size != config.vision_config.image_size {
            return Err(EncoderError::InvalidArgument(format!(
                "preprocessor size {} != vision image_size {}",
                pre_cfg.size, config.vision_config.image_size
            )));
        }
        Ok(Self {
            preprocessor: Preprocessor::from_config(&pre_cfg),
            config,
            tokenizer,
            text,
            vision,
            logit_scale,
            identity,
            report: LoadReport {
                towers: sources,
                elapsed: started.elapsed(),
            },
            device: opts.device.clone(),
        })
    }

    /// The identity and the requested towers of `dir`, each from its weight cache when there
    /// is a valid one, else prepared from the checkpoint (and cached when the cache is on).
    #[allow(clippy::type_complexity)]
    fn load_towers(
        dir: &Path,
        config: &ClipConfig,
        opts: &LoadOptions,
    ) -> Result<(
        ModelIdentity,
        Option<TextModel>,
        Option<VisionModel>,
        Option<f32>,
        Vec<(&'static str, TowerSource)>,
    )> {
        let identity = model_identity(dir, config)?;
        let files = safetensors_files(dir)?;
        let weights_err = |message: String| EncoderError::Weights {
            path: files.first().cloned().unwrap_or_else(|| dir.to_path_buf()),
            message,
        };
        let candle_err = |e: EncoderError| match e {
            EncoderError::Candle(c) => weights_err(c.to_string()),
            other => other,
        };
        // SAFETY: the file is mapped read-only; like every mmap user we assume it is not
        // truncated while the model is alive (the same contract as candle / safetensors).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, opts.dtype, &opts.device) }
            .map_err(|e| weights_err(e.to_string()))?;
        let checkpoint = Checkpoint::open(&files)?;
        let layout = if opts.int8 && crate::int8_gemm::available() {
            Layout::I8Panels
        } else if opts.int8 {
            Layout::Q8
        } else if opts.bf16_matmul && crate::bf16_gemm::available() {
            Layout::Bf16Panels
        } else {
            Layout::F32
        };
        let cache_dir = match (
            &opts.cache,
            opts.device.is_cpu() && opts.dtype == DType::F32,
        ) {
            (_, false) => Err("GPU or non-f32 load".to_string()),
            (WeightCache::Off, _) => Err("weight cache off".to_string()),
            (WeightCache::Dir(d), _) => Ok(d.clone()),
            (WeightCache::Default, _) => weight_cache::default_dir()
                .ok_or_else(|| "no cache folder (JSEARCH_WEIGHT_CACHE=off or no $HOME)".into()),
        };
        let fp = &identity.fingerprint;
        let mut sources = Vec::new();
        let text = if opts.towers.text() {
            let table = TextModel::mapped_table(&config.text_config, &checkpoint)?;
            let build = || -> Result<TextModel> {
                let mut t = match &table {
                    Some(table) => {
                        TextModel::new_mapped(&config.text_config, vb.clone(), table.clone())
                    }
                    None => TextModel::new(&config.text_config, vb.clone(), Adapter::Merged),
                }
                .map_err(candle_err)?;
                convert(&mut t, layout, TextModel::quantize_q8, TextModel::pack_bf16)?;
                Ok(t)
            };
            let (t, source) = match (&cache_dir, &table) {
                (Ok(d), Some(table)) => cached_tower(
                    d,
                    fp,
                    "text",
                    layout,
                    |c| TextModel::from_cache(&config.text_config, c, layout, table.clone()),
                    build,
                    TextModel::save,
                    opts,
                )?,
                (Ok(_), None) => (
                    build()?,
                    TowerSource::Checkpoint("word table not in the LoRA layout".into()),
                ),
                (Err(why), _) => (build()?, TowerSource::Checkpoint(why.clone())),
            };
            sources.push(("text", source));
            Some(t)
        } else {
            None
        };
        let vision = if opts.towers.vision() {
            let build = || -> Result<VisionModel> {
                let mut v =
                    VisionModel::new(&config.vision_config, vb.clone()).map_err(candle_err)?;
                convert(
                    &mut v,
                    layout,
                    VisionModel::quantize_q8,
                    VisionModel::pack_bf16,
                )?;
                Ok(v)
            };
            let (v, source) = match &cache_dir {
                Ok(d) => cached_tower(
                    d,
                    fp,
                    "vision",
                    layout,
                    |c| VisionModel::from_cache(&config.vision_config, c, layout),
                    build,
                    VisionModel::save,
                    opts,
                )?,
                Err(why) => (build()?, TowerSource::Checkpoint(why.clone())),
            };
            sources.push(("vision", source));
            Some(v)
        } else {
            None
        };
        let logit_scale = if vb.contains_tensor("logit_scale") {
            let t = vb
                .get_unchecked_dtype("logit_scale", DType::F32)
                .map_err(|e| weights_err(e.to_string()))?;
            Some(t.flatten_all()?.get(0)?.to_scalar::<f32>()?)
        } else {
            None
        };
        Ok((identity, text, vision, logit_scale, sources))
    }

    /// What the load did (per tower: from the weight cache or the checkpoint; its duration).
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// Packs the linear layers of the loaded towers for the AVX512-BF16 kernel (see
    /// [`LoadOptions::bf16_matmul`]); returns how many were packed (0 on a CPU without
    /// AVX512-BF16, where everything stays f32).
    pub fn pack_bf16(&mut self) -> Result<usize> {
        let mut n = 0;
        if let Some(t) = &mut self.text {
            n += t.pack_bf16()?;
        }
        if let Some(v) = &mut self.vision {
            n += v.pack_bf16()?;
        }
        Ok(n)
    }

    /// Quantises the linear layers of the loaded towers to Q8_0 (see [`LoadOptions::int8`]);
    /// returns how many layers were quantised.
    pub fn quantize_q8(&mut self) -> Result<usize> {
        let mut n = 0;
        if let Some(t) = &mut self.text {
            n += t.quantize_q8()?;
        }
        if let Some(v) = &mut self.vision {
            n += v.quantize_q8()?;
        }
        Ok(n)
    }

    /// Builds a model from any VarBuilder (safetensors, in-memory tensors, a random `VarMap`
    /// for benchmarks). `vb` is rooted at the checkpoint root; its dtype is the compute dtype.
    pub fn from_var_builder(
        config: ClipConfig,
        preprocessor: PreprocessorConfig,
        tokenizer: Option<TextTokenizer>,
        vb: VarBuilder,
        towers: Towers,
        identity: ModelIdentity,
    ) -> Result<Self> {
        if preprocessor.size != config.vision_config.image_size {
            return Err(EncoderError::InvalidArgument(format!(
                "preprocessor size {} != vision image_size {}",
                preprocessor.size, config.vision_config.image_size
            )));
        }
        let text = if towers.text() {
            if tokenizer.is_none() {
                return Err(EncoderError::InvalidArgument(
                    "the text tower needs a tokenizer".into(),
                ));
            }
            Some(TextModel::new(
                &config.text_config,
                vb.clone(),
                Adapter::Merged,
            )?)
        } else {
            None
        };
        let vision = if towers.vision() {
            Some(VisionModel::new(&config.vision_config, vb.clone())?)
        } else {
            None
        };
        let logit_scale = if vb.contains_tensor("logit_scale") {
            let t = vb.get_unchecked_dtype("logit_scale", DType::F32)?;
            Some(t.flatten_all()?.get(0)?.to_scalar::<f32>()?)
        } else {
            None
        };
        Ok(Self {
            preprocessor: Preprocessor::from_config(&preprocessor),
            config,
            tokenizer: if towers.text() { tokenizer } else { None },
            text,
            vision,
            logit_scale,
            identity,
            report: LoadReport::default(),
            device: vb.device().clone(),
        })
    }

    /// The device the towers run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Embedding dimension (1024 real, 128 toy, 64 fixture).
    pub fn embed_dim(&self) -> usize {
        self.config.embed_dim()
    }

    /// Input resolution of the vision tower (512 real, 84 toy, 56 fixture).
    pub fn image_size(&self) -> usize {
        self.config.vision_config.image_size
    }

    /// Name + fingerprint of the weights.
    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    /// The image preprocessor configured from `preprocessor_config.json`.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The tokenizer (text tower loaded only).
    pub fn tokenizer(&self) -> Option<&TextTokenizer> {
        self.tokenizer.as_ref()
    }

    /// The text tower, if loaded.
    pub fn text_model(&self) -> Option<&TextModel> {
        self.text.as_ref()
    }

    /// The vision tower, if loaded.
    pub fn vision_model(&self) -> Option<&VisionModel> {
        self.vision.as_ref()
    }

    /// The checkpoint's `logit_scale` parameter (logits multiply cosines by its exp).
    pub fn logit_scale(&self) -> Option<f32> {
        self.logit_scale
    }

    /// Token ids of `texts` as the model sees them (instruction prefix for queries, truncated
    /// to 512 ids, unpadded).
    pub fn tokenize(&self, texts: &[&str], role: TextRole) -> Result<Vec<Vec<u32>>> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or(EncoderError::TowerNotLoaded("text"))?;
        match role {
            TextRole::Document => tok.encode_batch(texts),
            TextRole::Query => {
                let prefix = self.config.text_config.query_instruction();
                let owned: Vec<String> = texts.iter().map(|t| format!("{prefix}{t}")).collect();
                let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
                tok.encode_batch(&refs)
            }
        }
    }

    /// Raw pooled embeddings of already tokenised texts, input order kept. Sequences are
    /// grouped by length and right-padded internally (equal to one-by-one within ~1e-6).
    pub fn encode_ids_raw(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let text = self
            .text
            .as_ref()
            .ok_or(EncoderError::TowerNotLoaded("text"))?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by(|&a, &b| ids[b].len().cmp(&ids[a].len()).then(a.cmp(&b)));
        let mut out = vec![Vec::new(); ids.len()];
        let mut start = 0;
        while start < order.len() {
            let max_len = ids[order[start]].len().max(1);
            let n = (TEXT_CHUNK_TOKENS / max_len).clamp(1, TEXT_CHUNK_MAX);
            let end = (start + n).min(order.len());
            let chunk: Vec<Vec<u32>> = order[start..end].iter().map(|&i| ids[i].clone()).collect();
            let pooled = on_pool(|| text.forward(&chunk))?.to_vec2::<f32>()?;
            for (row, &i) in pooled.into_iter().zip(&order[start..end]) {
                out[i] = row;
            }
            start = end;
        }
        Ok(out)
    }

    /// Raw (un-normalised) pooled text embeddings, one per input, input order kept.
    pub fn encode_texts_raw(&self, texts: &[&str], role: TextRole) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.tokenize(texts, role)?;
        self.encode_ids_raw(&ids)
    }

    /// L2-normalised text embeddings.
    pub fn encode_texts(&self, texts: &[&str], role: TextRole) -> Result<Vec<Vec<f32>>> {
        let mut v = self.encode_texts_raw(texts, role)?;
        v.iter_mut().for_each(|e| normalize(e));
        Ok(v)
    }

    /// Raw (un-normalised) image embeddings (CLS after the final LN) of preprocessed pixels
    /// (`[3, S, S]` CHW f32, normalised, S = [`image_size`](Self::image_size)).
    pub fn encode_pixels_raw(&self, pixels: &[PixelValues]) -> Result<Vec<Vec<f32>>> {
        let vision = self
            .vision
            .as_ref()
            .ok_or(EncoderError::TowerNotLoaded("vision"))?;
        let s = self.image_size();
        for (i, p) in pixels.iter().enumerate() {
            if p.size != s || p.data.len() != 3 * s * s {
                return Err(EncoderError::InvalidArgument(format!(
                    "image {i}: pixel values of size {} ({} floats), the model takes exactly 3x{s}x{s}",
                    p.size,
                    p.data.len()
                )));
            }
        }
        let mut out = Vec::with_capacity(pixels.len());
        for chunk in pixels.chunks(IMAGE_CHUNK_MAX) {
            let refs: Vec<&[f32]> = chunk.iter().map(|p| p.data.as_slice()).collect();
            let t = vision.pixels_tensor(&refs)?;
            out.extend(on_pool(|| vision.forward(&t))?.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// L2-normalised image embeddings.
    pub fn encode_pixels(&self, pixels: &[PixelValues]) -> Result<Vec<Vec<f32>>> {
        let mut v = self.encode_pixels_raw(pixels)?;
        v.iter_mut().for_each(|e| normalize(e));
        Ok(v)
    }
}

/// Runs a forward pass on a worker of rayon's pool: its parallel loops (a few per layer) are
/// then shared with the other workers directly, instead of each one being handed from this
/// thread into the pool and back (a wake-up per loop: one 8-token query took 26.7 ms on int8
/// and 38.8 ms on bf16 from outside the pool, 18.5 and 30.8 ms on a worker; 2-core Sapphire
/// Rapids, 2026-12-07).
fn on_pool<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

// L2 normalisation (`v / max(‖v‖₂, 1e-12)`, spec §3.6) and Matryoshka truncation live in
// jsearch-base, shared with the store.
pub use jsearch_base::{normalize, truncate_normalize};

/// CLIP logits `exp(logit_scale) · cos(text_i, image_j)`, rows = texts (spec §6).
pub fn clip_logits(texts: &[Vec<f32>], images: &[Vec<f32>], logit_scale: f32) -> Vec<Vec<f32>> {
    let scale = (logit_scale as f64).exp();
    let norm = |v: &Vec<f32>| {
        let mut v = v.clone();
        normalize(&mut v);
        v
    };
    let imgs: Vec<Vec<f32>> = images.iter().map(norm).collect();
    texts
        .iter()
        .map(|t| {
            let t = norm(t);
            imgs.iter()
                .map(|i| {
                    let dot: f64 = t.iter().zip(i).map(|(a, b)| *a as f64 * *b as f64).sum();
                    (scale * dot) as f32
                })
                .collect()
        })
        .collect()
}

/// Converts a tower's linear layers for `layout` after a load from the checkpoint (`q8` and
/// `bf16` are the tower's `quantize_q8` and `pack_bf16`).
fn convert<T>(
    tower: &mut T,
    layout: Layout,
    q8: fn(&mut T) -> Result<usize>,
    bf16: fn(&mut T) -> Result<usize>,
) -> Result<()> {
    match layout {
        Layout::F32 => {}
        Layout::Q8 | Layout::I8Panels => {
            q8(tower)?;
        }
        Layout::Bf16Panels => {
            bf16(tower)?;
        }
    }
    Ok(())
}

/// One tower through its weight cache file in `dir`: mapped when the file is valid, else built
/// from the checkpoint and written (atomically) for the next load.
#[allow(clippy::too_many_arguments)]
fn cached_tower<T>(
    dir: &Path,
    fingerprint: &str,
    tower: &'static str,
    layout: Layout,
    from_cache: impl FnOnce(&CacheFile) -> Result<T>,
    build: impl FnOnce() -> Result<T>,
    save: fn(&T, &mut CacheWriter) -> Result<()>,
    opts: &LoadOptions,
) -> Result<(T, TowerSource)> {
    let path = weight_cache::file_path(dir, fingerprint, tower, layout);
    let say = |m: &str| {
        if let Some(f) = opts.notify {
            f(m)
        }
    };
    let opened =
        CacheFile::open(&path, fingerprint, tower, layout).map(|c| c.resident(opts.resident));
    let unusable = match opened {
        Ok(c) => match from_cache(&c) {
            Ok(t) => return Ok((t, TowerSource::Cache(c.path().to_path_buf()))),
            Err(e) => CacheError::Corrupt(e.to_string()),
        },
        Err(e) => e,
    };
    let reason = match unusable {
        CacheError::Missing => {
            say(&format!(
                "preparing the {tower} weights for fast loading (once per model), in {}",
                dir.display()
            ));
            "not built yet".to_string()
        }
        // Unreadable (e.g. the folder is not one): writing it says what is wrong.
        CacheError::Io(e) => format!("unreadable ({e})"),
        e => {
            say(&format!(
                "weight cache {} is {e}: rebuilding it",
                path.display()
            ));
            e.to_string()
        }
    };
    let t = build()?;
    let mut w = CacheWriter::new();
    save(&t, &mut w)?;
    match w.write(&path, fingerprint, tower, layout) {
        Ok(()) => Ok((t, TowerSource::Built { path, reason })),
        Err(e) => {
            let why = format!("weight cache {} not written: {e}", path.display());
            say(&format!(
                "warning: {why} (the next load prepares the weights again)"
            ));
            Ok((t, TowerSource::Checkpoint(why)))
        }
    }
}
