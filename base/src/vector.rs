//! L2 normalisation and Matryoshka truncation, as the reference computes them.

fn norm_f64(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt()
}

/// L2 norm, accumulated in f64.
pub fn norm(v: &[f32]) -> f32 {
    norm_f64(v) as f32
}

/// Divides by the L2 norm (accumulated in f64, as the reference's `F.normalize` with
/// `eps = 1e-12`); a zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let denom = norm_f64(v).max(1e-12);
    v.iter_mut().for_each(|x| *x = (*x as f64 / denom) as f32);
}

/// A Matryoshka dimension outside `1..=len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimOutOfRange {
    /// The dimension asked for.
    pub dim: usize,
    /// The vector's length.
    pub len: usize,
}

impl std::fmt::Display for DimOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Matryoshka dim {} out of range 1..={}",
            self.dim, self.len
        )
    }
}

impl std::error::Error for DimOutOfRange {}

/// Matryoshka: keeps the first `dim` values, then L2-normalises (truncate **then** normalise).
pub fn truncate_normalize(v: &[f32], dim: usize) -> Result<Vec<f32>, DimOutOfRange> {
    if dim == 0 || dim > v.len() {
        return Err(DimOutOfRange { dim, len: v.len() });
    }
    let mut out = v[..dim].to_vec();
    normalize(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_truncates_like_the_reference() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
        // Truncate first, then normalise (not the other way round).
        let t = truncate_normalize(&[3.0, 4.0, 12.0], 2).unwrap();
        assert_eq!(t, vec![0.6, 0.8]);
        assert_eq!(
            truncate_normalize(&[1.0], 2),
            Err(DimOutOfRange { dim: 2, len: 1 })
        );
        assert!(truncate_normalize(&[1.0], 0).is_err());
        assert!((norm(&[3.0, 4.0]) - 5.0).abs() < 1e-6);
    }
}
