//! Small building blocks shared by both towers: linear layers, LayerNorm with an f32 policy,
//! LoRA merging, and a precise CPU LayerNorm kernel.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Module, Shape, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::bf16_gemm::{Epilogue, PackedBf16};
use crate::cpu_layers::Packed;
use crate::error::Result;
use crate::int8_gemm::PackedI8;
use crate::weight_cache::{CacheFile, CacheWriter, Layout as CacheLayout, Mapped};

/// How the LoRA adapter of the text tower is treated at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Adapter {
    /// Merge adapter `index` into the base weights (what jina-clip-v2 always does).
    #[default]
    Merged,
    /// Use the base weights only (for comparison; not the reference behaviour).
    Ignored,
}

/// `y = x·Wᵀ + b` over the last dimension, any leading shape; one 2-D GEMM (or, once
/// [quantised](Linear::quantize_q8), one int8 product per block of output rows).
#[derive(Debug, Clone)]
pub struct Linear {
    kernel: Kernel,
    bias: Option<Tensor>,
    out_dim: usize,
}

#[derive(Debug, Clone)]
enum Kernel {
    /// The `[out, in]` weight in the compute dtype.
    Dense(Tensor),
    /// Q8_0 blocks of at most [`Q8_BLOCK_ROWS`] output rows each: one block's weights stay in
    /// cache while every input row passes through it (candle's quantised matmul does not tile).
    Q8(Vec<QMatMul>),
    /// bf16 weight packed for the AVX512-BF16 kernel (f32 activations rounded on the fly).
    Bf16(Arc<PackedBf16>),
    /// int8 weight packed for our int8 kernel, AMX-INT8, AVX512-VNNI or AVX2 (activations
    /// quantised per row on the fly).
    I8(Arc<PackedI8>),
    /// The `[out, in]` f32 weight inside a mapped weight-cache file, multiplied in place by the
    /// same GEMM candle uses (bit-identical to [`Kernel::Dense`] on the same values).
    MappedF32(Arc<MappedWeight>),
}

impl Kernel {
    /// The weight as one of our kernels reads it, where it is packed for one or is a
    /// contiguous f32 weight in this process's memory.
    fn packed(&self) -> Option<Packed<'_>> {
        match self {
            Kernel::Bf16(w) => Some(Packed::Bf16(w)),
            Kernel::I8(w) => Some(Packed::I8(w)),
            Kernel::MappedF32(w) => Some(Packed::F32Mapped(w)),
            Kernel::Dense(w) => crate::cpu_layers::F32Tensor::new(w).map(Packed::F32),
            Kernel::Q8(_) => None,
        }
    }
}

/// An `[n, k]` row-major f32 weight in a mapped weight-cache file.
#[derive(Debug)]
pub(crate) struct MappedWeight {
    values: Mapped<f32>,
    n: usize,
    k: usize,
}

impl MappedWeight {
    /// The `n · k` values.
    pub(crate) fn values(&self) -> &[f32] {
        self.values.as_slice()
    }

    /// Output width.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Input width.
    pub(crate) fn k(&self) -> usize {
        self.k
    }
}

/// Largest attention score tensor of one group of heads (4M floats = 16 MiB): the towers run
/// attention a few heads at a time so that the allocator reuses these buffers instead of
/// faulting in fresh pages for a 108 MB score matrix per layer (512 px images).
const MAX_GROUP_SCORE_ELEMS: usize = 4 << 20;

/// Output rows per quantised block (1024 × 1024 int8 ≈ 1.1 MB: measured fastest on Zen 4).
const Q8_BLOCK_ROWS: usize = 1024;

/// Q8_0 quantises blocks of this many input values (one f16 scale each).
const Q8_GROUP: usize = 32;

