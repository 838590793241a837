//! Vision tower: EVA02-style ViT (pre-LN, 2D interleaved RoPE with interpolated positions,
//! sub-LNs, SwiGLU), CLS embedding after the final LayerNorm (spec §4).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::config::VisionConfig;
use crate::cpu_attention::Precision;
use crate::cpu_layers::{each_output, runs, vision_blocks, Rope, Shape, VisionBlock as FusedBlock};
use crate::deviation::Deviations;
use crate::error::{EncoderError, Result};
use crate::nn::{attention, convert_linears, LayerNorm, Linear};
use crate::weight_cache::{CacheFile, CacheWriter, Layout};

/// LayerNorm epsilon of every vision LayerNorm.
pub const VISION_LN_EPS: f64 = 1e-6;
/// Base of the vision 2D RoPE.
pub const VISION_ROPE_BASE: f64 = 10000.0;
/// Attention chunks are sized so that one chunk's score tensor stays under this many elements.
const MAX_SCORE_ELEMS: usize = 64 << 20;

/// Parameters of the vision 2D RoPE table (`VisionRotaryEmbeddingFast`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisionRopeParams {
    /// Patches per side.
    pub grid: usize,
    /// Per-head width (the table covers all of it: half rows, half columns).
    pub head_dim: usize,
    /// Pre-training grid (`pt_hw_seq_len`, 16).
    pub pt_hw_seq_len: usize,
    /// Interpolated positions `r / grid * pt_hw_seq_len` (true) or integers `r` (false).
    pub intp_freq: bool,
    /// Frequency base (10000).
    pub base: f64,
}

impl VisionRopeParams {
    /// The reference parameters for `cfg`.
    pub fn from_config(cfg: &VisionConfig) -> Self {
        Self {
            grid: cfg.grid_size(),
            head_dim: cfg.head_width,
            pt_hw_seq_len: cfg.pt_hw_seq_len,
            intp_freq: cfg.intp_freq,
            base: VISION_ROPE_BASE,
        }
    }

    /// Per-pair rotation angles, `[grid², head_dim / 2]` (pair `i` rotates dims `2i, 2i+1`).
    pub fn pair_angles(&self) -> Vec<f32> {
        let axis_dim = self.head_dim / 2;
        let n_freq = axis_dim / 2;
        let base = self.base as f32;
        let theta: Vec<f32> = (0..n_freq)
            .map(|j| 1.0f32 / base.powf((2 * j) as f32 / axis_dim as f32))
            .collect();
        let pos = |r: usize| -> f32 {
            if self.intp_freq {
                // torch: arange(ft) / ft * pt (f32)
                r as f32 / self.grid as f32 * self.pt_hw_seq_len as f32
            } else {
                r as f32
            }
        };
        let mut out = Vec::with_capacity(self.grid * self.grid * axis_dim);
        for r in 0..self.grid {
            for c in 0..self.grid {
                let (tr, tc) = (pos(r), pos(c));
                out.extend(theta.iter().map(|t| tr * t));
                out.extend(theta.iter().map(|t| tc * t));
            }
        }
        out
    }

    /// Full `(cos, sin)` tables `[grid², head_dim]` as stored by the reference
    /// (`freqs_cos` / `freqs_sin`, each pair angle duplicated on two adjacent dims).
    pub fn full_tables(&self) -> (Vec<f32>, Vec<f32>) {
        let angles = self.pair_angles();
        let cos = angles.iter().flat_map(|a| [a.cos(), a.cos()]).collect();
        let sin = angles.iter().flat_map(|a| [a.sin(), a.sin()]).collect();
        (cos, sin)
    }
}

struct VisionBlock {
    norm1: LayerNorm,
    qkv: Linear,
    inner_attn_ln: LayerNorm,
    proj: Linear,
    norm2: LayerNorm,
    w12: Linear,
    ffn_ln: LayerNorm,
    w3: Linear,
}

/// The EVA02 vision encoder.
pub struct VisionModel {
    cfg: VisionConfig,
    patch_w: Tensor,
    patch_b: Tensor,
    cls_pos: Tensor,
    patch_pos: Tensor,
    blocks: Vec<VisionBlock>,
    norm: LayerNorm,
    rope_cos: Tensor,
    rope_sin: Tensor,
    dtype: DType,
    device: Device,
    dev: Deviations,
    /// How the layers run on the CPU ([`crate::cpu_layers`], attention in this precision), or
    /// `None` for the candle ops: f32 towers on the CPU from the start, `Fast` once packed for
    /// the bf16 or int8 kernels.
    fusion: Option<Precision>,
}

