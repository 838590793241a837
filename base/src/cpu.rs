//! Which SIMD kernels this CPU can run: detected once per process, the one place in jsearch
//! that asks the CPU.
//!
//! Every fast path checks [`features`] and falls back to portable code. `JSEARCH_CPU_TIER`
//! caps what is reported, to force a lower tier on a machine that has more:
//!
//! | value | kernels allowed |
//! |---|---|
//! | `portable` | none (plain Rust, what ARM and old x86 run) |
//! | `avx2` | AVX2 + FMA + F16C |
//! | `avx512` | the above + AVX-512 F/BW/VL (+ VNNI) |
//! | `avx512bf16` | the above + AVX512-BF16 |
//! | `amx` or unset | everything the CPU has (AMX-BF16 tiles included) |

use std::sync::OnceLock;

/// CPU features the kernels use (all false off x86-64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// AVX2.
    pub avx2: bool,
    /// Fused multiply-add (FMA3).
    pub fma: bool,
    /// f16 <-> f32 conversions (F16C).
    pub f16c: bool,
    /// AVX-VNNI (256-bit `vpdpbusd` without AVX-512: Alder Lake and later, Zen 5), with AVX2.
    pub avx_vnni: bool,
    /// AVX-512 F, BW and VL together.
    pub avx512: bool,
    /// AVX-512 VNNI (int8 dot products).
    pub avx512_vnni: bool,
    /// AVX512-BF16 (with AVX-512 F/BW/VL).
    pub avx512_bf16: bool,
    /// AMX tiles with bf16 products (AMX-TILE + AMX-BF16), with AVX512-BF16, and the Linux
    /// kernel's permission for this process to use the tile data granted.
    pub amx_bf16: bool,
    /// AMX tiles with int8 products (AMX-TILE + AMX-INT8), with AVX512-VNNI, the permission
    /// granted as for `amx_bf16`.
    pub amx_int8: bool,
}

/// A tier to cap the detected features at (`JSEARCH_CPU_TIER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// No SIMD kernels.
    Portable,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX2 with AVX-VNNI (int8 dot products on 256-bit vectors).
    AvxVnni,
    /// AVX-512 F/BW/VL (and VNNI).
    Avx512,
    /// AVX-512 with AVX512-BF16.
    Avx512Bf16,
    /// Everything, AMX-BF16 tiles included.
    Amx,
}

impl Tier {
    /// Parses a `JSEARCH_CPU_TIER` value.
    pub fn parse(s: &str) -> Option<Tier> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" | "none" | "scalar" => Some(Tier::Portable),
            "avx2" => Some(Tier::Avx2),
            "avxvnni" | "avx-vnni" => Some(Tier::AvxVnni),
            "avx512" => Some(Tier::Avx512),
            "avx512bf16" | "avx512-bf16" => Some(Tier::Avx512Bf16),
            "amx" | "native" | "" => Some(Tier::Amx),
            _ => None,
        }
    }
}

impl Features {
    /// What this CPU reports (no cap).
    pub fn detect() -> Features {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512vl");
            Features {
                avx2: has!("avx2"),
                fma: has!("fma"),
                f16c: has!("f16c"),
                avx_vnni: has!("avx2") && has!("avxvnni"),
                avx512,
                avx512_vnni: avx512 && has!("avx512vnni"),
                avx512_bf16: avx512 && has!("avx512bf16"),
                amx_bf16: avx512 && has!("avx512bf16") && amx::usable(amx::BF16),
                amx_int8: avx512 && has!("avx512vnni") && amx::usable(amx::INT8),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Features::default()
        }
    }

    /// These features with everything above `tier` turned off.
    pub fn capped(self, tier: Tier) -> Features {
        let mut f = self;
        if tier < Tier::Amx {
            f.amx_bf16 = false;
            f.amx_int8 = false;
        }
        if tier < Tier::Avx512Bf16 {
            f.avx512_bf16 = false;
        }
        if tier < Tier::Avx512 {
            f.avx512 = false;
            f.avx512_vnni = false;
        }
        if tier < Tier::AvxVnni {
            f.avx_vnni = false;
        }
        if tier < Tier::Avx2 {
            f.avx2 = false;
            f.fma = false;
            f.f16c = false;
        }
        f
    }

