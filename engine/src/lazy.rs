//! A cell initialised once by a fallible function, shared by threads.

use std::sync::{Mutex, OnceLock};

/// Like `OnceLock` with a fallible initialiser: concurrent first users wait for the one that
/// initialises (so an expensive load runs once); a failed initialisation leaves the cell empty
/// and the next caller tries again.
pub(crate) struct Lazy<T> {
    cell: OnceLock<T>,
    init: Mutex<()>,
}

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Lazy {
            cell: OnceLock::new(),
            init: Mutex::new(()),
        }
    }
}

impl<T> Lazy<T> {
    /// The value, initialising it with `f` if no caller has yet.
    pub(crate) fn get_or_try_init<E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<&T, E> {
        if let Some(v) = self.cell.get() {
            return Ok(v);
        }
        let _guard = self.init.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = self.cell.get() {
            return Ok(v);
        }
        let v = f()?;
        Ok(self.cell.get_or_init(|| v))
    }

    /// The value if it was initialised.
    #[cfg(test)]
    pub(crate) fn get(&self) -> Option<&T> {
        self.cell.get()
    }

    /// Takes the value out, leaving the cell empty (needs exclusive access).
    pub(crate) fn take(&mut self) -> Option<T> {
        self.cell.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn initialises_once_across_threads_and_retries_after_failure() {
        let lazy: Lazy<usize> = Lazy::default();
        assert!(lazy.get_or_try_init(|| Err::<usize, &str>("no")).is_err());
        assert!(lazy.get().is_none());
        let calls = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let v = lazy
                        .get_or_try_init(|| {
                            calls.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok::<usize, &str>(7)
                        })
                        .copied();
                    assert_eq!(v, Ok(7));
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
