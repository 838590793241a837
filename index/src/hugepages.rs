//! Transparent huge pages for the big in-memory arrays (graph vectors, adjacency, sketches).
//!
//! A search touches a few thousand random nodes of arrays that are hundreds of MB at 1M vectors:
//! with 4 KiB pages nearly every touch also misses the TLB. On Linux the arrays' reserved
//! capacity is marked `MADV_HUGEPAGE` before it is written, so the kernel backs it with 2 MiB
//! pages where the system allows (`/sys/kernel/mm/transparent_hugepage/enabled` = `madvise` or
//! `always`). Elsewhere, or when the kernel refuses, nothing changes.

/// Size of a transparent huge page on x86-64 and most arm64 kernels.
const HUGE: usize = 2 << 20;

/// Ask for huge pages under the whole reserved capacity of `v` (the 2 MiB-aligned part of it).
/// Cheap to repeat; call it after `reserve` and before filling.
fn advise<T>(v: &Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < 2 * HUGE {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = v.as_ptr() as usize;
        let lo = start.next_multiple_of(HUGE);
        let hi = (start + bytes) / HUGE * HUGE;
        if hi > lo {
            // SAFETY: the range lies inside the Vec's own allocation; MADV_HUGEPAGE changes only
            // how the kernel backs those pages, never their contents. A failure is harmless.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// `v.reserve(additional)`, then [`advise`].
/// Advises only when the allocation changed (so that per-node calls cost no system call).
pub(crate) fn reserve<T>(v: &mut Vec<T>, additional: usize) {
    let (ptr, cap) = (v.as_ptr(), v.capacity());
    v.reserve(additional);
    if v.as_ptr() != ptr || v.capacity() != cap {
        advise(v);
    }
}
