//! The instruction rates behind the CPU kernels, one core, registers only: how many
//! multiply-adds a nanosecond each inner step can reach (f32 FMA, the AVX2 int8 steps with and
//! without the sign handling, `vpdpbusd`), so that a kernel's measured rate can be set against
//! the ceiling of the instructions it is made of. Each loop runs 4 rows × 2 weight vectors = 8
//! independent accumulators, as the 256-bit kernels do; an empty `asm!` makes the inputs opaque
//! each step so nothing is hoisted out of the loop.

use std::time::Instant;

/// One row of the table: what the step is, multiply-adds per nanosecond.
pub struct Peak {
    /// The instructions of one step.
    pub step: &'static str,
    /// Multiply-adds per nanosecond on one core.
    pub per_ns: f64,
}

/// Steps per timed loop.
const STEPS: u64 = 20_000_000;

/// Every step this CPU can run, each timed once after a warm-up.
pub fn measure() -> Vec<Peak> {
    // Filled by the x86-64 steps only; empty elsewhere.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let evex_vnni =
            is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl");
        let run = |step: &'static str, products: f64, f: &dyn Fn(u64) -> i64| {
            std::hint::black_box(f(STEPS / 10));
            let t = Instant::now();
            std::hint::black_box(f(STEPS));
            let ns = t.elapsed().as_secs_f64() * 1e9;
            Peak {
                step,
                per_ns: products * STEPS as f64 / ns,
            }
        };
        if avx2 {
            // SAFETY (each closure): AVX2 and FMA were detected above.
            out.push(run("f32: vfmadd231ps (8 products)", 64.0, &|n| unsafe {
                x86::fma(n)
            }));
            out.push(run(
                "int8: vpabsb + vpsignb + vpmaddubsw + vpmaddwd + vpaddd (32)",
                256.0,
                &|n| unsafe { x86::signed_abs(n) },
            ));
            out.push(run(
                "int8: vpsignb + vpmaddubsw + vpmaddwd + vpaddd, abs(qa) stored (32)",
                256.0,
                &|n| unsafe { x86::signed(n) },
            ));
            out.push(run(
                "int8: vpmaddubsw + vpmaddwd + vpaddd, may saturate (32)",
                256.0,
                &|n| unsafe { x86::unsigned(n) },
            ));
            out.push(run("int16: vpmaddwd + vpaddd (16)", 128.0, &|n| unsafe {
                x86::words(n)
            }));
            out.push(run(
                "int16, int8 weights widened: 2 vpmovsxbw + 8 × (vpmaddwd + vpaddd) (16)",
                128.0,
                &|n| unsafe { x86::words_widened(n) },
            ));
        }
        if evex_vnni {
            // SAFETY: AVX512-VNNI and AVX512-VL were detected above.
            out.push(run(
                "int8: vpdpbusd ymm (32; AVX-VNNI's rate where it exists)",
                256.0,
                &|n| unsafe { x86::vnni256(n) },
            ));
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// 8 accumulators over 4 broadcast rows × 2 weight vectors, `n` steps of `$dot`, the
    /// inputs made opaque each step; returns a lane of the sum (so nothing is dead).
    macro_rules! int_loop {
        ($n:expr, |$c:ident, $a:ident, $w:ident| $dot:expr) => {{
            let mut c = [_mm256_setzero_si256(); 8];
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_set1_epi8(1),
                _mm256_set1_epi8(-2),
                _mm256_set1_epi8(3),
                _mm256_set1_epi8(-4),
            );
            let (mut w0, mut w1) = (_mm256_set1_epi8(5), _mm256_set1_epi8(-6));
            for _ in 0..$n {
                // SAFETY: an empty asm block that only claims to change the registers.
                unsafe {
                    asm!("/* {0} {1} {2} {3} {4} {5} */", inout(ymm_reg) a0, inout(ymm_reg) a1, inout(ymm_reg) a2,
                        inout(ymm_reg) a3, inout(ymm_reg) w0, inout(ymm_reg) w1,
                        options(nomem, nostack, preserves_flags));
                }
                for (i, (ai, wi)) in [(a0, w0), (a0, w1), (a1, w0), (a1, w1), (a2, w0), (a2, w1),
                    (a3, w0), (a3, w1)].into_iter().enumerate()
                {
                    let ($c, $a, $w) = (c[i], ai, wi);
                    c[i] = $dot;
                }
            }
            _mm256_extract_epi32::<0>(c.iter().fold(_mm256_setzero_si256(), |s, &v| {
                _mm256_add_epi32(s, v)
            })) as i64
        }};
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma(n: u64) -> i64 {
        let mut c = [_mm256_setzero_ps(); 8];
        let (mut a0, mut a1, mut a2, mut a3) = (
            _mm256_set1_ps(1.0),
            _mm256_set1_ps(2.0),
            _mm256_set1_ps(3.0),
            _mm256_set1_ps(4.0),
        );
        let (mut w0, mut w1) = (_mm256_set1_ps(1e-9), _mm256_set1_ps(2e-9));
        for _ in 0..n {
            // SAFETY: an empty asm block that only claims to change the registers.
            unsafe {
                asm!("/* {0} {1} {2} {3} {4} {5} */", inout(ymm_reg) a0, inout(ymm_reg) a1, inout(ymm_reg) a2,
                    inout(ymm_reg) a3, inout(ymm_reg) w0, inout(ymm_reg) w1,
                    options(nomem, nostack, preserves_flags));
            }
            c[0] = _mm256_fmadd_ps(a0, w0, c[0]);
            c[1] = _mm256_fmadd_ps(a0, w1, c[1]);
            c[2] = _mm256_fmadd_ps(a1, w0, c[2]);
            c[3] = _mm256_fmadd_ps(a1, w1, c[3]);
            c[4] = _mm256_fmadd_ps(a2, w0, c[4]);
            c[5] = _mm256_fmadd_ps(a2, w1, c[5]);
            c[6] = _mm256_fmadd_ps(a3, w0, c[6]);
            c[7] = _mm256_fmadd_ps(a3, w1, c[7]);
        }
        let s = c
            .iter()
            .fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
        _mm256_cvtss_f32(s) as i64
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn signed_abs(n: u64) -> i64 {
        let one = _mm256_set1_epi16(1);
        int_loop!(n, |c, a, w| _mm256_add_epi32(
            c,
            _mm256_madd_epi16(
                _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a)),
                one
            )
        ))
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn signed(n: u64) -> i64 {
        let one = _mm256_set1_epi16(1);
        // `a` stands for both `qa` and the stored `|qa|` (the rate is what is measured).
        int_loop!(n, |c, a, w| _mm256_add_epi32(
            c,
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, _mm256_sign_epi8(w, a)), one)
        ))
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn unsigned(n: u64) -> i64 {
        let one = _mm256_set1_epi16(1);
        int_loop!(n, |c, a, w| _mm256_add_epi32(
            c,
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, w), one)
        ))
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn words(n: u64) -> i64 {
        int_loop!(n, |c, a, w| _mm256_add_epi32(c, _mm256_madd_epi16(a, w)))
    }

    /// 4 rows × 16 columns, as a kernel would run it: each step two weight vectors widened from
    /// 16 bytes each, the rows' activation pairs broadcast from memory.
    #[target_feature(enable = "avx2")]
    pub unsafe fn words_widened(n: u64) -> i64 {
        let mut c = [_mm256_setzero_si256(); 8];
        let rows = [0x0003_0002i32; 4];
        let mut p = rows.as_ptr();
        let (mut b0, mut b1) = (_mm_set1_epi8(5), _mm_set1_epi8(-6));
        for _ in 0..n {
            // SAFETY: an empty asm block that only claims to change the registers.
            unsafe {
                asm!("/* {0} {1} {2} */", inout(reg) p, inout(xmm_reg) b0, inout(xmm_reg) b1,
                    options(readonly, nostack, preserves_flags));
            }
            let (w0, w1) = (_mm256_cvtepi8_epi16(b0), _mm256_cvtepi8_epi16(b1));
            for r in 0..4 {
                // SAFETY: `p` points at `rows` (the asm block leaves it unchanged).
                let a = _mm256_set1_epi32(unsafe { p.add(r).read() });
                c[2 * r] = _mm256_add_epi32(c[2 * r], _mm256_madd_epi16(a, w0));
                c[2 * r + 1] = _mm256_add_epi32(c[2 * r + 1], _mm256_madd_epi16(a, w1));
            }
        }
        _mm256_extract_epi32::<0>(
            c.iter()
                .fold(_mm256_setzero_si256(), |s, &v| _mm256_add_epi32(s, v)),
        ) as i64
    }

    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    pub unsafe fn vnni256(n: u64) -> i64 {
        int_loop!(n, |c, a, w| _mm256_dpbusd_epi32(c, a, w))
    }
}
