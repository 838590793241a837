//! In-memory sketches of the full vectors that pick which graph candidates are worth an exact
//! re-rank from disk.
//!
//! A full vector `x` (unit norm, f16) is the graph's head `x[..ann_dim]` plus a tail
//! `x[ann_dim..]`. The graph already holds the head, normalised (`x̂_h`); a sketch adds the head's
//! norm `‖x_h‖` and the tail quantised to 4 bits with one scale per vector (`dim - ann_dim` nibbles,
//! 384 bytes for a 1024-d vector with a 256-d graph). Then
//!
//! `q·x ≈ ‖q_h‖ ‖x_h‖ (q̂_h·x̂_h) + s_q s_x Σ q8_j c_j`
//!
//! where the first term comes from the graph distance the search computed anyway and the second
//! is an integer dot of the int8 query tail with the nibbles. The store scores the whole graph
//! beam this way and reads at most the best `k'` tails from the file, and of those only the
//! ones whose score plus [`Sketches::margin`] could still reach the top k, instead of the `k'`
//! nearest by the truncated distance (which at 1M vectors needs 50 reads for recall 0.98 where
//! this reads about 15: see `docs/index.md`).
//!
//! Sketches are derived data: they are computed from the stored tails when a store is opened (the
//! open reads every tail anyway) and when vectors are added, and are never written to the file.
//! The store's exact score is `‖x_h‖ (q_h·x̂_h) + q_t·x_t` over the graph's f16 head and the
//! stored f16 tail (`crate::store`), so the two differ only in the tail term.

use crate::vecmath::{from_f16, F16};

/// Offset of a nibble's value: nibble `c` stands for `c - ZERO` quantisation steps.
const ZERO: i32 = 7;
/// Allowance for the head term: the score takes the graph's dot product with the query's head
/// normalised and rounded to f16, the exact score the query's head as it is (a few 1e-6 apart
/// for unit vectors; this leaves more than ten times that).
const HEAD_EPS: f32 = 1e-4;
/// Tail values beyond this many RMS are clipped to the outermost level.
const CLIP_RMS: f32 = 2.5;

/// The sketches of all nodes, indexed by node number.
#[derive(Clone, Debug, Default)]
pub struct Sketches {
    tail: usize,
    half: usize,
    codes: Vec<u8>,
    /// Per node: (head norm, tail scale, norm of the tail's quantisation residual).
    norms: Vec<(f32, f32, f32)>,
}

/// The sketch of one vector, as [`Sketches::encode`] makes it.
#[derive(Clone, Debug)]
pub struct Sketch {
    code: Vec<u8>,
    head_norm: f32,
    scale: f32,
    residual: f32,
}

impl Sketch {
    /// Norm of the vector's head.
    pub fn head_norm(&self) -> f32 {
        self.head_norm
    }
}

/// A query prepared for sketch scoring.
pub struct SketchQuery {
    head_norm: f32,
    tail_norm: f32,
    residual: f32,
    scale: f32,
    lo: Vec<i8>,
    hi: Vec<i8>,
    sum: i32,
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// `x` rounded half away from zero (as `f32::round`, without the libm call).
#[inline]
fn round(x: f32) -> i32 {
    (x + 0.5f32.copysign(x)) as i32
}

impl Sketches {
    /// Empty sketches for vectors of `dim` coordinates whose first `ann_dim` are in the graph.
    pub fn new(dim: usize, ann_dim: usize) -> Self {
        let tail = dim.saturating_sub(ann_dim);
        Sketches {
            tail,
            half: tail.div_ceil(2),
            codes: Vec::new(),
            norms: Vec::new(),
        }
    }

    /// Bytes held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.codes.capacity() + self.norms.capacity() * std::mem::size_of::<(f32, f32, f32)>()
    }

    /// The sketch of one full vector.
    #[cfg(test)]
    pub fn encode(&self, full: &[F16]) -> Sketch {
        self.derive(full).1
    }

