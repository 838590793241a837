//! Pillow-exact antialiased bicubic resampling of 8-bit RGB images (spec §5.2).
//!
//! This reproduces `PIL.Image.resize(size, Image.BICUBIC)` (Pillow's `libImaging/Resample.c`)
//! bit for bit on 8-bit images:
//!
//! * filter: cubic convolution with `a = -0.5`, support `2 · max(scale, 1)` (antialiasing when
//!   downscaling), `center = (o + 0.5) · scale`, `xmin = max(int(center − support + 0.5), 0)`,
//!   `xend = min(int(center + support + 0.5), in)`, weights normalised to sum 1 in `f64`;
//! * weights quantised to `round-half-away(w · 2^22)` (`PRECISION_BITS = 22`);
//! * accumulation `2^21 + Σ pixel · w` in `i32`, output `clamp(acc >> 22, 0, 255)`;
//! * two passes: horizontal first (only on the source rows the vertical pass needs), stored as
//!   `u8`, then vertical; a pass whose size does not change is skipped, as in Pillow.
//!
//! Because every output pixel depends only on its own precomputed taps, any sub-rectangle of the
//! resized image can be produced on its own with identical values; [`resize_region`] uses this to
//! resize only the part that survives the centre crop.
//!
//! Speed: the weights are precomputed once per axis (and only for the outputs asked for); the
//! horizontal kernel reads the interleaved RGB row directly, with the taps padded to a multiple
//! of 8 and the weights repeated per channel, so the inner loop is a fixed-width (24-lane)
//! integer multiply-add the compiler vectorises (an AVX2 build of the same code is selected at
//! run time on x86-64); the vertical kernel streams whole rows into an `i32` accumulator row.
//! Rows are processed in parallel with rayon when the image is large enough to pay for it.

use image::RgbImage;
use rayon::prelude::*;

/// Fixed-point precision of Pillow's 8-bit resampler (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;
/// Rounding constant added before the shift.
const HALF: i32 = 1 << (PRECISION_BITS - 1);
/// Taps processed per inner-loop iteration of the horizontal kernel.
const TAP_BLOCK: usize = 8;
/// Work (multiply-adds) under which a pass stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 21;

/// Pillow's bicubic kernel with `a = -0.5`.
#[inline]
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Precomputed integer taps of one axis, for the outputs `first .. first + start.len()`.
#[derive(Debug, Clone)]
pub(crate) struct Taps {
    /// First output index covered.
    pub first: usize,
    /// Taps per output (Pillow's `ksize`, rounded up to a multiple of [`TAP_BLOCK`]; extra
    /// taps are 0).
    pub stride: usize,
    /// First source index of each output.
    pub start: Vec<usize>,
    /// Number of meaningful taps of each output (Pillow's `xmax - xmin`).
    pub count: Vec<usize>,
    /// `outputs × stride` quantised weights.
    pub weights: Vec<i32>,
}

