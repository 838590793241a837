//! Maps keyed by jsearch's item and vector ids. The ids are already hashes (61 bits of SHA-256
//! and three bits of kind and modality), so a map needs no SipHash over them: one multiply spreads
//! the kind bits, and a lookup on the search path (a filter's test per visited node, the store's
//! id → node) costs the memory access alone.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A [`Hasher`] for `u64` ids that are hashes already (Fibonacci multiply). Other inputs are
/// folded in eight bytes at a time, so it stays correct (if not fast) for any key.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0.rotate_left(5) ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Builds [`IdHasher`]s.
pub type IdBuildHasher = BuildHasherDefault<IdHasher>;
/// A map keyed by ids.
pub type IdMap<V> = HashMap<u64, V, IdBuildHasher>;
/// A set of ids.
pub type IdSet = HashSet<u64, IdBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_differ_in_kind_bits_only_hash_apart() {
        let h = |id: u64| {
            let mut s = IdHasher::default();
            s.write_u64(id);
            s.finish()
        };
        let base = 0xdead_beef_1234_5670u64;
        let hs: HashSet<u64> = (0..8).map(|k| h(base | k)).collect();
        assert_eq!(hs.len(), 8);
        let mut m: IdMap<u32> = IdMap::default();
        for i in 0..1000u64 {
            m.insert(i << 3 | 2, i as u32);
        }
        assert_eq!(m.get(&(500 << 3 | 2)), Some(&500));
        assert_eq!(m.len(), 1000);
    }
}
