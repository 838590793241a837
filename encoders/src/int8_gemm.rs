//! int8 matrix products for the linear layers on x86-64 CPUs with AMX-INT8 (`tdpbssd`: a 16 × 64
//! int8 tile times a 64 × 16 one, 16384 multiply-adds per instruction, twice `tdpbf16ps`'s),
//! AVX512-VNNI (`vpdpbusd`: 64 multiply-adds of u8 × i8 per instruction), AVX-VNNI (the same on
//! 256 bits, without AVX-512: Alder Lake and later, Zen 5) or AVX2. On AVX2 a product of fewer
//! than 128 rows runs `vpsignb` + `vpmaddubsw` + `vpmaddwd` + `vpaddd` on the bytes (32
//! multiply-adds in four instructions, 73 a nanosecond on one Zen 4 core against f32 FMA's 54,
//! with `|qa|` made once per row rather than by a `vpabsb` per block step, which ran 66); a
//! batch widens the same values to i16 and runs `vpmaddwd` + `vpaddd` (16 in two, 94 a
//! nanosecond), the sums the same integers (`gemm --peaks` measures these rates).
//!
//! Weights are quantised once (at load, or read from the weight cache), symmetric per output
//! column; activations per row on the fly (symmetric): `y[r, c] = sa[r] · sw[c] · Σ qa · qw`,
//! the sum exact in i32 over all of k. One query of a few tokens reads every weight once, so its
//! time is the weights' bytes over the memory bandwidth: int8 weights are half of bf16's. On
//! VNNI the activations are stored as `qa + 128` (`vpdpbusd`'s unsigned operand), and the
//! `128 · Σ qw` this adds is taken off with a per-column constant stored beside the scales.
//! `vpmaddubsw` sums two u8 × i8 products into a saturating i16, so on AVX2 it multiplies
//! `|qa|` (stored beside each activation row) by `qw` carrying `qa`'s sign (`vpsignb`): both
//! within ±127, two products stay below 2 · 127 · 127 = 32258 and never saturate. (7-bit
//! activations, `qa + 64` without the sign step, ran about a third faster but lost too much:
//! cosine 0.9987–0.9990 to f32 on queries.)
//!
//! The packing: panels of 32 output columns, each k-quad row holding the 32 columns' 4
//! consecutive inputs (128 bytes: AMX's B layout for two 16-column tiles, and two `vpdpbusd`
//! operands), k padded to a multiple of 64 (one AMX step), then the panel's 32 f32 scales and
//! 32 i32 offsets.

use rayon::prelude::*;

use crate::amx;
use crate::bf16_gemm::{grown, odd_lines, Epilogue, SendPtr};
use crate::weight_cache::Stored;

/// Output columns per panel.
const NR: usize = 32;
/// Inputs per AMX step (a 64-byte tile row); k is padded to a multiple of it.
const K_STEP: usize = 64;
/// Rows per VNNI kernel call (8 × 2 accumulators).
const MR: usize = 8;
/// Rows of an AMX block (two A tiles of 16 rows); activations are padded to a multiple of it.
const AMX_M: usize = 32;
/// AMX steps per k-block when a chunk has enough row blocks to reuse it from L1 (16 KiB of a
/// panel's weights, as in `bf16_gemm`).
const AMX_KB_STEPS: usize = 8;
/// Bytes of activations an AMX row chunk keeps in the core's L2 while every panel passes.
const AMX_CHUNK_BYTES: usize = 1 << 20;
/// Rows from which a product on AVX2 runs on 16-bit words ([`Path::Avx2Words`]): batches (32
/// queries of 8 tokens, passages, images), where the kernel's rate counts and the one-time
/// widening of a layer's weights (about 0.3 ms per million weights on one Zen 4 core: ~0.1 s
/// for the text tower) pays off; a query's few tokens keep the int8 bytes (half the bytes to
/// read, nothing to widen), so a one-shot `jsearch query` never widens.
const WORDS_MIN_ROWS: usize = 128;
/// How far ahead of its loads the VNNI kernel prefetches a panel's weights (bytes).
#[cfg(target_arch = "x86_64")]
const PREFETCH: usize = 4096;

/// Whether this CPU runs the int8 kernel: AVX-512 F/BW/VL and AVX512-VNNI, or AVX2 and FMA
/// (`JSEARCH_CPU_TIER` not below `avx2`).
pub fn available() -> bool {
    let f = jsearch_base::cpu::features();
    f.avx512_vnni || (f.avx2 && f.fma)
}

/// Whether the products run on AVX512-VNNI (or AMX-INT8), else on the AVX2 kernel.
pub fn uses_vnni() -> bool {
    jsearch_base::cpu::features().avx512_vnni
}

/// Whether the products run on AMX-INT8 tiles (`JSEARCH_CPU_TIER` not below `amx`), else on
/// the AVX512-VNNI kernel.
pub fn uses_amx() -> bool {
    jsearch_base::cpu::features().amx_int8
}

/// Which kernel runs a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `vpdpbusd`, 8 × 32 register blocks.
    Vnni,
    /// `tdpbssd`, 32 × 32 blocks of four AMX tiles.
    Amx,
    /// 256-bit `vpdpbusd` (AVX-VNNI), 4 × 16 register blocks.
    AvxVnni,
    /// `vpsignb` + `vpmaddubsw` + `vpmaddwd`, 4 × 16 register blocks.
    Avx2,
    /// The same values widened to i16 (activations per row, weights once per packing):
    /// `vpmaddwd` + `vpaddd`, 4 × 16 register blocks; the sums are the same integers.
    Avx2Words,
}