    /// The graph vector (the head, re-normalised, f16: [`crate::vecmath::ann_from_full`]) and
    /// the sketch of one full vector, decoding it once.
    pub fn derive(&self, full: &[F16]) -> (Vec<F16>, Sketch) {
        let f = from_f16(full);
        let ann_dim = f.len().saturating_sub(self.tail);
        (
            crate::vecmath::ann_from_decoded(&f, ann_dim),
            self.encode_tail(norm(&f[..ann_dim]), &f[ann_dim..]),
        )
    }

    /// The sketch of a vector given its head's norm and its tail (decoded).
    pub fn encode_tail(&self, head_norm: f32, t: &[f32]) -> Sketch {
        // Step: the largest value, or 2.5 RMS when that is smaller (the few values beyond are
        // clipped): on MRL-like tails this cuts the dot-product error by a sixth against
        // max-scaling (`docs/index.md`).
        let amax = t.iter().fold(0f32, |m, x| m.max(x.abs()));
        let rms = (t.iter().map(|x| x * x).sum::<f32>() / t.len().max(1) as f32).sqrt();
        let scale = amax.min(CLIP_RMS * rms) / ZERO as f32;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let q = |x: f32| -> u8 { (round(x * inv) + ZERO).clamp(0, 2 * ZERO) as u8 };
        let mut code = vec![(ZERO as u8) << 4 | ZERO as u8; self.half];
        let mut residual = 0f32;
        let mut put = |x: f32| -> u8 {
            let c = q(x);
            let e = x - (c as i32 - ZERO) as f32 * scale;
            residual += e * e;
            c
        };
        for (j, c) in code.iter_mut().enumerate() {
            let lo = t.get(j).map_or(ZERO as u8, |&x| put(x));
            let hi = t.get(j + self.half).map_or(ZERO as u8, |&x| put(x));
            *c = lo | (hi << 4);
        }
        Sketch {
            code,
            head_norm,
            scale,
            residual: residual.sqrt(),
        }
    }

    /// Room for `additional` more sketches, with huge pages asked for.
    pub fn reserve(&mut self, additional: usize) {
        crate::hugepages::reserve(&mut self.codes, additional * self.half);
        self.norms.reserve(additional);
    }

    /// Append the sketch of node `len()`.
    pub fn push(&mut self, sketch: Sketch) {
        debug_assert_eq!(sketch.code.len(), self.half);
        self.codes.extend_from_slice(&sketch.code);
        self.norms
            .push((sketch.head_norm, sketch.scale, sketch.residual));
    }

    /// Norm of node `n`'s head (the factor of its graph vector in the exact score).
    #[inline]
    pub fn head_norm(&self, n: u32) -> f32 {
        self.norms[n as usize].0
    }

    /// The sketches of `nodes`, in that order (node `j` of the result is `nodes[j]` here).
    pub fn reordered(&self, nodes: &[u32]) -> Sketches {
        let mut out = Sketches {
            tail: self.tail,
            half: self.half,
            codes: Vec::new(),
            norms: Vec::with_capacity(nodes.len()),
        };
        crate::hugepages::reserve(&mut out.codes, nodes.len() * self.half);
        for &n in nodes {
            let n = n as usize;
            out.codes
                .extend_from_slice(&self.codes[n * self.half..(n + 1) * self.half]);
            out.norms.push(self.norms[n]);
        }
        out
    }

    /// Prepare the (unit-norm, full-dimension) query for [`Self::score`].
    pub fn query(&self, q_full: &[F16]) -> SketchQuery {
        let f = from_f16(q_full);
        let ann_dim = f.len().saturating_sub(self.tail);
        let t = &f[ann_dim..];
        let amax = t.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        let q8 = |x: f32| -> i8 { round(x * inv).clamp(-127, 127) as i8 };
        let lo: Vec<i8> = (0..self.half)
            .map(|j| t.get(j).map_or(0, |&x| q8(x)))
            .collect();
        let hi: Vec<i8> = (0..self.half)
            .map(|j| t.get(j + self.half).map_or(0, |&x| q8(x)))
            .collect();
        let sum = lo.iter().chain(&hi).map(|&x| x as i32).sum();
        let residual = t
            .iter()
            .map(|&x| {
                let e = x - q8(x) as f32 * scale;
                e * e
            })
            .sum::<f32>()
            .sqrt();
        SketchQuery {
            head_norm: norm(&f[..ann_dim]),
            tail_norm: norm(t),
            residual,
            scale,
            lo,
            hi,
            sum,
        }
    }

