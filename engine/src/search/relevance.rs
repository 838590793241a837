//! What a score means: the probability-like relevance of a hit, in absolute terms.
//!
//! A raw cosine is not comparable across modality pairs (a text query is far closer to any text
//! than to any image: the "modality gap"), and a score measured against the store ("how far
//! above a typical item") makes the best hit of *any* query look relevant, a nonsense query
//! included. So each cosine is mapped, per pair of query modality and item modality, to a
//! **relevance logit** with constants fitted once per model on held-out pairs:
//!
//! ```text
//! logit = (cos − cut) / scale        relevance = 1 / (1 + e^−logit)
//! ```
//!
//! `cut` is the cosine at which a hit is as likely relevant as not (relevance 0.5): where, on
//! held-out data, the best relevant hits of real queries and the best hits of out-of-domain
//! queries separate best; `scale` such that the typical best relevant hit scores 0.9. A text
//! query's cosine first loses a fitted share of the item's **hubness** (its closeness to a fixed
//! set of everyday queries: an item near every query is a hub that nonsense finds too).
//! Within one pair the ranking follows the (corrected) cosine; across pairs the logits are
//! comparable, so a mixed store ranks images, passages and products together. Stores made with
//! a model that has no fitted constants fall back to the store-relative z-score of the query
//! (`(cos − μ) / σ` over a sample of the store, see the parent module), mapped to a logit by
//! `z − 3` (three standard deviations above a typical item: as likely noise as not) — weaker: it
//! cannot tell a nonsense query from a good one. `benches/src/bin/relevance.rs` fits the
//! constants for a model (and prints the table entry), `docs/relevance.md` has the measurements.

use crate::item::Modality;

/// The constants of one (query modality, item modality) pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairCalibration {
    /// Cosine at relevance 0.5.
    pub cut: f32,
    /// Cosine units per logit unit (> 0).
    pub scale: f32,
}

impl PairCalibration {
    /// The relevance logit of a cosine.
    pub fn logit(&self, cos: f32) -> f32 {
        (cos - self.cut) / self.scale
    }
}

/// A model's fitted constants, indexed `[query modality][item modality]` (text 0, image 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelCalibration {
    /// The model's fingerprint (as the store records it).
    pub fingerprint: &'static str,
    /// Its name, for messages.
    pub name: &'static str,
    /// Weight of the hubness correction of text queries, per item modality (text 0, image 1):
    /// `cos − hub_weight[item] × hubness(item)` is what the text → item constants apply to (0:
    /// none). Image queries keep the cosine.
    pub hub_weight: [f32; 2],
    /// The pairs.
    pub pairs: [[PairCalibration; 2]; 2],
}

/// The models with fitted constants (`cargo run --release -p jsearch-benches --bin relevance --
/// --fit` prints an entry).
pub const KNOWN_MODELS: &[ModelCalibration] = &[ModelCalibration {
    // datasets/toy-shapes/model, fitted on the even-numbered queries and images of its corpus
    // and datasets/relevance/out_of_domain_fit.txt (docs/relevance.md).
    fingerprint: TOY_FINGERPRINT,
    name: "toy-shapes",
    hub_weight: TOY_HUB_WEIGHT,
    pairs: TOY_PAIRS,
}];

const TOY_FINGERPRINT: &str = "faa296433059c99422adfcde9f41fb34d2c7430249790ea5150adad51030df23";
const fn pair(cut: f32, scale: f32) -> PairCalibration {
    PairCalibration { cut, scale }
}
const TOY_HUB_WEIGHT: [f32; 2] = [0.5, 0.15];
const TOY_PAIRS: [[PairCalibration; 2]; 2] = [
    // text query: -> text, -> image
    [pair(0.633, 0.089), pair(0.479, 0.122)],
    // image query: -> text, -> image
    [pair(0.691, 0.042), pair(0.814, 0.024)],
];

/// Logit offset of the store-relative fallback: a z-score of 3 is relevance 0.5.
pub const FALLBACK_Z_CUT: f32 = 3.0;

/// How a store's cosines become relevance logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Relevance {
    /// Fitted constants of the store's model: absolute.
    Absolute(&'static ModelCalibration),
    /// No constants for this model: relative to the store (`z − FALLBACK_Z_CUT`).
    Relative,
}

