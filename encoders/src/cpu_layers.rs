//! Whole-layer forward passes of the CPU towers (f32 weights read in place by
//! [`crate::f32_gemm`], or packed by `pack_bf16`, or by `quantize_q8` for our int8 kernel),
//! over flat f32 buffers that one forward allocates once and every layer reuses.
//!
//! The candle path allocates a tensor per op (and the kernel gives freed huge pages back, so
//! each one is faulted in and zeroed again), copies q/k/v into head order and back, and makes
//! a pass of its own for every bias, residual and activation: in a profile of two 512-token
//! passages that was about half the time, with the products at 30 %. Here the products store
//! their output through an [`Epilogue`] (bias, residual, GELU as the blocks leave the tiles),
//! attention reads each head's q/k/v straight from the qkv product's rows (rotating q and k as
//! it packs them) and writes its output rows where the output projection reads them, and
//! LayerNorms run in place, vectorised.
//!
//! The arithmetic is the candle path's: the same products (f32 towers: the same gemm calls),
//! the same f64-accumulated LayerNorm, the same attention kernel (f32 towers: f32 blocks, only
//! the summation order differs from candle's); only the GELU is a rational erf (about 1e-7, see
//! `vmath`) instead of libm's, and bias and residual join a product's first k-block. An f32
//! image ran 1.16x, two 512-token passages 1.36x as fast as on the candle ops (AVX2 Zen 3,
//! `JSEARCH_FUSED_LAYERS=0` for the other). Only the reference architecture runs here (the
//! trap tests' deviations take the candle path).

use std::sync::atomic::{AtomicU8, Ordering};

use rayon::prelude::*;

use crate::bf16_gemm::{Epilogue, PackedBf16, SendPtr};
use crate::cpu_attention::Precision;
use crate::f32_gemm;
use crate::int8_gemm::PackedI8;
use crate::nn::MappedWeight;
use crate::weight_cache::Layout;

/// 0: not read yet, 1: on, 2: off.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Whether packed towers run their layers here (the default) or through candle ops
/// (`JSEARCH_FUSED_LAYERS=0`, to measure one against the other).
pub(crate) fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        0 => {
            let off = std::env::var("JSEARCH_FUSED_LAYERS").is_ok_and(|v| v.trim() == "0");
            ENABLED.store(if off { 2 } else { 1 }, Ordering::Relaxed);
            !off
        }
        v => v == 1,
    }
}

/// Whether a tower runs its layers here: fused layers on, a `fusion` for the tower (see
/// [`fusion`]), computing in f32 and built as the reference (not a trap test's deviation).
/// A layer whose weight none of our kernels reads (Q8_0, f16, on a GPU) still sends the tower
/// to the candle ops (`Linear::packed_dense`).
pub(crate) fn runs(fusion: Option<Precision>, dtype: candle_core::DType, reference: bool) -> bool {
    enabled() && fusion.is_some() && dtype == candle_core::DType::F32 && reference
}

/// How a tower built from a checkpoint in `dtype` on `device` runs its layers before any
/// packing: f32 on the CPU here with f32 attention, anything else on the candle ops.
pub(crate) fn unpacked_fusion(
    dtype: candle_core::DType,
    device: &candle_core::Device,
) -> Option<Precision> {
    (dtype == candle_core::DType::F32 && device.is_cpu()).then_some(Precision::F32)
}

/// How towers whose linear layers are in `layout` run their layers here (the attention's
/// arithmetic), or `None` for the candle ops: f32 weights with f32 attention (on every CPU);
/// bf16 panels, and int8 panels wherever the int8 kernel runs, with the attention on the bf16
/// kernel where there is one (else in f32). Q8_0 takes the candle ops.
pub(crate) fn fusion(layout: Layout) -> Option<Precision> {
    match layout {
        Layout::F32 => Some(Precision::F32),
        Layout::Bf16Panels => Some(Precision::Fast),
        Layout::I8Panels => crate::int8_gemm::available().then_some(Precision::Fast),
        Layout::Q8 => None,
    }
}

/// The `[dims]` tensor of each layer's output, pushed to `hidden` when it collects
/// (`forward_hidden`); for [`text_layers`] and [`vision_blocks`].
pub(crate) fn each_output<'a, S: Into<candle_core::Shape> + Copy + 'a>(
    mut hidden: Option<&'a mut Vec<candle_core::Tensor>>,
    dims: S,
    device: &'a candle_core::Device,
) -> impl FnMut(&[f32]) -> candle_core::Result<()> + 'a {
    move |y| {
        if let Some(h) = hidden.as_deref_mut() {
            h.push(candle_core::Tensor::from_slice(y, dims, device)?);
        }
        Ok(())
    }
}