    /// Estimated full-dimension dot product of the query and node `n`, given the graph's dot
    /// product of their normalised heads.
    #[inline]
    pub fn score(&self, q: &SketchQuery, n: u32, head_dot: f32) -> f32 {
        let n = n as usize;
        let (h, s, _) = self.norms[n];
        let code = &self.codes[n * self.half..(n + 1) * self.half];
        let tail = dot_nibbles(code, &q.lo, &q.hi) - ZERO * q.sum;
        q.head_norm * h * head_dot + q.scale * s * tail as f32
    }

    /// How far [`Self::score`] of node `n` may plausibly be from the exact dot product: `z`
    /// standard deviations of the quantisation errors of both tails (each residual taken as
    /// pointing in a random direction relative to the other vector), plus the f16 rounding of
    /// the heads. A candidate whose score plus this margin is below the k-th exact score found
    /// so far is not read.
    #[inline]
    pub fn margin(&self, q: &SketchQuery, n: u32, z: f32) -> f32 {
        let (h, _, r) = self.norms[n as usize];
        let x_tail = (1.0 - h * h).max(0.0).sqrt();
        let var = (r * q.tail_norm).powi(2) + (x_tail * q.residual).powi(2);
        z * (var / self.tail.max(1) as f32).sqrt() + HEAD_EPS
    }
}

/// `Σ lo_j (code_j & 15) + hi_j (code_j >> 4)`.
fn dot_nibbles(code: &[u8], lo: &[i8], hi: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked at run time).
        return unsafe { dot_nibbles_avx2(code, lo, hi) };
    }
    dot_nibbles_portable(code, lo, hi)
}

#[inline(always)]
fn dot_nibbles_portable(code: &[u8], lo: &[i8], hi: &[i8]) -> i32 {
    let mut acc = 0i32;
    for ((&b, &l), &h) in code.iter().zip(lo).zip(hi) {
        acc += (b & 15) as i32 * l as i32 + (b >> 4) as i32 * h as i32;
    }
    acc
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    jsearch_base::cpu::features().avx2
}

