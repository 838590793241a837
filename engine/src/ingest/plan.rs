//! Stage 1 of a run: walk the roots, compare each file with its record in the store, expand
//! catalogs into records, and list the files under the roots that are gone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{FileJob, IndexEvent, IndexOptions, Unit, Work, TEXT_PART_BYTES};
use crate::catalog::{read_catalog, CatalogLimits, Record};
use crate::error::{Error, Result};
use crate::fsread::{open_regular, Limit, ReadError};
use crate::idx::Store;
use crate::keys::{self, FileRecord, NS_FILES};
use crate::walk::{self, FileKind, Found};

/// What a run will do: the files to (re-)index with their units of work, and the files to remove.
pub(crate) struct Plan {
    pub(super) files: Vec<FileJob>,
    pub(super) units: Vec<Unit>,
    pub(super) remove: Vec<PathBuf>,
    pub(super) skipped: usize,
    pub(super) failed: usize,
    pub(super) problems: usize,
}

impl Plan {
    /// Reports a problem with `path` (the file is still indexed as far as it can be).
    fn problem(&mut self, on_event: &mut dyn FnMut(IndexEvent), path: &Path, message: String) {
        on_event(IndexEvent::Problem {
            path: path.to_path_buf(),
            message,
        });
        self.problems += 1;
    }

    /// Reports a problem that keeps `path` out of this run.
    fn fail(&mut self, on_event: &mut dyn FnMut(IndexEvent), path: &Path, message: String) {
        self.problem(on_event, path, message);
        self.failed += 1;
    }
}

fn deps_unchanged(deps: &[(String, u64, i128)]) -> bool {
    deps.iter().all(|(p, size, mtime)| {
        let now = walk::stat(Path::new(p)).unwrap_or((0, 0));
        now == (*size, *mtime)
    })
}

fn catalog_deps(records: &[Record]) -> Vec<(String, u64, i128)> {
    let mut deps: Vec<(String, u64, i128)> = records
        .iter()
        .filter_map(|r| r.image.as_ref())
        .map(|img| {
            let abs = walk::absolute_lenient(img);
            let (size, mtime) = walk::stat(&abs).unwrap_or((0, 0));
            (abs.to_string_lossy().into_owned(), size, mtime)
        })
        .collect();
    deps.sort();
    deps.dedup();
    deps
}

/// Byte ranges of about `target` bytes covering the file, each ending after the first line
/// break past `target` (or at the end of the file; a part with no line break in twice the
/// target ends before the next UTF-8 character start). Reads the file once, a buffer at a time.
fn text_parts(path: &Path, limit: Limit, target: u64) -> Result<Vec<(u64, u64)>, ReadError> {
    use std::io::Read;
    let (mut f, _) = open_regular(path, limit)?;
    let mut parts = Vec::new();
    let mut start = 0u64;
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            let at = pos + i as u64;
            let end = if at < start + target {
                None
            } else if b == b'\n' {
                Some(at + 1)
            } else if at >= start + 2 * target && b & 0xC0 != 0x80 {
                Some(at)
            } else {
                None
            };
            if let Some(end) = end {
                parts.push((start, end));
                start = end;
            }
        }
        pos += n as u64;
    }
    if pos > start || parts.is_empty() {
        parts.push((start, pos));
    }
    Ok(parts)
}

/// A run that would remove at least this many files of a root...
pub(crate) const MASS_REMOVAL_MIN_FILES: usize = 100;

/// ...and more than half of the files indexed under it stops and asks for
/// [`IndexOptions::prune`]: an unmounted disk, a renamed parent folder or a pattern that matched
/// more than was meant looks exactly like a mass deletion.
fn is_mass_removal(gone: usize, indexed: usize) -> bool {
    gone >= MASS_REMOVAL_MIN_FILES && gone * 2 > indexed
}