/// Intermediate activations of [`VisionModel::forward_hidden`] (f32).
pub struct VisionHidden {
    /// Patch-embedding output (no CLS, no pos_embed), `[B, grid², W]`.
    pub patch_embed: Tensor,
    /// Output of every block, `[B, grid² + 1, W]`.
    pub blocks: Vec<Tensor>,
    /// After the final LayerNorm, `[B, grid² + 1, W]`.
    pub final_norm: Tensor,
}

impl VisionModel {
    /// Builds the tower from `vb` rooted at the checkpoint root (tensors under `vision_model.`).
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        // A struct of switches with the `trap-tests` feature, a unit struct without.
        #[allow(clippy::default_constructed_unit_structs)]
        let reference = Deviations::default();
        Self::build(cfg, vb, reference)
    }

    /// [`Self::new`] with deliberate deviations from the reference (the trap tests).
    #[cfg(feature = "trap-tests")]
    pub fn new_with_deviations(
        cfg: &VisionConfig,
        vb: VarBuilder,
        dev: Deviations,
    ) -> Result<Self> {
        Self::build(cfg, vb, dev)
    }

    fn build(cfg: &VisionConfig, vb: VarBuilder, dev: Deviations) -> Result<Self> {
        let vb = vb.pp("vision_model");
        let w = cfg.width;
        let p = cfg.patch_size;
        let g = cfg.grid_size();
        let n = g * g + 1;
        let hid = cfg.mlp_hidden();
        let hd = cfg.head_width;
        let dtype = vb.dtype();
        let eps = dev.vision_ln_eps().unwrap_or(VISION_LN_EPS);

        let patch_w = vb
            .pp("patch_embed")
            .pp("proj")
            .get((w, 3, p, p), "weight")?
            .reshape((w, 3 * p * p))?;
        let patch_b = vb.pp("patch_embed").pp("proj").get(w, "bias")?;
        let cls = vb.get((1, 1, w), "cls_token")?;
        let pos = vb.get((1, n, w), "pos_embed")?;
        // CLS + its position row is a constant; the patch rows are added after the conv.
        let cls_pos = (cls + pos.narrow(1, 0, 1)?)?.contiguous()?;
        let patch_pos = pos.narrow(1, 1, n - 1)?.contiguous()?;

        let scale = dev.attention_scale().unwrap_or(1.0 / (hd as f64).sqrt());
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let b = vb.pp("blocks").pp(i);
            let a = b.pp("attn");
            // Separate q/k/v matrices, biases on q and v only; fused here into one GEMM with
            // the attention scale folded into the q rows.
            let wq = (a.pp("q_proj").get((w, w), "weight")?.to_dtype(DType::F32)? * scale)?;
            let wk = a.pp("k_proj").get((w, w), "weight")?.to_dtype(DType::F32)?;
            let wv = a.pp("v_proj").get((w, w), "weight")?.to_dtype(DType::F32)?;
            let bq = (a.get(w, "q_bias")?.to_dtype(DType::F32)? * scale)?;
            let bk = Tensor::zeros(w, DType::F32, vb.device())?;
            let bv = a.get(w, "v_bias")?.to_dtype(DType::F32)?;
            let qkv = Linear::new(
                Tensor::cat(&[&wq, &wk, &wv], 0)?.to_dtype(dtype)?,
                Some(Tensor::cat(&[&bq, &bk, &bv], 0)?.to_dtype(dtype)?),
            );
            let m = b.pp("mlp");
            let w1 = m.pp("w1").get((hid, w), "weight")?;
            let b1 = m.pp("w1").get(hid, "bias")?;
            let w2 = m.pp("w2").get((hid, w), "weight")?;
            let b2 = m.pp("w2").get(hid, "bias")?;
            let w12 = Linear::new(
                Tensor::cat(&[&w1, &w2], 0)?,
                Some(Tensor::cat(&[&b1, &b2], 0)?),
            );
            let w3 = Linear::new(
                m.pp("w3").get((w, hid), "weight")?,
                Some(m.pp("w3").get(w, "bias")?),
            );
            blocks.push(VisionBlock {
                norm1: LayerNorm::load(&b.pp("norm1"), w, eps)?,
                qkv,
                inner_attn_ln: LayerNorm::load(&a.pp("inner_attn_ln"), w, eps)?,
                proj: Linear::new(
                    a.pp("proj").get((w, w), "weight")?,
                    Some(a.pp("proj").get(w, "bias")?),
                ),
                norm2: LayerNorm::load(&b.pp("norm2"), w, eps)?,
                w12,
                ffn_ln: LayerNorm::load(&m.pp("ffn_ln"), hid, eps)?,
                w3,
            });
        }
        let norm = LayerNorm::load(&vb.pp("norm"), w, eps)?;

        // RoPE per pair for all tokens: CLS (token 0) gets the identity rotation.
        let mut params = VisionRopeParams::from_config(cfg);
        if let Some(base) = dev.vision_rope_base() {
            params.base = base;
        }
        if dev.vision_rope_integer_positions() {
            params.intp_freq = false;
        }
        let angles = params.pair_angles();
        let half = hd / 2;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        let identity_first = !dev.vision_rotate_from_cls();
        if identity_first {
            cos.extend(std::iter::repeat_n(1f32, half));
            sin.extend(std::iter::repeat_n(0f32, half));
        }
        cos.extend(angles.iter().map(|a| a.cos()));
        sin.extend(angles.iter().map(|a| a.sin()));
        if !identity_first {
            cos.extend(std::iter::repeat_n(1f32, half));
            sin.extend(std::iter::repeat_n(0f32, half));
        }
        let rope_cos = Tensor::from_vec(cos, (n, half), vb.device())?.to_dtype(dtype)?;
        let rope_sin = Tensor::from_vec(sin, (n, half), vb.device())?.to_dtype(dtype)?;

        Ok(Self {
            cfg: cfg.clone(),
            patch_w,
            patch_b,
            cls_pos,
            patch_pos,
            blocks,
            norm,
            rope_cos,
            rope_sin,
            dtype,
            device: vb.device().clone(),
            dev,
            fusion: crate::cpu_layers::unpacked_fusion(vb.dtype(), vb.device()),
        })
    }

    /// Writes every prepared weight into a weight cache. Only for an f32 CPU tower.
    pub(crate) fn save(&self, w: &mut CacheWriter) -> Result<()> {
        for (name, t) in [
            ("patch_w", &self.patch_w),
            ("patch_b", &self.patch_b),
            ("cls_pos", &self.cls_pos),
            ("patch_pos", &self.patch_pos),
            ("rope_cos", &self.rope_cos),
            ("rope_sin", &self.rope_sin),
        ] {
            w.tensor(name, t)?;
        }
        self.norm.save(w, "norm")?;
        for (i, b) in self.blocks.iter().enumerate() {
            let n = |part: &str| format!("blocks.{i}.{part}");
            b.norm1.save(w, &n("norm1"))?;
            b.qkv.save(w, &n("qkv"))?;
            b.inner_attn_ln.save(w, &n("inner_attn_ln"))?;
            b.proj.save(w, &n("proj"))?;
            b.norm2.save(w, &n("norm2"))?;
            b.w12.save(w, &n("w12"))?;
            b.ffn_ln.save(w, &n("ffn_ln"))?;
            b.w3.save(w, &n("w3"))?;
        }
        Ok(())
    }

    /// The tower from a weight cache written by [`Self::save`] (f32 on the CPU).
    pub(crate) fn from_cache(cfg: &VisionConfig, c: &CacheFile, layout: Layout) -> Result<Self> {
        let eps = VISION_LN_EPS;
        let blocks = (0..cfg.layers)
            .into_par_iter()
            .map(|i| {
                let n = |part: &str| format!("blocks.{i}.{part}");
                Ok(VisionBlock {
                    norm1: LayerNorm::load_cached(c, &n("norm1"), eps)?,
                    qkv: Linear::load(c, &n("qkv"), layout)?,
                    inner_attn_ln: LayerNorm::load_cached(c, &n("inner_attn_ln"), eps)?,
                    proj: Linear::load(c, &n("proj"), layout)?,
                    norm2: LayerNorm::load_cached(c, &n("norm2"), eps)?,
                    w12: Linear::load(c, &n("w12"), layout)?,
                    ffn_ln: LayerNorm::load_cached(c, &n("ffn_ln"), eps)?,
                    w3: Linear::load(c, &n("w3"), layout)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        #[allow(clippy::default_constructed_unit_structs)]
        let dev = Deviations::default();
        Ok(Self {
            cfg: cfg.clone(),
            patch_w: c.tensor("patch_w")?,
            patch_b: c.tensor("patch_b")?,
            cls_pos: c.tensor("cls_pos")?,
            patch_pos: c.tensor("patch_pos")?,
            blocks,
            norm: LayerNorm::load_cached(c, "norm", eps)?,
            rope_cos: c.tensor("rope_cos")?,
            rope_sin: c.tensor("rope_sin")?,
            dtype: DType::F32,
            device: Device::Cpu,
            dev,
            fusion: crate::cpu_layers::fusion(layout),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// Builds the `[B, 3, S, S]` input tensor from CHW f32 buffers (each `3·S·S` long).
    pub fn pixels_tensor(&self, images: &[&[f32]]) -> Result<Tensor> {
        let s = self.cfg.image_size;
        let per = 3 * s * s;
        let mut flat = Vec::with_capacity(images.len() * per);
        for (i, img) in images.iter().enumerate() {
            if img.len() != per {
                return Err(EncoderError::InvalidArgument(format!(
                    "image {i}: {} values, expected 3x{s}x{s} = {per} (the vision tower takes exactly {s}x{s} pixels)",
                    img.len()
                )));
            }
            flat.extend_from_slice(img);
        }
        Ok(Tensor::from_vec(
            flat,
            (images.len(), 3, s, s),
            &self.device,
        )?)
    }

    fn attention(&self, blk: &VisionBlock, h: &Tensor) -> Result<Tensor> {
        let (b, n, w) = h.dims3()?;
        let nh = self.cfg.num_heads();
        let hd = self.cfg.head_width;
        let qkv = blk.qkv.forward(h)?.reshape((b, n, 3, nh, hd))?;
        let per_image = nh * n * n;
        let chunk = (MAX_SCORE_ELEMS / per_image.max(1)).clamp(1, b.max(1));
        let mut outs = Vec::new();
        let mut start = 0;
        while start < b {
            let len = chunk.min(b - start);
            let part = qkv.narrow(0, start, len)?;
            let split = |i: usize| -> candle_core::Result<Tensor> {
                part.narrow(2, i, 1)?
                    .squeeze(2)?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let rope = if self.dev.vision_rope_halves() {
                candle_nn::rotary_emb::rope
            } else {
                candle_nn::rotary_emb::rope_i
            };
            let q = rope(&q, &self.rope_cos, &self.rope_sin)?;
            let k = rope(&k, &self.rope_cos, &self.rope_sin)?;
            let ctx = attention(&q, &k, &v, None, self.fusion == Some(Precision::Fast))?;
            let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((len, n, w))?;
            outs.push(ctx);
            start += len;
        }
        let ctx = if outs.len() == 1 {
            outs.remove(0)
        } else {
            Tensor::cat(&outs, 0)?
        };
        let ctx = if self.dev.vision_skip_sublns() {
            ctx
        } else {
            blk.inner_attn_ln.forward(&ctx)?
        };
        Ok(blk.proj.forward(&ctx)?)
    }

    fn mlp(&self, blk: &VisionBlock, h: &Tensor) -> Result<Tensor> {
        let hid = self.cfg.mlp_hidden();
        let ab = blk.w12.forward(h)?;
        let a = ab.narrow(2, 0, hid)?;
        let g = ab.narrow(2, hid, hid)?;
        let a = if self.dev.vision_gelu_gate() {
            a.gelu_erf()?
        } else {
            candle_nn::ops::silu(&a)?
        };
        let m = (a * g)?;
        let m = if self.dev.vision_skip_sublns() {
            m
        } else {
            blk.ffn_ln.forward(&m)?
        };
        Ok(blk.w3.forward(&m)?)
    }

    fn run(&self, pixels: &Tensor, collect: bool) -> Result<(Tensor, Option<VisionHidden>)> {
        let (b, c, s1, s2) = pixels.dims4()?;
        let s = self.cfg.image_size;
        if c != 3 || s1 != s || s2 != s {
            return Err(EncoderError::InvalidArgument(format!(
                "pixel tensor {:?}, expected [B, 3, {s}, {s}] (no resizing or pos-embed interpolation)",
                pixels.dims()
            )));
        }
        let p = self.cfg.patch_size;
        let g = self.cfg.grid_size();
        let w = self.cfg.width;
        // Conv2d with kernel = stride = patch as one GEMM over flattened patches (row-major).
        // A stride-p conv reads only the top-left (g·p)² pixels (504 of 512 for the real model).
        let used = g * p;
        let pixels = if used == s {
            pixels.clone()
        } else {
            pixels.narrow(2, 0, used)?.narrow(3, 0, used)?
        };
        let patches = pixels
            .to_dtype(self.dtype)?
            .reshape((b, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * g * g, 3 * p * p))?;
        let pe = patches
            .matmul(&self.patch_w.t()?)?
            .broadcast_add(&self.patch_b)?
            .reshape((b, g * g, w))?;
        let mut hidden = collect.then(|| VisionHidden {
            patch_embed: pe.clone(),
            blocks: Vec::new(),
            final_norm: pe.clone(),
        });
        let x_patch = pe.broadcast_add(&self.patch_pos)?;
        let cls = self.cls_pos.broadcast_as((b, 1, w))?;
        let mut x = Tensor::cat(&[&cls, &x_patch], 1)?;
        let fused = self.fused_blocks()?;
        if let Some((blocks, precision)) = &fused {
            let n = g * g + 1;
            let cos = self.rope_cos.flatten_all()?.to_vec1::<f32>()?;
            let sin = self.rope_sin.flatten_all()?.to_vec1::<f32>()?;
            let mut xv = x.flatten_all()?.to_vec1::<f32>()?;
            let nh = self.cfg.num_heads();
            let shape = Shape {
                b,
                n,
                nh,
                d: self.cfg.head_width,
            };
            let rope = Rope::Pairs {
                cos: &cos,
                sin: &sin,
            };
            let each = each_output(
                hidden.as_mut().map(|h| &mut h.blocks),
                (b, n, w),
                &self.device,
            );
            vision_blocks(blocks, &mut xv, shape, rope, *precision, each)?;
            x = Tensor::from_vec(xv, (b, n, w), &self.device)?;
        }
        for blk in self.blocks.iter().filter(|_| fused.is_none()) {
            if self.dev.vision_post_ln() {
                let a = self.attention(blk, &x)?;
                x = blk.norm1.forward(&(x + a)?)?;
                let m = self.mlp(blk, &x)?;
                x = blk.norm2.forward(&(x + m)?)?;
            } else {
                let a = self.attention(blk, &blk.norm1.forward(&x)?)?;
                x = (x + a)?;
                let m = self.mlp(blk, &blk.norm2.forward(&x)?)?;
                x = (x + m)?;
            }
            if let Some(hs) = hidden.as_mut() {
                hs.blocks.push(x.to_dtype(DType::F32)?);
            }
        }
        let x = self.norm.forward(&x)?;
        let emb = if self.dev.vision_mean_pool() {
            x.to_dtype(DType::F32)?.mean(1)?
        } else {
            x.narrow(1, 0, 1)?.squeeze(1)?.to_dtype(DType::F32)?
        };
        if let Some(hs) = hidden.as_mut() {
            hs.final_norm = x.to_dtype(DType::F32)?;
            hs.patch_embed = hs.patch_embed.to_dtype(DType::F32)?;
        }
        Ok((emb, hidden))
    }

    /// The blocks as [`crate::cpu_layers`] runs them, and the attention's precision: where
    /// every linear layer's weight is one our kernels read (f32, bf16 or int8 panels), the tower
    /// is f32 on the CPU and the architecture is the reference one.
    fn fused_blocks(&self) -> Result<Option<(Vec<FusedBlock<'_>>, Precision)>> {
        #[allow(clippy::default_constructed_unit_structs)]
        let reference = self.dev == Deviations::default();
        if !runs(self.fusion, self.dtype, reference) {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let (Some(qkv), Some(proj), Some(w12), Some(w3)) = (
                b.qkv.packed_dense()?,
                b.proj.packed_dense()?,
                b.w12.packed_dense()?,
                b.w3.packed_dense()?,
            ) else {
                return Ok(None);
            };
            out.push(FusedBlock {
                norm1: b.norm1.norm()?,
                qkv,
                inner_attn_ln: b.inner_attn_ln.norm()?,
                proj,
                norm2: b.norm2.norm()?,
                w12,
                ffn_ln: b.ffn_ln.norm()?,
                w3,
            });
        }
        Ok(self.fusion.map(|p| (out, p)))
    }

    /// Every linear layer, in order.
    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.blocks
            .iter_mut()
            .flat_map(|b| [&mut b.qkv, &mut b.proj, &mut b.w12, &mut b.w3])
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

    /// Raw (un-normalised) embeddings `[B, W]` (f32) of `[B, 3, S, S]` normalised pixels.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.run(pixels, false)?.0)
    }

    /// Like [`forward`](Self::forward), also returning every intermediate activation.
    pub fn forward_hidden(&self, pixels: &Tensor) -> Result<(Tensor, VisionHidden)> {
        let (emb, hidden) = self.run(pixels, true)?;
        let hidden = hidden.ok_or_else(|| EncoderError::InvalidArgument("no hidden".into()))?;
        Ok((emb, hidden))
    }
}
