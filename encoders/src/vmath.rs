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

/// `e^x` (Cephes): `x = n·ln2 + r` with ln2 in two parts, then `e^r = 1 + r + r²·P(r)`, `P`'s
/// coefficients highest power first (the vector versions; the scalar paths use libm's).
#[cfg(target_arch = "x86_64")]
pub(crate) const EXP_LN2_HI: f32 = 0.693_359_4;
#[cfg(target_arch = "x86_64")]
pub(crate) const EXP_LN2_LO: f32 = -2.121_944_4e-4;
#[cfg(target_arch = "x86_64")]
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
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
    #[cfg(target_arch = "x86_64")]
    if avx2::usable() {
        // SAFETY: AVX2 and FMA were just checked; the kernel reads and writes only `xs`.
        unsafe { avx2::gelu_erf(xs) };
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
    #[cfg(target_arch = "x86_64")]
    if avx2::usable() {
        // SAFETY: AVX2 and FMA were just checked; as above.
        unsafe { avx2::silu_mul(a, v, out) };
        return;
    }
    for ((o, &a), &v) in out.iter_mut().zip(a).zip(v) {
        *o = a / (1.0 + (-a).exp()) * v;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{ERF_DEN, ERF_NUM, EXP_LN2_HI, EXP_LN2_LO, EXP_POLY};
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
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
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

/// The same functions on 8 lanes for CPUs with AVX2 and FMA but no AVX-512 (the formulas and
/// constants of [`avx512`]; `vdivps` for the reciprocals, `2^n` through the exponent bits).
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{ERF_DEN, ERF_NUM, EXP_LN2_HI, EXP_LN2_LO, EXP_POLY};
    use std::arch::x86_64::*;

    /// Whether this CPU has AVX2 and FMA (`JSEARCH_CPU_TIER` not below `avx2`).
    pub(crate) fn usable() -> bool {
        let f = jsearch_base::cpu::features();
        f.avx2 && f.fma
    }

    /// `e^x` for 8 lanes: [`super::avx512::exp16`]'s reduction and polynomial; `x` clamped to
    /// [-87.3, 88.3] (so that `2^n` stays a normal f32), 0 below -87.3.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        let tiny = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(-87.3));
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.3));
        let x = _mm256_min_ps(x, _mm256_set1_ps(88.3));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        // 2^n as exponent bits: n ∈ [-126, 127] after the clamps.
        let two_n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_andnot_ps(tiny, _mm256_mul_ps(e, two_n))
    }

    /// GELU (erf) of 8 lanes: [`super::ERF_NUM`] / [`super::ERF_DEN`] in `z = x/√2` clamped
    /// to ±4.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu8(x: __m256) -> __m256 {
        let z = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm256_max_ps(_mm256_min_ps(z, _mm256_set1_ps(4.0)), _mm256_set1_ps(-4.0));
        let z2 = _mm256_mul_ps(z, z);
        let mut p = _mm256_set1_ps(ERF_NUM[0]);
        for &c in &ERF_NUM[1..] {
            p = _mm256_fmadd_ps(p, z2, _mm256_set1_ps(c));
        }
        let mut q = _mm256_set1_ps(ERF_DEN[0]);
        for &c in &ERF_DEN[1..] {
            q = _mm256_fmadd_ps(q, z2, _mm256_set1_ps(c));
        }
        let erf = _mm256_div_ps(_mm256_mul_ps(z, p), q);
        let half_x = _mm256_mul_ps(_mm256_set1_ps(0.5), x);
        _mm256_fmadd_ps(half_x, erf, half_x)
    }

    /// GELU (erf) of every value of `xs`, in place (the tail through a zero-padded vector).
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_erf(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: 8 values of `c`.
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), gelu8(_mm256_loadu_ps(c.as_ptr()))) };
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let mut t = [0f32; 8];
            t[..tail.len()].copy_from_slice(tail);
            // SAFETY: 8 values of `t`.
            unsafe { _mm256_storeu_ps(t.as_mut_ptr(), gelu8(_mm256_loadu_ps(t.as_ptr()))) };
            let n = tail.len();
            tail.copy_from_slice(&t[..n]);
        }
    }

    /// `silu(a) · v` of the first `min` values of the three slices.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul(a: &[f32], v: &[f32], out: &mut [f32]) {
        let len = a.len().min(v.len()).min(out.len());
        let one = _mm256_set1_ps(1.0);
        let gate = |x: __m256, y: __m256| {
            // SAFETY: AVX2 and FMA are available (this function's contract).
            let e = unsafe { exp8(_mm256_sub_ps(_mm256_setzero_ps(), x)) };
            _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), y)
        };
        let mut i = 0;
        while i + 8 <= len {
            // SAFETY: values i..i+8 < len of all three slices.
            unsafe {
                let x = _mm256_loadu_ps(a.as_ptr().add(i));
                let y = _mm256_loadu_ps(v.as_ptr().add(i));
                _mm256_storeu_ps(out.as_mut_ptr().add(i), gate(x, y));
            }
            i += 8;
        }
        if i < len {
            let (mut x, mut y, mut o) = ([0f32; 8], [0f32; 8], [0f32; 8]);
            x[..len - i].copy_from_slice(&a[i..len]);
            y[..len - i].copy_from_slice(&v[i..len]);
            // SAFETY: 8 values of each array.
            unsafe {
                let g = gate(_mm256_loadu_ps(x.as_ptr()), _mm256_loadu_ps(y.as_ptr()));
                _mm256_storeu_ps(o.as_mut_ptr(), g);
            }
            out[i..len].copy_from_slice(&o[..len - i]);
        }
    }

    /// In-place softmax of `row` (max, `e^(x − max)` and its sum, then the division as one
    /// multiplication by `1 / Σ`).
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax(row: &mut [f32]) {
        let len = row.len();
        let full = len / 8 * 8;
        let p = row.as_mut_ptr();
        let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(8) {
            // SAFETY: values i..i+8 < len.
            mx = _mm256_max_ps(mx, unsafe { _mm256_loadu_ps(p.add(i)) });
        }
        let mut lanes = [0f32; 8];
        // SAFETY: 8 values of `lanes`.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mx) };
        let m = row[full..]
            .iter()
            .chain(&lanes)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let mv = _mm256_set1_ps(m);
        let mut sum = _mm256_setzero_ps();
        for i in (0..full).step_by(8) {
            // SAFETY: as above.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mv));
                sum = _mm256_add_ps(sum, e);
                _mm256_storeu_ps(p.add(i), e);
            }
        }
        // SAFETY: 8 values of `lanes`.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let mut total: f32 = lanes.iter().sum();
        if full < len {
            let mut t = [f32::NEG_INFINITY; 8];
            t[..len - full].copy_from_slice(&row[full..]);
            // SAFETY: 8 values of `t`; e^-inf is 0 for the padding lanes.
            unsafe {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(t.as_ptr()), mv));
                _mm256_storeu_ps(t.as_mut_ptr(), e);
            }
            total += t[..len - full].iter().sum::<f32>();
            row[full..].copy_from_slice(&t[..len - full]);
        }
        let inv = _mm256_set1_ps(1.0 / total);
        for i in (0..full).step_by(8) {
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), inv)) };
        }
        let inv = 1.0 / total;
        row[full..].iter_mut().for_each(|x| *x *= inv);
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

    /// The 8-lane functions (what CPUs without AVX-512 run) against f64, whatever tier this CPU
    /// would pick: `e^x` over its range (0 below -87.3), GELU, the SwiGLU gate, and the softmax
    /// at lengths around the vector width.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_functions_match_f64() {
        use std::arch::x86_64::*;
        if !avx2::usable() {
            eprintln!("no AVX2 + FMA: nothing to check");
            return;
        }
        let exp = |x: f32| {
            let mut out = [0f32; 8];
            // SAFETY: AVX2 and FMA were checked above; 8 values of `out`.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), avx2::exp8(_mm256_set1_ps(x))) };
            out[0]
        };
        for i in -1000..=883 {
            let x = i as f32 * 0.1;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            if x < -87.3 {
                assert_eq!(got, 0.0, "e^{x}");
            } else {
                assert!((got - want).abs() <= 3e-7 * want, "e^{x}: {got} vs {want}");
            }
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        let xs: Vec<f32> = (-1000..=1003).map(|i| i as f32 * 0.0071).collect();
        let mut g = xs.clone();
        // SAFETY: AVX2 and FMA were checked above.
        unsafe { avx2::gelu_erf(&mut g) };
        for (&x, &v) in xs.iter().zip(&g) {
            let want = 0.5 * x as f64 * (1.0 + erf_f64(x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (v as f64 - want).abs() < 3e-7 * (1.0 + x.abs() as f64),
                "{x}"
            );
        }
        let v: Vec<f32> = xs.iter().map(|x| 1.0 - x * 0.3).collect();
        let mut out = vec![0f32; xs.len()];
        // SAFETY: as above.
        unsafe { avx2::silu_mul(&xs, &v, &mut out) };
        for ((&a, &v), &o) in xs.iter().zip(&v).zip(&out) {
            let want = a as f64 / (1.0 + (-a as f64).exp()) * v as f64;
            assert!((o as f64 - want).abs() < 1e-6 * (1.0 + want.abs()), "{a}");
        }
        for len in [1, 7, 8, 9, 33] {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 11) as f32) * 0.7 - 3.0)
                .collect();
            let mut got = row.clone();
            // SAFETY: as above.
            unsafe { avx2::softmax(&mut got) };
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
            for (&x, &p) in row.iter().zip(&got) {
                let want = (x as f64 - m).exp() / sum;
                assert!(
                    (p as f64 - want).abs() < 1e-6 * want.max(1e-3),
                    "len {len}: {p} {want}"
                );
            }
        }
    }
}
