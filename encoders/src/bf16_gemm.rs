//! Matrix products with bf16 inputs and f32 accumulation for the linear layers on x86-64 CPUs
//! with AVX512-BF16 (`vdpbf16ps`: 32 multiply-adds per instruction, twice the rate of f32 FMA),
//! and on CPUs with AMX (Sapphire Rapids and later: `tdpbf16ps` multiplies a 16 × 32 tile by a
//! 32 × 16 tile, 8192 multiply-adds per instruction) the same packing read by tile loads.
//!
//! candle's CPU matmul has no bf16 dot-product kernel (its bf16 path converts and runs slower
//! than f32), so this module packs a weight once at load and, per call, rounds the activations
//! to bf16 (round to nearest even) as PyTorch's bf16 autocast does on the CPU. Accumulation,
//! bias, LayerNorm, softmax and attention stay in f32. The accuracy against f32 is measured by
//! the `encoders` bench and tested in `tests/loading.rs`.

use rayon::prelude::*;

use crate::amx;
use crate::weight_cache::Stored;

/// Output columns per packed panel (two 16-lane registers).
const NR: usize = 32;
/// Rows per micro-kernel call (8 × 2 accumulators = 16 of the 32 vector registers).
const MR: usize = 8;
/// k-pairs per cache block: a weight block of 32 columns × 512 inputs × 2 bytes = 32 KiB.
const KC: usize = 256;

/// Whether this CPU can run the bf16 kernel (AVX-512 F/BW/VL and AVX512-BF16).
pub fn available() -> bool {
    jsearch_base::cpu::features().avx512_bf16
}

/// Whether the products run on AMX tiles (AMX-BF16 usable, `JSEARCH_CPU_TIER` not below
/// `amx`); else on the AVX512-BF16 kernel.
pub fn uses_amx() -> bool {
    jsearch_base::cpu::features().amx_bf16
}

/// Which kernel runs a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `vdpbf16ps`, 8 × 32 register tiles.
    Avx512,
    /// `tdpbf16ps`, 32 × 32 blocks of four AMX tiles (the k tail on `vdpbf16ps`).
    Amx,
}

/// Rows of an AMX block (two A tiles of 16 rows).
const AMX_M: usize = 32;
/// k-pairs per AMX step (an A tile row holds 16 bf16 pairs).
const AMX_KP: usize = 16;
/// AMX steps (16 k-pairs each) per k-block: the panel's 8 × 16 × 128 bytes = 16 KiB of weights
/// stay in L1 while every 32-row block of a chunk passes over them (C goes through `acc`).
/// 4 and 16 steps were both slower on the `gemm` bench (Sapphire Rapids, 2026-12-07).
const AMX_KB_STEPS: usize = 8;
/// Bytes of activations an AMX row chunk keeps in the core's L2 while every panel passes.
const AMX_CHUNK_BYTES: usize = 1 << 20;

/// bf16 bits of `x`, rounded to nearest even (NaN stays NaN).
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16;
    // A NaN stays a (quiet) NaN instead of rounding into the infinity next to it.
    if x.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else {
        rounded
    }
}

/// A `[n, k]` weight packed for [`PackedBf16::matmul_into`]: panels of 32 weight rows (output
/// columns), each stored as k-pairs `(W[c, 2t], W[c, 2t + 1])` for the panel's 32 rows `c`,
/// zero-padded in both directions. Only exists on CPUs where [`available`] holds.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    /// k-pairs: `ceil(k / 2)`.
    kp: usize,
    data: Stored<u16>,
}

/// Number of u16 values of the packing of an `[n, k]` weight.
fn packed_len(n: usize, k: usize) -> usize {
    n.div_ceil(NR) * k.div_ceil(2) * 2 * NR
}