impl Linear {
    /// From an `[out, in]` weight and an optional `[out]` bias.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        let out_dim = weight.dims().first().copied().unwrap_or(0);
        Self {
            kernel: Kernel::Dense(weight),
            bias,
            out_dim,
        }
    }

    /// The `[out, in]` weight, unless it was quantised or packed.
    pub fn weight(&self) -> Option<&Tensor> {
        match &self.kernel {
            Kernel::Dense(w) => Some(w),
            Kernel::Q8(_) | Kernel::Bf16(_) | Kernel::I8(_) | Kernel::MappedF32(_) => None,
        }
    }

    /// Replaces the weight by its bf16 packing for the AVX512-BF16 kernel
    /// ([`crate::bf16_gemm`]): products of bf16-rounded activations and weights, accumulated
    /// in f32. Returns `false`, leaving the layer as it is, when the CPU lacks AVX512-BF16, the
    /// weight is not on the CPU, or the layer was already quantised.
    pub fn pack_bf16(&mut self) -> Result<bool> {
        self.unmap()?;
        let w = match &self.kernel {
            Kernel::Bf16(_) => return Ok(true),
            Kernel::Q8(_) | Kernel::I8(_) | Kernel::MappedF32(_) => return Ok(false),
            Kernel::Dense(w) => w,
        };
        if !w.device().is_cpu() || !crate::bf16_gemm::available() {
            return Ok(false);
        }
        let (out, inp) = w.dims2()?;
        let flat = w.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let Some(packed) = PackedBf16::pack(&flat, out, inp) else {
            return Ok(false);
        };
        self.bias = self
            .bias
            .as_ref()
            .map(|b| b.to_dtype(DType::F32))
            .transpose()?;
        self.kernel = Kernel::Bf16(Arc::new(packed));
        Ok(true)
    }

    /// The packed weight (bf16 or int8) and the f32 bias, where this layer runs on one of our
    /// kernels.
    pub(crate) fn packed_dense(&self) -> Result<Option<crate::cpu_layers::Dense<'_>>> {
        let Some(w) = self.kernel.packed() else {
            return Ok(None);
        };
        let bias = match &self.bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        Ok(Some(crate::cpu_layers::Dense { w, bias }))
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Replaces the weight by an int8 quantisation, the activations quantised on the fly: on CPUs
    /// with AVX512-VNNI or AVX2 + FMA our kernel's packing ([`crate::int8_gemm`]: one scale per output column
    /// and per activation row, any input width), elsewhere candle's Q8_0 (blocks of 32 inputs
    /// with one scale, on both sides).
    /// Returns `false`, leaving the layer dense, when the weight is not on the CPU, or for Q8_0
    /// when the input width is not a multiple of 32.
    pub fn quantize_q8(&mut self) -> Result<bool> {
        self.unmap()?;
        let w = match &self.kernel {
            Kernel::Q8(_) | Kernel::I8(_) => return Ok(true),
            Kernel::Bf16(_) | Kernel::MappedF32(_) => return Ok(false),
            Kernel::Dense(w) => w,
        };
        let (out, inp) = w.dims2()?;
        if !w.device().is_cpu() {
            return Ok(false);
        }
        let w = w.to_dtype(DType::F32)?;
        let f32_bias = |b: &Option<Tensor>| b.as_ref().map(|b| b.to_dtype(DType::F32)).transpose();
        if crate::int8_gemm::available() {
            let flat = w.flatten_all()?.to_vec1::<f32>()?;
            if let Some(packed) = PackedI8::quantize(&flat, out, inp) {
                self.bias = f32_bias(&self.bias)?;
                self.kernel = Kernel::I8(Arc::new(packed));
                return Ok(true);
            }
        }
        if !inp.is_multiple_of(Q8_GROUP) {
            return Ok(false);
        }
        let blocks = (0..out)
            .step_by(Q8_BLOCK_ROWS)
            .map(|start| {
                // A fresh copy: `QTensor::quantize` reads the storage from its start, ignoring a
                // view's offset, so `contiguous()` (a no-op on a row block) would be wrong.
                let rows = w
                    .narrow(0, start, Q8_BLOCK_ROWS.min(out - start))?
                    .force_contiguous()?;
                QMatMul::from_qtensor(QTensor::quantize(&rows, GgmlDType::Q8_0)?)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        self.bias = f32_bias(&self.bias)?;
        self.kernel = Kernel::Q8(blocks);
        Ok(true)
    }

    /// A weight mapped from a cache becomes an in-memory tensor (before a conversion).
    fn unmap(&mut self) -> Result<()> {
        if let Kernel::MappedF32(m) = &self.kernel {
            let t = Tensor::from_slice(m.values.as_slice(), (m.n, m.k), &candle_core::Device::Cpu)?;
            self.kernel = Kernel::Dense(t);
        }
        Ok(())
    }

    /// Writes the prepared layer into a weight cache under `name` (`.w`, `.b`, `.q8.<i>`).
    pub(crate) fn save(&self, w: &mut CacheWriter, name: &str) -> Result<()> {
        match &self.kernel {
            Kernel::Dense(t) => w.tensor(&format!("{name}.w"), t)?,
            Kernel::MappedF32(m) => w.f32s(&format!("{name}.w"), &[m.n, m.k], m.values.as_slice()),
            Kernel::Bf16(p) => w.panels(&format!("{name}.bf16"), p.n(), p.k(), p.panels()),
            Kernel::I8(p) => w.i8_panels(&format!("{name}.i8"), p.n(), p.k(), p.bytes()),
            Kernel::Q8(blocks) => {
                for (i, q) in blocks.iter().enumerate() {
                    let QMatMul::QTensor(qt) = q else {
                        return Err(candle_core::Error::Msg(
                            "weight cache: a Q8 layer was dequantised".into(),
                        )
                        .into());
                    };
                    w.q8(
                        &format!("{name}.q8.{i}"),
                        qt.shape().dims(),
                        qt.data()?.into_owned(),
                    );
                }
            }
        }
        if let Some(b) = &self.bias {
            w.tensor(&format!("{name}.b"), b)?;
        }
        Ok(())
    }

    /// The layer `name` of a weight cache in `layout` (f32 and bf16 weights stay in the mapping;
    /// Q8 blocks are copied into candle's quantised tensors).
    pub(crate) fn load(c: &CacheFile, name: &str, layout: CacheLayout) -> Result<Self> {
        let bias = c
            .has(&format!("{name}.b"))
            .then(|| c.tensor(&format!("{name}.b")))
            .transpose()?;
        let dense = |c: &CacheFile| -> Result<Kernel> {
            let shape = c.shape(&format!("{name}.w"))?;
            let [n, k] = shape else {
                return Err(
                    candle_core::Error::Msg(format!("weight cache: {name}.w is not 2-D")).into(),
                );
            };
            Ok(Kernel::MappedF32(Arc::new(MappedWeight {
                n: *n,
                k: *k,
                values: c.f32s(&format!("{name}.w"))?,
            })))
        };
        let kernel = match layout {
            // Layers that the layout leaves dense (e.g. Q8 needs input widths of 32k) are f32.
            _ if c.has(&format!("{name}.w")) => dense(c)?,
            CacheLayout::F32 => dense(c)?,
            CacheLayout::Bf16Panels => {
                let (key, n, k) = packed_entry(c, name, "bf16")?;
                let packed = PackedBf16::from_stored(c.panels(&key)?, n, k)
                    .ok_or_else(|| unusable(&key, "AVX512-BF16"))?;
                Kernel::Bf16(Arc::new(packed))
            }
            CacheLayout::I8Panels => {
                let (key, n, k) = packed_entry(c, name, "i8")?;
                let packed = PackedI8::from_stored(c.i8_panels(&key)?, n, k)
                    .ok_or_else(|| unusable(&key, "AVX512-VNNI or AVX2"))?;
                Kernel::I8(Arc::new(packed))
            }
            CacheLayout::Q8 => {
                let mut blocks = Vec::new();
                while c.has(&format!("{name}.q8.{}", blocks.len())) {
                    let key = format!("{name}.q8.{}", blocks.len());
                    let dims = c.shape(&key)?.to_vec();
                    let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
                        GgmlDType::Q8_0,
                        c.q8_bytes(&key)?,
                        dims,
                        &candle_core::Device::Cpu,
                    )?;
                    blocks.push(QMatMul::from_qtensor(q)?);
                }
                if blocks.is_empty() {
                    return Err(candle_core::Error::Msg(format!(
                        "weight cache: no weight for {name}"
                    ))
                    .into());
                }
                Kernel::Q8(blocks)
            }
        };
        let out_dim = match &kernel {
            Kernel::MappedF32(m) => m.n,
            Kernel::Bf16(p) => p.n(),
            Kernel::I8(p) => p.n(),
            Kernel::Q8(blocks) => blocks
                .iter()
                .map(|q| match q {
                    QMatMul::QTensor(t) => t.shape().dims()[0],
                    _ => 0,
                })
                .sum(),
            Kernel::Dense(t) => t.dims()[0],
        };
        Ok(Self {
            kernel,
            bias,
            out_dim,
        })
    }
}