impl Taps {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` (box = the whole input), for
    /// the outputs `o0 .. o1` of an `in_size → out_size` resize.
    pub(crate) fn new(in_size: usize, out_size: usize, o0: usize, o1: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        let ksize = (support.ceil() as usize) * 2 + 1;
        let stride = ksize.div_ceil(TAP_BLOCK) * TAP_BLOCK;
        let n_out = o1.saturating_sub(o0);
        let mut start = Vec::with_capacity(n_out);
        let mut count = Vec::with_capacity(n_out);
        let mut weights = vec![0i32; n_out * stride];
        let mut k = vec![0f64; ksize];
        let ss = 1.0 / filterscale;
        for (i, o) in (o0..o1).enumerate() {
            let center = (o as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero; negative values are clamped to 0 right after.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut ww = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = bicubic((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                ww += w;
            }
            let row = &mut weights[i * stride..i * stride + stride];
            for x in 0..n {
                let w = if ww != 0.0 { k[x] / ww } else { k[x] };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                row[x] = if w < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                };
            }
            start.push(xmin);
            count.push(n);
        }
        Taps {
            first: o0,
            stride,
            start,
            count,
            weights,
        }
    }

    /// Range of source indices `[first, end)` used by all covered outputs.
    fn source_range(&self) -> (usize, usize) {
        let first = self.start.iter().copied().min().unwrap_or(0);
        let end = self
            .start
            .iter()
            .zip(&self.count)
            .map(|(s, c)| s + c)
            .max()
            .unwrap_or(0);
        (first, end)
    }
}

#[inline(always)]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Lanes of the horizontal accumulator: [`TAP_BLOCK`] taps × 3 channels.
const LANES: usize = TAP_BLOCK * 3;

/// Horizontal pass over a block of rows: `src` holds full source rows (RGB, `in_w` wide),
/// `dst` receives the RGB pixels of the outputs covered by `taps`; `w3` is `taps.weights`
/// with every weight repeated 3 times (one per channel), so a tap block lines up with the
/// interleaved RGB samples and the inner loop is a plain fixed-width multiply-add.
#[inline(always)]
fn horizontal_block_generic(src: &[u8], in_w: usize, dst: &mut [u8], taps: &Taps, w3: &[i32]) {
    let out_cols = taps.start.len();
    let stride = taps.stride;
    let row_len = in_w * 3;
    for (src_row, dst_row) in src
        .chunks_exact(row_len)
        .zip(dst.chunks_exact_mut(out_cols * 3))
    {
        for (i, out) in dst_row.chunks_exact_mut(3).enumerate() {
            let xmin = taps.start[i];
            let w = &w3[i * stride * 3..(i + 1) * stride * 3];
            let mut sum = [HALF; 3];
            if (xmin + stride) * 3 <= row_len {
                // All `stride` taps are inside the row (weights past `count` are 0).
                let s = &src_row[xmin * 3..(xmin + stride) * 3];
                let mut acc = [0i32; LANES];
                for (sc, wc) in s.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
                    for l in 0..LANES {
                        acc[l] = acc[l].wrapping_add(i32::from(sc[l]).wrapping_mul(wc[l]));
                    }
                }
                for (l, a) in acc.iter().enumerate() {
                    sum[l % 3] = sum[l % 3].wrapping_add(*a);
                }
            } else {
                // Right edge: only the meaningful taps.
                let n = taps.count[i];
                let s = &src_row[xmin * 3..(xmin + n) * 3];
                for (l, (&p, &wt)) in s.iter().zip(w).enumerate() {
                    sum[l % 3] = sum[l % 3].wrapping_add(i32::from(p).wrapping_mul(wt));
                }
            }
            out[0] = clip8(sum[0]);
            out[1] = clip8(sum[1]);
            out[2] = clip8(sum[2]);
        }
    }
}

/// AVX2 version of [`horizontal_block_generic`] (same integer sums, so identical output):
/// per block of 8 taps, three 8-byte loads widened to `i32`, three `vpmulld`, three adds.
///
/// # Safety
/// The CPU must support AVX2 (checked by the caller).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_block_avx2(src: &[u8], in_w: usize, dst: &mut [u8], taps: &Taps, w3: &[i32]) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        use std::arch::x86_64::*;
        let out_cols = taps.start.len();
        let stride = taps.stride;
        let row_len = in_w * 3;
        for (src_row, dst_row) in src
            .chunks_exact(row_len)
            .zip(dst.chunks_exact_mut(out_cols * 3))
        {
            for (i, out) in dst_row.chunks_exact_mut(3).enumerate() {
                let xmin = taps.start[i];
                let w = &w3[i * stride * 3..(i + 1) * stride * 3];
                let mut sum = [HALF; 3];
                if (xmin + stride) * 3 <= row_len {
                    let s = &src_row[xmin * 3..(xmin + stride) * 3];
                    let mut a0 = _mm256_setzero_si256();
                    let mut a1 = _mm256_setzero_si256();
                    let mut a2 = _mm256_setzero_si256();
                    for (sc, wc) in s.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
                        // SAFETY: `sc` has 24 bytes and `wc` 24 i32 (chunks_exact), so the 8-byte
                        // and 32-byte unaligned loads below stay inside them.
                        let (sp, wp) = (sc.as_ptr(), wc.as_ptr());
                        let p0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sp as *const __m128i));
                        let p1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(sp.add(8) as *const __m128i));
                        let p2 =
                            _mm256_cvtepu8_epi32(_mm_loadl_epi64(sp.add(16) as *const __m128i));
                        let w0 = _mm256_loadu_si256(wp as *const __m256i);
                        let w1 = _mm256_loadu_si256(wp.add(8) as *const __m256i);
                        let w2 = _mm256_loadu_si256(wp.add(16) as *const __m256i);
                        a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(p0, w0));
                        a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(p1, w1));
                        a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(p2, w2));
                    }
                    // Lanes l and l + 12 hold the same channel: fold 24 lanes to 12.
                    let x0 = _mm_add_epi32(
                        _mm256_castsi256_si128(a0),
                        _mm256_extracti128_si256::<1>(a1),
                    );
                    let x1 = _mm_add_epi32(
                        _mm256_extracti128_si256::<1>(a0),
                        _mm256_castsi256_si128(a2),
                    );
                    let x2 = _mm_add_epi32(
                        _mm256_castsi256_si128(a1),
                        _mm256_extracti128_si256::<1>(a2),
                    );
                    let mut lanes = [0i32; 12];
                    _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, x0);
                    _mm_storeu_si128(lanes.as_mut_ptr().add(4) as *mut __m128i, x1);
                    _mm_storeu_si128(lanes.as_mut_ptr().add(8) as *mut __m128i, x2);
                    for (l, a) in lanes.iter().enumerate() {
                        sum[l % 3] = sum[l % 3].wrapping_add(*a);
                    }
                } else {
                    let n = taps.count[i];
                    let s = &src_row[xmin * 3..(xmin + n) * 3];
                    for (l, (&p, &wt)) in s.iter().zip(w).enumerate() {
                        sum[l % 3] = sum[l % 3].wrapping_add(i32::from(p).wrapping_mul(wt));
                    }
                }
                out[0] = clip8(sum[0]);
                out[1] = clip8(sum[1]);
                out[2] = clip8(sum[2]);
            }
        }
    }
}

fn horizontal_block(src: &[u8], in_w: usize, dst: &mut [u8], taps: &Taps, w3: &[i32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if jsearch_base::cpu::features().avx2 {
            // SAFETY: AVX2 support was just checked.
            unsafe { horizontal_block_avx2(src, in_w, dst, taps, w3) };
            return;
        }
    }
    horizontal_block_generic(src, in_w, dst, taps, w3)
}

/// Vertical pass for a block of output rows. `src` holds rows `src_first ..` of the
/// horizontally resized image (`row_len` bytes each); `dst` receives the output rows
/// `y0 .. y0 + dst.len() / row_len`.
#[inline(always)]
fn vertical_block_generic(
    src: &[u8],
    src_first: usize,
    row_len: usize,
    dst: &mut [u8],
    taps: &Taps,
    y0: usize,
) {
    let mut acc = vec![0i32; row_len];
    for (j, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        let y = y0 + j - taps.first;
        acc.fill(HALF);
        let ymin = taps.start[y];
        let n = taps.count[y];
        let weights = &taps.weights[y * taps.stride..y * taps.stride + n];
        for (t, &w) in weights.iter().enumerate() {
            let r = ymin + t - src_first;
            let row = &src[r * row_len..(r + 1) * row_len];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add(i32::from(p).wrapping_mul(w));
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(acc.iter()) {
            *d = clip8(a);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
/// # Safety
/// The CPU must support AVX2 (checked by the caller).
unsafe fn vertical_block_avx2(
    src: &[u8],
    src_first: usize,
    row_len: usize,
    dst: &mut [u8],
    taps: &Taps,
    y0: usize,
) {
    vertical_block_generic(src, src_first, row_len, dst, taps, y0)
}

fn vertical_block(
    src: &[u8],
    src_first: usize,
    row_len: usize,
    dst: &mut [u8],
    taps: &Taps,
    y0: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if jsearch_base::cpu::features().avx2 {
            // SAFETY: AVX2 support was just checked.
            unsafe { vertical_block_avx2(src, src_first, row_len, dst, taps, y0) };
            return;
        }
    }
    vertical_block_generic(src, src_first, row_len, dst, taps, y0)
}

/// Rows per parallel job so that each job has roughly `PARALLEL_MIN_WORK / 4` multiply-adds.
fn rows_per_job(rows: usize, work_per_row: usize) -> usize {
    let total = rows.saturating_mul(work_per_row);
    if total < PARALLEL_MIN_WORK {
        return rows.max(1);
    }
    let per_job = (PARALLEL_MIN_WORK / 4 / work_per_row.max(1)).max(1);
    per_job.clamp(1, rows.max(1))
}

/// A rectangle of the resized image: columns `x0 .. x0 + w`, rows `y0 .. y0 + h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First output column.
    pub x0: u32,
    /// First output row.
    pub y0: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

/// Resizes `img` to `out_w × out_h` with Pillow's bicubic filter and returns only `region`
/// of the result (identical to resizing fully and cropping, but cheaper).
///
/// # Panics
/// Never for valid arguments; `region` is clamped to the output size, and empty inputs or
/// outputs give an empty image.
pub fn resize_region(img: &RgbImage, out_w: u32, out_h: u32, region: Region) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (out_w as usize, out_h as usize);
    let x0 = (region.x0 as usize).min(out_w);
    let y0 = (region.y0 as usize).min(out_h);
    let rw = (region.w as usize).min(out_w - x0);
    let rh = (region.h as usize).min(out_h - y0);
    if in_w == 0 || in_h == 0 || rw == 0 || rh == 0 {
        return RgbImage::new(rw as u32, rh as u32);
    }
    let src = img.as_raw();
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;

