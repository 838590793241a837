//! Finding the files to index: recursive walk, hidden files skipped, `.gitignore`-style ignore files
//! (`.gitignore`, `.ignore`, `.jsearchignore`) and `--exclude` globs honoured.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ignore::overrides::OverrideBuilder;
use ignore::WalkBuilder;

use crate::error::{Error, Result};

/// Image file extensions the encoders decode.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];
/// Text file extensions indexed as passages.
pub const TEXT_EXTENSIONS: &[&str] = &["txt", "md", "markdown"];
/// Catalog file extensions.
pub const CATALOG_EXTENSIONS: &[&str] = &["jsonl", "csv"];

/// How a file is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Image,
    Text,
    Catalog,
}

impl FileKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FileKind::Image => "image",
            FileKind::Text => "text",
            FileKind::Catalog => "catalog",
        }
    }
}

/// Classifies a path by its extension (case-insensitive).
pub(crate) fn classify(path: &Path) -> Option<FileKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        Some(FileKind::Image)
    } else if TEXT_EXTENSIONS.contains(&ext.as_str()) {
        Some(FileKind::Text)
    } else if CATALOG_EXTENSIONS.contains(&ext.as_str()) {
        Some(FileKind::Catalog)
    } else {
        None
    }
}

/// A file found by the walk.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
    pub kind: FileKind,
}

/// Size and modification time (ns since the epoch) of a file.
pub(crate) fn stat(path: &Path) -> std::io::Result<(u64, i128)> {
    let md = std::fs::metadata(path)?;
    let mtime = match md.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        },
        Err(_) => 0,
    };
    Ok((md.len(), mtime))
}

/// Makes a path absolute and canonical (symlinks resolved). Errors name the path.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| Error::io(path, e))
}

/// Absolute form of a path that may not exist (for `rm` of deleted files and `--path` prefixes).
pub(crate) fn absolute_lenient(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    // Canonicalise the longest existing ancestor, keep the rest as written.
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for part in rest.iter().rev() {
        out.push(part);
    }
    out
}

/// Walks `root` (a folder or a file). Files that cannot be read are appended to `problems`.
pub(crate) fn walk(
    root: &Path,
    excludes: &[String],
    out: &mut Vec<Found>,
    problems: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    let md = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if md.is_file() {
        // An explicitly named file is indexed even if hidden or ignored.
        match classify(root) {
            Some(kind) => match stat(root) {
                Ok((size, mtime_ns)) => out.push(Found {
                    path: root.to_path_buf(),
                    size,
                    mtime_ns,
                    kind,
                }),
                Err(e) => problems.push((root.to_path_buf(), e.to_string())),
            },
            None => problems.push((
                root.to_path_buf(),
                "unsupported file type (expected an image, .txt/.md, or a .jsonl/.csv catalog)"
                    .to_string(),
            )),
        }
        return Ok(());
    }
    let mut ob = OverrideBuilder::new(root);
    for pat in excludes {
        let glob = if let Some(p) = pat.strip_prefix('!') {
            p.to_string()
        } else {
            format!("!{pat}")
        };
        ob.add(&glob).map_err(|e| {
            Error::InvalidArgument(format!("invalid --exclude pattern {pat:?}: {e}"))
        })?;
    }
    let overrides = ob
        .build()
        .map_err(|e| Error::InvalidArgument(format!("invalid --exclude patterns: {e}")))?;
    let walker = WalkBuilder::new(root)
        .hidden(true)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .ignore(true)
        .parents(true)
        .require_git(false)
        .follow_links(false)
        .add_custom_ignore_filename(".jsearchignore")
        .overrides(overrides)
        .build();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = match &e {
                    ignore::Error::WithPath { path, .. } => path.clone(),
                    _ => root.to_path_buf(),
                };
                problems.push((path, e.to_string()));
                continue;
            }
        };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let Some(kind) = classify(path) else { continue };
        match stat(path) {
            Ok((size, mtime_ns)) => out.push(Found {
                path: path.to_path_buf(),
                size,
                mtime_ns,
                kind,
            }),
            Err(e) => problems.push((path.to_path_buf(), e.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_skips_hidden_ignored_and_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let root = absolute(dir.path()).unwrap();
        let touch = |p: &str| {
            let f = root.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b"x").unwrap();
        };
        touch("a.png");
        touch("notes/b.md");
        touch("notes/c.txt");
        touch(".hidden/d.png");
        touch(".e.png");
        touch("build/f.png");
        touch("drafts/g.md");
        touch("h.rs");
        touch("cat.jsonl");
        std::fs::write(root.join(".gitignore"), "build/\n").unwrap();
        let mut out = Vec::new();
        let mut problems = Vec::new();
        walk(&root, &["drafts/".to_string()], &mut out, &mut problems).unwrap();
        let mut names: Vec<String> = out
            .iter()
            .map(|f| {
                f.path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(names, ["a.png", "cat.jsonl", "notes/b.md", "notes/c.txt"]);
        assert!(problems.is_empty());
    }

    #[test]
    fn explicit_unsupported_file_is_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.rs");
        std::fs::write(&f, b"x").unwrap();
        let mut out = Vec::new();
        let mut problems = Vec::new();
        walk(&f, &[], &mut out, &mut problems).unwrap();
        assert!(out.is_empty());
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn lenient_absolute_keeps_missing_tail() {
        let dir = tempfile::tempdir().unwrap();
        let root = absolute(dir.path()).unwrap();
        let p = absolute_lenient(&root.join("gone/x.png"));
        assert_eq!(p, root.join("gone/x.png"));
    }
}
