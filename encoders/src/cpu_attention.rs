//! Attention of the fused CPU layers ([`crate::cpu_layers`]), a block of query rows at a time,
//! so that no `[heads, n, n]` score tensor is ever materialised. In [`Precision::Fast`] (the
//! bf16 and int8 towers) per (image or text, head) the two products go through the AVX512-BF16
//! kernel ([`crate::bf16_gemm`]) and the softmax runs in place with a 16-lane exp: scores and
//! probabilities are rounded to bf16 only as inputs of the products (as PyTorch's bf16 SDPA on
//! the CPU does); max, exp and sums are f32. In [`Precision::F32`] (the f32 towers), and on CPUs
//! without AVX512-BF16, the same blocks run in f32 ([`exact`]).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

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

/// The arithmetic of an attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precision {
    /// f32 products and softmax (the f32 towers: only the summation order differs from
    /// candle's).
    F32,
    /// bf16 products where the CPU has AVX512-BF16 (AMX tiles or registers), else f32 (the
    /// bf16 and int8 towers).
    Fast,
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
        let mut out = vec![0f32; b * h * n * d];
        out.par_chunks_mut(n * d).enumerate().for_each(|(bh, o)| {
            let r = bh * n * d..(bh + 1) * n * d;
            let bias = self
                .bias
                .as_ref()
                .map(|x| &x[(bh / h) * n..(bh / h + 1) * n]);
            attend(
                &q[r.clone()],
                &k[r.clone()],
                &v[r],
                n,
                d,
                bias,
                Precision::Fast,
                o,
            );
        });
        Ok((CpuStorage::F32(out), lq.shape().clone()))
    }
}

/// What one head attends over: `n` rows of `d` values of q, k and v inside wider buffers (row
/// `t` of q is `q[t·stride..t·stride + d]`, likewise k and v: a qkv product's rows, or `[n, d]`
/// tensors with `stride = d`), an additive key bias of `n` values, and the rotation of q and k.
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub stride: usize,
    pub n: usize,
    pub d: usize,
    pub bias: Option<&'a [f32]>,
    pub rope: Option<Rope<'a>>,
}

impl Head<'_> {
    /// Whether q, k and v each hold `n` rows of `d` values and the bias `n` values.
    fn holds(&self) -> bool {
        let (n, d) = (self.n, self.d);
        let need = (n - 1) * self.stride + d;
        d <= self.stride
            && [self.q, self.k, self.v].iter().all(|x| x.len() >= need)
            && self.bias.is_none_or(|b| b.len() == n)
    }
}

/// How q and k are rotated: pairs `(i, i + d/2)` (NeoX halves, the text tower) or `(2i, 2i + 1)`
/// (interleaved, the vision tower). The tables are `[n, d/2]` per token position.
#[derive(Clone, Copy)]
pub(crate) enum Rope<'a> {
    Halves { cos: &'a [f32], sin: &'a [f32] },
    Pairs { cos: &'a [f32], sin: &'a [f32] },
}

impl Rope<'_> {
    /// Row `t` of q or k (`src`, `d` values) rotated into `dst`.
    pub(crate) fn apply(&self, t: usize, src: &[f32], dst: &mut [f32]) {
        let half = src.len() / 2;
        match *self {
            Rope::Halves { cos, sin } => {
                let (cos, sin) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                let (x1, x2) = src.split_at(half);
                let (y1, y2) = dst.split_at_mut(half);
                for i in 0..half {
                    y1[i] = x1[i] * cos[i] - x2[i] * sin[i];
                    y2[i] = x2[i] * cos[i] + x1[i] * sin[i];
                }
            }
            Rope::Pairs { cos, sin } => {
                let (cos, sin) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                for i in 0..half {
                    let (x1, x2) = (src[2 * i], src[2 * i + 1]);
                    dst[2 * i] = x1 * cos[i] - x2 * sin[i];
                    dst[2 * i + 1] = x1 * sin[i] + x2 * cos[i];
                }
            }
        }
    }
}