/// The key of layer `name`'s packed entry with suffix `suffix`, and the `[n, k]` it packs.
fn packed_entry(c: &CacheFile, name: &str, suffix: &str) -> Result<(String, usize, usize)> {
    let key = format!("{name}.{suffix}");
    let &[n, k, _] = c.shape(&key)? else {
        return Err(
            candle_core::Error::Msg(format!("weight cache: {key} has a wrong shape")).into(),
        );
    };
    Ok((key, n, k))
}

/// The error for a packed entry this CPU cannot use (no `feature`) or of a wrong size.
fn unusable(key: &str, feature: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "weight cache: {key} needs {feature} or has a wrong size"
    ))
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim.max(1);
        let x2 = x.reshape((rows, in_dim))?;
        let y = match &self.kernel {
            Kernel::Dense(w) => x2.matmul(&w.t()?)?,
            Kernel::Q8(blocks) => {
                let x2 = x2.to_dtype(DType::F32)?.contiguous()?;
                let ys = blocks
                    .iter()
                    .map(|q| q.forward(&x2))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let y = if ys.len() == 1 {
                    ys.into_iter()
                        .next()
                        .ok_or_else(|| candle_core::Error::Msg("no block".into()))?
                } else {
                    Tensor::cat(&ys, 1)?
                };
                y.to_dtype(x.dtype())?
            }
            // The bias is added as the product is stored (no pass and no tensor of its own).
            Kernel::Bf16(_) | Kernel::I8(_) => {
                let bias = match &self.bias {
                    Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
                    None => None,
                };
                x2.to_dtype(DType::F32)?
                    .apply_op1_no_bwd(&PackedMatMul(self.kernel.clone(), bias))?
                    .to_dtype(x.dtype())?
            }
            // The bias is added after the product, as for `Kernel::Dense`: the same values.
            Kernel::MappedF32(_) => x2
                .to_dtype(DType::F32)?
                .contiguous()?
                .apply_op1_no_bwd(&PackedMatMul(self.kernel.clone(), None))?
                .to_dtype(x.dtype())?,
        };
        let y = match &self.bias {
            Some(b) if !matches!(self.kernel, Kernel::Bf16(_) | Kernel::I8(_)) => {
                y.broadcast_add(b)?
            }
            _ => y,
        };
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = self.out_dim;
        y.reshape(out)
    }
}

