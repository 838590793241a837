//! Attention for the CPU bf16 path (`LoadOptions::bf16_matmul`): per (image or text, head), the
//! two products go through the AVX512-BF16 kernel ([`crate::bf16_gemm`]) and the softmax runs
//! in place with a 16-lane exp, so neither candle's f32 matmul nor its scalar-exp softmax over a
//! materialised `[heads, n, n]` score tensor is on the path. Scores and probabilities are rounded
//! to bf16 only as inputs of the products (as PyTorch's bf16 SDPA on the CPU does); max, exp
//! and sums are f32.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::bf16_gemm::PackedBf16;

/// `softmax(q·kᵀ + bias)·v` for f32 CPU tensors `[b, heads, n, d]` (the scale folded into q);
/// `bias`, if any, is `[b, 1, 1, n]` (a key padding mask). Returns `[b, heads, n, d]` (f32).
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (b, _, n, _) = q.dims4()?;
    let bias = match bias {
        Some(t) => {
            if t.dims() != [b, 1, 1, n] {
                candle_core::bail!("cpu attention: bias {:?}, want [{b}, 1, 1, {n}]", t.dims());
            }
            Some(
                t.to_dtype(candle_core::DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            )
        }
        None => None,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &FusedAttention { bias })
}

struct FusedAttention {
    /// `[b, n]` additive key bias.
    bias: Option<Vec<f32>>,
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("cpu attention: {what} must be f32");
    };
    let Some((o, e)) = l.contiguous_offsets() else {
        candle_core::bail!("cpu attention: {what} must be contiguous");
    };
    Ok(&v[o..e])
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "bf16-fused-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, n, d) = lq.shape().dims4()?;
        if lk.shape() != lq.shape() || lv.shape() != lq.shape() {
            candle_core::bail!("cpu attention: q, k, v shapes differ");
        }
        if self.bias.as_ref().is_some_and(|x| x.len() != b * n) {
            candle_core::bail!("cpu attention: bias length");
        }
        let (q, k, v) = (
            slice(sq, lq, "q")?,
            slice(sk, lk, "k")?,
            slice(sv, lv, "v")?,
        );
        if !crate::bf16_gemm::available() {
            candle_core::bail!("cpu attention: no AVX512-BF16");
        }
        let mut out = vec![0f32; b * h * n * d];
        out.par_chunks_mut(n * d).enumerate().for_each(|(bh, o)| {
            let r = bh * n * d..(bh + 1) * n * d;
            let bias = self
                .bias
                .as_ref()
                .map(|x| &x[(bh / h) * n..(bh / h + 1) * n]);
            attend(&q[r.clone()], &k[r.clone()], &v[r], n, d, bias, o);
        });
        Ok((CpuStorage::F32(out), lq.shape().clone()))
    }
}

/// One head: `out = softmax(q·kᵀ + bias)·v` for `[n, d]` row-major `q`, `k`, `v` and `out`
/// (`bias`: `n` key values).
///
/// # Panics
/// If this CPU has no AVX512-BF16 (callers check [`crate::bf16_gemm::available`]) or the
/// slices are not `n·d` long.
pub(crate) fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    d: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
) {
    let packed = |w: &[f32], rows, cols| {
        PackedBf16::pack(w, rows, cols).expect("cpu attention runs where AVX512-BF16 does")
    };
    // scores = q · kᵀ: k's rows are the "weight" rows
    let mut s = packed(k, n, d).matmul_t(q, n);
    s.chunks_exact_mut(n).for_each(|row| softmax_row(row, bias));
    // out = p · v = p · (vᵀ)ᵀ
    PackedBf16::pack_transposed(v, n, d)
        .expect("cpu attention runs where AVX512-BF16 does")
        .matmul_into(&s, n, out, Default::default());
}

/// In-place softmax of one score row after adding `bias`.
fn softmax_row(row: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        row.iter_mut().zip(b).for_each(|(x, &y)| *x += y);
    }
    #[cfg(target_arch = "x86_64")]
    if crate::bf16_gemm::available() {
        // SAFETY: AVX-512 F is part of what `bf16_gemm::available()` checks; the kernel reads and writes
        // only `row` (masked tails).
        unsafe { avx512::softmax(row) };
        return;
    }
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    row.iter_mut().for_each(|x| *x /= sum);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use crate::bf16_gemm::avx512::mask;
    use crate::vmath::avx512::exp16;
    use std::arch::x86_64::*;

    /// In-place softmax of `row`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn softmax(row: &mut [f32]) {
        // SAFETY: the caller upholds this function's `# Safety` contract.
        unsafe {
            let len = row.len();
            let p = row.as_mut_ptr();
            let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut i = 0;
            while i < len {
                let m = mask(len - i);
                let x = _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), m, p.add(i));
                mx = _mm512_max_ps(mx, x);
                i += 16;
            }
            let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
            let mut sum = _mm512_setzero_ps();
            i = 0;
            while i < len {
                let m = mask(len - i);
                let x = _mm512_maskz_loadu_ps(m, p.add(i));
                let e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(x, mx)));
                sum = _mm512_add_ps(sum, e);
                _mm512_mask_storeu_ps(p.add(i), m, e);
                i += 16;
            }
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
            i = 0;
            while i < len {
                let m = mask(len - i);
                let x = _mm512_maskz_loadu_ps(m, p.add(i));
                _mm512_mask_storeu_ps(p.add(i), m, _mm512_mul_ps(x, inv));
                i += 16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn vector_softmax_matches_scalar() {
        for len in [1usize, 5, 16, 17, 33, 1025] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 3.0)
                .collect();
            let mut fast = row.clone();
            softmax_row(&mut fast, None);
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = row.iter().map(|&x| ((x - m) as f64).exp()).collect();
            let s: f64 = e.iter().sum();
            for (a, b) in fast.iter().zip(&e) {
                assert!(
                    (*a as f64 - b / s).abs() <= 1e-6 * (b / s) + 1e-12,
                    "len {len}"
                );
            }
        }
    }

    /// Against candle's f32 attention (scores, softmax with a padding bias, product), with a
    /// sequence length off every tile size; the gap is the bf16 rounding of the products' inputs.
    #[test]
    fn fused_attention_matches_f32() {
        if !crate::bf16_gemm::available() {
            eprintln!("no AVX512-BF16 on this CPU: the fused path is not used");
            return;
        }
        let dev = Device::Cpu;
        let (b, h, n, d) = (2, 3, 37, 64);
        let q = (Tensor::randn(0f32, 1.0, (b, h, n, d), &dev).unwrap() * 0.125).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, h, n, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, h, n, d), &dev).unwrap();
        let mut bias = vec![0f32; b * n];
        bias[n + 30..2 * n].iter_mut().for_each(|x| *x = -10000.0);
        let bias = Tensor::from_vec(bias, (b, 1, 1, n), &dev).unwrap();
        let want = crate::nn::attention_by_head_groups(&q, &k, &v, Some(&bias)).unwrap();
        let got = attention(&q, &k, &v, Some(&bias)).unwrap();
        assert_eq!(got.dims(), want.dims());
        let err = max_abs_diff(&got, &want);
        assert!(err < 2e-2, "max abs error {err}");
        assert!(err > 0.0);
        // no bias
        let want = crate::nn::attention_by_head_groups(&q, &k, &v, None).unwrap();
        let got = attention(&q, &k, &v, None).unwrap();
        let err = max_abs_diff(&got, &want);
        assert!(err < 2e-2, "max abs error {err}");
        assert!(attention(&q, &k, &v, Some(&q)).is_err());
    }
}