impl PackedBf16 {
    /// Packs a row-major `[n, k]` f32 weight (rounded to bf16), or `None` when this CPU has no
    /// AVX512-BF16 or the slice does not hold `n * k` values.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !available() || w.len() != n * k || n == 0 || k == 0 {
            return None;
        }
        let kp = k.div_ceil(2);
        let panel_len = kp * 2 * NR;
        let mut data = vec![0u16; packed_len(n, k)];
        data.par_chunks_mut(panel_len)
            .enumerate()
            .for_each(|(p, panel)| {
                // The panel's rows as bf16 pairs (vectorised), then transposed into k-pair rows
                // of 32 columns.
                let cols = NR.min(n - p * NR);
                let mut rows = vec![0u32; cols * kp];
                for (c, dst) in rows.chunks_exact_mut(kp).enumerate() {
                    pack_row(&w[(p * NR + c) * k..(p * NR + c + 1) * k], dst);
                }
                for (t, pairs) in panel.chunks_exact_mut(2 * NR).enumerate() {
                    for c in 0..cols {
                        let v = rows[c * kp + t];
                        pairs[2 * c] = v as u16;
                        pairs[2 * c + 1] = (v >> 16) as u16;
                    }
                }
            });
        Some(Self {
            n,
            k,
            kp,
            data: Stored::Owned(data),
        })
    }

    /// A packing read from a weight cache (made by [`PackedBf16::pack`] and
    /// [`PackedBf16::panels`]): mapped in place or copied out (`CacheFile::resident`); `None`
    /// when this CPU has no AVX512-BF16 or the length does not match `[n, k]`.
    pub(crate) fn from_stored(values: Stored<u16>, n: usize, k: usize) -> Option<Self> {
        if !available() || n == 0 || k == 0 || values.as_slice().len() != packed_len(n, k) {
            return None;
        }
        Some(Self {
            n,
            k,
            kp: k.div_ceil(2),
            data: values,
        })
    }

    /// The packed values (what a weight cache stores).
    pub(crate) fn panels(&self) -> &[u16] {
        self.data.as_slice()
    }

    /// Output width (weight rows).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input width (weight columns).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `x · Wᵀ` written into `y` (`[m, n]` row-major) through `epi`: each stored value is
    /// `[y +] product [+ bias]`, then GELU'd if asked, as the product's blocks are stored.
    ///
    /// # Panics
    /// If `x.len() != m * k`, `y.len() != m * n` or the bias does not hold `n` values (callers
    /// check shapes first).
    pub(crate) fn matmul_into(&self, x: &[f32], m: usize, y: &mut [f32], epi: Epilogue<'_>) {
        let path = if uses_amx() { Path::Amx } else { Path::Avx512 };
        self.matmul_on(x, m, y, epi, path);
    }

    fn matmul_on(&self, x: &[f32], m: usize, y: &mut [f32], epi: Epilogue<'_>, path: Path) {
        let (n, k, kp) = (self.n, self.k, self.kp);
        assert_eq!(x.len(), m * k, "bf16 matmul: input shape");
        assert_eq!(y.len(), m * n, "bf16 matmul: output shape");
        assert!(
            epi.bias.is_none_or(|b| b.len() == n),
            "bf16 matmul: bias width"
        );
        if m == 0 {
            return;
        }
        // Activations as bf16 pairs, one u32 per pair, rows padded to a multiple of the
        // kernel's rows (zeros: padded rows add nothing and are never stored). The buffer is
        // reused between calls on a thread (taken, so a nested call makes its own).
        let pad = if path == Path::Amx { AMX_M } else { MR };
        let mut a = PACKED_ROWS.with(|c| c.take());
        let lda = row_stride(kp);
        let a_rows = grown(&mut a, m.div_ceil(pad) * pad * lda);
        a_rows[m * lda..].fill(0);
        a_rows[..m * lda]
            .par_chunks_mut(lda)
            .zip(x.par_chunks(k))
            .for_each(|(dst, src)| pack_row(src, &mut dst[..kp]));
        if path == Path::Amx {
            self.matmul_amx(a_rows, lda, m, epi, y);
        } else {
            self.matmul_avx512(a_rows, lda, m, epi, y);
        }
        PACKED_ROWS.with(|c| c.replace(a));
    }

    fn matmul_avx512(&self, a: &[u32], lda: usize, m: usize, epi: Epilogue<'_>, y: &mut [f32]) {
        let (n, kp) = (self.n, self.kp);
        let out = SendPtr(y.as_mut_ptr());
        (0..n.div_ceil(NR)).into_par_iter().for_each(|p| {
            let out = &out;
            let cols = NR.min(n - p * NR);
            for k0 in (0..kp).step_by(KC) {
                let kc = KC.min(kp - k0);
                let b = &self.data.as_slice()[(p * kp + k0) * 2 * NR..(p * kp + k0 + kc) * 2 * NR];
                for r0 in (0..m).step_by(MR) {
                    let rows = MR.min(m - r0);
                    // SAFETY: `PackedBf16` exists only where `available()` holds; `a` has MR
                    // padded rows of `lda` pairs from `r0`; `b` holds `kc` pairs of the panel;
                    // the output tile rows r0..r0+rows, columns p*NR..p*NR+cols lie inside `y`
                    // and no other task writes them (tasks own disjoint column panels).
                    unsafe {
                        kernel(
                            a.as_ptr().add(r0 * lda + k0),
                            lda,
                            b.as_ptr(),
                            kc,
                            out.0.add(r0 * n + p * NR),
                            n,
                            rows,
                            cols,
                            k0 > 0 || epi.accumulate,
                        )
                    }
                }
            }
            if epi.bias.is_some() || epi.gelu {
                let bias = epi.bias.map(|b| &b[p * NR..p * NR + cols]);
                for r in 0..m {
                    // SAFETY: row r < m, columns p*NR..p*NR+cols lie inside `y`; this task
                    // alone writes this panel's columns.
                    let row =
                        unsafe { std::slice::from_raw_parts_mut(out.0.add(r * n + p * NR), cols) };
                    if let Some(bias) = bias {
                        row.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
                    }
                    if epi.gelu {
                        crate::vmath::gelu_erf_in_place(row);
                    }
                }
            }
        });
    }
}

