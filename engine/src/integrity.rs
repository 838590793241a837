//! `check` and `repair` at the engine's level: the store's own check (every row's seal, the graph,
//! items against vectors, counts) plus the engine's records: every vector a file owns is in the
//! store, and every vector in the store is owned by a file.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::idx::{Batch, Store};
use crate::ingest::delete_owned;
use crate::item::{self, ItemMeta};
use crate::keys::{self, NS_FILES, NS_HASH, NS_MOD, NS_OWN};

/// What [`crate::Engine::check`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckSummary {
    /// The store file.
    pub store: PathBuf,
    /// Rows read.
    pub rows: usize,
    /// Live vectors.
    pub vectors: usize,
    /// One line per damaged row or broken invariant; empty for a healthy store.
    pub damage: Vec<String>,
}

/// What [`crate::Engine::repair`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairSummary {
    /// Vectors kept.
    pub kept_vectors: usize,
    /// Vectors lost (their ids).
    pub lost_vectors: Vec<u64>,
    /// Files whose items were damaged: their records were dropped, so the next `index` of them
    /// encodes them again.
    pub reindex: Vec<PathBuf>,
    /// Engine records (`namespace: key`) that were damaged and dropped.
    pub lost_records: Vec<String>,
    /// Where the damaged file was kept.
    pub backup: PathBuf,
}

/// The live vectors, the vectors each file owns (`own` rows), and the live ones no file owns.
struct Ownership {
    live: HashSet<u64>,
    /// (path, id)
    owned: Vec<(PathBuf, u64)>,
    unowned: Vec<u64>,
}

fn ownership(store: &Store) -> Result<Ownership> {
    let mut owned = Vec::new();
    let mut ids_owned = HashSet::new();
    for (k, _) in store.kv_scan_prefix(NS_OWN, b"")? {
        if let Some((p, id)) = keys::split_own_key(&k) {
            owned.push((keys::path_from_bytes(p), id));
            ids_owned.insert(id);
        }
    }
    let live: HashSet<u64> = store.ids()?.into_iter().collect();
    let unowned = live
        .iter()
        .copied()
        .filter(|id| !ids_owned.contains(id))
        .collect();
    Ok(Ownership {
        live,
        owned,
        unowned,
    })
}

/// Checks the store at `db` (see the module docs).
pub(crate) fn check(db: &Path) -> Result<CheckSummary> {
    let report = Store::check(db)?;
    let mut out = CheckSummary {
        store: db.to_path_buf(),
        rows: report.rows,
        vectors: report.items,
        damage: report.damage,
    };
    if !out.damage.is_empty() {
        // The store's own damage comes first; its reads below would stop at it.
        return Ok(out);
    }
    let store = Store::open_read_only(db)?;
    let own = ownership(&store)?;
    for (path, id) in &own.owned {
        if !own.live.contains(id) {
            out.damage.push(format!(
                "{} owns vector {id}, which is not in the store",
                path.display()
            ));
        }
    }
    for id in &own.unowned {
        out.damage
            .push(format!("vector {id} is in the store but no file owns it"));
    }
    let items: HashSet<u64> = own.live.iter().map(|&id| item::item_id(id)).collect();
    out.damage
        .extend(crate::keyword::scan(&store, &items)?.problems);
    Ok(out)
}

/// Repairs the store at `db`: the store rebuilds itself from its intact rows, then every file
/// that lost a vector (or whose vector lost its owner record) is forgotten, so the next index
/// run encodes it again.
pub(crate) fn repair(db: &Path) -> Result<RepairSummary> {
    let report = Store::repair(db)?;
    let mut store = Store::open(db, Store::read_settings(db)?)?;
    let own = ownership(&store)?;
    let mut reindex: BTreeSet<PathBuf> = own
        .owned
        .iter()
        .filter(|(_, id)| !own.live.contains(id))
        .map(|(p, _)| p.clone())
        .collect();
    // Vectors without an owner: forget the file their metadata names.
    for &id in &own.unowned {
        if let Some(bytes) = store.get_meta(id)? {
            if let Ok(meta) = ItemMeta::from_bytes(id, &bytes) {
                reindex.insert(PathBuf::from(meta.path));
            }
        }
    }
    // Items whose keyword document and postings disagree (a damaged block or document was
    // dropped): their files are re-indexed too.
    let items: HashSet<u64> = own.live.iter().map(|&id| item::item_id(id)).collect();
    let damage = crate::keyword::scan(&store, &items)?;
    for &id in &damage.items {
        for v in [id, item::sibling(id)] {
            if let Some(bytes) = store.get_meta(v)? {
                if let Ok(meta) = ItemMeta::from_bytes(v, &bytes) {
                    reindex.insert(PathBuf::from(meta.path));
                    break;
                }
            }
        }
    }
    // As `rm` forgets a file: its vectors and records go, then the next index encodes it.
    let mut batch = Batch::new();
    let mut kw = crate::keyword::KeywordWrites::default();
    for p in &reindex {
        delete_owned(&store, &mut batch, &mut kw, p, None)?;
        batch.kv_delete(NS_FILES, keys::path_bytes(p));
    }
    // Keyword documents of items that are gone; postings no document lists.
    for (term, id) in damage.stray {
        kw.drop_posting(term, id);
    }
    for (k, _) in store.kv_scan_prefix(crate::keyword::NS_KWDOC, b"")? {
        if let Some(id) = k.as_slice().try_into().ok().map(u64::from_be_bytes) {
            if !items.contains(&id) {
                kw.remove(id);
            }
        }
    }
    for &id in &own.unowned {
        kw.remove(item::item_id(id));
        batch.delete(id);
        batch.kv_delete(NS_MOD, keys::mod_key(item::modality_of(id), id));
    }
    // Content-hash and modality rows of vectors that are gone.
    for (k, _) in store.kv_scan_prefix(NS_HASH, b"")? {
        if keys::id_suffix(&k).is_some_and(|id| !own.live.contains(&id)) {
            batch.kv_delete(NS_HASH, k);
        }
    }
    for (k, _) in store.kv_scan_prefix(NS_MOD, b"")? {
        if keys::id_suffix(&k).is_some_and(|id| !own.live.contains(&id)) {
            batch.kv_delete(NS_MOD, k);
        }
    }
    kw.finish(&store, &mut batch)?;
    if !batch.is_empty() {
        store.commit(batch)?;
    }
    let mut lost_vectors = report.lost_items.clone();
    lost_vectors.extend(&own.unowned);
    lost_vectors.sort_unstable();
    lost_vectors.dedup();
    Ok(RepairSummary {
        kept_vectors: store.len(),
        lost_vectors,
        reindex: reindex.into_iter().collect(),
        lost_records: report.lost_kv,
        backup: report.backup,
    })
}
