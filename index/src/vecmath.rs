//! Vector helpers: validation, normalisation, Matryoshka truncation, f16 conversion and SIMD dot products.

use crate::error::{IndexError, Result};
use simsimd::SpatialSimilarity;

/// Half-precision scalar as simsimd wants it (IEEE 754 binary16 bits).
pub type F16 = simsimd::f16;

/// Smallest norm accepted for a vector (below: [`IndexError::ZeroVector`]).
pub const MIN_NORM: f32 = 1e-12;

/// Check length, finiteness and norm of a vector; returns its L2 norm.
pub fn validate(v: &[f32], expected: usize, id: Option<u64>) -> Result<f32> {
    if v.len() != expected {
        return Err(IndexError::WrongDimension {
            id,
            got: v.len(),
            expected,
        });
    }
    if let Some(position) = v.iter().position(|x| !x.is_finite()) {
        return Err(IndexError::NonFinite { id, position });
    }
    let norm = norm(v);
    if norm.is_nan() || norm <= MIN_NORM || !norm.is_finite() {
        return Err(IndexError::ZeroVector { id, norm });
    }
    Ok(norm)
}

pub use jsearch_base::{norm, normalize, truncate_normalize};

/// f32 -> f16 (round to nearest).
pub fn to_f16(v: &[f32]) -> Vec<F16> {
    use half::slice::HalfFloatSliceExt;
    let mut h = vec![half::f16::ZERO; v.len()];
    h.convert_from_f32_slice(v);
    h.into_iter().map(|x| simsimd::f16(x.to_bits())).collect()
}

/// f16 -> f32.
/// (With the CPU's conversion instructions where it has them.)
pub fn from_f16(v: &[F16]) -> Vec<f32> {
    use half::slice::HalfFloatSliceExt;
    // SAFETY: `F16` is `#[repr(transparent)]` over `u16`, as is `half::f16`.
    let h: &[half::f16] = unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len()) };
    let mut out = vec![0f32; v.len()];
    h.convert_to_f32_slice(&mut out);
    out
}

/// Little-endian bytes of f16 values.
pub fn f16_to_bytes(v: &[F16], out: &mut Vec<u8>) {
    out.reserve(v.len() * 2);
    for x in v {
        out.extend_from_slice(&x.0.to_le_bytes());
    }
}

/// Decode little-endian f16 bytes into `out` (cleared first).
pub fn f16_from_bytes(b: &[u8], out: &mut Vec<F16>) {
    out.clear();
    out.extend(
        b.chunks_exact(2)
            .map(|c| simsimd::f16(u16::from_le_bytes([c[0], c[1]]))),
    );
}

/// Dot product of two f16 vectors, accumulated in f32 (over the shorter length).
///
/// On x86-64 CPUs with AVX-512 (F, BW, VL) this converts 16 lanes at a time (`vcvtph2ps`);
/// simsimd 6.5 has no AVX-512 f16 kernel for CPUs without AVX512-FP16 (Zen 4, Skylake-X to
/// Ice Lake) and falls back to its 8-lane F16C kernel there, which made the graph search
/// spend half its time in distances. Elsewhere: simsimd.
#[inline]
pub fn dot_f16(a: &[F16], b: &[F16]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if avx512_available() {
        // SAFETY: the CPU supports the kernel's target features (checked above) and both
        // pointers are valid for `n` u16 reads (`F16` is `repr(transparent)` over `u16`).
        return unsafe { avx512::dot_f16(a.as_ptr().cast(), b.as_ptr().cast(), n) };
    }
    F16::dot(&a[..n], &b[..n]).unwrap_or(0.0) as f32
}

/// Dot product of f16 values `a` with f16 values stored as little-endian bytes `b` (e.g. a
/// slice of a redb value), without decoding `b` into a buffer first.
#[inline]
pub fn dot_f16_le_bytes(a: &[F16], b: &[u8]) -> f32 {
    let n = a.len().min(b.len() / 2);
    #[cfg(target_arch = "x86_64")]
    if avx512_available() {
        // SAFETY: as in `dot_f16`; x86-64 is little-endian, so `b` holds `n` unaligned u16
        // values, which the kernel reads with unaligned loads.
        return unsafe { avx512::dot_f16(a.as_ptr().cast(), b.as_ptr().cast(), n) };
    }
    dot_f16_le_bytes_portable(&a[..n], &b[..n * 2])
}