/// Walks the roots and decides, per file, whether it is unchanged, new, changed or gone.
pub(super) fn plan(
    store: &Store,
    roots: &[PathBuf],
    opts: &IndexOptions,
    on_event: &mut dyn FnMut(IndexEvent),
) -> Result<Plan> {
    let mut found: Vec<Found> = Vec::new();
    let mut problems: Vec<(PathBuf, String)> = Vec::new();
    let mut abs_roots = Vec::new();
    for r in roots {
        let abs = walk::absolute(r)?;
        walk::walk(&abs, &opts.excludes, &mut found, &mut problems)?;
        abs_roots.push(abs);
    }
    let limits = CatalogLimits {
        max_record_bytes: opts.max_record_bytes,
        root: opts.catalog_root.clone(),
        csv_types: opts.csv_types.clone(),
    };
    let mut seen: HashSet<PathBuf> = HashSet::new();
    found.retain(|f| seen.insert(f.path.clone()));
    if !opts.raw_siblings {
        walk::drop_raw_with_siblings(&mut found);
    }
    let mut plan = Plan {
        files: Vec::new(),
        units: Vec::new(),
        remove: Vec::new(),
        skipped: 0,
        failed: 0,
        problems: 0,
    };
    for (path, msg) in problems {
        plan.fail(on_event, &path, msg);
        seen.insert(path);
    }
    for f in found {
        let old: Option<FileRecord> = store
            .kv_get(NS_FILES, &keys::path_bytes(&f.path))?
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(old) = &old {
            if old.size == f.size
                && old.mtime_ns == f.mtime_ns
                && old.kind == f.kind.as_str()
                && deps_unchanged(&old.deps)
            {
                plan.skipped += 1;
                continue;
            }
        }
        let file = plan.files.len();
        let mut job = FileJob {
            path: f.path.clone(),
            size: f.size,
            mtime_ns: f.mtime_ns,
            kind: f.kind,
            update: old.is_some(),
            deps: Vec::new(),
        };
        match f.kind {
            FileKind::Image => plan.units.push(Unit {
                file,
                work: Work::Image,
            }),
            FileKind::Text if f.size > TEXT_PART_BYTES && f.size <= opts.max_text_bytes => {
                match text_parts(&f.path, opts.text_limit(), TEXT_PART_BYTES) {
                    Ok(parts) => {
                        for (part, (start, end)) in parts.into_iter().enumerate() {
                            plan.units.push(Unit {
                                file,
                                work: Work::TextPart {
                                    start,
                                    end,
                                    part: part as u32,
                                },
                            });
                        }
                    }
                    Err(e) => {
                        plan.fail(on_event, &f.path, e.to_string());
                        continue;
                    }
                }
            }
            FileKind::Text => plan.units.push(Unit {
                file,
                work: Work::Text,
            }),
            FileKind::Catalog => match read_catalog(&f.path, &limits) {
                Ok((records, probs)) => {
                    for msg in probs {
                        plan.problem(on_event, &f.path, msg);
                    }
                    job.deps = catalog_deps(&records);
                    for rec in records {
                        plan.units.push(Unit {
                            file,
                            work: Work::Record(Box::new(rec)),
                        });
                    }
                }
                Err(e) => {
                    plan.fail(on_event, &f.path, e.to_string());
                    continue;
                }
            },
        }
        plan.files.push(job);
    }
    // Files recorded under the roots that are no longer there.
    for root in &abs_roots {
        let mut candidates = Vec::new();
        if store.kv_get(NS_FILES, &keys::path_bytes(root))?.is_some() {
            candidates.push(keys::path_bytes(root));
        }
        let mut prefix = keys::path_bytes(root);
        prefix.push(std::path::MAIN_SEPARATOR as u8);
        for (k, _) in store.kv_scan_prefix(NS_FILES, &prefix)? {
            candidates.push(k);
        }
        let indexed = candidates.len();
        let mut gone = Vec::new();
        for k in candidates {
            let p = keys::path_from_bytes(&k);
            if !seen.contains(&p) && !plan.remove.contains(&p) {
                gone.push(p);
            }
        }
        if !opts.prune && is_mass_removal(gone.len(), indexed) {
            return Err(Error::MassRemoval {
                root: root.clone(),
                gone: gone.len(),
                indexed,
                examples: gone.iter().take(5).cloned().collect(),
            });
        }
        plan.remove.extend(gone);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_parts_cover_the_file_and_end_after_line_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        let text = "line of words\n".repeat(1000) + "no break at the end";
        std::fs::write(&p, &text).unwrap();
        let limit = Limit {
            bytes: 1 << 20,
            what: "text files",
            flag: None,
        };
        let parts = text_parts(&p, limit, 1000).unwrap();
        assert!(parts.len() > 5);
        assert_eq!(parts[0].0, 0);
        assert_eq!(parts.last().unwrap().1, text.len() as u64);
        for w in parts.windows(2) {
            assert_eq!(w[0].1, w[1].0, "contiguous");
            assert_eq!(text.as_bytes()[w[0].1 as usize - 1], b'\n');
        }
        // No line break at all: cut at twice the target, on a character boundary.
        let p = dir.path().join("u.txt");
        let text = "é".repeat(5000);
        std::fs::write(&p, &text).unwrap();
        for (a, b) in text_parts(&p, limit, 1000).unwrap() {
            assert!(text.is_char_boundary(a as usize) && text.is_char_boundary(b as usize));
        }
    }

    #[test]
    fn mass_removal_needs_both_many_files_and_most_of_the_root() {
        assert!(!is_mass_removal(99, 99), "fewer than 100 files");
        assert!(!is_mass_removal(100, 200), "exactly half");
        assert!(is_mass_removal(100, 199));
        assert!(is_mass_removal(1000, 1000));
        assert!(!is_mass_removal(0, 0));
    }
}
