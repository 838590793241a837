//! f32 products `y = x · Wᵀ` for the fused layers of f32 towers and for weights mapped from a
//! weight cache: the `gemm` crate, called exactly as candle's CPU matmul calls it for
//! `x.matmul(&w.t())` (same kernel, same threads, same accumulation order), with the
//! [`Epilogue`]'s bias and residual folded into the product's first store and its GELU as one
//! pass over the rows after it.

use rayon::prelude::*;

use crate::bf16_gemm::Epilogue;

/// `y = [y +] x · Wᵀ [+ bias]`, then GELU when `epi.gelu`, for row-major `x` `[m, k]`, `w`
/// `[n, k]` and `y` `[m, n]`. Without bias, residual or GELU, bit-identical to candle's
/// `x.matmul(&w.t())`; with them, the bias and residual join the product's first k-block
/// (one rounding apart from adding them after it).
///
/// # Panics
/// If `w`, `x`, `y` or the bias do not hold `n·k`, `m·k`, `m·n` and `n` values.
pub(crate) fn matmul_into(
    w: &[f32],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    epi: Epilogue<'_>,
) {
    assert_eq!(w.len(), n * k, "f32 matmul: weight shape");
    assert_eq!(x.len(), m * k, "f32 matmul: input shape");
    assert_eq!(y.len(), m * n, "f32 matmul: output shape");
    assert!(
        epi.bias.is_none_or(|b| b.len() == n),
        "f32 matmul: bias width"
    );
    if m == 0 || n == 0 {
        return;
    }
    // The bias goes into `y` first (over the residual, or as the rows' start), so the product
    // is added to it as gemm stores.
    if let Some(b) = epi.bias {
        y.par_chunks_mut(n).for_each(|row| {
            if epi.accumulate {
                row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
            } else {
                row.copy_from_slice(b);
            }
        });
    }
    let read_dst = epi.accumulate || epi.bias.is_some();
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: x is [m, k] row-major (m·k values), w the [n, k] row-major weight read as its
    // [k, n] transpose (row stride 1, column stride k), y [m, n] row-major (checked above); all
    // three lie inside their slices for these strides. With `read_dst`, y = 1·y + 1·x·wᵀ.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1f32,
            1f32,
            false,
            false,
            false,
            parallelism,
        )
    };
    if epi.gelu {
        y.par_chunks_mut(n)
            .for_each(crate::vmath::gelu_erf_in_place);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every epilogue against the f64 sums, at shapes off gemm's register blocks.
    #[test]
    fn products_and_epilogues_match_f64() {
        let (m, n, k) = (7, 19, 37);
        let val = |i: usize, s: usize| ((i * s % 97) as f32 - 48.0) / 31.0;
        let x: Vec<f32> = (0..m * k).map(|i| val(i, 13)).collect();
        let w: Vec<f32> = (0..n * k).map(|i| val(i, 29)).collect();
        let bias: Vec<f32> = (0..n).map(|i| val(i, 7)).collect();
        let start: Vec<f32> = (0..m * n).map(|i| val(i, 3)).collect();
        for (with_bias, accumulate, gelu) in [
            (false, false, false),
            (true, false, false),
            (true, true, false),
            (false, true, false),
            (true, false, true),
        ] {
            let epi = Epilogue {
                bias: with_bias.then_some(&bias[..]),
                accumulate,
                gelu,
            };
            let mut y = start.clone();
            matmul_into(&w, n, k, &x, m, &mut y, epi);
            for r in 0..m {
                for c in 0..n {
                    let mut s: f64 = (0..k)
                        .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                        .sum();
                    if with_bias {
                        s += bias[c] as f64;
                    }
                    if accumulate {
                        s += start[r * n + c] as f64;
                    }
                    if gelu {
                        // The GELU itself is tested against f64 in `vmath`.
                        s = crate::vmath::gelu_erf(s as f32) as f64;
                    }
                    let got = y[r * n + c] as f64;
                    assert!(
                        (got - s).abs() <= 1e-5 * (1.0 + s.abs()),
                        "{epi:?} [{r}, {c}]: {got} vs {s}"
                    );
                }
            }
        }
    }
}