#[cfg(test)]
fn set_enabled(on: bool) {
    ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// A linear layer's weight as one of our kernels reads it.
#[derive(Clone, Copy)]
pub(crate) enum Packed<'a> {
    /// bf16 panels (AMX tiles or AVX512-BF16).
    Bf16(&'a PackedBf16),
    /// int8 panels (AMX-INT8 tiles, AVX512-VNNI or AVX2).
    I8(&'a PackedI8),
    /// The `[n, k]` f32 weight of an f32 tower, in this process's memory ([`crate::f32_gemm`]).
    F32(F32Tensor<'a>),
    /// The `[n, k]` f32 weight in a mapped weight-cache file ([`crate::f32_gemm`]).
    F32Mapped(&'a MappedWeight),
}

impl Packed<'_> {
    /// `x · Wᵀ` into `y` through `epi` (`x` holds `m` rows).
    pub(crate) fn matmul_into(self, x: &[f32], m: usize, y: &mut [f32], epi: Epilogue<'_>) {
        match self {
            Packed::Bf16(w) => w.matmul_into(x, m, y, epi),
            Packed::I8(w) => w.matmul_into(x, m, y, epi),
            Packed::F32(w) => w.with_values(|v| f32_gemm::matmul_into(v, w.n, w.k, x, m, y, epi)),
            Packed::F32Mapped(w) => f32_gemm::matmul_into(w.values(), w.n(), w.k(), x, m, y, epi),
        }
    }

    /// Output width.
    pub(crate) fn n(self) -> usize {
        match self {
            Packed::Bf16(w) => w.n(),
            Packed::I8(w) => w.n(),
            Packed::F32(w) => w.n,
            Packed::F32Mapped(w) => w.n(),
        }
    }

    /// Input width.
    pub(crate) fn k(self) -> usize {
        match self {
            Packed::Bf16(w) => w.k(),
            Packed::I8(w) => w.k(),
            Packed::F32(w) => w.k,
            Packed::F32Mapped(w) => w.k(),
        }
    }
}

/// A contiguous `[n, k]` f32 tensor on the CPU, read in place.
#[derive(Clone, Copy)]
pub(crate) struct F32Tensor<'a> {
    t: &'a candle_core::Tensor,
    n: usize,
    k: usize,
}

impl<'a> F32Tensor<'a> {
    /// `t` as a weight, where it is a contiguous 2-D f32 tensor on the CPU.
    pub(crate) fn new(t: &'a candle_core::Tensor) -> Option<Self> {
        let ok = t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous();
        match t.dims() {
            &[n, k] if ok => Some(Self { t, n, k }),
            _ => None,
        }
    }

    /// Runs `f` on the `n · k` values.
    ///
    /// # Panics
    /// If the storage is not the CPU f32 storage [`F32Tensor::new`] saw (candle tensors do
    /// not change their storage).
    fn with_values<R>(self, f: impl FnOnce(&[f32]) -> R) -> R {
        let (storage, layout) = self.t.storage_and_layout();
        let (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((o, e))) =
            (&*storage, layout.contiguous_offsets())
        else {
            panic!("f32 weight: not a contiguous f32 CPU tensor any more");
        };
        f(&v[o..e])
    }
}

/// A packed linear layer of a tower and its bias.
pub(crate) struct Dense<'a> {
    pub w: Packed<'a>,
    pub bias: Option<Vec<f32>>,
}

impl Dense<'_> {
    /// `y = [y +] x·Wᵀ + b`, GELU'd when asked; `x` holds `m` rows.
    fn run(&self, x: &[f32], m: usize, y: &mut [f32], accumulate: bool, gelu: bool) {
        self.w.matmul_into(
            x,
            m,
            y,
            Epilogue {
                bias: self.bias.as_deref(),
                accumulate,
                gelu,
            },
        );
    }

    fn out(&self) -> usize {
        self.w.n()
    }
}

/// A LayerNorm's parameters.
pub(crate) struct Norm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub eps: f64,
}

impl Norm {
    /// Normalises every `dim`-wide row of `src` into `dst` (two passes, f64 sums: the
    /// arithmetic of `nn::LayerNorm` on the CPU).
    fn apply(&self, src: &[f32], dst: &mut [f32]) {
        let dim = self.weight.len();
        dst.par_chunks_mut(dim)
            .zip(src.par_chunks(dim))
            .for_each(|(d, s)| layer_norm_row(s, d, &self.weight, &self.bias, self.eps));
    }

