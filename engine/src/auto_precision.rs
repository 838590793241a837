//! What `--precision auto` means on a CPU: the fastest path that keeps the embeddings within
//! cosine 0.999 of f32, for this CPU's tier and this workload, read from speeds measured by the
//! `encoders` bench and shipped here (a GPU always gets bf16).
//!
//! The table lists, per CPU tier and bench case, each path's speed relative to f32 in the same
//! run and its minimum cosine to PyTorch f32 (the reference). A workload maps to bench cases:
//! a text query to `cli` (a whole `jsearch query` process, from the `coldstart` bench) where that
//! was measured, else `q1` (one query of 8 tokens), an image query to `img`, an index run to `q32`
//! and `p512` for texts and `img` for images (batches of short texts, passages, images). A path is chosen only when it
//! keeps cosine ≥ [`MIN_COSINE`] and is at least as fast as f32 on every case of the workload;
//! among those, the fastest on the workload's cases (geometric mean) wins, f32 otherwise.
//!
//! A CPU uses the rows of its tier; an AVX-512 CPU without VNNI (Skylake-SP) runs the same int8
//! kernel (our AVX2 one) as an AVX2 CPU and uses the AVX2 rows; the portable tier (ARM, old x86)
//! gets f32, the exact reference.

use jsearch_base::cpu::Tier;
use jsearch_encoders::Towers;

use crate::device::Precision;

/// The agreement with f32 a faster path must keep (minimum cosine over the bench's outputs).
pub const MIN_COSINE: f64 = 0.999;

/// What the encoders are loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `query` / `similar`: one input at a time, latency matters.
    Query,
    /// `index`: batches of texts, passages and images, throughput matters.
    Index,
    /// `embed`: the vectors themselves are the output, so they stay the exact f32 reference.
    Embed,
}

/// A bench case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// One `jsearch query` process end to end, weights mapped from the cache (the `coldstart`
    /// bench): start-up, one query of 8 tokens, search.
    Cli,
    /// One query of 8 tokens.
    Q1,
    /// 32 queries of 8 tokens.
    Q32,
    /// 2 passages of 512 tokens.
    P512,
    /// One 512 px image.
    Img,
}

/// One measured row: `path` on `case` ran `speedup` times as fast as f32 on a CPU of `tier`, with
/// minimum cosine `cosine` to PyTorch f32.
struct Row {
    tier: Tier,
    case: Case,
    path: Precision,
    speedup: f64,
    cosine: f64,
}

const fn row(tier: Tier, case: Case, path: Precision, speedup: f64, cosine: f64) -> Row {
    Row {
        tier,
        case,
        path,
        speedup,
        cosine,
    }
}

use Case::{Cli, Img, P512, Q1, Q32};
use Precision::{Bf16, Int8};
use Tier::{Amx, Avx2, Avx512, Avx512Bf16};