/// [`dot_f16_le_bytes`] without AVX-512: both sides widened to f32 a block at a time through
/// stack buffers (this runs once per stored vector in the re-rank and the exact scan, so it must
/// not allocate), then an f32 dot product. Not simsimd's f16 dot: on CPUs with AVX512-FP16 it
/// accumulates in f16 (a relative error of 1.6e-4 at 255 values, measured on a Sapphire Rapids
/// class CPU), which the exact scores must not have.
fn dot_f16_le_bytes_portable(a: &[F16], b: &[u8]) -> f32 {
    use half::slice::HalfFloatSliceExt;
    let n = a.len().min(b.len() / 2);
    const BLOCK: usize = 256;
    let mut ha = [half::f16::ZERO; BLOCK];
    let mut hb = [half::f16::ZERO; BLOCK];
    let mut fa = [0f32; BLOCK];
    let mut fb = [0f32; BLOCK];
    let mut sum = 0.0f64;
    for (ab, bb) in a[..n].chunks(BLOCK).zip(b[..n * 2].chunks(BLOCK * 2)) {
        let m = ab.len();
        for (d, x) in ha.iter_mut().zip(ab) {
            *d = half::f16::from_bits(x.0);
        }
        for (d, c) in hb.iter_mut().zip(bb.chunks_exact(2)) {
            *d = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]]));
        }
        ha[..m].convert_to_f32_slice(&mut fa[..m]);
        hb[..m].convert_to_f32_slice(&mut fb[..m]);
        sum += f32::dot(&fa[..m], &fb[..m]).unwrap_or(0.0);
    }
    sum as f32
}

/// Prefetch the start of `v` into the cache: up to 8 cache lines = the first 256 coordinates (a
/// whole graph vector). A hint; no-op where unsupported.
#[inline]
pub fn prefetch(v: &[F16]) {
    prefetch_lines(v, 8);
}

/// Prefetch the first `max_lines` cache lines of `v` (at most its length).
#[inline]
pub fn prefetch_lines<T>(v: &[T], max_lines: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = v.as_ptr().cast::<i8>();
        for line in 0..std::mem::size_of_val(v).div_ceil(64).min(max_lines) {
            // SAFETY: prefetch never faults; the address is inside `v`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(line * 64)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, max_lines);
}

/// Whether the CPU has what the AVX-512 kernels below need (see `jsearch_base::cpu`).
#[cfg(target_arch = "x86_64")]
#[inline]
fn avx512_available() -> bool {
    let f = jsearch_base::cpu::features();
    f.avx512 && f.f16c && f.fma
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// f32-accumulated dot product of `n` f16 values at `a` and `b` (unaligned).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and both pointers must be valid for `n` u16 reads.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c,fma")]
    pub unsafe fn dot_f16(a: *const u16, b: *const u16, n: usize) -> f32 {
        // SAFETY: the caller upholds this function's `# Safety` contract.
        unsafe {
            let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            let mut i = 0;
            while i + 32 <= n {
                let a0 = _mm512_cvtph_ps(_mm256_loadu_si256(a.add(i).cast()));
                let b0 = _mm512_cvtph_ps(_mm256_loadu_si256(b.add(i).cast()));
                let a1 = _mm512_cvtph_ps(_mm256_loadu_si256(a.add(i + 16).cast()));
                let b1 = _mm512_cvtph_ps(_mm256_loadu_si256(b.add(i + 16).cast()));
                s0 = _mm512_fmadd_ps(a0, b0, s0);
                s1 = _mm512_fmadd_ps(a1, b1, s1);
                i += 32;
            }
            while i < n {
                let left = (n - i).min(16);
                let m: __mmask16 = if left == 16 {
                    0xFFFF
                } else {
                    (1u16 << left) - 1
                };
                // Masked loads do not touch (or fault on) the lanes past `n`.
                let a0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, a.add(i).cast()));
                let b0 = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, b.add(i).cast()));
                s0 = _mm512_fmadd_ps(a0, b0, s0);
                i += left;
            }
            _mm512_reduce_add_ps(_mm512_add_ps(s0, s1))
        }
    }
}

/// Dot product of two f32 vectors (simsimd).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    f32::dot(a, b).unwrap_or(0.0) as f32
}

