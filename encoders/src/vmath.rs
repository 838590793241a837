//! Element-wise math of the bf16 CPU path on 16 lanes: `e^x` (softmax), the exact (erf) GELU
//! of the text tower and the SiLU gate of the vision tower, with scalar versions of the same
//! formulas for tails and other CPUs.

/// `erf(z)` as Eigen and XLA compute it in f32: `z·P(z²) / Q(z²)` with `z` clamped to ±4
/// (beyond, erf is ±1 in f32), about 1e-7 absolute error; no exp, so the vector form costs
/// about half of an exp-based one. Coefficients highest power first.
const ERF_NUM: [f32; 7] = [
    -2.726_142_3e-10,
    2.770_681_4e-8,
    -2.101_024e-6,
    -5.692_506_4e-5,
    -7.349_906_3e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
const ERF_DEN: [f32; 5] = [
    -1.456_607_2e-5,
    -2.133_740_6e-4,
    -1.682_827e-3,
    -7.373_329_2e-3,
    -1.426_474e-2,
];

/// `erf(x)` (scalar, the formula of the vector path).
pub(crate) fn erf(x: f32) -> f32 {
    let z = x.clamp(-4.0, 4.0);
    let z2 = z * z;
    let p = ERF_NUM[1..].iter().fold(ERF_NUM[0], |acc, &c| acc * z2 + c);
    let q = ERF_DEN[1..].iter().fold(ERF_DEN[0], |acc, &c| acc * z2 + c);
    z * p / q
}

/// `x · Φ(x) = x/2 · (1 + erf(x / √2))` (PyTorch's `gelu`, approximate = 'none').
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// [`gelu_erf`] of every value of `xs`, in place.
pub(crate) fn gelu_erf_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if jsearch_base::cpu::features().avx512 {
        // SAFETY: AVX-512 F was just checked; the kernel reads and writes only `xs`.
        unsafe { avx512::gelu_erf(xs) };
        return;
    }
    xs.iter_mut().for_each(|x| *x = gelu_erf(*x));
}