impl Relevance {
    /// The calibration for a store made with the model of this fingerprint.
    pub fn for_model(fingerprint: &str) -> Relevance {
        // The benches compare against the store-relative scores in the same run.
        if std::env::var_os("JSEARCH_RELEVANCE").is_some_and(|v| v == "relative") {
            return Relevance::Relative;
        }
        KNOWN_MODELS
            .iter()
            .find(|m| !m.fingerprint.is_empty() && m.fingerprint == fingerprint)
            .map_or(Relevance::Relative, Relevance::Absolute)
    }

    /// The weight of the hubness correction of a text query's cosine to an item of this
    /// modality (0: none, also for store-relative scores).
    pub fn hub_weight(&self, item: Modality) -> f32 {
        match self {
            Relevance::Absolute(m) => m.hub_weight[item.byte() as usize],
            Relevance::Relative => 0.0,
        }
    }

    /// Whether scores are absolute (the model has fitted constants).
    pub fn is_absolute(&self) -> bool {
        matches!(self, Relevance::Absolute(_))
    }

    /// The logit of a cosine between a query vector of modality `query` and a stored vector of
    /// modality `item`; `hub` gives the item's [`hubness`] (text queries), `z` the
    /// store-relative score for the fallback.
    pub fn logit(
        &self,
        query: Modality,
        item: Modality,
        cos: f32,
        hub: impl FnOnce() -> Option<f32>,
        z: impl FnOnce() -> f32,
    ) -> f32 {
        match self {
            Relevance::Absolute(m) => {
                // A text query's cosine counts less to an item close to queries in general.
                let w = m.hub_weight[item.byte() as usize];
                let c = if query == Modality::Text && w > 0.0 {
                    cos - w * hub().unwrap_or(0.0)
                } else {
                    cos
                };
                m.pairs[query.byte() as usize][item.byte() as usize].logit(c)
            }
            Relevance::Relative => z() - FALLBACK_Z_CUT,
        }
    }
}

/// Generic queries on every topic and in many languages ("queries in general"): an item close
/// to them is a hub, near to any query (a note the model cannot read embeds close to every query
/// it cannot read either), and a text query's cosine to it counts less.
const BACKGROUND_QUERIES: &str = include_str!("background_queries.txt");

/// Background queries embedded per item's top-[`HUB_K`] mean.
pub const HUB_K: usize = 5;

/// The background queries.
pub fn background_queries() -> Vec<&'static str> {
    BACKGROUND_QUERIES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// An item's hubness: the mean cosine of its vector to its [`HUB_K`] nearest background
/// queries (all vectors normalised).
pub fn hubness(v: &[f32], background: &[Vec<f32>]) -> f32 {
    let mut best = [f32::NEG_INFINITY; HUB_K];
    for b in background {
        let c: f32 = b.iter().zip(v).map(|(x, y)| x * y).sum();
        if c > best[HUB_K - 1] {
            best[HUB_K - 1] = c;
            best.sort_by(|a, b| b.total_cmp(a));
        }
    }
    let got: Vec<f32> = best.into_iter().filter(|c| c.is_finite()).collect();
    if got.is_empty() {
        0.0
    } else {
        got.iter().sum::<f32>() / got.len() as f32
    }
}

/// Relevance (0–1) of a logit.
pub fn probability(logit: f32) -> f32 {
    1.0 / (1.0 + (-logit).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_is_one_half_and_the_ranking_follows_the_cosine() {
        let p = PairCalibration {
            cut: 0.6,
            scale: 0.1,
        };
        assert!((probability(p.logit(0.6)) - 0.5).abs() < 1e-6);
        assert!(probability(p.logit(0.7)) > probability(p.logit(0.65)));
        assert!(probability(p.logit(0.3)) < 0.05);
        assert_eq!(Relevance::for_model("no such model"), Relevance::Relative);
        let r = Relevance::Relative;
        assert_eq!(
            r.logit(Modality::Text, Modality::Image, 0.9, || None, || 3.0),
            0.0
        );
        // Hubness: the mean of the nearest background queries.
        let bg = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        assert!((hubness(&[1.0, 0.0], &bg) - (1.6 / 3.0)).abs() < 1e-6);
        assert!(background_queries().len() >= 50);
    }
}
