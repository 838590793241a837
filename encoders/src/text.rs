//! Text tower: XLM-RoBERTa ("flash" variant of jina-embeddings-v3) with rotary position
//! embeddings, post-LN blocks, LoRA merged at load, and masked mean pooling (spec §3).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::config::TextConfig;
use crate::cpu_attention::Precision;
use crate::cpu_layers::{each_output, runs, text_layers, Rope, Shape, TextLayer as FusedLayer};
use crate::deviation::Deviations;
use crate::error::{EncoderError, Result};
use crate::nn::{attention, convert_linears, load_lora_weight, Adapter, LayerNorm, Linear};
use crate::weight_cache::{CacheFile, CacheWriter, Layout};
use crate::word_table::{Checkpoint, WordTable};

/// Additive attention bias for padded keys (the reference uses -10000, not -inf).
const PAD_BIAS: f32 = -10000.0;

/// Rotary tables of the text tower: `(cos, sin)`, each `[seq_len, head_dim / 2]` f32, computed
/// like the reference (`inv_freq = 1 / base^(2i/d)` in f32, angle `p * inv_freq` in f32,
/// positions starting at `offset`, which is 0 for the reference).
pub fn text_rope_tables(
    seq_len: usize,
    head_dim: usize,
    base: f64,
    offset: usize,
) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let base = base as f32;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / base.powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(seq_len * half);
    let mut sin = Vec::with_capacity(seq_len * half);
    for p in 0..seq_len {
        let t = (p + offset) as f32;
        for f in &inv_freq {
            let a = t * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

struct TextLayer {
    wqkv: Linear,
    out_proj: Linear,
    norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    norm2: LayerNorm,
}

/// The XLM-R text encoder with the LoRA adapter merged (or ignored, for comparisons).
pub struct TextModel {
    cfg: TextConfig,
    word_embeddings: WordTable,
    token_type_row: Tensor,
    emb_ln: LayerNorm,
    layers: Vec<TextLayer>,
    dtype: DType,
    device: Device,
    dev: Deviations,
    /// How the layers run on the CPU ([`crate::cpu_layers`], attention in this precision), or
    /// `None` for the candle ops: f32 towers on the CPU from the start, `Fast` once packed for
    /// the bf16 or int8 kernels.
    fusion: Option<Precision>,
}

/// Outputs of [`TextModel::forward_hidden`].
pub struct TextHidden {
    /// Hidden states after `emb_ln`, `[B, L, H]` (f32).
    pub emb_ln: Tensor,
    /// Output of every encoder layer (after its `norm2`), `[B, L, H]` each (f32).
    pub layers: Vec<Tensor>,
}

impl TextModel {
    /// Builds the tower from `vb` rooted at the checkpoint root (tensors under
    /// `text_model.transformer.roberta.`). Works with any VarBuilder backend (mmaped safetensors,
    /// an in-memory map, a `VarMap` with random init for benchmarks).
    pub fn new(cfg: &TextConfig, vb: VarBuilder, adapter: Adapter) -> Result<Self> {
        // A struct of switches with the `trap-tests` feature, a unit struct without.
        #[allow(clippy::default_constructed_unit_structs)]
        let reference = Deviations::default();
        Self::build(cfg, vb, adapter, reference, None)
    }

    /// [`Self::new`] with `table` (from [`Self::mapped_table`]: read row by row from the
    /// checkpoint's mapping) instead of the table converted and merged in memory.
    pub(crate) fn new_mapped(cfg: &TextConfig, vb: VarBuilder, table: WordTable) -> Result<Self> {
        #[allow(clippy::default_constructed_unit_structs)]
        let reference = Deviations::default();
        Self::build(cfg, vb, Adapter::Merged, reference, Some(table))
    }

    /// The word table of `checkpoint`, the reference adapter merged per row.
    pub(crate) fn mapped_table(
        cfg: &TextConfig,
        checkpoint: &Checkpoint,
    ) -> Result<Option<WordTable>> {
        let n = cfg.lora_adaptations.len();
        let lora = match cfg.lora_task_index() {
            Some(t) if n > 0 => Some((n, cfg.lora_rank, t, cfg.lora_scaling())),
            _ => None,
        };
        checkpoint.word_table(
            "text_model.transformer.roberta.embeddings.word_embeddings",
            cfg.vocab_size,
            cfg.hidden_size,
            lora,
        )
    }

    /// [`Self::new`] with deliberate deviations from the reference (the trap tests).
    #[cfg(feature = "trap-tests")]
    pub fn new_with_deviations(
        cfg: &TextConfig,
        vb: VarBuilder,
        adapter: Adapter,
        dev: Deviations,
    ) -> Result<Self> {
        Self::build(cfg, vb, adapter, dev, None)
    }

    fn build(
        cfg: &TextConfig,
        vb: VarBuilder,
        adapter: Adapter,
        dev: Deviations,
        table: Option<WordTable>,
    ) -> Result<Self> {
        let vb = vb.pp("text_model").pp("transformer").pp("roberta");
        let h = cfg.hidden_size;
        let n_adapters = cfg.lora_adaptations.len();
        let (task, adapter) = match (cfg.lora_task_index(), adapter) {
            (Some(t), a) if n_adapters > 0 => (t, a),
            _ => (0, Adapter::Ignored),
        };
        let r = cfg.lora_rank;
        let s = cfg.lora_scaling();
        let lora = |vb: &VarBuilder, rows: usize, cols: usize, emb: bool| {
            load_lora_weight(vb, rows, cols, emb, n_adapters, r, task, s, adapter)
        };
        let emb = vb.pp("embeddings");
        let word_embeddings = match table {
            Some(t) => t,
            None => WordTable::Tensor(lora(&emb.pp("word_embeddings"), cfg.vocab_size, h, true)?),
        };
        let token_type = lora(
            &emb.pp("token_type_embeddings"),
            cfg.type_vocab_size,
            h,
            true,
        )?;
        let token_type_row = token_type.get(0)?.contiguous()?;
        let eps = cfg.layer_norm_eps;
        let emb_ln = LayerNorm::load(&vb.pp("emb_ln"), h, eps)?;
        let scale = dev
            .attention_scale()
            .unwrap_or(1.0 / (cfg.head_dim() as f64).sqrt());
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp("encoder").pp("layers").pp(i);
            let mixer = l.pp("mixer");
            let wqkv_vb = mixer.pp("Wqkv");
            let wqkv = lora(&wqkv_vb, 3 * h, h, false)?;
            let bqkv = wqkv_vb.get(3 * h, "bias")?;
            // Fold the attention scale into the q rows (RoPE is linear, so this equals scaling
            // after RoPE up to rounding).
            let (wqkv, bqkv) = fold_q_scale(&wqkv, &bqkv, h, scale)?;
            let out_vb = mixer.pp("out_proj");
            let out_proj = Linear::new(lora(&out_vb, h, h, false)?, Some(out_vb.get(h, "bias")?));
            let mlp = l.pp("mlp");
            let fc1_vb = mlp.pp("fc1");
            let fc1 = Linear::new(
                lora(&fc1_vb, cfg.intermediate_size, h, false)?,
                Some(fc1_vb.get(cfg.intermediate_size, "bias")?),
            );
            let fc2_vb = mlp.pp("fc2");
            let fc2 = Linear::new(
                lora(&fc2_vb, h, cfg.intermediate_size, false)?,
                Some(fc2_vb.get(h, "bias")?),
            );
            layers.push(TextLayer {
                wqkv: Linear::new(wqkv, Some(bqkv)),
                out_proj,
                norm1: LayerNorm::load(&l.pp("norm1"), h, eps)?,
                fc1,
                fc2,
                norm2: LayerNorm::load(&l.pp("norm2"), h, eps)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            word_embeddings,
            token_type_row,
            emb_ln,
            layers,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            dev,
            fusion: crate::cpu_layers::unpacked_fusion(vb.dtype(), vb.device()),
        })
    }

    /// The effective configuration.
    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// Pads `ids` on the right with the pad id to a `[B, L]` u32 tensor.
    fn batch_tensor(&self, ids: &[Vec<u32>]) -> Result<(Tensor, usize)> {
        let max_len = ids.iter().map(Vec::len).max().unwrap_or(0);
        if max_len == 0 {
            return Err(EncoderError::InvalidArgument(
                "empty token sequence (a tokenised text has at least <s> </s>)".into(),
            ));
        }
        let pad = self.cfg.pad_token_id;
        let mut flat = Vec::with_capacity(ids.len() * max_len);
        for seq in ids {
            if let Some(bad) = seq.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
                return Err(EncoderError::InvalidArgument(format!(
                    "token id {bad} out of range (vocab {})",
                    self.cfg.vocab_size
                )));
            }
            flat.extend_from_slice(seq);
            flat.extend(std::iter::repeat_n(pad, max_len - seq.len()));
        }
        Ok((
            Tensor::from_vec(flat, (ids.len(), max_len), &self.device)?,
            max_len,
        ))
    }

    /// Runs the encoder on right-padded token ids; returns the final hidden states `[B, L, H]`
    /// and, when `collect` is set, every intermediate (f32).
    fn run(&self, ids: &[Vec<u32>], collect: bool) -> Result<(Tensor, Tensor, Option<TextHidden>)> {
        let (ids_t, l) = self.batch_tensor(ids)?;
        let b = ids.len();
        let h = self.cfg.hidden_size;
        let nh = self.cfg.num_attention_heads;
        let hd = self.cfg.head_dim();
        let pad = self.cfg.pad_token_id;

        // mask = ids != pad (recomputed from the ids, like the reference; a literal "<pad>"
        // in the text is masked too).
        let mask: Vec<f32> = ids
            .iter()
            .flat_map(|seq| {
                (0..l).map(move |i| match seq.get(i) {
                    Some(&t) if t != pad => 1.0,
                    _ => 0.0,
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (b, l), &self.device)?;
        let bias = ((Tensor::ones((b, l), DType::F32, &self.device)? - &mask)? * PAD_BIAS as f64)?
            .reshape((b, 1, 1, l))?
            .to_dtype(self.dtype)?;

        let mut x = self
            .word_embeddings
            .lookup(&ids_t.flatten_all()?, self.dtype, &self.device)?
            .reshape((b, l, h))?;
        if !self.dev.text_skip_token_type() {
            x = x.broadcast_add(&self.token_type_row)?;
        }
        let mut x = self.emb_ln.forward(&x)?;
        let mut hidden = collect.then(|| TextHidden {
            emb_ln: x.clone(),
            layers: Vec::new(),
        });

        let (cos, sin) = text_rope_tables(
            l,
            hd,
            self.cfg.rotary_emb_base,
            self.dev.text_position_offset(),
        );
        if let Some((layers, precision)) = self.fused_layers()? {
            let key_bias: Vec<f32> = mask
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|m| (1.0 - m) * PAD_BIAS)
                .collect();
            let mut xv = x.flatten_all()?.to_vec1::<f32>()?;
            let shape = Shape { b, n: l, nh, d: hd };
            let rope = Rope::Halves {
                cos: &cos,
                sin: &sin,
            };
            let each = each_output(
                hidden.as_mut().map(|h| &mut h.layers),
                (b, l, h),
                &self.device,
            );
            text_layers(&layers, &mut xv, shape, rope, &key_bias, precision, each)?;
            let x = Tensor::from_vec(xv, (b, l, h), &self.device)?;
            return Ok((x, mask, hidden));
        }
        let cos = Tensor::from_vec(cos, (l, hd / 2), &self.device)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, (l, hd / 2), &self.device)?.to_dtype(self.dtype)?;

        for layer in &self.layers {
            let resid = x.clone();
            let a_in = if self.dev.text_pre_ln() {
                layer.norm1.forward(&x)?
            } else {
                x.clone()
            };
            let qkv = layer.wqkv.forward(&a_in)?.reshape((b, l, 3, nh, hd))?;
            let split = |i: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(2, i, 1)?
                    .squeeze(2)?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let (q, k) = if self.dev.text_rope_interleaved() {
                (
                    candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
                )
            } else {
                (
                    candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
                )
            };
            let ctx = attention(
                &q,
                &k,
                &v,
                Some(&bias),
                self.fusion == Some(Precision::Fast),
            )?;
            let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((b, l, h))?;
            let attn_out = layer.out_proj.forward(&ctx)?;
            if self.dev.text_pre_ln() {
                x = (resid + attn_out)?;
                let m = layer.norm2.forward(&x)?;
                let m = layer.fc1.forward(&m)?;
                let m = if self.dev.text_gelu_tanh() {
                    m.gelu()?
                } else {
                    m.gelu_erf()?
                };
                x = (&x + layer.fc2.forward(&m)?)?;
            } else {
                x = layer.norm1.forward(&(resid + attn_out)?)?;
                let m = layer.fc1.forward(&x)?;
                let m = if self.dev.text_gelu_tanh() {
                    m.gelu()?
                } else {
                    m.gelu_erf()?
                };
                x = layer.norm2.forward(&(&x + layer.fc2.forward(&m)?)?)?;
            }
            if let Some(hs) = hidden.as_mut() {
                hs.layers.push(x.to_dtype(DType::F32)?);
            }
        }
        if let Some(hs) = hidden.as_mut() {
            hs.emb_ln = hs.emb_ln.to_dtype(DType::F32)?;
        }
        Ok((x, mask, hidden))
    }

    /// The layers as [`crate::cpu_layers`] runs them, and the attention's precision: where every
    /// linear layer's weight is one our kernels read (f32, bf16 or int8 panels), the tower is
    /// f32 on the CPU and the architecture is the reference one.
    fn fused_layers(&self) -> Result<Option<(Vec<FusedLayer<'_>>, Precision)>> {
        #[allow(clippy::default_constructed_unit_structs)]
        let reference = self.dev == Deviations::default();
        if !runs(self.fusion, self.dtype, reference) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let (Some(wqkv), Some(out_proj), Some(fc1), Some(fc2)) = (
                l.wqkv.packed_dense()?,
                l.out_proj.packed_dense()?,
                l.fc1.packed_dense()?,
                l.fc2.packed_dense()?,
            ) else {
                return Ok(None);
            };
            out.push(FusedLayer {
                wqkv,
                out_proj,
                norm1: l.norm1.norm()?,
                fc1,
                fc2,
                norm2: l.norm2.norm()?,
            });
        }
        Ok(self.fusion.map(|p| (out, p)))
    }

    /// Masked mean pooling (`Σ mask·x / Σ mask`, mask = ids != pad): `[B, H]` f32.
    fn pool(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let mask = if self.dev.text_pool_all_tokens() {
            Tensor::ones((b, l), DType::F32, x.device())?
        } else {
            mask.clone()
        };
        let x = x.to_dtype(DType::F32)?;
        let summed = mask.unsqueeze(1)?.matmul(&x)?.squeeze(1)?;
        let count = mask.sum_keepdim(1)?;
        Ok(summed.broadcast_div(&count)?)
    }

    /// Every linear layer, in order.
    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.layers
            .iter_mut()
            .flat_map(|l| [&mut l.wqkv, &mut l.out_proj, &mut l.fc1, &mut l.fc2])
    }

    /// Quantises every linear layer's weight to int8 (see [`Linear::quantize_q8`]: our int8
    /// kernel's packing (AMX-INT8, AVX512-VNNI or AVX2), else Q8_0, where a layer whose input
    /// width is not a multiple of 32 stays dense) and, with our packing, runs the layers fused
    /// (`cpu_layers`); returns how many layers were quantised.
    pub fn quantize_q8(&mut self) -> Result<usize> {
        let n = convert_linears(self.linears_mut(), Linear::quantize_q8)?;
        if n > 0 {
            // Q8_0 (no int8 kernel here) takes the candle ops.
            self.fusion = crate::cpu_layers::fusion(Layout::I8Panels);
        }
        Ok(n)
    }

    /// Packs every linear layer for the AVX512-BF16 kernel (see [`Linear::pack_bf16`]) and
    /// switches attention to the fused `cpu_attention` kernel; returns how many layers were packed.
    pub fn pack_bf16(&mut self) -> Result<usize> {
        let n = convert_linears(self.linears_mut(), Linear::pack_bf16)?;
        if n > 0 {
            // Packing succeeds only where the kernel runs.
            self.fusion = Some(Precision::Fast);
        }
        Ok(n)
    }

    /// Writes every prepared weight except the word table (which stays in the checkpoint) into
    /// a weight cache. Only for an f32 CPU tower.
    pub(crate) fn save(&self, w: &mut CacheWriter) -> Result<()> {
        w.tensor("token_type_row", &self.token_type_row)?;
        self.emb_ln.save(w, "emb_ln")?;
        for (i, l) in self.layers.iter().enumerate() {
            l.wqkv.save(w, &format!("layers.{i}.wqkv"))?;
            l.out_proj.save(w, &format!("layers.{i}.out_proj"))?;
            l.norm1.save(w, &format!("layers.{i}.norm1"))?;
            l.fc1.save(w, &format!("layers.{i}.fc1"))?;
            l.fc2.save(w, &format!("layers.{i}.fc2"))?;
            l.norm2.save(w, &format!("layers.{i}.norm2"))?;
        }
        Ok(())
    }

    /// The tower from a weight cache written by [`Self::save`] (f32 on the CPU) and the word
    /// table of the checkpoint.
    pub(crate) fn from_cache(
        cfg: &TextConfig,
        c: &CacheFile,
        layout: Layout,
        word_embeddings: WordTable,
    ) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        let layers = (0..cfg.num_hidden_layers)
            .into_par_iter()
            .map(|i| {
                let n = |part: &str| format!("layers.{i}.{part}");
                Ok(TextLayer {
                    wqkv: Linear::load(c, &n("wqkv"), layout)?,
                    out_proj: Linear::load(c, &n("out_proj"), layout)?,
                    norm1: LayerNorm::load_cached(c, &n("norm1"), eps)?,
                    fc1: Linear::load(c, &n("fc1"), layout)?,
                    fc2: Linear::load(c, &n("fc2"), layout)?,
                    norm2: LayerNorm::load_cached(c, &n("norm2"), eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        #[allow(clippy::default_constructed_unit_structs)]
        let dev = Deviations::default();
        Ok(Self {
            cfg: cfg.clone(),
            word_embeddings,
            token_type_row: c.tensor("token_type_row")?,
            emb_ln: LayerNorm::load_cached(c, "emb_ln", eps)?,
            layers,
            dtype: DType::F32,
            device: Device::Cpu,
            dev,
            fusion: crate::cpu_layers::fusion(layout),
        })
    }

    /// Pooled (un-normalised) embeddings `[B, H]` (f32) of right-padded token-id sequences.
    /// Every sequence must be a complete tokenisation (`<s> … </s>`); padding is added here.
    pub fn forward(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let (x, mask, _) = self.run(ids, false)?;
        self.pool(&x, &mask)
    }

    /// Like [`forward`](Self::forward) but also returns every intermediate hidden state.
    pub fn forward_hidden(&self, ids: &[Vec<u32>]) -> Result<(Tensor, TextHidden)> {
        let (x, mask, hidden) = self.run(ids, true)?;
        let pooled = self.pool(&x, &mask)?;
        let hidden = hidden.ok_or_else(|| EncoderError::InvalidArgument("no hidden".into()))?;
        Ok((pooled, hidden))
    }
}

/// Multiplies the q rows (first `h`) of a fused `[3h, h]` qkv weight and its bias by `scale`.
fn fold_q_scale(w: &Tensor, b: &Tensor, h: usize, scale: f64) -> Result<(Tensor, Tensor)> {
    let dtype = w.dtype();
    let wf = w.to_dtype(DType::F32)?;
    let bf = b.to_dtype(DType::F32)?;
    let wq = (wf.narrow(0, 0, h)? * scale)?;
    let bq = (bf.narrow(0, 0, h)? * scale)?;
    let w = Tensor::cat(&[&wq, &wf.narrow(0, h, 2 * h)?], 0)?.to_dtype(dtype)?;
    let b = Tensor::cat(&[&bq, &bf.narrow(0, h, 2 * h)?], 0)?.to_dtype(dtype)?;
    Ok((w, b))
}