/// What a product does with each value as it is stored: `y = [y +] x·Wᵀ [+ bias]`, then
/// `gelu(y)` when `gelu` is set.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    /// Added to every row (`n` values).
    pub bias: Option<&'a [f32]>,
    /// Add to what `y` holds (a residual) instead of overwriting it.
    pub accumulate: bool,
    /// Exact (erf) GELU of the sum.
    pub gelu: bool,
}

impl Epilogue<'_> {
    /// Stores a block of products into `y`: `block` holds `rows` rows of `ldb` values, of which
    /// the first `cols` are `y`'s columns `c0..c0 + cols` in rows `r0..r0 + rows` (row stride
    /// `ldy`). Each value becomes `[y +] (product [+ bias])`, then GELU: the sums are formed in
    /// `block`, which GELU then runs over at once (its polynomial chains overlap across the
    /// block's vectors; per 32-value row they stalled), and the rows are copied out. Compiled
    /// for AVX-512 (zmm row copies instead of `memcpy` calls) and AVX2, picked at run time.
    ///
    /// # Safety
    /// `y` must be valid for reads and writes at those rows and columns, and no other thread
    /// may access them during the call.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn store_block(
        &self,
        block: &mut [f32],
        ldb: usize,
        rows: usize,
        cols: usize,
        y: *mut f32,
        ldy: usize,
        r0: usize,
        c0: usize,
    ) {
        let at = (ldb, rows, cols, y, ldy, r0, c0);
        #[cfg(target_arch = "x86_64")]
        {
            let f = jsearch_base::cpu::features();
            if f.avx512 {
                // SAFETY: AVX-512 F was just checked; `y` is the caller's contract.
                return unsafe { self.store_block_avx512(block, at) };
            }
            if f.avx2 {
                // SAFETY: AVX2 was just checked; as above.
                return unsafe { self.store_block_avx2(block, at) };
            }
        }
        // SAFETY: as above.
        unsafe { self.store_block_in(block, at, |s, d| d.copy_from_slice(s)) }
    }

    /// [`Epilogue::store_block`] on AVX-512.
    ///
    /// # Safety
    /// AVX-512 F must be available; `store_block`'s contract.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_block_avx512(&self, block: &mut [f32], at: BlockAt) {
        // SAFETY: AVX-512 F is available (this function's contract), as `copy_row` needs;
        // `store_block`'s contract.
        unsafe { self.store_block_in(block, at, |s, d| copy_row(s, d)) }
    }

    /// [`Epilogue::store_block`] on AVX2 (8-lane sums and copies).
    ///
    /// # Safety
    /// AVX2 must be available; `store_block`'s contract.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn store_block_avx2(&self, block: &mut [f32], at: BlockAt) {
        let copy = |s: &[f32], d: &mut [f32]| {
            let mut cs = s.chunks_exact(8);
            let mut cd = d.chunks_exact_mut(8);
            for (s, d) in (&mut cs).zip(&mut cd) {
                // SAFETY: 8 values of each (AVX2 is available: this function's contract).
                unsafe {
                    use std::arch::x86_64::*;
                    _mm256_storeu_ps(d.as_mut_ptr(), _mm256_loadu_ps(s.as_ptr()));
                }
            }
            for (d, s) in cd.into_remainder().iter_mut().zip(cs.remainder()) {
                *d = *s;
            }
        };
        // SAFETY: `store_block`'s contract.
        unsafe { self.store_block_in(block, at, copy) }
    }

    /// The body of [`Epilogue::store_block`], `copy` moving a finished row into `y`.
    ///
    /// # Safety
    /// `store_block`'s contract.
    #[inline(always)]
    unsafe fn store_block_in(
        &self,
        block: &mut [f32],
        (ldb, rows, cols, y, ldy, r0, c0): BlockAt,
        copy: impl Fn(&[f32], &mut [f32]),
    ) {
        let bias = self.bias.map(|b| &b[c0..c0 + cols]);
        for r in 0..rows {
            let src = &mut block[r * ldb..r * ldb + cols];
            // SAFETY: the caller's contract: row r0 + r, columns c0..c0+cols of `y`.
            let dst = unsafe { std::slice::from_raw_parts_mut(y.add((r0 + r) * ldy + c0), cols) };
            if let Some(b) = bias {
                src.iter_mut().zip(b).for_each(|(s, b)| *s += b);
            }
            if self.accumulate {
                src.iter_mut().zip(dst.iter()).for_each(|(s, d)| *s += d);
            }
            if !self.gelu {
                copy(src, dst);
            }
        }
        if self.gelu {
            crate::vmath::gelu_erf_in_place(&mut block[..rows * ldb]);
            for r in 0..rows {
                // SAFETY: as above.
                let dst =
                    unsafe { std::slice::from_raw_parts_mut(y.add((r0 + r) * ldy + c0), cols) };
                copy(&block[r * ldb..r * ldb + cols], dst);
            }
        }
    }
}