/// Speeds relative to f32 in the same run, from `encoders --dtypes f32,int8,bf16mm --cases
/// q1,q32,p512,img` (docs/encoders.md): AMX on the 2-core Xeon (Sapphire Rapids class) of
/// 2026-12-07, int8 on AMX-INT8 tiles and bf16 on AMX-BF16 tiles (our int8 kernel, after the
/// forward passes moved onto the thread pool); AVX512-BF16 on a 2-core Zen 4 (int8 on
/// AVX512-VNNI), AVX-512 without BF16 forced on the same Zen 4 (int8 only: no bf16 kernel
/// there); AVX2 + FMA natively on a 2-core Zen 3. Every row but AMX's is against the fused
/// f32 layers (`cpu_layers`); the AMX rows are against candle's f32 ops, which the fused
/// layers beat by 1.16–1.36x on Zen 3 and 1.08–1.26x on Zen 4, so AMX's int8 and bf16 ratios
/// overstate by about that much, and still clear 1 on every case.
const MEASURED: &[Row] = &[
    // `coldstart --runs 4 --precision int8,bf16,f32`: 63 / 128 / 246 ms per `jsearch query`
    // process (weights mapped from the cache; cosines those of q1).
    row(Amx, Cli, Int8, 3.90, 0.999437),
    row(Amx, Cli, Bf16, 1.92, 0.999969),
    // jsearch f32: 96.2 / 969.8 / 4477.4 / 6979.6 ms (`--dtypes auto,f32,int8,bf16mm
    // --peer-dtypes float32,bfloat16,onnx-int8`, after the block epilogue).
    row(Amx, Q1, Int8, 5.73, 0.999437),
    row(Amx, Q32, Int8, 8.85, 0.999258),
    row(Amx, P512, Int8, 6.92, 0.999538),
    row(Amx, Img, Int8, 4.99, 0.997107),
    row(Amx, Q1, Bf16, 3.29, 0.999969),
    row(Amx, Q32, Bf16, 5.60, 0.999960),
    row(Amx, P512, Bf16, 5.45, 0.999974),
    row(Amx, Img, Bf16, 4.48, 0.999962),
    // AVX512-BF16 without AMX: a 2-core Zen 4 (AMD EPYC, family 25 model 17) of 2026-12-08,
    // natively, against the fused f32 layers. int8 on AVX512-VNNI, bf16 on `vdpbf16ps`,
    // attention on the register kernel in blocks of 32 query rows. `coldstart --precision
    // auto,int8,bf16,f32 --runs 4`: 47 / 86 / 223 ms per `jsearch query` process (int8 / bf16 /
    // f32); `encoders --dtypes auto,f32,int8,bf16mm --peer-dtypes
    // float32,bfloat16,onnx-float32,onnx-int8`: int8 12.0 / 224.1 / 1076.5 / 1738.1 ms, bf16
    // 22.4 / 402.1 / 1713.9 / 2506.6, f32 147.3 / 860.8 / 3411.7 / 4974.3.
    row(Avx512Bf16, Cli, Int8, 4.74, 0.999327),
    row(Avx512Bf16, Cli, Bf16, 2.59, 0.999965),
    row(Avx512Bf16, Q1, Int8, 12.28, 0.999327),
    row(Avx512Bf16, Q32, Int8, 3.84, 0.999291),
    row(Avx512Bf16, P512, Int8, 3.17, 0.999533),
    row(Avx512Bf16, Img, Int8, 2.86, 0.997081),
    row(Avx512Bf16, Q1, Bf16, 6.58, 0.999965),
    row(Avx512Bf16, Q32, Bf16, 2.14, 0.999961),
    row(Avx512Bf16, P512, Bf16, 1.99, 0.999973),
    row(Avx512Bf16, Img, Bf16, 1.98, 0.999962),
    // Forced on the same Zen 4 (`JSEARCH_CPU_TIER=avx512`: AVX-512 with VNNI, no BF16): int8 on
    // the VNNI kernel, f32 attention in both (`encoders --dtypes f32,int8 --peer-dtypes ""`,
    // 2026-12-08; cosines from the same kernels' run with the PyTorch peer on 2026-12-07): int8
    // 11.6 / 259.9 / 1329.3 / 2357.8 ms against f32 146.5 / 888.5 / 3611.7 / 5143.7.
    // `coldstart --precision int8,f32 --runs 4 --no-peer`: 49 / 222 ms.
    row(Avx512, Cli, Int8, 4.53, 0.999373),
    row(Avx512, Q1, Int8, 12.63, 0.999373),
    row(Avx512, Q32, Int8, 3.42, 0.999264),
    row(Avx512, P512, Int8, 2.72, 0.999534),
    row(Avx512, Img, Int8, 2.18, 0.997068),
    // int8 on our AVX2 kernel (`vpsignb` + `vpmaddubsw`, the fused layers with the f32
    // attention), natively on a 2-core Zen 3 (AMD EPYC, family 25 model 1: AVX2 + FMA, no
    // AVX-512) of 2026-12-07, against the fused f32 layers (`encoders --dtypes auto,f32,int8
    // --peer-dtypes float32,bfloat16,onnx-float32,onnx-int8`): int8 39.2 / 733.7 / 4285.9 /
    // 6196.5 ms, jsearch f32 281.1 / 1718.6 / 6109.0 / 8170.6. `coldstart --precision
    // auto,int8,f32 --runs 4`: 157 / 414 ms per `jsearch query` process (auto, which is int8,
    // 128). Forced on a Zen 4 the day before (f32 on the candle ops then) the ratios were 2.65 /
    // 6.14 / 1.69 / 1.51 / 1.39.
    row(Avx2, Cli, Int8, 2.64, 0.999410),
    row(Avx2, Q1, Int8, 7.17, 0.999410),
    row(Avx2, Q32, Int8, 2.34, 0.999236),
    row(Avx2, P512, Int8, 1.43, 0.999534),
    row(Avx2, Img, Int8, 1.32, 0.996912),
];