/// `x · Wᵀ (+ bias)` through our bf16 or int8 kernel ([`Kernel::Bf16`], [`Kernel::I8`]), or
/// [`crate::f32_gemm`] for a weight in a mapped cache file ([`Kernel::MappedF32`], no bias
/// here: bit-identical to [`Kernel::Dense`]), for a 2-D f32 CPU tensor.
struct PackedMatMul(Kernel, Option<Vec<f32>>);

impl CustomOp1 for PackedMatMul {
    fn name(&self) -> &'static str {
        "packed-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some(w) = self.0.packed() else {
            candle_core::bail!("packed-matmul: the weight is not packed");
        };
        let CpuStorage::F32(src) = s else {
            candle_core::bail!("packed-matmul: f32 input required");
        };
        let Some((o, e)) = l.contiguous_offsets() else {
            candle_core::bail!("packed-matmul: contiguous input required");
        };
        let (m, k) = l.shape().dims2()?;
        if k != w.k() {
            candle_core::bail!("packed-matmul: input width {k}, weight expects {}", w.k());
        }
        if self.1.as_ref().is_some_and(|b| b.len() != w.n()) {
            candle_core::bail!("packed-matmul: bias width, weight gives {}", w.n());
        }
        let mut y = vec![0f32; m * w.n()];
        let epi = Epilogue {
            bias: self.1.as_deref(),
            ..Epilogue::default()
        };
        w.matmul_into(&src[o..e], m, &mut y, epi);
        Ok((CpuStorage::F32(y), Shape::from((m, w.n()))))
    }
}