    /// [`Norm::apply`] in place.
    fn apply_in_place(&self, x: &mut [f32]) {
        let dim = self.weight.len();
        x.par_chunks_mut(dim)
            .for_each(|r| layer_norm_in_place(r, &self.weight, &self.bias, self.eps));
    }
}

/// One LayerNorm row, `src` into `dst`: two passes, f64 sums (what `nn::LayerNorm` computes on
/// the CPU too).
pub(crate) fn layer_norm_row(src: &[f32], dst: &mut [f32], weight: &[f32], bias: &[f32], eps: f64) {
    norm_row(Row::Into { src, dst }, weight, bias, eps);
}

/// [`layer_norm_row`] in place.
fn layer_norm_in_place(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f64) {
    norm_row(Row::InPlace(x), weight, bias, eps);
}

/// [`norm`] compiled for the widest vectors this CPU has (the arithmetic is the same on each).
fn norm_row(row: Row, weight: &[f32], bias: &[f32], eps: f64) {
    #[cfg(target_arch = "x86_64")]
    {
        let f = jsearch_base::cpu::features();
        if f.avx512 {
            // SAFETY: AVX-512 F is available.
            return unsafe { norm_avx512(row, weight, bias, eps) };
        }
        if f.avx2 {
            // SAFETY: AVX2 is available.
            return unsafe { norm_avx2(row, weight, bias, eps) };
        }
    }
    norm(row, weight, bias, eps)
}

/// A row a LayerNorm reads and writes.
enum Row<'a> {
    Into { src: &'a [f32], dst: &'a mut [f32] },
    InPlace(&'a mut [f32]),
}

/// [`norm`] compiled for AVX-512 (the same arithmetic: no FMA contraction, the same sums).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn norm_avx512(row: Row, weight: &[f32], bias: &[f32], eps: f64) {
    norm(row, weight, bias, eps)
}

/// [`norm`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn norm_avx2(row: Row, weight: &[f32], bias: &[f32], eps: f64) {
    norm(row, weight, bias, eps)
}

/// The LayerNorm of one row: mean and variance summed in f64 over 8 interleaved partial sums
/// (independent chains the compiler turns into vector lanes; one sequential f64 sum was
/// latency-bound and took a sixth of an image), each value `(v − mean) · inv` in f64, then
/// scaled and shifted in f32.
#[inline(always)]
fn norm(row: Row, weight: &[f32], bias: &[f32], eps: f64) {
    let (mean, inv) = stats(
        match &row {
            Row::Into { src, .. } => src,
            Row::InPlace(x) => x,
        },
        eps,
    );
    let f = |v: f32, w: f32, b: f32| ((v as f64 - mean) * inv) as f32 * w + b;
    match row {
        Row::Into { src, dst } => {
            for (((d, &v), &w), &b) in dst.iter_mut().zip(src).zip(weight).zip(bias) {
                *d = f(v, w, b);
            }
        }
        Row::InPlace(x) => {
            for ((v, &w), &b) in x.iter_mut().zip(weight).zip(bias) {
                *v = f(*v, w, b);
            }
        }
    }
}

/// Mean and `1 / sqrt(var + eps)` of a row, summed in f64 (8 partial sums).
#[inline(always)]
fn stats(s: &[f32], eps: f64) -> (f64, f64) {
    let dim = s.len() as f64;
    let mean = partial_sums(s, |v| v as f64) / dim;
    let var = partial_sums(s, |v| {
        let c = v as f64 - mean;
        c * c
    }) / dim;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `Σ g(v)` over `s` in f64: 8 interleaved partial sums, added at the end.
#[inline(always)]
fn partial_sums(s: &[f32], g: impl Fn(f32) -> f64) -> f64 {
    const L: usize = 8;
    let mut acc = [0f64; L];
    let chunks = s.chunks_exact(L);
    let tail: f64 = chunks.remainder().iter().map(|&v| g(v)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += g(v);
        }
    }
    acc.iter().sum::<f64>() + tail
}

pub(crate) use crate::cpu_attention::Rope;

