//! Duplicate photos: exact copies (the same bytes) and near-duplicates (the same picture
//! re-encoded, resized, cropped a little, or a burst shot: image vectors above a cosine
//! threshold), found with the store's ANN graph (each image's nearest neighbours), not by
//! comparing every pair.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Serialize;

use crate::error::Result;
use crate::idx::{SearchParams, Store};
use crate::item::{self, ItemMeta, Kind, Modality};
use crate::keys;

/// Default cosine above which two images are near-duplicates. Measured on the toy model: a
/// re-encoded JPEG 0.99998, a half-size copy 0.9999998, a 5 % crop 0.995, while two different
/// pictures of the same kind (two red circles) reach 0.963.
pub const DEFAULT_NEAR_THRESHOLD: f32 = 0.97;

/// Neighbours asked of the graph per image.
const NEIGHBOURS: usize = 16;
/// How far below the threshold a search score may lie and still be checked on the full
/// vectors.
const PRESELECT_SLACK: f32 = 0.01;
/// Float rounding allowed below the threshold (identical vectors give a cosine within 1e-7 of
/// 1).
const ROUNDING: f32 = 1e-6;

/// What [`crate::Engine::duplicates`] looks for.
#[derive(Debug, Clone)]
pub struct DupesOptions {
    /// Cosine at or above which two images are near-duplicates.
    pub threshold: f32,
    /// Only images under these paths (files or folders, made absolute); empty: every image.
    pub paths: Vec<PathBuf>,
}

impl Default for DupesOptions {
    fn default() -> Self {
        DupesOptions {
            threshold: DEFAULT_NEAR_THRESHOLD,
            paths: Vec::new(),
        }
    }
}

/// One image of a group.
#[derive(Debug, Clone, Serialize)]
pub struct DupeItem {
    /// The file.
    pub path: String,
    /// Its item key ([`crate::SearchHit::key`]); not serialised.
    #[serde(skip)]
    pub key: u64,
    /// Cosine to the group's first image (1 for the first, and for exact copies).
    pub cosine: f32,
    /// The image's attributes (size, date taken, camera...).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Groups of duplicates; each group's images sorted by path, groups by their first path.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Duplicates {
    /// Images with the same content (byte-identical files).
    pub exact: Vec<Vec<DupeItem>>,
    /// Images whose vectors are at least the threshold apart, linked transitively (a chain of
    /// burst shots is one group); groups made only of byte-identical copies are in `exact` only.
    pub near: Vec<Vec<DupeItem>>,
    /// The threshold used.
    pub threshold: f32,
}

/// Union-find over indices.
struct Sets(Vec<usize>);

impl Sets {
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

pub(crate) fn find(store: &Store, opts: &DupesOptions) -> Result<Duplicates> {
    let prefixes: Vec<PathBuf> = opts
        .paths
        .iter()
        .map(|p| crate::walk::absolute_lenient(p))
        .collect();
    // The images in scope, with their records.
    let mut ids = Vec::new();
    let mut metas = Vec::new();
    for (k, _) in store.kv_scan_prefix(keys::NS_MOD, &[Modality::Image.byte()])? {
        let Some(id) = keys::id_suffix(&k) else {
            continue;
        };
        if item::kind_of(id) != Some(Kind::Image) {
            continue;
        }
        let Some(bytes) = store.get_meta(id)? else {
            continue;
        };
        let meta = ItemMeta::from_bytes(id, &bytes)?;
        let file = meta.file();
        if !prefixes.is_empty() && !prefixes.iter().any(|p| file.starts_with(p)) {
            continue;
        }
        ids.push(id);
        metas.push(meta);
    }
    let index: HashMap<u64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    // Exact: the content-hash records.
    let mut by_hash: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
    let mut hash_of = vec![None; ids.len()];
    for (k, _) in store.kv_scan_prefix(keys::NS_HASH, b"")? {
        let Some(id) = keys::id_suffix(&k) else {
            continue;
        };
        if let Some(&i) = index.get(&id) {
            let h = k[..k.len().saturating_sub(8)].to_vec();
            hash_of[i] = Some(h.clone());
            by_hash.entry(h).or_default().push(i);
        }
    }
    let item_of = |i: usize, cosine: f32| DupeItem {
        path: metas[i].path.clone(),
        key: ids[i],
        cosine,
        metadata: metas[i].metadata.clone(),
    };
    let sorted = |mut g: Vec<DupeItem>| {
        g.sort_by(|a, b| a.path.cmp(&b.path));
        g
    };
    let mut exact: Vec<Vec<DupeItem>> = by_hash
        .values()
        .filter(|g| g.len() > 1)
        .map(|g| sorted(g.iter().map(|&i| item_of(i, 1.0)).collect()))
        .collect();
    // Near: each image's nearest neighbours among the images in scope.
    let mut sets = Sets((0..ids.len()).collect());
    let in_scope = |id: u64| index.contains_key(&id);
    let params = SearchParams {
        filter: Some(&in_scope),
        ..Default::default()
    };
    let cos = |a: &[f32], b: &[f32]| {
        let norms = jsearch_base::norm(a) * jsearch_base::norm(b);
        crate::search::dot(a, b) / norms.max(1e-12)
    };
    let mut vectors: Vec<Option<Vec<f32>>> = Vec::with_capacity(ids.len());
    for &id in &ids {
        vectors.push(store.get_vector(id)?);
    }
    for (i, v) in vectors.iter().enumerate() {
        let Some(v) = v else {
            continue;
        };
        for hit in store.search(v, NEIGHBOURS, &params)? {
            // The search's score is close to the cosine but not exact (stored precision): it
            // only preselects; the threshold holds on the full vectors, less float rounding
            // (so that `--threshold 1` means identical vectors).
            if hit.id == ids[i] || hit.score < opts.threshold - PRESELECT_SLACK {
                continue;
            }
            if let Some(&j) = index.get(&hit.id) {
                if vectors[j]
                    .as_deref()
                    .is_some_and(|w| cos(v, w) >= opts.threshold - ROUNDING)
                {
                    sets.union(i, j);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..ids.len() {
        let r = sets.find(i);
        groups.entry(r).or_default().push(i);
    }
    let mut near: Vec<Vec<DupeItem>> = groups
        .into_values()
        .filter(|g| g.len() > 1)
        // Byte-identical copies only: already an exact group.
        .filter(|g| {
            !g.iter()
                .all(|&i| hash_of[i].is_some() && hash_of[i] == hash_of[g[0]])
        })
        .map(|mut g| {
            g.sort_by(|&a, &b| metas[a].path.cmp(&metas[b].path));
            let first = vectors[g[0]].clone().unwrap_or_default();
            g.iter()
                .map(|&i| item_of(i, vectors[i].as_deref().map_or(0.0, |v| cos(&first, v))))
                .collect()
        })
        .collect();
    exact.sort_by(|a, b| a[0].path.cmp(&b[0].path));
    near.sort_by(|a, b| a[0].path.cmp(&b[0].path));
    Ok(Duplicates {
        exact,
        near,
        threshold: opts.threshold,
    })
}