/// The portable loop, compiled with AVX2 so that it vectorises 32 nibbles at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_nibbles_avx2(code: &[u8], lo: &[i8], hi: &[i8]) -> i32 {
    dot_nibbles_portable(code, lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vecmath::{normalize, to_f16};

    fn unit(seed: u64, d: usize) -> Vec<F16> {
        let mut s = seed;
        let mut v: Vec<f32> = (0..d)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5) / (1.0 + i as f32 / 64.0)
            })
            .collect();
        normalize(&mut v);
        to_f16(&v)
    }

    fn exact(a: &[F16], b: &[F16]) -> f32 {
        from_f16(a)
            .iter()
            .zip(from_f16(b))
            .map(|(x, y)| x * y)
            .sum()
    }

    fn head_dot(a: &[F16], b: &[F16], ann: usize) -> f32 {
        let n = |v: &[F16]| norm(&from_f16(v));
        exact(&a[..ann], &b[..ann]) / (n(&a[..ann]) * n(&b[..ann]))
    }

    /// `n` unit vectors from `seed0` on, and their sketches.
    fn sketched(dim: usize, ann: usize, n: u64, seed0: u64) -> (Sketches, Vec<Vec<F16>>) {
        let mut s = Sketches::new(dim, ann);
        let xs: Vec<Vec<F16>> = (0..n).map(|i| unit(i + seed0, dim)).collect();
        for x in &xs {
            s.push(s.encode(x));
        }
        (s, xs)
    }

    #[test]
    fn margin_covers_the_estimate_error() {
        // The store skips a candidate when its estimate plus the margin (z = 4) is below the
        // k-th exact score: the margin must hold the error for (nearly) every vector, yet be
        // far below the spread of the scores, or it would skip nothing.
        let (dim, ann) = (1024, 256);
        let (s, xs) = sketched(dim, ann, 300, 11);
        let (mut outside, mut widest) = (0, 0f32);
        for qs in 0..5 {
            let q = unit(5000 + qs, dim);
            let sq = s.query(&q);
            for (n, x) in xs.iter().enumerate() {
                let err = s.score(&sq, n as u32, head_dot(&q, x, ann)) - exact(&q, x);
                let m = s.margin(&sq, n as u32, 4.0);
                outside += usize::from(err.abs() > m);
                widest = widest.max(m);
            }
        }
        assert!(outside <= 1, "{outside} of 1500 errors outside the margin");
        assert!(widest < 0.02, "margin {widest} too wide to skip anything");
    }

    #[test]
    fn estimates_the_full_dot_product_closely() {
        // Odd tail length: the last high nibble is padding and must contribute nothing.
        for (dim, ann) in [(1024, 256), (128, 32), (101, 32), (64, 64)] {
            let (s, xs) = sketched(dim, ann, 50, 1);
            let q = unit(999, dim);
            let sq = s.query(&q);
            let mut worst = 0f32;
            for (n, x) in xs.iter().enumerate() {
                let est = s.score(&sq, n as u32, head_dot(&q, x, ann));
                worst = worst.max((est - exact(&q, x)).abs());
            }
            // 4-bit tail: errors of a few thousandths; without a tail the estimate is exact.
            let bound = if dim == ann { 1e-5 } else { 0.02 };
            assert!(worst < bound, "dim {dim} ann {ann}: worst error {worst}");
        }
    }

    #[test]
    fn ranks_like_the_exact_dot_product() {
        let (dim, ann) = (256, 64);
        let (s, xs) = sketched(dim, ann, 400, 7);
        let q = unit(12345, dim);
        let sq = s.query(&q);
        let top = |f: &dyn Fn(usize) -> f32| {
            let mut idx: Vec<usize> = (0..xs.len()).collect();
            idx.sort_by(|&a, &b| f(b).total_cmp(&f(a)));
            idx
        };
        let truth = top(&|i| exact(&q, &xs[i]));
        let est = top(&|i| s.score(&sq, i as u32, head_dot(&q, &xs[i], ann)));
        let head_only = top(&|i| head_dot(&q, &xs[i], ann));
        // The true top 10 within the sketch's top 20, and more of it than the head alone finds.
        let hits = |order: &[usize]| {
            truth[..10]
                .iter()
                .filter(|t| order[..20].contains(t))
                .count()
        };
        assert_eq!(
            hits(&est),
            10,
            "sketch top-20 misses part of the true top-10"
        );
        assert!(
            hits(&head_only) < 10,
            "test data too easy: the head alone ranks it"
        );
    }

    #[test]
    fn nibble_dot_matches_its_definition() {
        // Bytes 0x21, 0xff, 0x70: nibbles (lo, hi) = (1, 2), (15, 15), (0, 7).
        let (code, lo, hi) = ([0x21u8, 0xff, 0x70], [1i8, -2, 5], [3i8, 4, -6]);
        let pairs = [(1, 1), (2, 3), (15, -2), (15, 4), (0, 5), (7, -6)];
        let want: i32 = pairs.iter().map(|(c, q)| c * q).sum();
        assert_eq!(dot_nibbles_portable(&code, &lo, &hi), want);
        assert_eq!(dot_nibbles(&code, &lo, &hi), want);
        // Long enough for the vectorised loop, with a tail.
        let code: Vec<u8> = (0..389).map(|i| (i * 37 % 256) as u8).collect();
        let lo: Vec<i8> = (0..389).map(|i| (i * 11 % 255) as i8).collect();
        let hi: Vec<i8> = (0..389).map(|i| (i * 29 % 253) as i8).collect();
        let want: i32 = (0..389)
            .map(|i| (code[i] & 15) as i32 * lo[i] as i32 + (code[i] >> 4) as i32 * hi[i] as i32)
            .sum();
        assert_eq!(dot_nibbles(&code, &lo, &hi), want);
    }
}