/// `softmax(q·kᵀ + key_bias)·v` per head of a `[b·n, 3·nh·d]` qkv product (q and k rotated
/// by `rope` as the attention reads them), each head written into its columns of the
/// `[b·n, nh·d]` rows of `ctx`.
fn attention(
    qkv: &[f32],
    s: Shape,
    rope: Rope,
    key_bias: Option<&[f32]>,
    precision: Precision,
    ctx: &mut [f32],
) {
    let Shape { b, n, nh, d } = s;
    let w = nh * d;
    assert_eq!(qkv.len(), b * n * 3 * w, "attention: qkv shape");
    assert_eq!(ctx.len(), b * n * w, "attention: context shape");
    let out = SendPtr(ctx.as_mut_ptr());
    (0..b * nh).into_par_iter().for_each(|bh| {
        let out = &out;
        let (bi, hh) = (bh / nh, bh % nh);
        let at = |part: usize| &qkv[bi * n * 3 * w + part * w + hh * d..];
        let head = crate::cpu_attention::Head {
            q: at(0),
            k: at(1),
            v: at(2),
            stride: 3 * w,
            n,
            d,
            bias: key_bias.map(|x| &x[bi * n..(bi + 1) * n]),
            rope: Some(rope),
        };
        // SAFETY: rows bi·n.. of `ctx` (n of them, stride w), columns hh·d..(hh+1)·d: inside
        // `ctx` (its length is checked above) and written by this task alone.
        unsafe {
            crate::cpu_attention::attend_into(head, out.0.add(bi * n * w + hh * d), w, precision)
        };
    });
}

/// Buffers of one forward, reused by every layer.
struct Buffers {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    mid: Vec<f32>,
}

impl Buffers {
    /// For a batch of shape `s` and an MLP of `mid` values a row.
    fn new(s: Shape, mid: usize) -> Self {
        let (m, w) = (s.b * s.n, s.nh * s.d);
        Self {
            qkv: vec![0.0; m * 3 * w],
            ctx: vec![0.0; m * w],
            mid: vec![0.0; m * mid],
        }
    }

    /// Self-attention of the qkv product in `self.qkv`, each head's rows written into
    /// `self.ctx`.
    fn attend(&mut self, s: Shape, rope: Rope, key_bias: Option<&[f32]>, precision: Precision) {
        attention(&self.qkv, s, rope, key_bias, precision, &mut self.ctx);
    }
}

/// One post-LN text layer (XLM-R): `x = LN1(x + attn(x))`, `x = LN2(x + fc2(gelu(fc1(x))))`.
pub(crate) struct TextLayer<'a> {
    pub wqkv: Dense<'a>,
    pub out_proj: Dense<'a>,
    pub norm1: Norm,
    pub fc1: Dense<'a>,
    pub fc2: Dense<'a>,
    pub norm2: Norm,
}

/// Shape of a batch: `b` sequences of `n` tokens, `nh` heads of `d`.
#[derive(Clone, Copy)]
pub(crate) struct Shape {
    pub b: usize,
    pub n: usize,
    pub nh: usize,
    pub d: usize,
}

/// Runs the text layers on `x` (`[b·n, nh·d]`) in place, the attention in `precision`;
/// `key_bias` is `[b, n]`; `each_layer` sees `x` after every layer.
pub(crate) fn text_layers(
    layers: &[TextLayer],
    x: &mut [f32],
    s: Shape,
    rope: Rope,
    key_bias: &[f32],
    precision: Precision,
    mut each_layer: impl FnMut(&[f32]) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    let m = s.b * s.n;
    let inter = layers.first().map_or(0, |l| l.fc1.out());
    let mut buf = Buffers::new(s, inter);
    for l in layers {
        l.wqkv.run(x, m, &mut buf.qkv, false, false);
        buf.attend(s, rope, Some(key_bias), precision);
        l.out_proj.run(&buf.ctx, m, x, true, false);
        l.norm1.apply_in_place(x);
        l.fc1.run(x, m, &mut buf.mid, false, true);
        l.fc2.run(&buf.mid, m, x, true, false);
        l.norm2.apply_in_place(x);
        each_layer(x)?;
    }
    Ok(())
}

/// One pre-LN EVA02 block: `x += proj(inner_ln(attn(LN1(x))))`,
/// `x += w3(ffn_ln(silu(w1·LN2(x)) ⊙ w2·LN2(x)))`.
pub(crate) struct VisionBlock<'a> {
    pub norm1: Norm,
    pub qkv: Dense<'a>,
    pub inner_attn_ln: Norm,
    pub proj: Dense<'a>,
    pub norm2: Norm,
    pub w12: Dense<'a>,
    pub ffn_ln: Norm,
    pub w3: Dense<'a>,
}