    // Vertical taps first: they decide which source rows the horizontal pass must produce.
    let vtaps = need_v.then(|| Taps::new(in_h, out_h, y0, y0 + rh));
    let (row_first, row_end) = match &vtaps {
        Some(t) => t.source_range(),
        None => (y0, y0 + rh),
    };

    // Horizontal pass (or a plain copy of the needed columns when the width is unchanged).
    let row_len = rw * 3;
    let tmp_rows = row_end - row_first;
    let mut tmp = vec![0u8; tmp_rows * row_len];
    if need_h {
        let htaps = Taps::new(in_w, out_w, x0, x0 + rw);
        let w3: Vec<i32> = htaps.weights.iter().flat_map(|&w| [w; 3]).collect();
        let src_rows = &src[row_first * in_w * 3..row_end * in_w * 3];
        let per_job = rows_per_job(tmp_rows, rw * htaps.stride * 3);
        tmp.par_chunks_mut(per_job * row_len)
            .zip(src_rows.par_chunks(per_job * in_w * 3))
            .for_each(|(dst, s)| horizontal_block(s, in_w, dst, &htaps, &w3));
    } else {
        for (r, dst) in tmp.chunks_exact_mut(row_len).enumerate() {
            let off = ((row_first + r) * in_w + x0) * 3;
            dst.copy_from_slice(&src[off..off + row_len]);
        }
    }

