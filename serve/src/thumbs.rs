//! Thumbnails kept in memory, least recently used first out, within a byte bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `(item key, side)` → JPEG.
type Key = (u64, u32);

pub(crate) struct Cache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    bytes: usize,
    tick: u64,
    /// Each entry with the tick of its last use.
    map: HashMap<Key, (Arc<Vec<u8>>, u64)>,
}

impl Cache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Cache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn get(&self, key: Key) -> Option<Arc<Vec<u8>>> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.tick += 1;
        let tick = g.tick;
        let e = g.map.get_mut(&key)?;
        e.1 = tick;
        Some(e.0.clone())
    }

    pub(crate) fn put(&self, key: Key, jpeg: Arc<Vec<u8>>) {
        if jpeg.len() > self.max_bytes {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.tick += 1;
        let tick = g.tick;
        g.bytes += jpeg.len();
        if let Some((old, _)) = g.map.insert(key, (jpeg, tick)) {
            g.bytes -= old.len();
        }
        while g.bytes > self.max_bytes {
            // Thumbnails are few (tens of KiB each): a scan for the oldest is cheap enough.
            let Some(oldest) = g.map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) else {
                break;
            };
            if let Some((old, _)) = g.map.remove(&oldest) {
                g.bytes -= old.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_the_bound_and_drops_the_least_recent() {
        let c = Cache::new(100);
        c.put((1, 64), Arc::new(vec![0; 40]));
        c.put((2, 64), Arc::new(vec![0; 40]));
        assert!(c.get((1, 64)).is_some()); // 1 is now more recent than 2
        c.put((3, 64), Arc::new(vec![0; 40]));
        assert!(c.get((2, 64)).is_none());
        assert!(c.get((1, 64)).is_some() && c.get((3, 64)).is_some());
        // Larger than the whole cache: not kept.
        c.put((4, 64), Arc::new(vec![0; 101]));
        assert!(c.get((4, 64)).is_none());
        let g = c.inner.lock().unwrap();
        assert!(g.bytes <= 100);
    }
}
