//! Finding the files to index: recursive walk, hidden files skipped, `.gitignore`-style ignore files
//! (`.gitignore`, `.ignore`, `.jsearchignore`) and `--exclude` globs honoured.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::WalkBuilder;

use crate::error::{Error, Result};

/// Image file extensions the encoders decode.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif", "hif", "avif",
];
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

/// Classifies a path by its extension (case-insensitive). Camera RAW files
/// ([`crate::enc::preprocess::raw::RAW_EXTENSIONS`]) are images.
pub(crate) fn classify(path: &Path) -> Option<FileKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    if IMAGE_EXTENSIONS.contains(&ext.as_str())
        || crate::enc::preprocess::raw::RAW_EXTENSIONS.contains(&ext.as_str())
    {
        Some(FileKind::Image)
    } else if TEXT_EXTENSIONS.contains(&ext.as_str()) {
        Some(FileKind::Text)
    } else if CATALOG_EXTENSIONS.contains(&ext.as_str()) {
        Some(FileKind::Catalog)
    } else {
        None
    }
}

/// Drops the camera RAW files that have a processed image of the same name (case aside) in the
/// same folder among `found` (`IMG_1.CR2` beside `IMG_1.JPG` or `IMG_1.HEIC`).
pub(crate) fn drop_raw_with_siblings(found: &mut Vec<Found>) {
    use crate::enc::preprocess::raw::is_raw_path;
    let key = |p: &Path| {
        (
            p.parent().map(Path::to_path_buf),
            p.file_stem().map(|s| s.to_string_lossy().to_lowercase()),
        )
    };
    let processed: std::collections::HashSet<_> = found
        .iter()
        .filter(|f| f.kind == FileKind::Image && !is_raw_path(&f.path))
        .map(|f| key(&f.path))
        .collect();
    found.retain(|f| !(is_raw_path(&f.path) && processed.contains(&key(&f.path))));
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

/// Why a path that is neither a regular file nor a folder is not read: a device, FIFO or socket
/// never ends (`/dev/zero`) or blocks until a writer comes (a FIFO).
pub(crate) fn not_regular(md: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = md.file_type();
        if t.is_fifo() {
            return "a FIFO (named pipe), not a regular file: skipped";
        }
        if t.is_socket() {
            return "a socket, not a regular file: skipped";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device, not a regular file: skipped";
        }
    }
    let _ = md;
    "not a regular file: skipped"
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

/// The `--exclude` patterns as one gitignore file rooted at `root`: a pattern excludes what it
/// matches, a later `!pattern` re-includes what an earlier one excluded. Patterns that cannot mean
/// what was typed are refused before anything is walked (a run removes the files it no longer
/// sees, so a pattern matching everything would empty the store): blank ones (an unset `$VAR`),
/// comments (`#...`, which gitignore ignores) and a negation with nothing before it to negate.
pub(crate) fn exclude_matcher(root: &Path, excludes: &[String]) -> Result<Gitignore> {
    let mut builder = GitignoreBuilder::new(root);
    let mut positives = 0usize;
    for pat in excludes {
        let bad = |why: &str| Error::InvalidArgument(format!("--exclude {pat:?}: {why}"));
        let trimmed = pat.trim();
        if trimmed.is_empty() || trimmed == "!" {
            return Err(bad(
                "empty pattern (an unset shell variable?); nothing was changed",
            ));
        }
        if trimmed.starts_with('#') {
            return Err(bad(
                "a gitignore comment, which matches nothing; write \\# for a name starting with #",
            ));
        }
        if let Some(rest) = trimmed.strip_prefix('!') {
            if positives == 0 {
                return Err(bad(&format!(
                    "a negation re-includes files an earlier --exclude excluded, and none comes \
                     before it; to index only {rest:?}, name those files, or exclude the rest"
                )));
            }
        } else {
            positives += 1;
        }
        builder
            .add_line(None, pat)
            .map_err(|e| bad(&format!("invalid pattern: {e}")))?;
    }
    builder
        .build()
        .map_err(|e| Error::InvalidArgument(format!("invalid --exclude patterns: {e}")))
}

/// Walks `root` (a folder or a file). Files that cannot be read are appended to `problems`.
pub(crate) fn walk(
    root: &Path,
    excludes: &[String],
    out: &mut Vec<Found>,
    problems: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    let excluded = exclude_matcher(root, excludes)?;
    let md = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !md.is_file() && !md.is_dir() {
        problems.push((root.to_path_buf(), not_regular(&md).to_string()));
        return Ok(());
    }
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
        .filter_entry(move |e| {
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            !excluded.matched(e.path(), is_dir).is_ignore()
        })
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
        let Some(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() || ft.is_symlink() {
            continue;
        }
        let path = entry.path();
        let Some(kind) = classify(path) else { continue };
        if !ft.is_file() {
            // A FIFO, device or socket named like a file we index: say why it is not read.
            if let Ok(md) = std::fs::metadata(path) {
                problems.push((path.to_path_buf(), not_regular(&md).to_string()));
            }
            continue;
        }
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

    #[test]
    fn exclude_patterns_that_cannot_be_meant_are_refused_and_negations_re_include() {
        let dir = tempfile::tempdir().unwrap();
        let root = absolute(dir.path()).unwrap();
        for p in ["a.png", "b.png", "keep.png", "c.md"] {
            std::fs::write(root.join(p), b"x").unwrap();
        }
        let names = |excludes: &[&str]| -> Result<Vec<String>> {
            let ex: Vec<String> = excludes.iter().map(|s| s.to_string()).collect();
            let (mut out, mut problems) = (Vec::new(), Vec::new());
            walk(&root, &ex, &mut out, &mut problems)?;
            let mut n: Vec<String> = out
                .iter()
                .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            n.sort();
            Ok(n)
        };
        for bad in ["", " ", "\t", "!", "# comment", "!*.png"] {
            let err = names(&[bad]).unwrap_err().to_string();
            assert!(err.contains("--exclude"), "{bad:?}: {err}");
        }
        assert!(names(&[""])
            .unwrap_err()
            .to_string()
            .contains("empty pattern"));
        assert!(names(&["!*.png"])
            .unwrap_err()
            .to_string()
            .contains("negation"));
        // gitignore semantics: exclude the PNGs, then re-include one.
        assert_eq!(
            names(&["*.png", "!keep.png"]).unwrap(),
            ["c.md", "keep.png"]
        );
        assert_eq!(names(&["*.md"]).unwrap(), ["a.png", "b.png", "keep.png"]);
    }
}