    let out = match &vtaps {
        Some(vt) => {
            let mut out = vec![0u8; rh * row_len];
            let per_job = rows_per_job(rh, row_len * vt.stride);
            out.par_chunks_mut(per_job * row_len)
                .enumerate()
                .for_each(|(j, dst)| {
                    vertical_block(&tmp, row_first, row_len, dst, vt, y0 + j * per_job)
                });
            out
        }
        None => tmp,
    };
    RgbImage::from_raw(rw as u32, rh as u32, out)
        .unwrap_or_else(|| RgbImage::new(rw as u32, rh as u32))
}

/// Resizes `img` to exactly `out_w × out_h` with Pillow's bicubic filter (bit-exact).
pub fn resize_bicubic(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    resize_region(
        img,
        out_w,
        out_h,
        Region {
            x0: 0,
            y0: 0,
            w: out_w,
            h: out_h,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_sum_close_to_one() {
        for (i, o) in [(100, 56), (56, 56), (40, 56), (4000, 682), (3, 1000)] {
            let t = Taps::new(i, o, 0, o);
            for k in 0..o {
                let s: i64 = t.weights[k * t.stride..(k + 1) * t.stride]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                assert!((s - (1 << 22)).abs() < 64, "{i}->{o} out {k}: {s}");
            }
        }
    }

    #[test]
    fn dispatched_kernel_matches_portable_kernel() {
        let (in_w, rows) = (997usize, 7usize);
        let src: Vec<u8> = (0..in_w * rows * 3)
            .map(|i| ((i * 7919 + i / 13) % 256) as u8)
            .collect();
        for out_w in [1usize, 13, 170, 500, 997, 1500] {
            let taps = Taps::new(in_w, out_w, 0, out_w);
            let w3: Vec<i32> = taps.weights.iter().flat_map(|&w| [w; 3]).collect();
            let mut a = vec![0u8; rows * out_w * 3];
            let mut b = a.clone();
            horizontal_block_generic(&src, in_w, &mut a, &taps, &w3);
            horizontal_block(&src, in_w, &mut b, &taps, &w3);
            assert!(a == b, "{in_w} -> {out_w}");
        }
    }

    #[test]
    fn region_equals_full_then_crop() {
        let img = RgbImage::from_fn(97, 61, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (x * y) as u8, (255 - x * 2) as u8])
        });
        let full = resize_bicubic(&img, 45, 28);
        let part = resize_region(
            &img,
            45,
            28,
            Region {
                x0: 5,
                y0: 3,
                w: 30,
                h: 20,
            },
        );
        for y in 0..20 {
            for x in 0..30 {
                assert_eq!(part.get_pixel(x, y), full.get_pixel(x + 5, y + 3));
            }
        }
    }
}
