//! Synthetic vectors shared by the `ann` and `catalog` benches.

use jsearch_index::vecmath;
use rayon::prelude::*;

/// Counter-based random numbers (SplitMix64 per row): any row is generated independently.
pub struct Rng(u64);
impl Rng {
    /// The generator of row `row` of stream `stream`.
    pub fn new(seed: u64, stream: u64, row: u64) -> Self {
        let mut r = Rng(seed
            ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)
            ^ row.wrapping_mul(0x9FB2_1C65_1E98_DF25));
        r.next();
        r
    }
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn unif(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normals.
    pub fn normals(&mut self, out: &mut [f32]) {
        for pair in out.chunks_mut(2) {
            let (u1, u2) = (self.unif(), self.unif());
            let r = (-2.0 * u1.ln()).sqrt();
            let t = std::f64::consts::TAU * u2;
            pair[0] = (r * t.cos()) as f32;
            if pair.len() > 1 {
                pair[1] = (r * t.sin()) as f32;
            }
        }
    }
}

/// MRL-like generator mirroring shared/baselines/scripts/gen_data.py (tau 16, pow 1, A 1, B 1, F 0.2):
/// latent variance spectrum v_i = (1 + i/16)^-1, clustered (centre + noise), isotropic floor, L2-normalised.
/// The generator's random rotation followed by PCA ordering is (up to sampling noise) the identity on this
/// diagonal-covariance latent, so it is skipped: leading dims already carry the most variance.
pub fn generate(seed: u64, stream: u64, rows: usize, dim: usize, centers: &[f32]) -> Vec<f32> {
    let sd: Vec<f32> = (0..dim)
        .map(|i| (1.0 + i as f32 / 16.0).powf(-0.5))
        .collect();
    let nc = centers.len() / dim;
    let mut out = vec![0f32; rows * dim];
    out.par_chunks_mut(dim).enumerate().for_each(|(r, x)| {
        let mut rng = Rng::new(seed, stream, r as u64);
        let c = (rng.next() % nc as u64) as usize;
        let mut e = vec![0f32; dim];
        rng.normals(&mut e);
        let mut f = vec![0f32; dim];
        rng.normals(&mut f);
        let centre = &centers[c * dim..(c + 1) * dim];
        for (i, xi) in x.iter_mut().enumerate() {
            *xi = centre[i] + sd[i] * e[i] + 0.2 * f[i];
        }
        vecmath::normalize(x);
    });
    out
}

/// Cluster centres for [`generate`].
pub fn make_centers(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let sd: Vec<f32> = (0..dim)
        .map(|i| (1.0 + i as f32 / 16.0).powf(-0.5))
        .collect();
    let mut c = vec![0f32; n * dim];
    c.par_chunks_mut(dim).enumerate().for_each(|(r, x)| {
        Rng::new(seed, 7, r as u64).normals(x);
        x.iter_mut().zip(&sd).for_each(|(v, s)| *v *= s);
    });
    c
}