/// Runs a per-layer conversion ([`Linear::quantize_q8`], [`Linear::pack_bf16`]) over `layers`;
/// returns how many layers it converted.
pub(crate) fn convert_linears<'a>(
    layers: impl IntoIterator<Item = &'a mut Linear>,
    convert: fn(&mut Linear) -> Result<bool>,
) -> Result<usize> {
    let mut n = 0;
    for l in layers {
        n += usize::from(convert(l)?);
    }
    Ok(n)
}

/// Standard LayerNorm (biased variance, eps inside the sqrt), computed in f32 whatever the
/// activation dtype; the result is cast back to the input dtype.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` / `bias` of width `dim` under `vb` (kept in f32).
    pub fn load(vb: &VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        let weight = vb.get(dim, "weight")?.to_dtype(DType::F32)?;
        let bias = vb.get(dim, "bias")?.to_dtype(DType::F32)?;
        Ok(Self { weight, bias, eps })
    }
}

impl LayerNorm {
    /// Writes `weight` / `bias` into a weight cache under `name`.
    pub(crate) fn save(&self, w: &mut CacheWriter, name: &str) -> Result<()> {
        w.tensor(&format!("{name}.weight"), &self.weight)?;
        w.tensor(&format!("{name}.bias"), &self.bias)?;
        Ok(())
    }

    /// The LayerNorm `name` of a weight cache.
    pub(crate) fn load_cached(c: &CacheFile, name: &str, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: c.tensor(&format!("{name}.weight"))?,
            bias: c.tensor(&format!("{name}.bias"))?,
            eps,
        })
    }
}

impl LayerNorm {
    /// The parameters as f32 vectors (for [`crate::cpu_layers`]).
    pub(crate) fn norm(&self) -> Result<crate::cpu_layers::Norm> {
        Ok(crate::cpu_layers::Norm {
            weight: self.weight.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            bias: self.bias.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            eps: self.eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let y = if xf.device().is_cpu() {
            let xf = xf.contiguous()?;
            xf.apply_op3_no_bwd(
                &self.weight,
                &self.bias,
                &PreciseLayerNorm { eps: self.eps },
            )?
        } else {
            let mean = xf.mean_keepdim(D::Minus1)?;
            let xc = xf.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + self.eps)?.sqrt()?)?
                .broadcast_mul(&self.weight)?
                .broadcast_add(&self.bias)?
        };
        y.to_dtype(dtype)
    }
}

/// Two-pass LayerNorm over the last dimension with f64 accumulation (f32 in/out).
struct PreciseLayerNorm {
    eps: f64,
}

impl CustomOp3 for PreciseLayerNorm {
    fn name(&self) -> &'static str {
        "precise-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(src), CpuStorage::F32(w), CpuStorage::F32(b)) = (s1, s2, s3) else {
            candle_core::bail!("precise-layer-norm: f32 only");
        };
        let (Some((o1, e1)), Some((o2, e2)), Some((o3, e3))) = (
            l1.contiguous_offsets(),
            l2.contiguous_offsets(),
            l3.contiguous_offsets(),
        ) else {
            candle_core::bail!("precise-layer-norm: contiguous inputs required");
        };
        let src = &src[o1..e1];
        let w = &w[o2..e2];
        let b = &b[o3..e3];
        let dim = w.len();
        if dim == 0 || b.len() != dim || src.len() % dim != 0 {
            candle_core::bail!("precise-layer-norm: shape mismatch");
        }
        let eps = self.eps;
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(dim)
            .zip(src.par_chunks(dim))
            .for_each(|(d, s)| crate::cpu_layers::layer_norm_row(s, d, w, b, eps));
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