/// Where [`Epilogue::store_block`] puts a block: `(ldb, rows, cols, y, ldy, r0, c0)`.
type BlockAt = (usize, usize, usize, *mut f32, usize, usize, usize);

/// `dst = src` for one row of a block, in 16-lane masked moves (a `memcpy` call per 128-byte
/// row took a sixth of a passage batch).
///
/// # Safety
/// AVX-512 F must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_row(src: &[f32], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let len = src.len().min(dst.len());
    let mut i = 0;
    while i < len {
        let m = avx512::mask(len - i);
        // SAFETY: lanes i..i+16 masked to `len`, inside both slices.
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, src.as_ptr().add(i));
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), m, v);
        }
        i += 16;
    }
}

thread_local! {
    /// The bf16 activation pairs of the last product on this thread (reused, not re-faulted).
    static PACKED_ROWS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
    /// A panel task's accumulators on this thread (AMX path).
    static PANEL_ACC: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

impl PackedBf16 {
    /// The AMX product: rows in chunks that stay in L2 while every panel passes over them; per
    /// panel, 32 × 32 blocks accumulated over all of k in four tiles, the last `kp % 16` pairs
    /// added by the AVX512-BF16 kernel, then stored.
    fn matmul_amx(&self, a: &[u32], lda: usize, m: usize, epi: Epilogue<'_>, y: &mut [f32]) {
        let (n, kp) = (self.n, self.kp);
        let steps = kp / AMX_KP;
        let kmain = steps * AMX_KP;
        let chunk = (AMX_CHUNK_BYTES / (lda * 4)).max(AMX_M) / AMX_M * AMX_M;
        let panels = self.data.as_slice();
        let out = SendPtr(y.as_mut_ptr());
        for c0 in (0..m).step_by(chunk) {
            let c1 = (c0 + chunk).min(m);
            let chunk_rows = (c1 - c0).div_ceil(AMX_M) * AMX_M;
            // k-blocks pay when enough row blocks reuse a block of weights from L1 (long k
            // leaves few rows in a chunk: then C stays in the tiles over all of k).
            let kb_steps = if chunk_rows / AMX_M >= 4 {
                AMX_KB_STEPS
            } else {
                steps.max(1)
            };
            (0..n.div_ceil(NR)).into_par_iter().for_each(|p| {
                let out = &out;
                let cols = NR.min(n - p * NR);
                let b = &panels[p * kp * 2 * NR..(p + 1) * kp * 2 * NR];
                // The chunk's 32 columns of C, accumulated over k-blocks of the panel small
                // enough to stay in L1 while every row block of the chunk passes.
                let mut buf = PANEL_ACC.with(|c| c.take());
                let acc = grown(&mut buf, chunk_rows * NR);
                // SAFETY: AMX is usable (`Path::Amx` is only chosen where `uses_amx()` holds).
                unsafe { amx::configure() };
                for k0 in (0..steps).step_by(kb_steps) {
                    let kb = kb_steps.min(steps - k0);
                    for r0 in (c0..c1).step_by(AMX_M) {
                        let rows = AMX_M.min(m - r0);
                        // SAFETY: AMX is usable (above); `a` holds AMX_M padded rows of `lda`
                        // pairs from `r0` (its length is a multiple of AMX_M rows) of which
                        // pairs k0·16..(k0+kb)·16 ≤ kp are read, `b` the panel's `kp` pairs of
                        // 32 columns from pair k0·16; `acc` holds AMX_M × NR floats from row
                        // r0 − c0 (chunk_rows is a multiple of AMX_M).
                        unsafe {
                            amx::block(
                                amx::Op::Bf16,
                                a.as_ptr().add(r0 * lda + k0 * AMX_KP).cast(),
                                lda * 4,
                                b.as_ptr().add(k0 * AMX_KP * 2 * NR).cast(),
                                kb,
                                acc.as_mut_ptr().add((r0 - c0) * NR).cast(),
                                NR * 4,
                                rows > AMX_M / 2,
                                k0 > 0,
                            );
                        }
                    }
                }
                // SAFETY: as for `configure` above.
                unsafe { amx::release() };
                for r0 in (c0..c1).step_by(AMX_M) {
                    let rows = AMX_M.min(m - r0);
                    let block = &mut acc[(r0 - c0) * NR..(r0 - c0 + AMX_M) * NR];
                    if kmain < kp {
                        for g in (0..rows).step_by(MR) {
                            // SAFETY: AVX512-BF16 is available (AMX implies it); `a` holds
                            // rows r0+g.. of `lda` ≥ kp pairs, `b` the panel's pairs from
                            // kmain; `block` holds MR rows of NR floats from row g. With no
                            // AMX step (k < 32) the kernel writes the block instead of adding.
                            unsafe {
                                kernel(
                                    a.as_ptr().add((r0 + g) * lda + kmain),
                                    lda,
                                    b.as_ptr().add(kmain * 2 * NR),
                                    kp - kmain,
                                    block.as_mut_ptr().add(g * NR),
                                    NR,
                                    MR.min(rows - g),
                                    NR,
                                    steps > 0,
                                );
                            }
                        }
                    }
                    // SAFETY: rows r0..r0+rows < m and columns p*NR..p*NR+cols < n lie inside
                    // `y`; no other task touches this panel's columns.
                    unsafe { epi.store_block(block, NR, rows, cols, out.0, n, r0, p * NR) };
                }
                PANEL_ACC.with(|c| c.replace(buf));
            });
        }
    }
}

/// Raw output pointer shared by the panel tasks (each writes its own columns; the int8 product
/// shares it).
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: the tasks write disjoint column ranges of one buffer that outlives them.
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// Row stride (in pairs) of the packed activations: [`odd_lines`] of the row's bytes.
fn row_stride(kp: usize) -> usize {
    odd_lines(kp * 4) / 4
}

/// Row stride in bytes of packed activations for AMX tile loads (this module's bf16 pairs, the
/// int8 module's quads): at least `bytes`, a whole number of cache lines, and an odd one, so that
/// the 16 rows one tile load reads fall in 16 different L1 sets (at `k` = 4096, rows 8 KiB apart
/// would all share one 12-way set).
pub(crate) fn odd_lines(bytes: usize) -> usize {
    (bytes.div_ceil(64) | 1) * 64
}

/// One row to bf16 pairs (zero-padded to `dst.len()` pairs); `dst` holds at least
/// `ceil(src.len() / 2)`. Only called where the kernel is available (AVX512-BF16).
pub(crate) fn pack_row(src: &[f32], dst: &mut [u32]) {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: only called when the kernel is available (AVX512-BF16); 16 floats are read
        // from src[i..i+16] and 8 pairs written to dst[i/2..i/2+8], both in bounds.
        while i + 16 <= src.len() {
            unsafe { avx512::pack16(src.as_ptr().add(i), dst.as_mut_ptr().add(i / 2)) };
            i += 16;
        }
    }
    while i < src.len() {
        let lo = bf16_bits(src[i]) as u32;
        let hi = src.get(i + 1).map_or(0, |&v| bf16_bits(v) as u32);
        dst[i / 2] = lo | (hi << 16);
        i += 2;
    }
    dst[src.len().div_ceil(2)..].fill(0);
}