impl Path {
    /// What this kernel's activation bytes add to each `qa` (VNNI's operand is unsigned).
    fn offset(self) -> u8 {
        match self {
            Path::Vnni | Path::AvxVnni => 0x80,
            Path::Amx | Path::Avx2 | Path::Avx2Words => 0,
        }
    }
}

/// An `[n, k]` weight quantised for [`PackedI8::matmul_into`] (see the module's packing).
#[derive(Debug, Clone)]
pub struct PackedI8 {
    n: usize,
    k: usize,
    /// k padded to a multiple of [`K_STEP`].
    kq: usize,
    data: Stored<u8>,
    /// The weights as i16 in k-pair rows for [`Path::Avx2Words`] (see [`PackedI8::words`]),
    /// made on the first batch an AVX2 CPU runs.
    words: std::sync::OnceLock<Vec<u8>>,
}

/// Bytes of one panel: the k-quad rows, then 32 scales and 32 offsets.
fn panel_bytes(kq: usize) -> usize {
    kq * NR + 2 * NR * 4
}

/// Bytes of the packing of an `[n, k]` weight.
fn packed_len(n: usize, k: usize) -> usize {
    n.div_ceil(NR) * panel_bytes(k.div_ceil(K_STEP) * K_STEP)
}

impl PackedI8 {
    /// Quantises a row-major `[n, k]` f32 weight, or `None` when this CPU runs no int8 kernel
    /// ([`available`]), the slice does not hold `n * k` values or a value is not finite.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Option<Self> {
        if !available() || w.len() != n * k || n == 0 || k == 0 || !w.iter().all(|v| v.is_finite())
        {
            return None;
        }
        let kq = k.div_ceil(K_STEP) * K_STEP;
        let mut data = vec![0u8; packed_len(n, k)];
        data.par_chunks_mut(panel_bytes(kq))
            .enumerate()
            .for_each(|(p, panel)| {
                let (quads, tail) = panel.split_at_mut(kq * NR);
                let (scales, offsets) = tail.split_at_mut(NR * 4);
                for c in 0..NR.min(n - p * NR) {
                    let src = &w[(p * NR + c) * k..(p * NR + c + 1) * k];
                    let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let sw = amax / 127.0;
                    let mut sum = 0i32;
                    for (i, &v) in src.iter().enumerate() {
                        let q = if amax > 0.0 {
                            (v / sw).round().clamp(-127.0, 127.0) as i8
                        } else {
                            0
                        };
                        sum += q as i32;
                        quads[(i / 4) * NR * 4 + c * 4 + i % 4] = q as u8;
                    }
                    scales[c * 4..c * 4 + 4].copy_from_slice(&sw.to_le_bytes());
                    offsets[c * 4..c * 4 + 4].copy_from_slice(&(128 * sum).to_le_bytes());
                }
            });
        Some(Self {
            n,
            k,
            kq,
            data: Stored::Owned(data),
            words: std::sync::OnceLock::new(),
        })
    }

    /// A packing read from a weight cache (made by [`PackedI8::quantize`] and
    /// [`PackedI8::bytes`]): mapped in place or copied out (`CacheFile::resident`); `None` when
    /// this CPU runs no int8 kernel or the length does not match `[n, k]`.
    pub(crate) fn from_stored(values: Stored<u8>, n: usize, k: usize) -> Option<Self> {
        if !available() || n == 0 || k == 0 || values.as_slice().len() != packed_len(n, k) {
            return None;
        }
        Some(Self {
            n,
            k,
            kq: k.div_ceil(K_STEP) * K_STEP,
            data: values,
            words: std::sync::OnceLock::new(),
        })
    }

    /// Where the packed bytes live.
    #[cfg(test)]
    pub(crate) fn stored(&self) -> &Stored<u8> {
        &self.data
    }

    /// The packed bytes (what a weight cache stores).
    pub(crate) fn bytes(&self) -> &[u8] {
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

    /// `x · Wᵀ` written into `y` (`[m, n]` row-major) through `epi`, as
    /// [`crate::bf16_gemm::PackedBf16::matmul_into`] does.
    ///
    /// # Panics
    /// If `x.len() != m * k`, `y.len() != m * n` or the bias does not hold `n` values (callers
    /// check shapes first).
    pub(crate) fn matmul_into(&self, x: &[f32], m: usize, y: &mut [f32], epi: Epilogue<'_>) {
        let path = if uses_amx() {
            Path::Amx
        } else if uses_vnni() {
            Path::Vnni
        } else if jsearch_base::cpu::features().avx_vnni {
            Path::AvxVnni
        } else if m >= WORDS_MIN_ROWS {
            Path::Avx2Words
        } else {
            Path::Avx2
        };
        self.matmul_on(x, m, y, epi, path);
    }

    fn matmul_on(&self, x: &[f32], m: usize, y: &mut [f32], epi: Epilogue<'_>, path: Path) {
        let (n, k, kq) = (self.n, self.k, self.kq);
        assert_eq!(x.len(), m * k, "int8 matmul: input shape");
        assert_eq!(y.len(), m * n, "int8 matmul: output shape");
        assert!(
            epi.bias.is_none_or(|b| b.len() == n),
            "int8 matmul: bias width"
        );
        if m == 0 {
            return;
        }
        // Activations quantised per row (rows an odd number of cache lines apart; padding rows
        // and inputs are zero, scale 0), reused between calls on a thread (taken, so a nested
        // call makes its own). VNNI reads them as `q + 128`.
        let offset = path.offset();
        let (mut a, mut sa) = ROWS.with(|c| c.take());
        // AVX2 reads each row twice: `qa`, then `|qa|` from byte `kq` (vpmaddubsw's unsigned
        // operand, made once here instead of once per panel in the kernel); its words path reads
        // `qa` as i16 (2 bytes each).
        let row_bytes = match path {
            Path::Avx2 | Path::Avx2Words => 2 * kq,
            _ => kq,
        };
        let lda = odd_lines(row_bytes);
        let rows = m.div_ceil(AMX_M) * AMX_M;
        // Every row read is written below (bytes kq..lda of a row are never read).
        let (a_rows, sa_rows) = (grown(&mut a, rows * lda), grown(&mut sa, rows));
        a_rows[m * lda..].fill(offset);
        sa_rows[m..].fill(0.0);
        a_rows[..m * lda]
            .par_chunks_mut(lda)
            .zip(sa_rows[..m].par_iter_mut())
            .zip(x.par_chunks(k))
            .for_each(|((dst, scale), src)| {
                let (q, rest) = dst[..row_bytes].split_at_mut(kq);
                *scale = quantize_row(src, q, offset);
                if path == Path::Avx2Words {
                    // Widened in place from the end: word i (bytes 2i, 2i + 1) is written after
                    // byte i and every byte above it were read.
                    let row = &mut dst[..row_bytes];
                    for i in (0..kq).rev() {
                        let w = (row[i] as i8 as i16).to_le_bytes();
                        row[2 * i..2 * i + 2].copy_from_slice(&w);
                    }
                } else {
                    for (d, &v) in rest.iter_mut().zip(q.iter()) {
                        *d = (v as i8).unsigned_abs();
                    }
                }
            });
        match path {
            Path::Amx => self.matmul_amx(a_rows, lda, sa_rows, m, epi, y),
            // SAFETY: `matmul_into` picks `Path::Vnni` only where AVX512-VNNI is available,
            // `Path::AvxVnni` only where AVX-VNNI is, and otherwise an AVX2 path, which a
            // `PackedI8` (built only where `available()` holds) implies.
            Path::Vnni | Path::AvxVnni | Path::Avx2 | Path::Avx2Words => unsafe {
                self.matmul_regs(a_rows, lda, sa_rows, m, epi, y, path)
            },
        }
        ROWS.with(|c| c.replace((a, sa)));
    }

    /// The panel `p`: its k-quad rows, scales and offsets.
    fn panel(&self, p: usize) -> Panel<'_> {
        let bytes = panel_bytes(self.kq);
        let panel = &self.data.as_slice()[p * bytes..(p + 1) * bytes];
        let (quads, tail) = panel.split_at(self.kq * NR);
        let word = |i: usize| -> [u8; 4] {
            let mut b = [0u8; 4];
            b.copy_from_slice(&tail[i * 4..i * 4 + 4]);
            b
        };
        Panel {
            quads,
            sw: std::array::from_fn(|c| f32::from_le_bytes(word(c))),
            offsets: std::array::from_fn(|c| i32::from_le_bytes(word(NR + c))),
        }
    }

    /// The weights as i16 for [`Path::Avx2Words`], made on first use (about 0.3 ms per million
    /// weights, once; concurrent first products wait for one copy): per panel, `kq / 2` k-pair
    /// rows of 128 bytes (the 32 columns' two consecutive inputs as i16, the layout of
    /// [`crate::bf16_gemm`]'s panels), each quad row of the int8 panel giving two.
    fn words(&self) -> &[u8] {
        self.words.get_or_init(|| {
            let (panels, quads) = (self.n.div_ceil(NR), self.kq / 4);
            let mut out = vec![0u8; panels * quads * 2 * NR * 4];
            // On this thread alone: a rayon task inside the `OnceLock`'s initialiser could steal
            // another product on the same layer and initialise it again (re-entrantly).
            out.chunks_mut(quads * 2 * NR * 4)
                .enumerate()
                .for_each(|(p, dst)| {
                    let src = self.panel(p).quads;
                    for (row, pairs) in src
                        .chunks_exact(NR * 4)
                        .zip(dst.chunks_exact_mut(2 * NR * 4))
                    {
                        // Column c's inputs 0 and 1 go to the first pair row, 2 and 3 to the
                        // second, each as two little-endian bytes at the column's 4.
                        for (c, quad) in row.chunks_exact(4).enumerate() {
                            for (j, &b) in quad.iter().enumerate() {
                                let at = (j / 2) * NR * 4 + c * 4 + (j % 2) * 2;
                                pairs[at..at + 2].copy_from_slice(&(b as i8 as i16).to_le_bytes());
                            }
                        }
                    }
                });
            out
        })
    }

    /// `y[r, c] = sa[r] · sw[c] · (C[r, c] − offset · Σ qw[c])` through `epi` for one block of
    /// rows of panel `p` (`block`: `rows` rows of NR i32 from the kernels, from row `r0`;
    /// `offset`: what the kernel's activation bytes add to each `qa`).
    #[allow(clippy::too_many_arguments)]
    fn store(
        &self,
        p: usize,
        panel: &Panel<'_>,
        r0: usize,
        block: &[i32],
        rows: usize,
        sa: &[f32],
        offset: u8,
        epi: &Epilogue<'_>,
        out: &SendPtr,
        vals: &mut [f32; AMX_M * NR],
    ) {
        // The stored constants are 128 · Σ qw: what VNNI's `+ 128` adds (the only offset).
        debug_assert!(offset == 0 || offset == 0x80, "offset {offset}");
        let off = if offset == 0 { [0; NR] } else { panel.offsets };
        for (r, (v, c)) in vals
            .chunks_exact_mut(NR)
            .zip(block.chunks_exact(NR))
            .take(rows)
            .enumerate()
        {
            let s = sa[r0 + r];
            for j in 0..NR {
                v[j] = (c[j] - off[j]) as f32 * panel.sw[j] * s;
            }
        }
        let cols = NR.min(self.n - p * NR);
        // SAFETY: rows r0..r0+rows < m and columns p*NR..p*NR+cols < n lie inside `y`; no other
        // task touches this panel's columns.
        unsafe { epi.store_block(vals, NR, rows, cols, out.0, self.n, r0, p * NR) };
    }

    /// The register-blocked products (VNNI or AVX2): rayon over panels, MR × 32 blocks.
    ///
    /// # Safety
    /// `path` is [`Path::Vnni`] only where AVX512-VNNI is available, [`Path::AvxVnni`] only
    /// where AVX-VNNI is, [`Path::Avx2`] and [`Path::Avx2Words`] only where AVX2 is.
    #[allow(clippy::too_many_arguments)]
    unsafe fn matmul_regs(
        &self,
        a: &[u8],
        lda: usize,
        sa: &[f32],
        m: usize,
        epi: Epilogue<'_>,
        y: &mut [f32],
        path: Path,
    ) {
        let offset = path.offset();
        let out = SendPtr(y.as_mut_ptr());
        let words = (path == Path::Avx2Words).then(|| self.words());
        (0..self.n.div_ceil(NR))
            .into_par_iter()
            .with_min_len(2)
            .for_each(|p| {
                let panel = self.panel(p);
                // The kernels' steps: k-quads of bytes, or k-pairs of words (as many bytes).
                let (w, steps) = match words {
                    Some(words) => (words[p * self.kq * 2 * NR..].as_ptr(), self.kq / 2),
                    None => (panel.quads.as_ptr(), self.kq / 4),
                };
                let mut block = [0i32; MR * NR];
                // The f32 values of a block, made once per panel task (not per block).
                let mut vals = [0f32; AMX_M * NR];
                for r0 in (0..m).step_by(MR) {
                    let (ar, c) = (a.as_ptr().wrapping_add(r0 * lda), block.as_mut_ptr());
                    // SAFETY: the kernel's CPU features hold (this function's contract); `a`
                    // holds MR rows of `lda` ≥ 4 · steps bytes from r0 (padded to a multiple of
                    // AMX_M rows, itself a multiple of MR; kq bytes, or 2 · kq as words); `w`
                    // holds `steps` rows of 128 bytes (kq / 4 quads of the panel, or kq / 2
                    // pairs of its words); `block` MR × NR values; on the AVX2 bytes path each
                    // row's `|qa|` follows its kq bytes of `qa` (`matmul_on`'s `row_bytes`).
                    unsafe {
                        match path {
                            Path::Vnni => vnni::kernel(ar, lda, w, steps, c),
                            Path::AvxVnni => avx2::kernel_vnni(ar, lda, 0, w, steps, c),
                            Path::Avx2Words => avx2::kernel_words(ar, lda, 0, w, steps, c),
                            _ => avx2::kernel(ar, lda, self.kq, w, steps, c),
                        }
                    };
                    let rows = MR.min(m - r0);
                    self.store(
                        p, &panel, r0, &block, rows, sa, offset, &epi, &out, &mut vals,
                    );
                }
            });
    }

    /// The AMX product: rows in chunks that stay in L2 while every panel passes over them; per
    /// panel, 32 × 32 blocks accumulated over all of k in four tiles (k-blocks through a
    /// per-thread accumulator when the chunk has enough row blocks), then stored.
    fn matmul_amx(
        &self,
        a: &[u8],
        lda: usize,
        sa: &[f32],
        m: usize,
        epi: Epilogue<'_>,
        y: &mut [f32],
    ) {
        let steps = self.kq / K_STEP;
        let chunk = (AMX_CHUNK_BYTES / lda).max(AMX_M) / AMX_M * AMX_M;
        let out = SendPtr(y.as_mut_ptr());
        for c0 in (0..m).step_by(chunk) {
            let c1 = (c0 + chunk).min(m);
            let chunk_rows = (c1 - c0).div_ceil(AMX_M) * AMX_M;
            let kb_steps = if chunk_rows / AMX_M >= 4 {
                AMX_KB_STEPS
            } else {
                steps
            };
            (0..self.n.div_ceil(NR)).into_par_iter().for_each(|p| {
                let panel = self.panel(p);
                let mut buf = PANEL_ACC.with(|c| c.take());
                let acc = grown(&mut buf, chunk_rows * NR);
                // SAFETY: AMX-INT8 is usable (`Path::Amx` is only chosen where `uses_amx()`).
                unsafe { amx::configure() };
                for k0 in (0..steps).step_by(kb_steps) {
                    let kb = kb_steps.min(steps - k0);
                    for r0 in (c0..c1).step_by(AMX_M) {
                        // SAFETY: AMX-INT8 is usable (above); `a` holds AMX_M padded rows of
                        // `lda` bytes from r0 of which bytes k0·64..(k0+kb)·64 ≤ kq are read,
                        // `quads` the panel's kq / 4 rows of 128 bytes from row k0·16; `acc`
                        // holds AMX_M × NR values from row r0 − c0.
                        unsafe {
                            amx::block(
                                amx::Op::Int8,
                                a.as_ptr().add(r0 * lda + k0 * K_STEP),
                                lda,
                                panel.quads.as_ptr().add(k0 * 16 * NR * 4),
                                kb,
                                acc.as_mut_ptr().add((r0 - c0) * NR).cast(),
                                NR * 4,
                                c1 - r0 > AMX_M / 2,
                                k0 > 0,
                            );
                        }
                    }
                }
                // SAFETY: as for `configure` above.
                unsafe { amx::release() };
                let mut vals = [0f32; AMX_M * NR];
                for r0 in (c0..c1).step_by(AMX_M) {
                    let block = &acc[(r0 - c0) * NR..(r0 - c0 + AMX_M) * NR];
                    let rows = AMX_M.min(m - r0);
                    self.store(p, &panel, r0, block, rows, sa, 0, &epi, &out, &mut vals);
                }
                PANEL_ACC.with(|c| c.replace(buf));
            });
        }
    }
}