/// One head: `out = softmax(q·kᵀ + bias)·v` for `[n, d]` row-major `q`, `k`, `v` and `out`
/// (`bias`: `n` key values), in `precision`.
///
/// # Panics
/// If the slices are not `n·d` long.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    d: usize,
    bias: Option<&[f32]>,
    precision: Precision,
    out: &mut [f32],
) {
    assert!(
        [q, k, v].iter().all(|x| x.len() == n * d) && out.len() == n * d,
        "cpu attention: shapes"
    );
    let head = Head {
        q,
        k,
        v,
        stride: d,
        n,
        d,
        bias,
        rope: None,
    };
    // SAFETY: `out` holds n rows of d values at stride d and is borrowed mutably here.
    unsafe { attend_into(head, out.as_mut_ptr(), d, precision) }
}

/// [`attend`] of `head` (q and k rotated by its `rope`, if any) into `n` rows of `d`
/// values at `out`, `ldo` values apart (one head's columns of the `[n, heads·d]` context rows
/// the output projection reads). In [`Precision::Fast`] with AVX512-BF16, 32 query rows at a
/// time ([`blocks`]: on AMX tiles where the CPU has them, else on the register kernel): q, k
/// and v are read (and rotated) straight from their rows as they are packed, and the scores,
/// softmax numerators and output of a block never leave L2: the `n × n` score matrix is never
/// written. In [`Precision::F32`], or without AVX512-BF16, blocks of 64 rows in f32
/// ([`exact`]).
///
/// # Safety
/// `out` must be valid for writes of `n` rows of `d` values at stride `ldo ≥ d`, which no
/// other thread accesses during the call.
///
/// # Panics
/// If `head` does not hold `n` rows of `d` values (and `n` bias values).
pub(crate) unsafe fn attend_into(head: Head, out: *mut f32, ldo: usize, precision: Precision) {
    let Head { n, d, .. } = head;
    if n == 0 || d == 0 {
        return;
    }
    assert!(head.holds(), "cpu attention: q, k, v or bias shapes");
    if precision == Precision::F32 || !crate::bf16_gemm::available() {
        // SAFETY: the caller's contract.
        unsafe { exact::attend(head, out, ldo) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX512-BF16 is usable (`bf16_gemm::available`, checked above); the shapes are
    // checked above and `out` is the caller's contract.
    unsafe {
        blocks::attend(head, out, ldo)
    };
}

/// Attention of one head in bf16, 32 query rows at a time: the rows' scores against every key
/// (`q·kᵀ`, k = the head width), their softmax numerators rounded to bf16 pairs as the next
/// product's A rows, `p·v` (k = the keys), and each output row scaled by its `1/Σ` as it is
/// stored. The products run on AMX tiles (32 × 32 blocks) where the CPU has them, else on the
/// AVX512-BF16 register kernel (8 × 32 blocks, the same panel layout). The scores of one block
/// (32 × n f32, 64 KiB at n = 512) stay in L2; only the packed q, k and v of the head are made
/// once per call. Rounding: bf16 q, k, v and probabilities (rounded before the division by
/// their sum), f32 sums.
#[cfg(target_arch = "x86_64")]
mod blocks {
    use std::arch::x86_64::*;
    use std::cell::Cell;

    use super::{Head, Rope};
    use crate::amx;
    use crate::bf16_gemm::avx512::{bf16x16, mask};
    use crate::bf16_gemm::{grown, odd_lines, pack_row};

    /// Rows and columns of an AMX block.
    const B: usize = 32;
    /// k-pairs per AMX step.
    const STEP: usize = 16;

    /// A thread's packings and block buffers, reused between heads (grown, never shrunk).
    #[derive(Default)]
    struct Buffers {
        /// q as bf16 pairs: `nq` rows of `lq` pairs.
        q: Vec<u32>,
        /// k as B panels: `nq / 32` panels of `dp` pair rows × 32 keys.
        k: Vec<u32>,
        /// v as B panels: `ceil(d / 32)` panels of `nq / 2` pair rows × 32 columns.
        v: Vec<u32>,
        /// One block's scores: 32 rows of `ls` floats.
        s: Vec<f32>,
        /// One block's softmax numerators as bf16 pairs: 32 rows of `lp` pairs.
        p: Vec<u32>,
        /// One block's output before the division: 32 rows of `ceil(d / 32) · 32` floats.
        o: Vec<f32>,
    }

    thread_local! {
        static BUFFERS: Cell<Buffers> = const { Cell::new(Buffers {
            q: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            s: Vec::new(),
            p: Vec::new(),
            o: Vec::new(),
        }) };
    }

    /// See [`super::attend_into`] and the module doc.
    ///
    /// # Safety
    /// AVX512-BF16 must be usable; `head` holds its rows and bias (`n, d > 0`);
    /// `out` is valid for writes of `n` rows of `d` values at stride `ldo`, accessed by no one
    /// else.
    pub(super) unsafe fn attend(head: Head, out: *mut f32, ldo: usize) {
        let mut bufs = BUFFERS.with(|c| c.take());
        let amx = crate::bf16_gemm::uses_amx();
        // SAFETY: the caller's contract (AVX512-BF16 comes with AVX-512 F/BW/VL); AMX-BF16 is
        // usable where `uses_amx` says so.
        unsafe { attend_with(&mut bufs, head, out, ldo, amx) };
        BUFFERS.with(|c| c.set(bufs));
    }

    /// # Safety
    /// [`attend`]'s contract; AMX-BF16 usable if `amx`.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn attend_with(bufs: &mut Buffers, head: Head, out: *mut f32, ldo: usize, amx: bool) {
        let Head {
            n,
            d,
            bias,
            rope,
            stride: st,
            ..
        } = head;
        // Keys and query rows padded to whole blocks; the head width to whole AMX steps.
        let nq = n.div_ceil(B) * B;
        let dp = d.div_ceil(2 * STEP) * STEP;
        let lq = odd_lines(dp * 4) / 4;
        let kpv = nq / 2;
        let lp = odd_lines(kpv * 4) / 4;
        let ls = odd_lines(nq * 4) / 4;
        let vpan = d.div_ceil(B);
        let lo = vpan * B;

        let qp = grown(&mut bufs.q, nq * lq);
        for r in 0..nq {
            // SAFETY: AVX512-BF16 (this function's features); `head` holds n rows.
            unsafe { pack_head_row(head.q, r, n, d, st, rope, &mut qp[r * lq..r * lq + dp]) };
        }
        let kp = grown(&mut bufs.k, nq * dp);
        let mut pairs = vec![0u32; dp];
        for key in 0..nq {
            let (panel, col) = (key / B, key % B);
            // SAFETY: as above.
            unsafe { pack_head_row(head.k, key, n, d, st, rope, &mut pairs) };
            for (t, &x) in pairs.iter().enumerate() {
                kp[(panel * dp + t) * B + col] = x;
            }
        }
        let vp = grown(&mut bufs.v, vpan * kpv * B);
        for t in 0..kpv {
            let (lo_row, hi_row) = (2 * t, 2 * t + 1);
            for c in 0..vpan {
                for h in 0..2 {
                    let col = c * B + h * 16;
                    let m = mask(d.saturating_sub(col));
                    let load = |r: usize| {
                        if r < n {
                            // SAFETY: masked to the row's d values (`head` holds n rows).
                            unsafe { _mm512_maskz_loadu_ps(m, head.v.as_ptr().add(r * st + col)) }
                        } else {
                            _mm512_setzero_ps()
                        }
                    };
                    let (a, b) = (load(lo_row), load(hi_row));
                    let a = bf16x16(a);
                    let b = bf16x16(b);
                    let pair = _mm512_or_si512(
                        _mm512_cvtepu16_epi32(a),
                        _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(b)),
                    );
                    // SAFETY: 16 pairs of panel c's row t, inside `vp`.
                    unsafe {
                        _mm512_storeu_si512(
                            vp.as_mut_ptr().add((c * kpv + t) * B + h * 16).cast(),
                            pair,
                        )
                    };
                }
            }
        }
        let s = grown(&mut bufs.s, B * ls);
        let p = grown(&mut bufs.p, B * lp);
        let o = grown(&mut bufs.o, B * lo);
        let mut inv = [0f32; B];

        // One product of a block: `rows` A rows of `lda` pairs (32 readable), `kc` pair rows of
        // a 32-column panel, into 32 C columns at row stride `ldc`. On AMX all 32 (or 16) rows
        // in one block of tiles, else 8 rows at a time on the register kernel.
        let product = |a: *const u32,
                       lda: usize,
                       b: *const u32,
                       kc: usize,
                       c: *mut f32,
                       ldc: usize,
                       rows: usize| {
            if amx {
                // SAFETY: AMX is usable (`amx`); A holds 32 rows of lda ≥ kc pairs, B kc pair
                // rows of 128 bytes, C 32 rows of 32 floats at stride ldc (the callers' buffers).
                unsafe {
                    amx::block(
                        amx::Op::Bf16,
                        a.cast(),
                        lda * 4,
                        b.cast(),
                        kc / STEP,
                        c.cast(),
                        ldc * 4,
                        rows > B / 2,
                        false,
                    )
                };
            } else {
                for r in (0..rows).step_by(8) {
                    // SAFETY: AVX512-BF16 (this function's features); A rows r..r+8 of kc
                    // pairs (32 rows readable), B as above, C rows r..r+8 (≤ rows stored).
                    unsafe {
                        crate::bf16_gemm::avx512::kernel(
                            a.add(r * lda),
                            lda,
                            b.cast(),
                            kc,
                            c.add(r * ldc),
                            ldc,
                            8.min(rows - r),
                            B,
                            false,
                        )
                    };
                }
            }
        };

        if amx {
            // SAFETY: AMX is usable (`amx`).
            unsafe { amx::configure() };
        }
        for i in (0..n).step_by(B) {
            let rows = B.min(n - i);
            let two = rows > B / 2;
            for j in 0..nq / B {
                // q rows i..i+32 of dp pairs (nq ≥ i + 32 rows), panel j of k (dp pair rows of
                // 128 bytes), the block's 32 columns of s (32 rows at stride ls).
                product(
                    qp[i * lq..].as_ptr(),
                    lq,
                    kp[j * dp * B..].as_ptr(),
                    dp,
                    s[j * B..].as_mut_ptr(),
                    ls,
                    rows,
                );
            }
            for (r, inv) in inv.iter_mut().enumerate().take(rows) {
                // SAFETY: AVX-512 F and BF16; a score row of nq floats, a p row of kpv pairs.
                *inv = unsafe {
                    numerators(
                        &s[r * ls..r * ls + nq],
                        n,
                        bias,
                        &mut p[r * lp..r * lp + kpv],
                    )
                };
            }
            // Rows past the last query (the tiles read all 32): zeros.
            let tile_rows = if two { B } else { B / 2 };
            p[rows * lp..tile_rows * lp].fill(0);
            for c in 0..vpan {
                // p's 32 (16) rows of kpv pairs, panel c of v (kpv pair rows of 128 bytes), the
                // block's columns c·32.. of o (rows of lo floats).
                product(
                    p.as_ptr(),
                    lp,
                    vp[c * kpv * B..].as_ptr(),
                    kpv,
                    o[c * B..].as_mut_ptr(),
                    lo,
                    rows,
                );
            }
            for (r, &inv) in inv.iter().enumerate().take(rows) {
                let scale = _mm512_set1_ps(inv);
                let mut c = 0;
                while c < d {
                    let m = mask(d - c);
                    // SAFETY: column c.. of o's row r; out row i + r < n (the caller's
                    // contract), masked to d values.
                    unsafe {
                        let x = _mm512_maskz_loadu_ps(m, o.as_ptr().add(r * lo + c));
                        _mm512_mask_storeu_ps(
                            out.add((i + r) * ldo + c),
                            m,
                            _mm512_mul_ps(x, scale),
                        );
                    }
                    c += 16;
                }
            }
        }
        if amx {
            // SAFETY: as for `configure`.
            unsafe { amx::release() };
        }
    }

    /// Row `t` of `x` (`d` values at stride `st`), rotated by `rope` if any, as bf16 pairs
    /// into `dst` (zeros past the row; all zeros for a padding row `t ≥ n`). The rotation is
    /// [`Rope::apply`]'s arithmetic in 16 lanes (the same products and sums, no FMA), so both
    /// paths see the same rotated values.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn pack_head_row(
        x: &[f32],
        t: usize,
        n: usize,
        d: usize,
        st: usize,
        rope: Option<Rope>,
        dst: &mut [u32],
    ) {
        if t >= n {
            dst.fill(0);
            return;
        }
        let src = &x[t * st..t * st + d];
        let half = d / 2;
        let rope = match rope {
            Some(r) if d.is_multiple_of(2) => r,
            _ => return pack_row(src, dst),
        };
        dst.fill(0);
        // The `m` lanes of `y` as bf16 values `at..` of the row (one u16 each: the low half
        // of pair j is value 2j).
        let put = |dst: &mut [u32], at: usize, y: __m512, m: __mmask16| {
            let h = bf16x16(y);
            // SAFETY: the `m` lanes are values below d, inside `dst` (d/2 pairs or more).
            unsafe {
                _mm256_mask_storeu_epi16(dst.as_mut_ptr().cast::<u16>().add(at).cast(), m, h)
            };
        };
        match rope {
            Rope::Halves { cos, sin } => {
                let (cos, sin) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                let mut i = 0;
                while i < half {
                    let m = mask(half - i);
                    // SAFETY: lanes i..i+16 masked to `half`, inside both halves and tables.
                    let (x1, x2, c, s) = unsafe {
                        (
                            _mm512_maskz_loadu_ps(m, src.as_ptr().add(i)),
                            _mm512_maskz_loadu_ps(m, src.as_ptr().add(i + half)),
                            _mm512_maskz_loadu_ps(m, cos.as_ptr().add(i)),
                            _mm512_maskz_loadu_ps(m, sin.as_ptr().add(i)),
                        )
                    };
                    let y1 = _mm512_sub_ps(_mm512_mul_ps(x1, c), _mm512_mul_ps(x2, s));
                    let y2 = _mm512_add_ps(_mm512_mul_ps(x2, c), _mm512_mul_ps(x1, s));
                    put(dst, i, y1, m);
                    put(dst, i + half, y2, m);
                    i += 16;
                }
            }
            Rope::Pairs { cos, sin } => {
                // cos/sin of pair i on lanes 2i and 2i + 1; sin negated on the even lanes.
                let dup = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
                let (cos, sin) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                let mut j = 0;
                while j < d {
                    let m = mask(d - j);
                    let m8 = mask(half - j / 2) as __mmask8;
                    // SAFETY: lanes masked to the row's d values and the tables' half.
                    let (x, c, s) = unsafe {
                        (
                            _mm512_maskz_loadu_ps(m, src.as_ptr().add(j)),
                            _mm256_maskz_loadu_ps(m8, cos.as_ptr().add(j / 2)),
                            _mm256_maskz_loadu_ps(m8, sin.as_ptr().add(j / 2)),
                        )
                    };
                    let c = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(c));
                    let s = _mm512_permutexvar_ps(dup, _mm512_castps256_ps512(s));
                    let s = _mm512_mask_sub_ps(s, 0x5555, _mm512_setzero_ps(), s);
                    // lane 2i: x₁·c − x₂·s; lane 2i + 1: x₂·c + x₁·s
                    let swapped = _mm512_permute_ps::<0b1011_0001>(x);
                    let y = _mm512_add_ps(_mm512_mul_ps(x, c), _mm512_mul_ps(swapped, s));
                    put(dst, j, y, m);
                    j += 16;
                }
            }
        }
    }

    /// One row of scores (`row`: `n` keys, padding after them) plus `bias` → `e^(s − max)` as
    /// bf16 pairs into `dst` (zeros for the padding); returns `1 / Σ e`. Whole 16-key vectors
    /// run unmasked, the last one masked.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    unsafe fn numerators(row: &[f32], n: usize, bias: Option<&[f32]>, dst: &mut [u32]) -> f32 {
        let at = |i: usize, m: __mmask16| {
            // SAFETY: masked to the first n values of `row` and `bias`.
            unsafe {
                let x = _mm512_maskz_loadu_ps(m, row.as_ptr().add(i));
                match bias {
                    Some(b) => _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, b.as_ptr().add(i))),
                    None => x,
                }
            }
        };
        let full = n / 16 * 16;
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(16) {
            mx = _mm512_max_ps(mx, at(i, 0xFFFF));
        }
        if full < n {
            let m = mask(n - full);
            mx = _mm512_mask_max_ps(mx, m, mx, at(full, m));
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut sum = _mm512_setzero_ps();
        let pairs = dst.as_mut_ptr();
        for i in (0..full).step_by(16) {
            let e = exp_neg(_mm512_sub_ps(at(i, 0xFFFF), mx));
            sum = _mm512_add_ps(sum, e);
            // SAFETY: 8 pairs (values i..i+16 < n ≤ 2·dst.len()).
            unsafe { _mm256_storeu_si256(pairs.add(i / 2).cast(), bf16x16(e)) };
        }
        let mut i = full;
        if full < n {
            let m = mask(n - full);
            let e = _mm512_maskz_mov_ps(m, exp_neg(_mm512_sub_ps(at(full, m), mx)));
            sum = _mm512_add_ps(sum, e);
            // SAFETY: as above (dst holds whole 8-pair groups: its length is a multiple of 8).
            unsafe { _mm256_storeu_si256(pairs.add(full / 2).cast(), bf16x16(e)) };
            i += 16;
        }
        dst[i / 2..].fill(0);
        1.0 / _mm512_reduce_add_ps(sum)
    }

    /// `e^x` for `x ≤ 0` (16 lanes): `x = k·ln2 + r`, `|r| ≤ ln2/2`, the degree-5 Taylor
    /// polynomial of `e^r` (relative error below 4e-6, far under the bf16 rounding the
    /// numerators get next), `vscalefps` for `2^k`; `e^-87` (1.6e-38) below -87.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp_neg(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let k = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(crate::vmath::EXP_LN2_HI), x);
        let r = _mm512_fnmadd_ps(k, _mm512_set1_ps(crate::vmath::EXP_LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 120.0);
        for c in [1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, k)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// `exp_neg` within 4e-6 of f64's `exp` down to -80 (below, f32 runs out of normal
        /// numbers), a tiny positive number far below.
        #[test]
        fn exp_neg_is_close() {
            if !crate::bf16_gemm::available() {
                return;
            }
            let mut worst = 0f64;
            for i in 0..=2000 {
                let x = -(i as f32) * 0.04;
                let mut out = [0f32; 16];
                // SAFETY: AVX-512 F (checked above); 16 lanes.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp_neg(_mm512_set1_ps(x))) };
                let want = (x as f64).exp();
                worst = worst.max((out[0] as f64 - want).abs() / want);
            }
            assert!(worst < 4e-6, "relative error {worst}");
            let mut out = [1f32; 16];
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), exp_neg(_mm512_set1_ps(-1e4))) };
            assert!(out[0] >= 0.0 && out[0] < 1e-37, "{}", out[0]);
        }

        /// The vector rotation packs exactly what `Rope::apply` and a plain packing give, for
        /// both layouts, odd halves and widths off the 16 lanes.
        #[test]
        fn rotated_rows_pack_as_the_scalar_rotation() {
            if !crate::bf16_gemm::available() {
                eprintln!("no AVX512-BF16 on this CPU: the tile attention is not used");
                return;
            }
            for d in [2usize, 6, 34, 40, 64, 96] {
                let (n, half, st) = (5, d / 2, d + 3);
                let val = |i: usize| ((i * 7919 % 1013) as f32 - 506.0) / 97.0;
                let x: Vec<f32> = (0..n * st).map(val).collect();
                let cos: Vec<f32> = (0..n * half).map(|i| (i as f32 * 0.37).cos()).collect();
                let sin: Vec<f32> = (0..n * half).map(|i| (i as f32 * 0.37).sin()).collect();
                let dp = d.div_ceil(32) * 16;
                for rope in [
                    Rope::Halves {
                        cos: &cos,
                        sin: &sin,
                    },
                    Rope::Pairs {
                        cos: &cos,
                        sin: &sin,
                    },
                ] {
                    for t in 0..n + 1 {
                        let mut got = vec![u32::MAX; dp];
                        let mut want = vec![0u32; dp];
                        // SAFETY: AVX512-BF16 checked above; rows of d values at stride st.
                        unsafe { pack_head_row(&x, t, n, d, st, Some(rope), &mut got) };
                        if t < n {
                            let mut y = vec![0f32; d];
                            rope.apply(t, &x[t * st..t * st + d], &mut y);
                            pack_row(&y, &mut want);
                        }
                        assert_eq!(got, want, "d {d} row {t}");
                    }
                }
            }
        }
    }
}