/// Runs the vision blocks on `x` (`[b·n, nh·d]`) in place, the attention in `precision`;
/// `each_block` sees `x` after every block.
pub(crate) fn vision_blocks(
    blocks: &[VisionBlock],
    x: &mut [f32],
    s: Shape,
    rope: Rope,
    precision: Precision,
    mut each_block: impl FnMut(&[f32]) -> candle_core::Result<()>,
) -> candle_core::Result<()> {
    let (m, w) = (s.b * s.n, s.nh * s.d);
    let w12 = blocks.first().map_or(0, |l| l.w12.out());
    let hid = w12 / 2;
    let mut buf = Buffers::new(s, w12);
    let mut t = vec![0f32; m * w];
    let mut gated = vec![0f32; m * hid];
    for blk in blocks {
        blk.norm1.apply(x, &mut t);
        blk.qkv.run(&t, m, &mut buf.qkv, false, false);
        buf.attend(s, rope, None, precision);
        blk.inner_attn_ln.apply_in_place(&mut buf.ctx);
        blk.proj.run(&buf.ctx, m, x, true, false);
        blk.norm2.apply(x, &mut t);
        blk.w12.run(&t, m, &mut buf.mid, false, false);
        gated
            .par_chunks_mut(hid)
            .zip(buf.mid.par_chunks(2 * hid))
            .for_each(|(g, ab)| {
                let (a, v) = ab.split_at(hid);
                crate::vmath::silu_mul(a, v, g);
            });
        blk.ffn_ln.apply_in_place(&mut gated);
        blk.w3.run(&gated, m, x, true, false);
        each_block(x)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClipModel, LoadOptions, TextRole};
    use std::path::PathBuf;

    fn datasets() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets")
    }

    fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// The fused layers against the candle ops over the same weights (f32, bf16 packed, then
    /// int8),
    /// on the toy model: texts of different lengths (padding masks) and images, compared on the
    /// embeddings. Only the GELU and the order of the bias and residual additions differ (for
    /// int8 that can move an activation by one quantisation step, hence its wider bound).
    #[test]
    fn fused_layers_match_the_candle_ops() {
        type Convert = fn(&mut ClipModel) -> crate::Result<usize>;
        let kinds: [(&str, Convert, Layout, f32); 3] = [
            ("f32", |_| Ok(1), Layout::F32, 2e-5),
            ("bf16", ClipModel::pack_bf16, Layout::Bf16Panels, 2e-4),
            ("int8", ClipModel::quantize_q8, Layout::I8Panels, 1e-3),
        ];
        for (name, convert, layout, bound) in kinds {
            let mut m = ClipModel::load(
                &datasets().join("toy-shapes/model"),
                &LoadOptions::default(),
            )
            .expect("toy model");
            // A fusion exists only where the layout's kernels run.
            if convert(&mut m).expect("converts") == 0 || fusion(layout).is_none() {
                eprintln!("{name}: the fused layers do not run on this CPU");
                continue;
            }
            let (fused, candle) = embeddings_both_ways(&m);
            let errs: Vec<f32> = fused
                .iter()
                .zip(&candle)
                .map(|(f, c)| max_abs(f, c))
                .collect();
            eprintln!("{name}: fused vs candle ops, max abs per embedding: {errs:?}");
            assert!(errs.iter().all(|&e| e < bound), "{name}: {errs:?}");
            // Two different computations ran (the GELU and the addition order differ).
            assert!(errs.iter().any(|&e| e > 0.0), "{name}: {errs:?}");
        }
    }

    /// Three texts' and two images' embeddings with the fused layers, then with the candle ops.
    fn embeddings_both_ways(m: &ClipModel) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let texts = [
            "roter Kreis",
            "a yellow star on a blue square, small",
            "黑色的鞋",
        ];
        let dir = datasets().join("toy-shapes/corpus/images");
        let images: Vec<_> = ["img_000", "img_001"]
            .iter()
            .map(|n| {
                let p = ["jpg", "png"]
                    .iter()
                    .map(|e| dir.join(format!("{n}.{e}")))
                    .find(|p| p.exists())
                    .expect("toy image");
                m.preprocessor()
                    .preprocess_path(&p, &Default::default())
                    .expect("preprocess")
            })
            .collect();
        let run = |on: bool| {
            set_enabled(on);
            let mut t = m.encode_texts(&texts, TextRole::Query).expect("texts");
            t.extend(m.encode_pixels(&images).expect("images"));
            t
        };
        let fused = run(true);
        let candle = run(false);
        set_enabled(true);
        (fused, candle)
    }
}
