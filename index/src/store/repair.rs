//! Checking a whole store ([`Store::check`]) and rebuilding one from its intact rows
//! ([`Store::repair`]). Both read the file row by row through the seals, so they see every
//! damaged row, not only the first one a search happens to touch.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableHandle};

use super::schema::{
    self, meta, unseal, Meta, NodeRecord, HEADS, HEADS_NAME, ITEMS, META, NODES, TAILS, TAILS_NAME,
};
use super::{Batch, Store};
use crate::error::{IndexError, Result};
use crate::settings::{Layout, StoreSettings};
use crate::vecmath;

/// What [`Store::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Rows read (every table).
    pub rows: usize,
    /// Live items.
    pub items: usize,
    /// Key-value rows.
    pub kv_rows: usize,
    /// One line per damaged row or broken invariant; empty for a healthy store.
    pub damage: Vec<String>,
}

impl CheckReport {
    /// True when nothing is damaged.
    pub fn is_healthy(&self) -> bool {
        self.damage.is_empty()
    }
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Items carried into the rebuilt store.
    pub kept_items: usize,
    /// Ids of items whose vector or metadata was damaged (they are not in the rebuilt store);
    /// ids known only from a damaged row are not listed.
    pub lost_items: Vec<u64>,
    /// Key-value rows carried over.
    pub kept_kv: usize,
    /// `namespace: key` of key-value rows that were damaged (not carried over).
    pub lost_kv: Vec<String>,
    /// Where the damaged file was moved.
    pub backup: PathBuf,
}

/// A key-value row: key, value.
type KvRow = (Vec<u8>, Vec<u8>);

/// One node as far as its rows are intact.
struct NodeInfo {
    id: u64,
    deleted: bool,
}

/// The intact rows of a store, read through the seals.
struct Scan {
    settings: StoreSettings,
    meta: Meta,
    nodes: BTreeMap<u32, NodeInfo>,
    /// Node rows that failed their seal.
    bad_nodes: std::collections::HashSet<u32>,
    /// id -> (node, metadata blob) of intact item rows.
    items: HashMap<u64, (u32, Vec<u8>)>,
    /// Intact head and tail chunks.
    heads: HashMap<u32, Vec<u8>>,
    tails: HashMap<u32, Vec<u8>>,
    /// kv namespace -> intact rows.
    kv: BTreeMap<String, Vec<KvRow>>,
    rows: usize,
    damage: Vec<String>,
    lost_kv: Vec<String>,
}

fn is_damage(e: &IndexError) -> bool {
    matches!(e, IndexError::Corrupt { .. })
}

