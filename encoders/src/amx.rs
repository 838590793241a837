//! The AMX block shared by the bf16 and int8 products, through inline assembly (Rust's AMX
//! intrinsics are not stable). Tiles 0–3 accumulate a 32 × 32 block of C (rows 0–15 / 16–31 ×
//! columns 0–15 / 16–31, f32 for bf16, i32 for int8), tiles 4–5 hold two 16-row A tiles of 64
//! bytes (16 bf16 pairs or 16 int8 quads per row), tiles 6–7 the panel's two 16-column halves of
//! the same 64 bytes of k (the packings' k-pair / k-quad rows of 32 columns are exactly AMX's
//! interleaved B layout, 128 bytes a row). The compiler never allocates tile registers, so they
//! need no declaring; a task loads the configuration before its blocks and releases the tiles
//! after them.

/// The product instruction of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `tdpbf16ps`: bf16 pairs, f32 accumulators (AMX-BF16).
    Bf16,
    /// `tdpbssd`: signed int8 quads, i32 accumulators (AMX-INT8).
    Int8,
}

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::{block, configure, release};

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::Op;
    use std::arch::asm;

    /// Palette 1, all eight tiles 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    static CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    /// One step's products into the four C tiles (A in tiles 4–5, B in 6–7 loaded here from
    /// `b0` / `b1`, stride `sb`), for `op`; `two` false: rows 0–15 only.
    macro_rules! step {
        ($op:literal, $a0:expr, $a1:expr, $b0:expr, $sa:expr, $two:expr) => {
            if $two {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    concat!($op, " tmm0, tmm4, tmm6"),
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    concat!($op, " tmm1, tmm4, tmm7"),
                    concat!($op, " tmm2, tmm5, tmm6"),
                    concat!($op, " tmm3, tmm5, tmm7"),
                    a0 = in(reg) $a0,
                    a1 = in(reg) $a1,
                    b0 = in(reg) $b0,
                    b1 = in(reg) $b0.add(64),
                    sa = in(reg) $sa,
                    sb = in(reg) 128usize,
                    options(nostack, readonly)
                );
            } else {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    concat!($op, " tmm0, tmm4, tmm6"),
                    concat!($op, " tmm1, tmm4, tmm7"),
                    a0 = in(reg) $a0,
                    b0 = in(reg) $b0,
                    b1 = in(reg) $b0.add(64),
                    sa = in(reg) $sa,
                    sb = in(reg) 128usize,
                    options(nostack, readonly)
                );
            }
        };
    }

    /// `C[32, 32] (+)= A[32, 64·steps bytes] · B` for one panel (the tiles configured by
    /// [`configure`]; C loaded from `c` first when `load`): `a` rows of `lda` bytes, `b` the
    /// panel's rows of 128 bytes (16 per step); C to `c` (32 values of 4 bytes a row, rows
    /// `ldc` bytes apart). With `two` false only rows 0–15 are computed and stored.
    ///
    /// # Safety
    /// AMX-TILE and the AMX product of `op` must be usable (permission granted); `a` readable
    /// for 32 rows (16 when not `two`) of `steps · 64` bytes at stride `lda`, `b` for
    /// `steps · 16` rows of 128 bytes, `c` writable for 32 (16) rows of 128 bytes at stride
    /// `ldc`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn block(
        op: Op,
        a: *const u8,
        lda: usize,
        b: *const u8,
        steps: usize,
        c: *mut u8,
        ldc: usize,
        two: bool,
        load: bool,
    ) {
        // SAFETY: the caller upholds this function's contract; every address below lies in
        // the ranges it names.
        unsafe {
            if load {
                asm!(
                    "tileloadd tmm0, [{c0} + {s}*1]",
                    "tileloadd tmm1, [{c1} + {s}*1]",
                    c0 = in(reg) c,
                    c1 = in(reg) c.add(64),
                    s = in(reg) ldc,
                    options(nostack, readonly)
                );
                if two {
                    asm!(
                        "tileloadd tmm2, [{c0} + {s}*1]",
                        "tileloadd tmm3, [{c1} + {s}*1]",
                        c0 = in(reg) c.add(16 * ldc),
                        c1 = in(reg) c.add(16 * ldc + 64),
                        s = in(reg) ldc,
                        options(nostack, readonly)
                    );
                }
            } else {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
            }
            for t in 0..steps {
                let a0 = a.add(t * 64);
                let b0 = b.add(t * 16 * 128);
                match op {
                    Op::Bf16 => step!("tdpbf16ps", a0, a0.add(16 * lda), b0, lda, two),
                    Op::Int8 => step!("tdpbssd", a0, a0.add(16 * lda), b0, lda, two),
                }
            }
            asm!(
                "tilestored [{c0} + {s}*1], tmm0",
                "tilestored [{c1} + {s}*1], tmm1",
                c0 = in(reg) c,
                c1 = in(reg) c.add(64),
                s = in(reg) ldc,
                options(nostack)
            );
            if two {
                asm!(
                    "tilestored [{c0} + {s}*1], tmm2",
                    "tilestored [{c1} + {s}*1], tmm3",
                    c0 = in(reg) c.add(16 * ldc),
                    c1 = in(reg) c.add(16 * ldc + 64),
                    s = in(reg) ldc,
                    options(nostack)
                );
            }
        }
    }

    /// Loads the tile configuration on this thread: before the [`block`]s of one task.
    ///
    /// # Safety
    /// AMX-TILE must be usable (permission granted).
    pub(crate) unsafe fn configure() {
        // SAFETY: the caller upholds this function's contract; CONFIG is 64 aligned bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly)) };
    }

    /// Releases the tiles: after the [`block`]s of one task.
    ///
    /// # Safety
    /// AMX-TILE must be usable (permission granted).
    pub(crate) unsafe fn release() {
        // SAFETY: the caller upholds this function's contract.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Never called: AMX exists only on x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn block(
    _: Op,
    _: *const u8,
    _: usize,
    _: *const u8,
    _: usize,
    _: *mut u8,
    _: usize,
    _: bool,
    _: bool,
) {
    unreachable!("AMX is x86-64 only")
}

/// Never called: AMX exists only on x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn configure() {
    unreachable!("AMX is x86-64 only")
}

/// Never called: AMX exists only on x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn release() {
    unreachable!("AMX is x86-64 only")
}