/// One panel of a packing, its scales and offsets decoded.
struct Panel<'a> {
    /// kq / 4 rows of 128 bytes.
    quads: &'a [u8],
    /// `sw[c]`: the columns' scales.
    sw: [f32; NR],
    /// `128 · Σ qw[c]`: what VNNI's `+ 128` adds to each column's sum.
    offsets: [i32; NR],
}

thread_local! {
    /// The quantised activations and their scales of the last product on this thread.
    #[allow(clippy::type_complexity)]
    static ROWS: std::cell::Cell<(Vec<u8>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
    /// A panel task's accumulators on this thread (AMX path).
    static PANEL_ACC: std::cell::Cell<Vec<i32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// One activation row to int8 (`dst`: the row's values as bytes `q + offset`, wrapping: 0x80
/// turns i8 `q` into u8 `q + 128`; then `offset`, q = 0, for the padding); returns its scale
/// `max |x| / 127` (0 for a row of zeros).
fn quantize_row(src: &[f32], dst: &mut [u8], offset: u8) -> f32 {
    let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    // Advanced by the x86-64 vector loops; the scalar loop takes the rest.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        let f = jsearch_base::cpu::features();
        if f.avx512 {
            while i + 16 <= src.len() {
                // SAFETY: AVX-512 F was checked; 16 floats are read from src[i..] and 16 bytes
                // written to dst[i..].
                unsafe {
                    vnni::quantize16(src.as_ptr().add(i), inv, offset, dst.as_mut_ptr().add(i))
                };
                i += 16;
            }
        } else if f.avx2 {
            while i + 8 <= src.len() {
                // SAFETY: AVX2 was checked; 8 floats are read from src[i..] and 8 bytes
                // written to dst[i..].
                unsafe {
                    avx2::quantize8(src.as_ptr().add(i), inv, offset, dst.as_mut_ptr().add(i))
                };
                i += 8;
            }
        }
    }
    for (d, &v) in dst[i..].iter_mut().zip(&src[i..]) {
        // Half to even, as the vector conversion rounds (the default MXCSR mode).
        *d = ((v * inv).round_ties_even() as i32).wrapping_add(offset as i32) as u8;
    }
    dst[src.len()..].fill(offset);
    amax / 127.0
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{MR, NR, PREFETCH};
    use std::arch::x86_64::*;

    /// 16 floats at `src` times `inv`, rounded (to nearest even) to integers, plus `offset`, as
    /// bytes at `dst` (wrapping).
    ///
    /// # Safety
    /// AVX-512 F must be available; `src` readable for 16 floats, `dst` writable for 16 bytes.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn quantize16(src: *const f32, inv: f32, offset: u8, dst: *mut u8) {
        // SAFETY: the caller upholds this function's `# Safety` contract.
        unsafe {
            let v = _mm512_mul_ps(_mm512_loadu_ps(src), _mm512_set1_ps(inv));
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(offset as i32));
            _mm_storeu_si128(dst.cast(), _mm512_cvtepi32_epi8(q));
        }
    }

    /// One MR × 32 block of `Σ (qa + 128) · qw` (i32): `a` MR rows of bytes (stride `lda`),
    /// `w` one panel's `quads` k-quad rows of 128 bytes; the block to `out` (row stride 32).
    ///
    /// # Safety
    /// AVX512-VNNI (with AVX-512 F/BW/VL) must be available; `a` readable for MR rows of
    /// `4 · quads` bytes, `w` for `quads · 128` bytes, `out` writable for MR · 32 values.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn kernel(a: *const u8, lda: usize, w: *const u8, quads: usize, out: *mut i32) {
        // SAFETY: the caller upholds this function's `# Safety` contract; every address read
        // lies in the ranges it names (prefetches may point past them: they never fault).
        unsafe {
            let mut acc = [[_mm512_setzero_si512(); 2]; MR];
            for q in 0..quads {
                let wq = w.add(q * NR * 4);
                _mm_prefetch::<_MM_HINT_T0>(wq.wrapping_add(PREFETCH).cast());
                _mm_prefetch::<_MM_HINT_T0>(wq.wrapping_add(PREFETCH + 64).cast());
                let w0 = _mm512_loadu_si512(wq.cast());
                let w1 = _mm512_loadu_si512(wq.add(64).cast());
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av =
                        _mm512_set1_epi32(a.add(r * lda + 4 * q).cast::<i32>().read_unaligned());
                    acc[0] = _mm512_dpbusd_epi32(acc[0], av, w0);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], av, w1);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                _mm512_storeu_si512(out.add(r * NR).cast(), acc[0]);
                _mm512_storeu_si512(out.add(r * NR + 16).cast(), acc[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// 8 floats at `src` times `inv`, rounded (to nearest even) to integers, plus `offset`, as
    /// bytes at `dst` (wrapping).
    ///
    /// # Safety
    /// AVX2 must be available; `src` readable for 8 floats, `dst` writable for 8 bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize8(src: *const f32, inv: f32, offset: u8, dst: *mut u8) {
        // SAFETY: the caller upholds this function's `# Safety` contract.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(src), _mm256_set1_ps(inv));
            let q = _mm256_add_epi32(_mm256_cvtps_epi32(v), _mm256_set1_epi32(offset as i32));
            // The low byte of each i32: 4 bytes at the start of each 128-bit half.
            let low = _mm256_setr_epi8(
                0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
                0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
            );
            let b = _mm256_shuffle_epi8(q, low);
            let bytes =
                _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b));
            _mm_storel_epi64(dst.cast(), bytes);
        }
    }

    /// `acc + Σ₄ a·w` per i32 lane: `|a|` (u8, `a_abs`) times `w` carrying `a`'s sign
    /// (`vpsignb`), pairs into i16 (`vpmaddubsw`; both within ±127, so a pair stays below 32258
    /// and never saturates), then pairs of those into i32.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot_signed(acc: __m256i, a: __m256i, a_abs: __m256i, w: __m256i) -> __m256i {
        let p = _mm256_maddubs_epi16(a_abs, _mm256_sign_epi8(w, a));
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }

    /// `acc + Σ₄ a·w` per i32 lane, `a` as u8 (`qa + 128`): one AVX-VNNI `vpdpbusd`.
    #[inline]
    #[target_feature(enable = "avx2,avxvnni")]
    fn dot_avx_vnni(acc: __m256i, a: __m256i, _: __m256i, w: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, a, w)
    }

    /// `acc + Σ₂ a·w` per i32 lane over i16 words (`vpmaddwd`: exact for the int8 values they
    /// hold).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn dot_words(acc: __m256i, a: __m256i, _: __m256i, w: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, w))
    }

    /// The same on the AVX-512 VL encoding, which the tests run where AVX-VNNI is missing
    /// (the kernel body is the AVX-VNNI one, instruction for instruction).
    #[cfg(test)]
    #[inline]
    #[target_feature(enable = "avx512vnni,avx512vl")]
    fn dot_evex(acc: __m256i, a: __m256i, _: __m256i, w: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, a, w)
    }

    /// An MR × 32 block kernel over `dot`: four passes of 4 rows × 16 columns (8 accumulators,
    /// two weight vectors and a broadcast fit the 16 ymm registers with `dot`'s temporaries).
    /// (`$signed`: whether `$dot` reads each row's `|qa|`, `abs` bytes after its `qa`.)
    macro_rules! block_kernel {
        ($(#[$meta:meta])* $name:ident, $features:literal, $dot:ident, $signed:literal) => {
            $(#[$meta])*
            ///
            /// # Safety
            /// The CPU features named must be available; `a` readable for MR rows of
            /// `4 · quads` bytes (and as many from `abs` bytes further on where the kernel reads
            /// `|qa|`), `w` for `quads · 128` bytes, `out` writable for MR · 32 values.
            #[target_feature(enable = $features)]
            pub unsafe fn $name(
                a: *const u8,
                lda: usize,
                abs: usize,
                w: *const u8,
                quads: usize,
                out: *mut i32,
            ) {
                const R: usize = 4;
                // SAFETY: the caller upholds this function's `# Safety` contract; every
                // address read lies in the ranges it names.
                unsafe {
                    for half in 0..2 {
                        for r0 in (0..MR).step_by(R) {
                            let mut acc = [[_mm256_setzero_si256(); 2]; R];
                            for q in 0..quads {
                                let wq = w.add(q * NR * 4 + half * 64);
                                let w0 = _mm256_loadu_si256(wq.cast());
                                let w1 = _mm256_loadu_si256(wq.add(32).cast());
                                for (r, acc) in acc.iter_mut().enumerate() {
                                    let at = a.add((r0 + r) * lda + 4 * q);
                                    let av = _mm256_set1_epi32(at.cast::<i32>().read_unaligned());
                                    let abs_v = if $signed {
                                        _mm256_set1_epi32(
                                            at.add(abs).cast::<i32>().read_unaligned(),
                                        )
                                    } else {
                                        av
                                    };
                                    acc[0] = $dot(acc[0], av, abs_v, w0);
                                    acc[1] = $dot(acc[1], av, abs_v, w1);
                                }
                            }
                            for (r, acc) in acc.iter().enumerate() {
                                let o = out.add((r0 + r) * NR + half * 16);
                                _mm256_storeu_si256(o.cast(), acc[0]);
                                _mm256_storeu_si256(o.add(8).cast(), acc[1]);
                            }
                        }
                    }
                }
            }
        };
    }

    block_kernel!(
        /// One MR × 32 block of `Σ qa · qw` (i32) on AVX2 ([`dot_signed`]; `a`'s bytes are i8
        /// in [-127, 127]).
        kernel,
        "avx2",
        dot_signed,
        true
    );
    block_kernel!(
        /// One MR × 32 block of `Σ qa · qw` (i32) on AVX2 over i16 words ([`dot_words`]; each
        /// step, `quads`, a k-pair: 4 bytes of `a`, 128 of `w`).
        kernel_words,
        "avx2",
        dot_words,
        false
    );
    block_kernel!(
        /// One MR × 32 block of `Σ (qa + 128) · qw` (i32) on AVX-VNNI, as
        /// [`super::vnni::kernel`] computes it on 512 bits.
        kernel_vnni,
        "avx2,avxvnni",
        dot_avx_vnni,
        false
    );
    block_kernel!(
        /// [`kernel_vnni`] on the AVX-512 VL encoding of `vpdpbusd` (tests only).
        #[cfg(test)]
        kernel_evex,
        "avx2,avx512vnni,avx512vl",
        dot_evex,
        false
    );
}

#[cfg(not(target_arch = "x86_64"))]
mod vnni {
    /// Never called: `PackedI8` is never built off x86-64.
    pub unsafe fn kernel(_: *const u8, _: usize, _: *const u8, _: usize, _: *mut i32) {
        unreachable!("PackedI8 is never built off x86-64")
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    /// Stubs of the x86-64 block kernels, never called: `PackedI8` is never built off x86-64.
    macro_rules! never_called {
        ($($name:ident),*) => {$(
            /// Never called: `PackedI8` is never built off x86-64.
            pub unsafe fn $name(
                _: *const u8,
                _: usize,
                _: usize,
                _: *const u8,
                _: usize,
                _: *mut i32,
            ) {
                unreachable!("PackedI8 is never built off x86-64")
            }
        )*};
    }

    never_called!(kernel, kernel_words, kernel_vnni);
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

    /// The stored weight of column `c`, input `i`, and the column's scale, decoded.
    fn weight_at(p: &PackedI8, c: usize, i: usize) -> (i8, f32) {
        let panel = p.panel(c / NR);
        (
            panel.quads[(i / 4) * NR * 4 + (c % NR) * 4 + i % 4] as i8,
            panel.sw[c % NR],
        )
    }

    /// Every edge, on every kernel this CPU runs: rows not a multiple of 8 or 16 or 32, columns not a multiple
    /// of 32 (and below 16), k not a multiple of 64 (and below 4), several panels, a row chunk
    /// boundary; against an f64 product of the quantised values (which the kernels must match up
    /// to f32 rounding of the scales), against the f32 product within the quantisation's error,
    /// and the epilogue (residual, bias, GELU) as stored.
    #[test]
    fn matches_a_reference_product_of_quantised_inputs() {
        if !available() {
            assert!(PackedI8::quantize(&[1.0; 4], 2, 2).is_none());
            eprintln!("no int8 kernel on this CPU: checked that nothing is quantised");
            return;
        }
        // AVX2 runs wherever a kernel does; the others where the CPU (and tier) has them.
        let mut paths = vec![Path::Avx2, Path::Avx2Words];
        if jsearch_base::cpu::features().avx_vnni {
            paths.push(Path::AvxVnni);
        }
        if uses_vnni() {
            paths.push(Path::Vnni);
        }
        if uses_amx() {
            paths.push(Path::Amx);
        }
        eprintln!("int8 kernels checked: {paths:?}");
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 7, 5),
            (8, 32, 64),
            (9, 17, 65),
            (16, 33, 128),
            (33, 45, 200),
            (47, 100, 1030),
            (2, 33, 2730),
            (300, 40, 4096),
        ] {
            let x = rnd(m * k, 1 + m as u64);
            let w = rnd(n * k, 2 + n as u64);
            let p = PackedI8::quantize(&w, n, k).expect("quantises");
            assert_eq!((p.n(), p.k()), (n, k));
            let bias = rnd(n, 3 + k as u64);
            let resid = rnd(m * n, 4 + m as u64);
            let mut bytes_path: Option<Vec<f32>> = None;
            for &path in &paths {
                let mut y = vec![f32::NAN; m * n];
                let plain = Epilogue {
                    bias: Some(&bias),
                    ..Epilogue::default()
                };
                p.matmul_on(&x, m, &mut y, plain, path);
                // The words path sums the same integers as the bytes path: the same bits.
                match path {
                    Path::Avx2 => bytes_path = Some(y.clone()),
                    Path::Avx2Words => {
                        let want = bytes_path.as_ref().expect("Avx2 runs first");
                        assert!(
                            want.iter().zip(&y).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "words differ from bytes: m={m} n={n} k={k}"
                        );
                    }
                    _ => {}
                }
                let mut fused = resid.clone();
                let epi = Epilogue {
                    bias: Some(&bias),
                    accumulate: true,
                    gelu: true,
                };
                p.matmul_on(&x, m, &mut fused, epi, path);
                for i in 0..m {
                    let row = &x[i * k..(i + 1) * k];
                    let mut qa = vec![0u8; p.kq];
                    let sa = quantize_row(row, &mut qa, 0) as f64;
                    for j in 0..n {
                        let (mut dot, mut float) = (0i64, bias[j] as f64);
                        let (_, sw) = weight_at(&p, j, 0);
                        for t in 0..k {
                            dot += qa[t] as i8 as i64 * weight_at(&p, j, t).0 as i64;
                            float += row[t] as f64 * w[j * k + t] as f64;
                        }
                        let exact = dot as f64 * sw as f64 * sa + bias[j] as f64;
                        let got = y[i * n + j] as f64;
                        let tol = 2e-6 * (k as f64).sqrt().max(1.0);
                        assert!(
                            (exact - got).abs() <= tol,
                            "{path:?} m={m} n={n} k={k} ({i},{j}): {exact} vs {got}"
                        );
                        // Each quantised value is within half a step (1/254 of its row's or
                        // column's range, here ≤ 1).
                        let bound = 4.0 * (k as f64).sqrt() / 254.0 + 1e-6;
                        assert!(
                            (float - got).abs() <= bound,
                            "{path:?} m={m} n={n} k={k} ({i},{j}): f32 {float} vs int8 {got}"
                        );
                        let want = crate::vmath::gelu_erf((exact + resid[i * n + j] as f64) as f32);
                        assert!(
                            (want - fused[i * n + j]).abs() as f64 <= 2.0 * tol,
                            "fused {path:?} m={m} n={n} k={k} ({i},{j}): {want} vs {}",
                            fused[i * n + j]
                        );
                    }
                }
            }
        }
        assert!(PackedI8::quantize(&[1.0; 3], 2, 2).is_none());
        assert!(PackedI8::quantize(&[1.0, f32::NAN, 0.0, 0.0], 2, 2).is_none());
    }

    /// The activations' rounding is the vector conversion's (half to even), the scalar tail's
    /// too; the padding holds the offset; a row of zeros has scale 0.
    #[test]
    fn activation_rows_round_half_to_even() {
        if !available() {
            return;
        }
        let mut row = vec![0f32; 19];
        row[0] = 127.0; // scale 1: the others quantise to themselves
        row[1] = 0.5;
        row[2] = 1.5;
        row[3] = -2.5;
        row[16] = 0.5; // the scalar tail
        row[17] = -3.5;
        row[18] = 126.5;
        for offset in [0u8, 0x80] {
            let mut q = vec![0u8; 64];
            assert_eq!(quantize_row(&row, &mut q, offset), 1.0);
            let q = |i: usize| q[i].wrapping_sub(offset) as i8;
            assert_eq!([q(0), q(1), q(2), q(3)], [127, 0, 2, -2]);
            assert_eq!([q(16), q(17), q(18)], [0, -4, 126]);
            assert!((19..64).all(|i| q(i) == 0));
        }
        let mut zeros = vec![0u8; 64];
        assert_eq!(quantize_row(&[0.0; 20], &mut zeros, 0x80), 0.0);
        assert!(zeros.iter().all(|&b| b == 0x80));
    }

    /// The AVX-VNNI kernel's body gives the 512-bit VNNI kernel's sums, bit for bit: run on the
    /// AVX-512 VL encoding of the same instruction where the CPU has AVX512-VNNI (AVX-VNNI CPUs
    /// also run it through `matches_a_reference_product_of_quantised_inputs`).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_vnni_kernel_sums_as_vnni_does() {
        let f = jsearch_base::cpu::Features::detect();
        if !f.avx512_vnni {
            eprintln!("no AVX512-VNNI: the AVX-VNNI body is checked on AVX-VNNI CPUs only");
            return;
        }
        let quads = 37;
        let a: Vec<u8> = (0..MR * 4 * quads).map(|i| (i * 97 % 256) as u8).collect();
        let w: Vec<u8> = (0..quads * 128).map(|i| (i * 31 % 255) as u8).collect();
        let (mut want, mut got) = ([0i32; MR * NR], [0i32; MR * NR]);
        // SAFETY: AVX512-VNNI (and with it AVX-512 F/BW/VL, AVX2) was detected above; `a` holds
        // MR rows of 4·quads bytes, `w` quads rows of 128, the outputs MR × 32 values.
        unsafe {
            vnni::kernel(a.as_ptr(), 4 * quads, w.as_ptr(), quads, want.as_mut_ptr());
            avx2::kernel_evex(
                a.as_ptr(),
                4 * quads,
                0,
                w.as_ptr(),
                quads,
                got.as_mut_ptr(),
            );
        }
        assert_eq!(want, got);
        assert!(want.iter().any(|&v| v != 0));
    }
}