/// Softmax over the last dimension, computed in f32.
pub fn softmax_f32(x: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        candle_nn::ops::softmax_last_dim(x)
    } else {
        candle_nn::ops::softmax_last_dim(&x.to_dtype(DType::F32)?)?.to_dtype(dtype)
    }
}

/// `softmax(q·kᵀ + bias)·v` for `[b, heads, n, d]` tensors (the scale folded into q), the one
/// place both towers call: through [`crate::cpu_attention`] when `fused` (towers packed for the
/// bf16 CPU path), else [`attention_by_head_groups`]. `bias` is a `[b, 1, 1, n]` key mask.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
    fused: bool,
) -> candle_core::Result<Tensor> {
    if fused {
        crate::cpu_attention::attention(q, k, v, bias)
    } else {
        attention_by_head_groups(q, k, v, bias)
    }
}

/// `softmax(q·kᵀ + bias)·v` for `[b, heads, n, d]` queries, keys and values (the scale already
/// folded into q), a few heads at a time so that no score tensor exceeds
/// [`MAX_GROUP_SCORE_ELEMS`]. `bias` broadcasts over the scores (e.g. a `[b, 1, 1, n]` padding
/// mask). Returns `[b, heads, n, d]`.
pub fn attention_by_head_groups(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, nh, n, _) = q.dims4()?;
    let group = (MAX_GROUP_SCORE_ELEMS / (b * n * n).max(1)).clamp(1, nh.max(1));
    let mut ctxs = Vec::with_capacity(nh.div_ceil(group));
    for h0 in (0..nh).step_by(group) {
        let g = group.min(nh - h0);
        // A head slice of a batch is strided: candle's batched matmul wants it compact.
        let (qg, kg, vg) = (
            q.narrow(1, h0, g)?.contiguous()?,
            k.narrow(1, h0, g)?.contiguous()?,
            v.narrow(1, h0, g)?.contiguous()?,
        );
        let scores = qg.matmul(&kg.t()?)?;
        let scores = match bias {
            Some(b) => scores.broadcast_add(b)?,
            None => scores,
        };
        ctxs.push(softmax_f32(&scores)?.matmul(&vg)?);
    }
    if ctxs.len() == 1 {
        Ok(ctxs.remove(0))
    } else {
        Tensor::cat(&ctxs, 1)
    }
}

/// Loads a LoRA-parametrised weight `<prefix>.parametrizations.weight.original` and merges
/// adapter `task` when `adapter` is [`Adapter::Merged`].
///
/// * Linear (`embedding == false`): `W + s · B[task] @ A[task]`, A `[n, r, in]`, B `[n, out, r]`.
/// * Embedding (`embedding == true`): `E + s · A[task] @ B[task]`, A `[n, rows, r]`, B `[n, r, dim]`.
///
/// The merge is computed in f32 and the result is cast to `vb.dtype()`.
#[allow(clippy::too_many_arguments)]
pub fn load_lora_weight(
    vb: &VarBuilder,
    rows: usize,
    cols: usize,
    embedding: bool,
    n_adapters: usize,
    rank: usize,
    task: usize,
    scaling: f64,
    adapter: Adapter,
) -> Result<Tensor> {
    let p = vb.pp("parametrizations").pp("weight");
    let dtype = vb.dtype();
    let w = p.get((rows, cols), "original")?;
    if adapter == Adapter::Ignored {
        return Ok(w);
    }
    let l = p.pp("0");
    let (a_shape, b_shape) = if embedding {
        ((n_adapters, rows, rank), (n_adapters, rank, cols))
    } else {
        ((n_adapters, rank, cols), (n_adapters, rows, rank))
    };
    let a = l.get(a_shape, "lora_A")?.to_dtype(DType::F32)?.get(task)?;
    let b = l.get(b_shape, "lora_B")?.to_dtype(DType::F32)?.get(task)?;
    let delta = if embedding {
        a.matmul(&b)?
    } else {
        b.matmul(&a)?
    };
    let merged = (w.to_dtype(DType::F32)? + (delta * scaling)?)?;
    Ok(merged.to_dtype(dtype)?)
}