/// The graph vector derived from a stored full vector: f16 full -> f32 -> first `ann_dim` -> re-normalised -> f16.
/// Always derived from the *stored* (f16) full vector so that building and reloading give identical bits.
pub fn ann_from_full(full: &[F16], ann_dim: usize) -> Vec<F16> {
    ann_from_decoded(&from_f16(&full[..ann_dim]), ann_dim)
}

/// [`ann_from_full`] of a vector already decoded to f32 (the same bits).
pub fn ann_from_decoded(full: &[f32], ann_dim: usize) -> Vec<F16> {
    // `ann_dim` is in 1..=dim for every store (settings are validated on open).
    to_f16(&truncate_normalize(full, ann_dim).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_vectors() {
        assert!(matches!(
            validate(&[1.0, 2.0], 3, Some(1)),
            Err(IndexError::WrongDimension { .. })
        ));
        assert!(matches!(
            validate(&[1.0, f32::NAN, 0.0], 3, None),
            Err(IndexError::NonFinite { position: 1, .. })
        ));
        assert!(matches!(
            validate(&[0.0; 3], 3, None),
            Err(IndexError::ZeroVector { .. })
        ));
        assert!(validate(&[0.0, 3.0, 4.0], 3, None).is_ok());
    }

    #[test]
    fn f16_dot_matches_f32() {
        let a: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let b: Vec<f32> = (0..256)
            .map(|i| ((i * 91 % 103) as f32 - 51.0) / 51.0)
            .collect();
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let h = dot_f16(&to_f16(&a), &to_f16(&b));
        assert!(
            (exact - h).abs() < 1e-2 * exact.abs().max(1.0),
            "{exact} vs {h}"
        );
        let mut bytes = Vec::new();
        f16_to_bytes(&to_f16(&b), &mut bytes);
        assert_eq!(dot_f16_le_bytes(&to_f16(&a), &bytes), h);
        let mut back = Vec::new();
        f16_from_bytes(&bytes, &mut back);
        assert_eq!(back, to_f16(&b));
        bytes.clear();
        f16_to_bytes(&to_f16(&a), &mut bytes);
        let mut back = Vec::new();
        f16_from_bytes(&bytes, &mut back);
        assert_eq!(back, to_f16(&a));
    }

    /// The SIMD kernel against a scalar f32 reference at every length 0..=80 (full 32-lane
    /// steps, 16-lane masked tails, odd tails), including f16 extremes.
    #[test]
    fn f16_dot_every_length_matches_scalar() {
        let vals: Vec<f32> = (0..80)
            .map(|i| match i % 7 {
                0 => 65504.0 / 1024.0,
                1 => -6.1e-5,
                _ => ((i * 53 % 97) as f32 - 48.0) / 17.0,
            })
            .collect();
        let wts: Vec<f32> = (0..80)
            .map(|i| ((i * 29 % 89) as f32 - 44.0) / 31.0)
            .collect();
        for n in 0..=80 {
            let (a, b) = (to_f16(&vals[..n]), to_f16(&wts[..n]));
            let exact: f64 = from_f16(&a)
                .iter()
                .zip(from_f16(&b))
                .map(|(x, y)| *x as f64 * y as f64)
                .sum();
            let got = dot_f16(&a, &b) as f64;
            assert!(
                (exact - got).abs() <= 1e-4 * exact.abs().max(1.0),
                "n={n}: {exact} vs {got}"
            );
            // unequal lengths: the shorter one counts
            assert_eq!(dot_f16(&a, &to_f16(&wts)), got as f32);
        }
        // the portable byte path (used without AVX-512), across its 256-value blocks
        let long: Vec<f32> = (0..700)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 97.0)
            .collect();
        for n in [0, 1, 255, 256, 257, 700] {
            let a = to_f16(&long[..n]);
            let mut bytes = Vec::new();
            f16_to_bytes(&to_f16(&long[..n]), &mut bytes);
            let exact: f64 = from_f16(&a).iter().map(|x| (*x as f64) * (*x as f64)).sum();
            let got = dot_f16_le_bytes_portable(&a, &bytes) as f64;
            assert!(
                (exact - got).abs() <= 1e-4 * exact.max(1.0),
                "n={n}: {exact} vs {got}"
            );
        }
    }
}