fn cases(tier: Tier, workload: Workload, towers: Towers) -> &'static [Case] {
    let cli_measured = MEASURED.iter().any(|r| r.tier == tier && r.case == Cli);
    match (workload, towers) {
        // A text query is a whole process (start-up included) where that was measured.
        (Workload::Query, Towers::Text) if cli_measured => &[Cli],
        (Workload::Query, Towers::Text) => &[Q1],
        (Workload::Query, Towers::Vision) => &[Img],
        (Workload::Query, Towers::Both) => &[Q1, Img],
        (Workload::Index, Towers::Text) => &[Q32, P512],
        (Workload::Index, Towers::Vision) => &[Img],
        (Workload::Index, Towers::Both) => &[Q32, P512, Img],
        (Workload::Embed, _) | (_, Towers::None) => &[],
    }
}

/// The measured tier whose rows apply to a CPU of `tier` (this CPU's VNNI decides for AVX-512:
/// without it, int8 runs the AVX2 kernel).
fn measured_tier(tier: Tier) -> Option<Tier> {
    match tier {
        Tier::Amx => Some(Tier::Amx),
        Tier::Avx512Bf16 => Some(Tier::Avx512Bf16),
        Tier::Avx512 if jsearch_base::cpu::features().avx512_vnni => Some(Tier::Avx512),
        // AVX-VNNI (Alder Lake and later laptops) until measured: the AVX2 rows (its kernel sums
        // the same integers as AVX512-VNNI, in fewer instructions than AVX2's).
        Tier::Avx512 | Tier::AvxVnni | Tier::Avx2 => Some(Tier::Avx2),
        Tier::Portable => None,
    }
}

/// What `auto` runs and why: [`Choice::precision`], and a one-line reason for the log (its
/// `Display`, formatted only when it is shown).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// The path to run.
    pub precision: Precision,
    workload: Workload,
    basis: Basis,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Basis {
    NoTower,
    Embed,
    Unmeasured,
    /// The geometric-mean speed-up over f32 on the workload's cases, on CPUs of this tier.
    Faster(f64, Tier),
    NoFaster,
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.workload {
            Workload::Query => "queries",
            Workload::Index => "indexing",
            Workload::Embed => "embeddings",
        };
        match self.basis {
            Basis::NoTower => write!(f, "f32 (no tower loaded)"),
            Basis::Embed => write!(f, "f32 for embeddings (the exact reference vectors)"),
            Basis::Unmeasured => write!(f, "f32 (no faster path measured for this CPU)"),
            Basis::Faster(s, t) => write!(
                f,
                "{} for {what} ({s:.2}x f32 as measured on {} CPUs, cosine ≥ {MIN_COSINE})",
                name(self.precision),
                tier_name(t)
            ),
            Basis::NoFaster => write!(
                f,
                "f32 for {what} (no faster path keeps cosine ≥ {MIN_COSINE} here)"
            ),
        }
    }
}

/// The CPU path `auto` runs for `workload` on a CPU of `tier` loading `towers`, and why.
/// Allocation-free: the engine asks on every query.
pub fn choose(tier: Tier, workload: Workload, towers: Towers) -> Choice {
    let choice = |precision, basis| Choice {
        precision,
        workload,
        basis,
    };
    if towers == Towers::None {
        return choice(Precision::F32, Basis::NoTower);
    }
    if workload == Workload::Embed {
        return choice(Precision::F32, Basis::Embed);
    }
    let Some(t) = measured_tier(tier) else {
        return choice(Precision::F32, Basis::Unmeasured);
    };
    let wanted = cases(t, workload, towers);
    let mut best: Option<(Precision, f64)> = None;
    for path in [Int8, Bf16] {
        let (mut n, mut ok, mut log_sum) = (0, true, 0.0);
        for r in MEASURED
            .iter()
            .filter(|r| r.tier == t && r.path == path && wanted.contains(&r.case))
        {
            n += 1;
            ok &= r.cosine >= MIN_COSINE && r.speedup >= 1.0;
            log_sum += r.speedup.ln();
        }
        // Measured on every case of the workload, exact enough and never slower on any.
        if n != wanted.len() || !ok {
            continue;
        }
        let gmean = (log_sum / n as f64).exp();
        if best.is_none_or(|(_, s)| gmean > s) {
            best = Some((path, gmean));
        }
    }
    match best {
        Some((p, s)) => choice(p, Basis::Faster(s, t)),
        None => choice(Precision::F32, Basis::NoFaster),
    }
}