/// A VarBuilder backend that makes up weights of whatever shape is asked for: LayerNorm
/// weights 1, biases 0, everything else N(0, `std`). For benchmarks at the real size without
/// the checkpoint (speed and memory depend only on shapes).
#[derive(Debug, Clone)]
pub struct RandomWeights {
    /// Standard deviation of the matrices.
    pub std: f64,
}

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _h: candle_nn::Init,
        dtype: DType,
        dev: &candle_core::Device,
    ) -> candle_core::Result<Tensor> {
        let is_norm = name.contains("norm") || name.contains("_ln") || name.ends_with("ln.weight");
        let t = if is_norm && name.ends_with("weight") {
            Tensor::ones(s, DType::F32, dev)?
        } else if name.ends_with("bias") || name == "logit_scale" {
            Tensor::zeros(s, DType::F32, dev)?
        } else {
            Tensor::randn(0f32, self.std as f32, s, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &candle_core::Device,
    ) -> candle_core::Result<Tensor> {
        candle_core::bail!("RandomWeights cannot make up {name} without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A VarBuilder over random weights (std 0.02).
pub fn random_var_builder(dtype: DType, device: &candle_core::Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomWeights { std: 0.02 }), dtype, device.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn rms(t: &Tensor) -> f32 {
        t.sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Several row blocks (2100 outputs = 1024 + 1024 + 52), a bias and a 3-D input: the int8
    /// product stays within 1.5 % (rms) of the dense one. (Gaussian rows of 256 values have
    /// `max |x|` ≈ 2.9σ: a step of 2.9σ/127 on each side gives about 0.95 % by itself with one
    /// scale per row and column, 0.7 % with Q8_0's groups of 32.)
    #[test]
    fn q8_linear_matches_dense_across_row_blocks() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 256), &dev).unwrap();
        let w = Tensor::randn(0f32, 0.05, (2100, 256), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 2100, &dev).unwrap();
        let dense = Linear::new(w.clone(), Some(b.clone()));
        let mut q = Linear::new(w, Some(b));
        assert!(q.quantize_q8().unwrap());
        assert!(q.weight().is_none());
        let (yd, yq) = (dense.forward(&x).unwrap(), q.forward(&x).unwrap());
        assert_eq!(yq.dims(), &[2, 5, 2100]);
        let rel = rms(&(&yd - &yq).unwrap()) / rms(&yd);
        assert!(rel < 0.015, "relative rms error {rel}");
    }

    /// The f32 layer mapped from a weight cache, at tile edges (rows 1..17, outputs 1..45,
    /// inputs 1..513): bit-identical to the dense layer on the same values and within f32
    /// rounding of an f64 product.
    #[test]
    fn mapped_f32_linear_is_the_dense_one_and_matches_f64() {
        let dir = tempfile::tempdir().unwrap();
        for &(m, n, k) in &[(1, 1, 1), (3, 7, 5), (8, 32, 64), (17, 45, 513), (2, 16, 2)] {
            let w = Tensor::randn(0f32, 0.5, (n, k), &Device::Cpu).unwrap();
            let b = Tensor::randn(0f32, 0.5, n, &Device::Cpu).unwrap();
            let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
            let dense = Linear::new(w.clone(), Some(b.clone()));
            let mut cw = CacheWriter::new();
            dense.save(&mut cw, "l").unwrap();
            let path = dir.path().join(format!("{m}-{n}-{k}.jsw"));
            cw.write(&path, "fp", "t", CacheLayout::F32).unwrap();
            let c = CacheFile::open(&path, "fp", "t", CacheLayout::F32).unwrap();
            let mapped = Linear::load(&c, "l", CacheLayout::F32).unwrap();
            assert!(mapped.weight().is_none(), "mapped, not copied");
            let (yd, ym) = (dense.forward(&x).unwrap(), mapped.forward(&x).unwrap());
            let (yd, ym) = (yd.to_vec2::<f32>().unwrap(), ym.to_vec2::<f32>().unwrap());
            assert_eq!(yd, ym, "m={m} n={n} k={k}: bit-identical");
            let (wv, bv, xv) = (
                w.to_vec2::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
                x.to_vec2::<f32>().unwrap(),
            );
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = bv[j] as f64
                        + (0..k)
                            .map(|t| xv[i][t] as f64 * wv[j][t] as f64)
                            .sum::<f64>();
                    let tol = 1e-5 * (k as f64).sqrt().max(1.0);
                    assert!((exact - ym[i][j] as f64).abs() <= tol, "m={m} n={n} k={k}");
                }
            }
        }
    }

    /// With our int8 kernel (AVX512-VNNI or AVX2) any input width is quantised, within 1.5 % of dense,
    /// and a layer saved to a weight cache and mapped back gives the same outputs bit for bit;
    /// with candle's Q8_0 an input width that is not a multiple of 32 stays dense (and exact).
    #[test]
    fn int8_input_widths_and_cache_round_trip() {
        let w = Tensor::randn(0f32, 0.05, (40, 341), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 0.1, 40, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 341), &Device::Cpu).unwrap();
        let dense = Linear::new(w.clone(), Some(b.clone()));
        let mut l = Linear::new(w, Some(b));
        if !crate::int8_gemm::available() {
            assert!(!l.quantize_q8().unwrap());
            assert!(l.weight().is_some());
            return;
        }
        assert!(l.quantize_q8().unwrap());
        assert!(l.weight().is_none());
        let (yd, yq) = (dense.forward(&x).unwrap(), l.forward(&x).unwrap());
        let rel = rms(&(&yd - &yq).unwrap()) / rms(&yd);
        assert!(rel < 0.015, "relative rms error {rel}");
        let dir = tempfile::tempdir().unwrap();
        let mut cw = CacheWriter::new();
        l.save(&mut cw, "l").unwrap();
        let path = dir.path().join("i8.jsw");
        cw.write(&path, "fp", "t", CacheLayout::I8Panels).unwrap();
        let c = CacheFile::open(&path, "fp", "t", CacheLayout::I8Panels).unwrap();
        let mapped = Linear::load(&c, "l", CacheLayout::I8Panels).unwrap();
        assert!(matches!(mapped.kernel, Kernel::I8(_)), "mapped int8 panels");
        let ym = mapped.forward(&x).unwrap();
        assert_eq!(
            yq.to_vec2::<f32>().unwrap(),
            ym.to_vec2::<f32>().unwrap(),
            "bit-identical"
        );
        // copied out of the mapping (`LoadOptions::resident`): the same values, owned
        let c = c.resident(true);
        let owned = Linear::load(&c, "l", CacheLayout::I8Panels).unwrap();
        let Kernel::I8(p) = &owned.kernel else {
            panic!("resident int8 panels")
        };
        assert!(matches!(p.stored(), crate::weight_cache::Stored::Owned(_)));
        assert_eq!(
            yq.to_vec2::<f32>().unwrap(),
            owned.forward(&x).unwrap().to_vec2::<f32>().unwrap(),
            "bit-identical"
        );
    }

    /// The packed bf16 layer against the dense f32 one on a 3-D input with a bias and widths
    /// off every tile size (2730 inputs as the real vision SwiGLU output has).
    #[test]
    fn bf16_linear_matches_dense() {
        let w = Tensor::randn(0f32, 0.05, (70, 2730), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 0.1, 70, &Device::Cpu).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 11, 2730), &Device::Cpu).unwrap();
        let dense = Linear::new(w.clone(), Some(b.clone()));
        let mut packed = Linear::new(w, Some(b));
        let ok = packed.pack_bf16().unwrap();
        assert_eq!(ok, crate::bf16_gemm::available());
        assert_eq!(packed.weight().is_none(), ok);
        if ok {
            // a packed layer is not quantised on top
            assert!(!packed.quantize_q8().unwrap());
        }
        let (yd, yp) = (dense.forward(&x).unwrap(), packed.forward(&x).unwrap());
        assert_eq!(yp.dims(), &[2, 11, 70]);
        let rel = rms(&(&yd - &yp).unwrap()) / rms(&yd);
        let limit = if ok { 1e-2 } else { 0.0 };
        assert!(rel <= limit, "relative rms error {rel}");
        if ok {
            assert!(rel > 0.0, "bf16 rounding must show");
        }
    }
}