    /// The highest tier these features reach.
    pub fn tier(&self) -> Tier {
        if self.amx_bf16 {
            Tier::Amx
        } else if self.avx512_bf16 {
            Tier::Avx512Bf16
        } else if self.avx512 {
            Tier::Avx512
        } else if self.avx_vnni && self.fma && self.f16c {
            Tier::AvxVnni
        } else if self.avx2 && self.fma && self.f16c {
            Tier::Avx2
        } else {
            Tier::Portable
        }
    }
}

/// The features the kernels may use in this process: detected once, capped by
/// `JSEARCH_CPU_TIER` when set (an unknown value is ignored).
#[inline]
pub fn features() -> &'static Features {
    static FEATURES: OnceLock<Features> = OnceLock::new();
    FEATURES.get_or_init(|| {
        let f = Features::detect();
        match std::env::var("JSEARCH_CPU_TIER")
            .ok()
            .and_then(|v| Tier::parse(&v))
        {
            Some(t) => f.capped(t),
            None => f,
        }
    })
}

/// AMX on x86-64 Linux: the CPU's CPUID bits and the kernel's permission.
#[cfg(target_arch = "x86_64")]
mod amx {
    /// CPUID leaf 7 sub-leaf 0, EDX bit of AMX-BF16.
    pub(super) const BF16: u32 = 1 << 22;
    /// CPUID leaf 7 sub-leaf 0, EDX bit of AMX-INT8.
    pub(super) const INT8: u32 = 1 << 25;

    /// Whether the CPU has AMX-TILE and the product `kind` ([`BF16`], [`INT8`]) and Linux lets
    /// this process use the tiles (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, Linux
    /// ≥ 5.16: the tile data is not part of a process's state until it asks). Asked once per
    /// process; the permission holds for all its threads.
    pub(super) fn usable(kind: u32) -> bool {
        // CPUID leaf 7 sub-leaf 0, EDX: bit 24 AMX-TILE.
        // Leaf 7 exists on every x86-64 CPU that reports AVX-512 (checked first by the caller).
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        if edx & kind == 0 || edx & (1 << 24) == 0 {
            return false;
        }
        static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *GRANTED.get_or_init(request_tile_data)
    }

    #[cfg(target_os = "linux")]
    fn request_tile_data() -> bool {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: the arch_prctl system call with these arguments only changes which extended
        // states the kernel saves for this process; it reads and writes no user memory. The
        // syscall instruction clobbers rcx and r11, declared here.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    /// Other systems: not requested, so not used (macOS has no AMX CPUs; Windows enables the
    /// state itself, but is not measured here).
    #[cfg(not(target_os = "linux"))]
    fn request_tile_data() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_turns_off_the_higher_tiers() {
        let all = Features {
            avx2: true,
            fma: true,
            f16c: true,
            avx_vnni: true,
            avx512: true,
            avx512_vnni: true,
            avx512_bf16: true,
            amx_bf16: true,
            amx_int8: true,
        };
        assert_eq!(all.tier(), Tier::Amx);
        assert_eq!(all.capped(Tier::Avx512Bf16).tier(), Tier::Avx512Bf16);
        assert_eq!(Tier::parse("native"), Some(Tier::Amx));
        assert_eq!(all.capped(Tier::Avx512).tier(), Tier::Avx512);
        assert_eq!(all.capped(Tier::AvxVnni).tier(), Tier::AvxVnni);
        assert!(all.capped(Tier::AvxVnni).avx_vnni && !all.capped(Tier::Avx2).avx_vnni);
        assert_eq!(all.capped(Tier::Avx2).tier(), Tier::Avx2);
        assert_eq!(Tier::parse("avx-vnni"), Some(Tier::AvxVnni));
        assert_eq!(all.capped(Tier::Portable), Features::default());
        assert_eq!(Tier::parse("AVX2"), Some(Tier::Avx2));
        assert_eq!(Tier::parse("sse9"), None);
        // Capping never adds what the CPU lacks.
        assert_eq!(Features::default().capped(Tier::Amx), Features::default());
    }
}