impl Scan {
    fn read(path: &Path, txn: &ReadTransaction) -> Result<Scan> {
        let meta = Meta::read(&txn.open_table(META)?, path)?;
        let settings = Store::settings_from_meta(path, &meta)?;
        let mut scan = Scan {
            settings,
            meta,
            nodes: BTreeMap::new(),
            bad_nodes: Default::default(),
            items: HashMap::new(),
            heads: HashMap::new(),
            tails: HashMap::new(),
            kv: BTreeMap::new(),
            rows: 0,
            damage: Vec::new(),
            lost_kv: Vec::new(),
        };
        let note = |scan: &mut Scan, r: Result<()>| -> Result<()> {
            match r {
                Ok(()) => Ok(()),
                Err(e) if is_damage(&e) => {
                    scan.damage.push(damage_line(&e));
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        for r in txn.open_table(NODES)?.iter()? {
            let (k, v) = r?;
            scan.rows += 1;
            let n = k.value();
            let res = NodeRecord::open(path, n, v.value()).map(|rec| {
                scan.nodes.insert(
                    n,
                    NodeInfo {
                        id: rec.id,
                        deleted: rec.deleted,
                    },
                );
            });
            if res.is_err() {
                scan.bad_nodes.insert(n);
            }
            note(&mut scan, res)?;
        }
        for r in txn.open_table(ITEMS)?.iter()? {
            let (k, v) = r?;
            scan.rows += 1;
            let id = k.value();
            let res = schema::item_parts(path, id, v.value()).map(|(node, blob)| {
                scan.items.insert(id, (node, blob.to_vec()));
            });
            note(&mut scan, res)?;
        }
        for (def, name, into_heads) in [(HEADS, HEADS_NAME, true), (TAILS, TAILS_NAME, false)] {
            for r in txn.open_table(def)?.iter()? {
                let (k, v) = r?;
                scan.rows += 1;
                let c = k.value();
                let res = unseal(path, name, &c.to_le_bytes(), v.value()).map(|b| {
                    let map = if into_heads {
                        &mut scan.heads
                    } else {
                        &mut scan.tails
                    };
                    map.insert(c, b.to_vec());
                });
                note(&mut scan, res)?;
            }
        }
        let kv_tables: Vec<String> = txn
            .list_tables()?
            .map(|h| h.name().to_string())
            .filter(|n| n.starts_with("kv:"))
            .collect();
        for name in kv_tables {
            let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(&name);
            let ns = name.trim_start_matches("kv:").to_string();
            let mut rows = Vec::new();
            for r in txn.open_table(def)?.iter()? {
                let (k, v) = r?;
                scan.rows += 1;
                match unseal(path, &name, k.value(), v.value()) {
                    Ok(b) => rows.push((k.value().to_vec(), b.to_vec())),
                    Err(e) if is_damage(&e) => {
                        scan.damage.push(damage_line(&e));
                        scan.lost_kv
                            .push(format!("{ns}: {}", String::from_utf8_lossy(k.value())));
                    }
                    Err(e) => return Err(e),
                }
            }
            scan.kv.insert(ns, rows);
        }
        Ok(scan)
    }

    /// The stored (normalised) vector of node `n`, when its head and tail rows are intact.
    fn vector(&self, n: u32) -> Option<Vec<f32>> {
        let l = Layout::new(self.settings.dim, self.settings.ann_dim);
        let row = |map: &HashMap<u32, Vec<u8>>, per: u32, bytes: usize| -> Option<Vec<u8>> {
            if bytes == 0 {
                return Some(Vec::new());
            }
            let i = (n % per) as usize;
            map.get(&(n / per))?
                .get(i * bytes..(i + 1) * bytes)
                .map(<[u8]>::to_vec)
        };
        let head = row(&self.heads, l.heads_per_chunk, l.head_bytes)?;
        let tail = row(&self.tails, l.tails_per_chunk, l.tail_bytes)?;
        let (norm, ann) = schema::head_parts(&head);
        let mut t = Vec::new();
        vecmath::f16_from_bytes(&tail, &mut t);
        let mut v: Vec<f32> = ann.iter().map(|x| x.to_f32() * norm).collect();
        v.extend(vecmath::from_f16(&t));
        Some(v)
    }

    /// The invariants between the tables: every live item has its node, vector and row, and the
    /// counts agree with the meta table.
    fn cross_check(&mut self) {
        let next = self.meta.next_node();
        for n in 0..next {
            if !self.nodes.contains_key(&n) && !self.bad_nodes.contains(&n) {
                self.damage.push(format!("nodes row {n} missing"));
            }
        }
        let mut live = 0usize;
        let mut tombstones = 0usize;
        let mut found = Vec::new();
        for (&n, info) in &self.nodes {
            let id = info.id;
            if n >= next {
                found.push(format!("nodes row {n} lies beyond the last node {next}"));
                continue;
            }
            if info.deleted {
                tombstones += 1;
                continue;
            }
            live += 1;
            match self.items.get(&id) {
                Some((node, _)) if *node == n => {}
                Some((node, _)) => {
                    found.push(format!("item {id} points at node {node}, its node is {n}"))
                }
                None => found.push(format!("items row {id} (node {n}) missing or damaged")),
            }
            if self.vector(n).is_none() {
                found.push(format!("vector of item {id} (node {n}) missing or damaged"));
            }
        }
        self.damage.extend(found);
        for (&id, &(n, _)) in &self.items {
            let ok = self.nodes.get(&n).is_some_and(|i| i.id == id && !i.deleted);
            if !ok && self.nodes.contains_key(&n) {
                self.damage.push(format!(
                    "items row {id} names node {n}, which is not its node"
                ));
            }
        }
        let counted = |k: &str| self.meta.u64(k).unwrap_or(0) as usize;
        if live != counted(meta::LIVE) {
            self.damage.push(format!(
                "the store counts {} live items, its nodes hold {live}",
                counted(meta::LIVE)
            ));
        }
        if tombstones != counted(meta::TOMBSTONES) {
            self.damage.push(format!(
                "the store counts {} removed items, its nodes hold {tombstones}",
                counted(meta::TOMBSTONES)
            ));
        }
    }
}

/// The `what` of a damage error, without the store path and advice around it.
fn damage_line(e: &IndexError) -> String {
    match e {
        IndexError::Corrupt { what, .. } => what.clone(),
        other => other.to_string(),
    }
}

/// Opens the file as a writer (redb recovers a file a killed writer left) and runs redb's own
/// page-checksum check; returns the database and whether redb found it intact.
fn open_checked(path: &Path) -> Result<(Database, bool)> {
    let mut db = super::open::open_existing(path)?;
    let intact = db
        .check_integrity()
        .map_err(|e| super::open::open_error(path, e))?;
    Ok((db, intact))
}

impl Store {
    /// Verifies the whole store: redb's page checksums, every row's seal, the graph's nodes,
    /// every item against its node and vector, and the counts. Takes the writer lock (it waits
    /// for no one: [`IndexError::Busy`] while another process writes).
    pub fn check(path: &Path) -> Result<CheckReport> {
        crate::seal::guard(path, || {
            let (db, intact) = open_checked(path)?;
            let txn = db.begin_read()?;
            let mut scan = Scan::read(path, &txn)?;
            if !intact {
                scan.damage.insert(
                    0,
                    "redb's page checksums failed (it repaired what it could)".into(),
                );
            }
            scan.cross_check();
            Ok(CheckReport {
                rows: scan.rows,
                items: scan.nodes.values().filter(|n| !n.deleted).count(),
                kv_rows: scan.kv.values().map(Vec::len).sum(),
                damage: scan.damage,
            })
        })
    }

    /// Rebuilds a damaged store from its intact rows: every item whose metadata and vector are
    /// intact, every intact key-value row, and a new graph over them, written to a new file that
    /// replaces the old one (kept as `FILE.damaged`). What could not be carried over is listed.
    pub fn repair(path: &Path) -> Result<RepairReport> {
        crate::seal::guard(path, || {
            let (db, _) = open_checked(path)?;
            let txn = db.begin_read()?;
            let scan = Scan::read(path, &txn)?;
            drop(txn);
            drop(db);
            let tmp = sibling(path, "repairing");
            let backup = sibling(path, "damaged");
            let _ = std::fs::remove_file(&tmp);
            let mut report = RepairReport {
                backup: backup.clone(),
                lost_kv: scan.lost_kv.clone(),
                ..Default::default()
            };
            {
                let mut out = Store::open(&tmp, scan.settings.clone())?;
                let mut batch = Batch::new();
                let mut live: Vec<(u32, u64)> = scan
                    .nodes
                    .iter()
                    .filter(|(_, i)| !i.deleted)
                    .map(|(&n, i)| (n, i.id))
                    .collect();
                live.sort_unstable();
                for (n, id) in live {
                    let item = scan.items.get(&id).filter(|(node, _)| *node == n);
                    match (item, scan.vector(n)) {
                        (Some((_, blob)), Some(v))
                            if vecmath::validate(&v, v.len(), None).is_ok() =>
                        {
                            batch.upsert(id, v, blob.clone());
                            report.kept_items += 1;
                        }
                        _ => report.lost_items.push(id),
                    }
                    if batch.len() >= 4096 {
                        out.commit(std::mem::take(&mut batch))?;
                    }
                }
                for (ns, rows) in &scan.kv {
                    for (k, v) in rows {
                        batch.kv_put(ns, k.clone(), v.clone());
                        report.kept_kv += 1;
                        if batch.len() >= 4096 {
                            out.commit(std::mem::take(&mut batch))?;
                        }
                    }
                }
                if !batch.is_empty() {
                    out.commit(batch)?;
                }
            }
            let io = |p: &Path, source| IndexError::Io {
                path: p.to_path_buf(),
                source,
            };
            // The damaged file stays where it is until the rebuilt one replaces it in one
            // rename: a kill at any moment leaves a store at `path`, old or new.
            let _ = std::fs::remove_file(&backup);
            if std::fs::hard_link(path, &backup).is_err() {
                std::fs::copy(path, &backup).map_err(|e| io(&backup, e))?;
            }
            std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
            Ok(report)
        })
    }
}

/// `FILE.<suffix>` beside `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}
