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

/// L2 norm, accumulated in f64.
pub fn norm(v: &[f32]) -> f32 {
    v.iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt() as f32
}

/// Divide by the L2 norm (no-op for a zero vector).
pub fn normalize(v: &mut [f32]) {
    let n = norm(v);
    if n > 0.0 {
        let inv = 1.0 / n;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Matryoshka truncation: the first `dim` coordinates, re-normalised.
pub fn truncate_normalize(v: &[f32], dim: usize) -> Vec<f32> {
    let mut t = v[..dim.min(v.len())].to_vec();
    normalize(&mut t);
    t
}

/// f32 -> f16 (round to nearest).
pub fn to_f16(v: &[f32]) -> Vec<F16> {
    v.iter()
        .map(|&x| simsimd::f16(half::f16::from_f32(x).to_bits()))
        .collect()
}

/// f16 -> f32.
pub fn from_f16(v: &[F16]) -> Vec<f32> {
    v.iter()
        .map(|x| half::f16::from_bits(x.0).to_f32())
        .collect()
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

/// Dot product of two f16 vectors (simsimd, accumulated in f32).
#[inline]
pub fn dot_f16(a: &[F16], b: &[F16]) -> f32 {
    F16::dot(a, b).unwrap_or(0.0) as f32
}

/// Dot product of two f32 vectors (simsimd).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    f32::dot(a, b).unwrap_or(0.0) as f32
}

/// The graph vector derived from a stored full vector: f16 full -> f32 -> first `ann_dim` -> re-normalised -> f16.
/// Always derived from the *stored* (f16) full vector so that building and reloading give identical bits.
pub fn ann_from_full(full: &[F16], ann_dim: usize) -> Vec<F16> {
    let head: Vec<f32> = from_f16(&full[..ann_dim]);
    to_f16(&truncate_normalize(&head, ann_dim))
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
        f16_to_bytes(&to_f16(&a), &mut bytes);
        let mut back = Vec::new();
        f16_from_bytes(&bytes, &mut back);
        assert_eq!(back, to_f16(&a));
    }
}