/// Attention in f32 for CPUs without AVX512-BF16 (the fused layers of the int8 path on AVX2 and
/// AVX-512 without BF16): q and k rotated into per-thread buffers, then 64 query rows at a time
/// their scores against every key, the softmax in place, and `p·v` straight into the output
/// rows, both products on the `gemm` crate's f32 kernels (what candle's f32 matmul runs). The
/// scores of a block (64 × n f32, 332 KiB for an image) stay in L2; nothing is rounded below
/// f32.
mod exact {
    use std::cell::Cell;

    use super::{softmax_row, Head};
    use crate::bf16_gemm::grown;

    /// Query rows per block.
    const BQ: usize = 64;

    thread_local! {
        /// Rotated q, rotated k, one block's scores (grown, never shrunk).
        #[allow(clippy::type_complexity)]
        static BUFFERS: Cell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
            const { Cell::new((Vec::new(), Vec::new(), Vec::new())) };
    }

    /// See [`super::attend_into`].
    ///
    /// # Safety
    /// `head` holds its rows and bias (`n, d > 0`); `out` is valid for writes of `n` rows of
    /// `d` values at stride `ldo`, accessed by no one else.
    pub(super) unsafe fn attend(head: Head, out: *mut f32, ldo: usize) {
        let Head {
            n,
            d,
            bias,
            rope,
            stride,
            ..
        } = head;
        let (mut qb, mut kb, mut sb) = BUFFERS.with(|c| c.take());
        let (q, k) = (grown(&mut qb, n * d), grown(&mut kb, n * d));
        for t in 0..n {
            let (src_q, src_k) = (&head.q[t * stride..][..d], &head.k[t * stride..][..d]);
            let (dq, dk) = (&mut q[t * d..(t + 1) * d], &mut k[t * d..(t + 1) * d]);
            match rope {
                Some(r) => {
                    r.apply(t, src_q, dq);
                    r.apply(t, src_k, dk);
                }
                None => {
                    dq.copy_from_slice(src_q);
                    dk.copy_from_slice(src_k);
                }
            }
        }
        let s = grown(&mut sb, BQ.min(n) * n);
        for i0 in (0..n).step_by(BQ) {
            let rows = BQ.min(n - i0);
            // SAFETY: s holds `rows` rows of n (stride n); q rows i0.. (d values, stride d);
            // kᵀ read from k's n rows of d (element (t, j) at j·d + t).
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    d,
                    s.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    q.as_ptr().add(i0 * d),
                    1,
                    d as isize,
                    k.as_ptr(),
                    d as isize,
                    1,
                    0f32,
                    1f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
            s[..rows * n]
                .chunks_exact_mut(n)
                .for_each(|row| softmax_row(row, bias));
            // SAFETY: out rows i0.. (d values, stride ldo: the caller's contract); the block's
            // probabilities (stride n); v's n rows of d values at stride `stride` (`head.holds`).
            unsafe {
                gemm::gemm(
                    rows,
                    d,
                    n,
                    out.add(i0 * ldo),
                    1,
                    ldo as isize,
                    false,
                    s.as_ptr(),
                    1,
                    n as isize,
                    head.v.as_ptr(),
                    1,
                    stride as isize,
                    0f32,
                    1f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            };
        }
        BUFFERS.with(|c| c.set((qb, kb, sb)));
    }
}

/// In-place softmax of one score row after adding `bias`.
fn softmax_row(row: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        row.iter_mut().zip(b).for_each(|(x, &y)| *x += y);
    }
    #[cfg(target_arch = "x86_64")]
    if jsearch_base::cpu::features().avx512 {
        // SAFETY: AVX-512 F was just checked; the kernel reads and writes only `row` (masked
        // tails).
        unsafe { avx512::softmax(row) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::vmath::avx2::usable() {
        // SAFETY: AVX2 and FMA were just checked; the kernel reads and writes only `row`.
        unsafe { crate::vmath::avx2::softmax(row) };
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
    /// sequence length off every tile size; the gap is the bf16 rounding of the products' inputs
    /// (without AVX512-BF16, the f32 path: only the summation order differs).
    #[test]
    fn fused_attention_matches_f32() {
        let bf16 = crate::bf16_gemm::available();
        let bound = if bf16 { 2e-2 } else { 2e-5 };
        if !bf16 {
            eprintln!("no AVX512-BF16 on this CPU: the f32 attention");
        }
        let dev = Device::Cpu;
        // Query rows and keys across the 16- and 32-row tile edges, head widths off the
        // 32-value AMX steps.
        for (n, d) in [(1, 64), (16, 64), (17, 40), (33, 32), (70, 96)] {
            let q = (Tensor::randn(0f32, 1.0, (1, 2, n, d), &dev).unwrap() * 0.125).unwrap();
            let k = Tensor::randn(0f32, 1.0, (1, 2, n, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (1, 2, n, d), &dev).unwrap();
            let want = crate::nn::attention_by_head_groups(&q, &k, &v, None).unwrap();
            let got = attention(&q, &k, &v, None).unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err < bound, "n {n} d {d}: max abs error {err}");
        }
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
        assert!(err < bound, "max abs error {err}");
        assert!(!bf16 || err > 0.0);
        // no bias
        let want = crate::nn::attention_by_head_groups(&q, &k, &v, None).unwrap();
        let got = attention(&q, &k, &v, None).unwrap();
        let err = max_abs_diff(&got, &want);
        assert!(err < bound, "max abs error {err}");
        assert!(attention(&q, &k, &v, Some(&q)).is_err());
    }

    /// The f32 attention (what f32 towers run, on every CPU) against candle's, with a padding
    /// bias, across its 64-row blocks: only the summation order differs.
    #[test]
    fn f32_attention_matches_candle_on_every_cpu() {
        let dev = Device::Cpu;
        for (n, d, masked) in [(1, 64, 0), (63, 40, 5), (64, 64, 0), (130, 96, 17)] {
            let q = (Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap() * 0.125).unwrap();
            let k = Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap();
            let mut bias = vec![0f32; n];
            bias[n - masked..].iter_mut().for_each(|x| *x = -10000.0);
            let b = Tensor::from_slice(&bias, (1, 1, 1, n), &dev).unwrap();
            let as4 = |t: &Tensor| t.reshape((1, 1, n, d)).unwrap();
            let want = crate::nn::attention_by_head_groups(&as4(&q), &as4(&k), &as4(&v), Some(&b))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut got = vec![0f32; n * d];
            let (q, k, v) = (flat(&q), flat(&k), flat(&v));
            attend(&q, &k, &v, n, d, Some(&bias), Precision::F32, &mut got);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 2e-5, "n {n} d {d}: max abs error {err}");
        }
    }
}