/// `silu(a) · v` element-wise into `out` (the SwiGLU gate: `a / (1 + e^-a) · v`).
pub(crate) fn silu_mul(a: &[f32], v: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if jsearch_base::cpu::features().avx512 {
        // SAFETY: AVX-512 F was just checked; the kernel reads `a`, `v` and writes `out` within
        // the shortest of the three.
        unsafe { avx512::silu_mul(a, v, out) };
        return;
    }
    for ((o, &a), &v) in out.iter_mut().zip(a).zip(v) {
        *o = a / (1.0 + (-a).exp()) * v;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{ERF_DEN, ERF_NUM};
    use crate::bf16_gemm::avx512::mask;
    use std::arch::x86_64::*;

    /// `e^x` for 16 lanes (Cephes-style: `x = n·ln2 + r`, degree-6 polynomial for `e^r`,
    /// `vscalefps` for `2^n`); relative error about 1e-7, 0 below -87.3.
    ///
    /// # Safety
    /// AVX-512 F must be available.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp16(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.3));
        let x = _mm512_min_ps(x, _mm512_set1_ps(88.7));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_2e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let r2 = _mm512_mul_ps(r, r);
        let e = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0));
        _mm512_scalef_ps(e, n)
    }

    /// `1 / x` for 16 lanes: the 14-bit estimate and one Newton step (relative error about
    /// 1e-7 for normal x; `vdivps` takes 16 cycles a vector on Sapphire Rapids, this 3 µops).
    ///
    /// # Safety
    /// AVX-512 F must be available.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn recip(x: __m512) -> __m512 {
        let r = _mm512_rcp14_ps(x);
        // r · (2 − x·r)
        _mm512_mul_ps(r, _mm512_fnmadd_ps(x, r, _mm512_set1_ps(2.0)))
    }

    /// GELU (erf) of 16 lanes: [`super::ERF_NUM`] / [`super::ERF_DEN`] in `z = x/√2`
    /// clamped to ±4 (no exp, one reciprocal).
    ///
    /// # Safety
    /// AVX-512 F must be available.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu16(x: __m512) -> __m512 {
        let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm512_max_ps(_mm512_min_ps(z, _mm512_set1_ps(4.0)), _mm512_set1_ps(-4.0));
        let z2 = _mm512_mul_ps(z, z);
        let mut p = _mm512_set1_ps(ERF_NUM[0]);
        for &c in &ERF_NUM[1..] {
            p = _mm512_fmadd_ps(p, z2, _mm512_set1_ps(c));
        }
        let mut q = _mm512_set1_ps(ERF_DEN[0]);
        for &c in &ERF_DEN[1..] {
            q = _mm512_fmadd_ps(q, z2, _mm512_set1_ps(c));
        }
        // SAFETY: AVX-512 F is available (this function's contract).
        let erf = _mm512_mul_ps(_mm512_mul_ps(z, p), unsafe { recip(q) });
        let half_x = _mm512_mul_ps(_mm512_set1_ps(0.5), x);
        _mm512_fmadd_ps(half_x, erf, half_x)
    }

    /// `silu(a) · v` of the first `min` values of the three slices.
    ///
    /// # Safety
    /// AVX-512 F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul(a: &[f32], v: &[f32], out: &mut [f32]) {
        let len = a.len().min(v.len()).min(out.len());
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i < len {
            let m = mask(len - i);
            // SAFETY: lanes i..i+16 masked to `len`, within all three slices; AVX-512 F is
            // available (this function's contract).
            unsafe {
                let x = _mm512_maskz_loadu_ps(m, a.as_ptr().add(i));
                let y = _mm512_maskz_loadu_ps(m, v.as_ptr().add(i));
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
                let s = _mm512_mul_ps(x, recip(_mm512_add_ps(one, e)));
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(i), m, _mm512_mul_ps(s, y));
            }
            i += 16;
        }
    }

    /// GELU (erf) of every value of `xs`, in place.
    ///
    /// # Safety
    /// AVX-512 F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gelu_erf(xs: &mut [f32]) {
        let len = xs.len();
        let p = xs.as_mut_ptr();
        let mut i = 0;
        while i < len {
            let m = mask(len - i);
            // SAFETY: lanes i..i+16 masked to the slice's length.
            unsafe {
                let x = _mm512_maskz_loadu_ps(m, p.add(i));
                _mm512_mask_storeu_ps(p.add(i), m, gelu16(x));
            }
            i += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Taylor series in f64 (converges fast for |x| ≤ 3), and 1 beyond.
    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut sum = 0.0;
        let mut term = x;
        let mut n = 0.0;
        loop {
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
            n += 1.0;
            term *= -x * x / n;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn gelu_matches_an_f64_reference_on_both_paths() {
        let xs: Vec<f32> = (-1000..=1000).map(|i| i as f32 * 0.0071).collect();
        let mut vector = xs.clone();
        gelu_erf_in_place(&mut vector);
        for (&x, &v) in xs.iter().zip(&vector) {
            let want = 0.5 * x as f64 * (1.0 + erf_f64(x as f64 / std::f64::consts::SQRT_2));
            let scalar = gelu_erf(x);
            assert!(
                (scalar as f64 - want).abs() < 3e-7 * (1.0 + x.abs() as f64),
                "{x}"
            );
            assert!(
                (v as f64 - want).abs() < 3e-7 * (1.0 + x.abs() as f64),
                "{x}: {v} {want}"
            );
        }
        // SwiGLU gate against its formula in f64.
        let v: Vec<f32> = xs.iter().map(|x| 1.0 - x * 0.3).collect();
        let mut out = vec![0f32; xs.len()];
        silu_mul(&xs, &v, &mut out);
        for ((&a, &v), &o) in xs.iter().zip(&v).zip(&out) {
            let want = a as f64 / (1.0 + (-a as f64).exp()) * v as f64;
            assert!((o as f64 - want).abs() < 1e-6 * (1.0 + want.abs()), "{a}");
        }
        // Large magnitudes: x itself (within an ulp of erf's 1), and 0.
        let mut big = [30.0f32, -30.0, 0.0, -0.0];
        gelu_erf_in_place(&mut big);
        assert!((big[0] - 30.0).abs() < 4e-6, "{}", big[0]);
        assert!(big[1].abs() < 4e-6 && big[2] == 0.0, "{big:?}");
    }
}