/// The first `len` values of a thread's reused buffer `v`, which is grown (zeroed) when shorter
/// and never shrunk: a resize down and up again would zero megabytes per layer. Callers write
/// every value they read.
pub(crate) fn grown<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    if v.len() < len {
        *v = vec![T::default(); len];
    }
    &mut v[..len]
}

#[cfg(target_arch = "x86_64")]
use avx512::kernel;

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    _: *const u32,
    _: usize,
    _: *const u16,
    _: usize,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
    _: bool,
) {
    unreachable!("PackedBf16 is never built without AVX512-BF16")
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// 16 floats at `src` → 8 bf16 pairs at `dst` (round to nearest even).
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn pack16(src: *const f32, dst: *mut u32) {
        // SAFETY: the caller upholds this function's `# Safety` contract.
        unsafe { _mm256_storeu_si256(dst.cast(), bf16x16(_mm512_loadu_ps(src))) }
    }

    /// 16 floats rounded to bf16 (nearest even), as 16 bit patterns.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(crate) fn bf16x16(x: __m512) -> __m256i {
        // SAFETY: a vector of 16 bf16 values and one of 16 u16 have the same layout.
        unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x)) }
    }

    /// Mask of the first `min(n, 16)` lanes of a 16-lane register.
    #[inline(always)]
    pub(crate) fn mask(n: usize) -> __mmask16 {
        if n >= 16 {
            0xFFFF
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// `C[rows, cols] (+)= A[MR, 2·kc] · B[2·kc, 32]` for one MR × 32 tile.
    ///
    /// # Safety
    /// AVX512-BF16 must be available; `a` must be readable for MR rows of stride `lda` pairs
    /// and `kc` pairs each, `b` for `kc * 64` u16, `c` writable for `rows` rows of stride `ldc`
    /// and `cols <= 32` columns.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub unsafe fn kernel(
        a: *const u32,
        lda: usize,
        b: *const u16,
        kc: usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller upholds this function's `# Safety` contract.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            for t in 0..kc {
                let bp = b.add(t * 2 * NR).cast::<i16>();
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_epi16(bp));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_epi16(bp.add(NR)));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(r * lda + t) as i32));
                    acc_r[0] = _mm512_dpbf16_ps(acc_r[0], av, b0);
                    acc_r[1] = _mm512_dpbf16_ps(acc_r[1], av, b1);
                }
            }
            let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let cr = c.add(r * ldc);
                let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
                if accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr.add(16)));
                }
                _mm512_mask_storeu_ps(cr, m0, v0);
                _mm512_mask_storeu_ps(cr.add(16), m1, v1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every tile edge: rows not a multiple of 8, columns not a multiple of 32 (and below 16),
    /// odd k, k over one cache block; compared with an f64 product of the bf16-rounded inputs
    /// (which the kernel must match up to f32 accumulation order).
    #[test]
    fn matches_a_reference_product_of_rounded_inputs() {
        if !available() {
            assert!(PackedBf16::pack(&[1.0; 4], 2, 2).is_none());
            eprintln!("no AVX512-BF16 on this CPU: checked that nothing is packed");
            return;
        }
        let round = |v: f32| half::bf16::from_f32(v).to_f32() as f64;
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 7, 5),
            (8, 32, 64),
            (13, 45, 513),
            (17, 100, 1030),
            (2, 16, 2),
            // AMX: 16-row and 32-row blocks and their edges, k-pairs a multiple of 16 and not,
            // a row chunk boundary (1 MiB of pairs: 256 rows at k = 2048).
            (16, 32, 32),
            (32, 64, 64),
            (33, 33, 66),
            (47, 70, 100),
            (300, 40, 2048),
        ] {
            let x = rnd(m * k, 1 + m as u64);
            let w = rnd(n * k, 2 + n as u64);
            let p = PackedBf16::pack(&w, n, k).expect("packs");
            assert_eq!((p.n(), p.k()), (n, k));
            let bias = rnd(n, 3 + k as u64);
            let paths: &[Path] = if uses_amx() {
                &[Path::Avx512, Path::Amx]
            } else {
                eprintln!("no AMX (or JSEARCH_CPU_TIER below amx): the AVX512-BF16 kernel only");
                &[Path::Avx512]
            };
            let resid = rnd(m * n, 4 + m as u64);
            for &path in paths {
                // Plain (bias added), then into a residual with GELU, on the reused buffers.
                let mut y = vec![f32::NAN; m * n];
                let plain = Epilogue {
                    bias: Some(&bias),
                    ..Epilogue::default()
                };
                p.matmul_on(&x, m, &mut y, plain, path);
                let mut fused = resid.clone();
                let epi = Epilogue {
                    bias: Some(&bias),
                    accumulate: true,
                    gelu: true,
                };
                p.matmul_on(&x, m, &mut fused, epi, path);
                for i in 0..m {
                    for j in 0..n {
                        let exact: f64 = (0..k)
                            .map(|t| round(x[i * k + t]) * round(w[j * k + t]))
                            .sum::<f64>()
                            + bias[j] as f64;
                        let tol = 1e-5 * (k as f64).sqrt().max(1.0);
                        let got = y[i * n + j] as f64;
                        assert!(
                            (exact - got).abs() <= tol,
                            "{path:?} m={m} n={n} k={k} ({i},{j}): {exact} vs {got}"
                        );
                        let want = crate::vmath::gelu_erf((exact + resid[i * n + j] as f64) as f32);
                        let got = fused[i * n + j];
                        assert!(
                            ((want - got) as f64).abs() <= 2.0 * tol,
                            "fused {path:?} m={m} n={n} k={k} ({i},{j}): {want} vs {got}"
                        );
                    }
                }
            }
        }
        assert!(PackedBf16::pack(&[1.0; 3], 2, 2).is_none());
    }

    /// The rounding is half's, NaN included.
    #[test]
    fn rounding_is_halfs() {
        for x in [
            0.0f32,
            -0.0,
            1.0,
            f32::from_bits(0x3F80_8000), // ties: to even (down)
            f32::from_bits(0x3F81_8000), // and up
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
        ]
        .into_iter()
        .chain([f32::INFINITY, f32::NEG_INFINITY, f32::NAN])
        .chain(rnd(1000, 9))
        {
            let want = half::bf16::from_f32(x).to_bits();
            assert_eq!(bf16_bits(x), want, "{x:e}");
        }
    }
}