fn name(p: Precision) -> &'static str {
    match p {
        Precision::Int8 => "int8",
        Precision::Bf16 => "bf16",
        Precision::F16 => "f16",
        Precision::F32 | Precision::Auto => "f32",
    }
}

fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Amx => "AMX",
        Tier::Avx512Bf16 => "AVX512-BF16",
        Tier::Avx512 => "AVX-512",
        Tier::AvxVnni => "AVX-VNNI",
        Tier::Avx2 => "AVX2",
        Tier::Portable => "portable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIERS: [Tier; 5] = [
        Tier::Portable,
        Tier::Avx2,
        Tier::Avx512,
        Tier::Avx512Bf16,
        Tier::Amx,
    ];
    const WORK: [(Workload, Towers); 6] = [
        (Workload::Query, Towers::Text),
        (Workload::Query, Towers::Vision),
        (Workload::Query, Towers::Both),
        (Workload::Index, Towers::Text),
        (Workload::Index, Towers::Vision),
        (Workload::Index, Towers::Both),
    ];

    /// Auto never picks a path that the shipped measurements show slower than f32 or below
    /// the cosine bar on any case of the workload, for every tier.
    #[test]
    fn auto_never_picks_a_path_slower_than_f32_or_less_exact() {
        for tier in TIERS {
            for (w, towers) in WORK {
                let choice = choose(tier, w, towers);
                let (p, why) = (choice.precision, choice.to_string());
                if p == Precision::F32 {
                    continue;
                }
                let t = measured_tier(tier).expect("a faster path only where measured");
                for case in cases(t, w, towers) {
                    let r = MEASURED
                        .iter()
                        .find(|r| r.tier == t && r.path == p && r.case == *case)
                        .expect("measured");
                    assert!(r.speedup >= 1.0, "{tier:?} {w:?}: {why}");
                    assert!(r.cosine >= MIN_COSINE, "{tier:?} {w:?}: {why}");
                }
            }
        }
    }

    /// The choices the measurements lead to, said in words: int8 for text queries and for
    /// indexing texts on every measured tier (our kernel: AMX-INT8, AVX512-VNNI or AVX2); never
    /// int8 for images (cosine 0.997); bf16 for images only where the CPU has the kernel; f32 on
    /// the portable tier.
    #[test]
    fn the_measured_choices() {
        let c = |t, w, towers| choose(t, w, towers).precision;
        // AMX: int8 (AMX-INT8) for texts, bf16 wherever images are involved (int8's image
        // cosine is 0.9971).
        for (w, towers) in WORK {
            let want = if towers == Towers::Text { Int8 } else { Bf16 };
            assert_eq!(c(Tier::Amx, w, towers), want, "{w:?} {towers:?}");
        }
        assert_eq!(c(Tier::Avx512Bf16, Workload::Query, Towers::Text), Int8);
        assert_eq!(c(Tier::Avx2, Workload::Query, Towers::Text), Int8);
        assert_eq!(c(Tier::Avx512, Workload::Query, Towers::Text), Int8);
        assert_ne!(c(Tier::Avx512Bf16, Workload::Query, Towers::Vision), Int8);
        assert_eq!(c(Tier::Avx512Bf16, Workload::Index, Towers::Both), Bf16);
        assert_eq!(c(Tier::Avx512Bf16, Workload::Index, Towers::Text), Int8);
        assert_eq!(c(Tier::Avx512Bf16, Workload::Index, Towers::Vision), Bf16);
        assert_eq!(c(Tier::Avx2, Workload::Index, Towers::Text), Int8);
        assert_eq!(c(Tier::Avx2, Workload::Index, Towers::Both), Precision::F32);
        assert_eq!(
            c(Tier::Avx2, Workload::Query, Towers::Vision),
            Precision::F32
        );
        // AVX-512 (with VNNI: Ice Lake, Cascade Lake; without: the AVX2 rows): our int8 kernel
        // for texts, f32 for images.
        assert_eq!(c(Tier::Avx512, Workload::Index, Towers::Text), Int8);
        assert_eq!(
            c(Tier::Avx512, Workload::Index, Towers::Vision),
            Precision::F32
        );
        assert_eq!(
            c(Tier::Portable, Workload::Query, Towers::Text),
            Precision::F32
        );
        let why = choose(Tier::Avx2, Workload::Query, Towers::Text).to_string();
        assert!(why.starts_with("int8 for queries"), "{why}");
    }
}
