//! Printing results: a table on a terminal, JSON lines, or paths.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use jsearch::{CheckSummary, RepairSummary, SearchHit, Stats};

/// `s` with control characters (escape sequences, carriage returns, ...) shown as `\u{1b}`-style
/// escapes, so that a file name or a catalog title cannot move the cursor, recolour or rewrite
/// the terminal. Line breaks and tabs are kept.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let escaped = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !s.chars().any(escaped) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if escaped(c) {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// Line breaks and tabs as spaces (one table row per hit).
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\n', '\t', '\r']) {
        std::borrow::Cow::Owned(s.replace(['\n', '\t', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let keep = max.saturating_sub(1);
        let skip = s.chars().count() - keep;
        // Keep the end of paths (the file name), the start of titles.
        format!("…{}", s.chars().skip(skip).collect::<String>())
    }
}

fn cut_start(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!(
            "{}…",
            s.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    }
}

/// A path as shown: relative to the current folder when inside it (and the current folder is
/// not the root), else absolute, so that the same file reads the same from anywhere.
pub fn shown_path(p: &str) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        if cwd.parent().is_some() {
            if let Ok(rel) = std::path::Path::new(p).strip_prefix(&cwd) {
                if !rel.as_os_str().is_empty() {
                    return rel.display().to_string();
                }
            }
        }
    }
    p.to_string()
}

/// The path or id shown for a hit: a passage as `path:FIRST-LAST` (its lines) when known.
fn locator(h: &SearchHit) -> String {
    match h.kind {
        jsearch::Kind::Image => shown_path(&h.path),
        jsearch::Kind::Text => match (h.lines, h.part, h.chunk) {
            (Some((a, b)), _, _) if a == b => format!("{}:{a}", shown_path(&h.path)),
            (Some((a, b)), _, _) => format!("{}:{a}-{b}", shown_path(&h.path)),
            (None, Some(p), Some(c)) => format!("{}#{p}.{c}", shown_path(&h.path)),
            (None, None, Some(c)) => format!("{}#{c}", shown_path(&h.path)),
            _ => shown_path(&h.path),
        },
        jsearch::Kind::Product => h.id.clone(),
    }
}

/// How hits are printed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// One JSON object per hit.
    pub json: bool,
    /// Paths only.
    pub paths: bool,
    /// Tables get a cosine column.
    pub verbose: bool,
    /// Product attributes to show (empty: chosen from the hits).
    pub columns: Vec<String>,
    /// Pictures drawn under table rows (`--preview`), by item key.
    pub previews: std::collections::HashMap<u64, String>,
}

/// Prints hits as JSON lines, paths or a table.
pub fn print_hits(hits: &[SearchHit], opts: &Options) -> Result<()> {
    print_hits_for(hits, opts, None)
}

/// Fields shown first when a catalog has them (what a shop looks at), before the most common.
const KEY_FIELDS: &[&str] = &["price", "brand", "category", "in_stock", "color", "size"];
/// Default number of product attributes shown.
const DEFAULT_COLUMNS: usize = 3;
/// Longest attribute value that makes a field a default column.
const SHORT_VALUE: usize = 24;

/// The product attributes to show: `--columns`, else up to [`DEFAULT_COLUMNS`] fields with
/// short values: the [`KEY_FIELDS`] present, then the most common among the hits.
fn product_columns(hits: &[SearchHit], asked: &[String]) -> Vec<String> {
    if !asked.is_empty() {
        return asked
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
    }
    let mut count: std::collections::BTreeMap<&str, usize> = Default::default();
    for h in hits.iter().filter(|h| h.kind == jsearch::Kind::Product) {
        for (k, v) in &h.metadata {
            if value_text(v).chars().count() <= SHORT_VALUE {
                *count.entry(k.as_str()).or_default() += 1;
            }
        }
    }
    let mut fields: Vec<(&str, usize)> = count.into_iter().collect();
    let key_rank = |f: &str| {
        KEY_FIELDS
            .iter()
            .position(|k| *k == f)
            .unwrap_or(usize::MAX)
    };
    fields.sort_by(|a, b| {
        key_rank(a.0)
            .cmp(&key_rank(b.0))
            .then(b.1.cmp(&a.1))
            .then(a.0.cmp(b.0))
    });
    fields
        .into_iter()
        .take(DEFAULT_COLUMNS)
        .map(|(f, _)| f.to_string())
        .collect()
}

/// An attribute value as text (lists joined with `|`).
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join("|"),
        other => other.to_string(),
    }
}

/// The details of a hit: a product's title and attributes, a passage's title and text, an
/// image's pixel size and date.
fn details(h: &SearchHit, columns: &[String]) -> String {
    let title = h.title.as_deref().unwrap_or("");
    match h.kind {
        jsearch::Kind::Product => {
            let mut parts = vec![title.to_string()];
            for c in columns {
                if let Some(v) = h.metadata.get(c) {
                    parts.push(format!("{c} {}", value_text(v)));
                }
            }
            parts.retain(|p| !p.is_empty());
            parts.join(" · ")
        }
        jsearch::Kind::Text => {
            let snippet = h.snippet.as_deref().unwrap_or("");
            // The snippet often starts with the title line: do not show it twice.
            let body = snippet
                .trim_start()
                .strip_prefix(title.trim_start_matches('#').trim())
                .filter(|_| !title.is_empty())
                .unwrap_or(snippet)
                .trim_start_matches(['#', ' ', '\n'])
                .trim();
            match (title.is_empty(), body.is_empty()) {
                (_, true) => title.to_string(),
                (true, false) => format!("“{body}”"),
                (false, false) => format!("{title} — “{body}”"),
            }
        }
        jsearch::Kind::Image => {
            let num = |k: &str| h.metadata.get(k).and_then(serde_json::Value::as_u64);
            let mut parts = Vec::new();
            if let (Some(w), Some(hh)) = (num("width"), num("height")) {
                parts.push(format!("{w}×{hh}"));
            }
            // The date taken (a string, when the store has one), else the file's modification
            // time (seconds since 1970).
            match (h.metadata.get("taken"), h.metadata.get("modified")) {
                (Some(serde_json::Value::String(d)), _) => {
                    parts.push(d.get(..10).unwrap_or(d).to_string())
                }
                (_, Some(m)) => {
                    if let Some(secs) = m.as_i64() {
                        parts.push(date_of(secs));
                    }
                }
                _ => {}
            }
            if let Some(serde_json::Value::String(c)) = h.metadata.get("camera") {
                parts.push(c.clone());
            }
            parts.join(" · ")
        }
    }
}

/// `YYYY-MM-DD` (UTC) of seconds since 1970.
fn date_of(secs: i64) -> String {
    let mut d = jsearch::photo::iso_from_unix(secs);
    d.truncate(10);
    d
}

/// [`print_hits`], JSON lines tagged with `"query": query` when given.
pub fn print_hits_for(hits: &[SearchHit], opts: &Options, query: Option<&str>) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if opts.json {
        for h in hits {
            let mut v = serde_json::json!({
                "rank": h.rank,
                "score": h.score,
                "vector": h.vector_score,
                "keyword": h.keyword_score,
                "exact": h.exact,
                "cosine": h.cosine,
                "kind": h.kind,
                "id": h.id,
                "path": h.path,
                "title": h.title,
                "chunk": h.chunk,
                "image": h.image,
                "snippet": h.snippet,
                "metadata": h.metadata,
            });
            if let Some(o) = v.as_object_mut() {
                if let Some(p) = h.part {
                    o.insert("part".into(), serde_json::json!(p));
                }
                if let Some((a, b)) = h.lines {
                    o.insert("lines".into(), serde_json::json!([a, b]));
                }
                if let Some(b) = &h.path_bytes {
                    o.insert("path_bytes".into(), serde_json::json!(b));
                }
                if let Some(q) = query {
                    o.insert("query".into(), serde_json::Value::String(q.to_string()));
                }
            }
            writeln!(out, "{v}")?;
        }
    } else if opts.paths {
        // Raw bytes for pipes (`xargs`), escaped on a terminal.
        let terminal = out.is_terminal();
        let mut seen = std::collections::HashSet::new();
        for h in hits {
            let p: Vec<u8> = match (&h.kind, &h.image, &h.path_bytes) {
                (jsearch::Kind::Product, Some(img), _) => img.as_bytes().to_vec(),
                (_, _, Some(bytes)) => bytes.clone(),
                _ => h.path.as_bytes().to_vec(),
            };
            if seen.insert(p.clone()) {
                if terminal {
                    writeln!(out, "{}", printable(&String::from_utf8_lossy(&p)))?;
                } else {
                    out.write_all(&p)?;
                    out.write_all(b"\n")?;
                }
            }
        }
    } else {
        if hits.is_empty() {
            if std::io::stderr().is_terminal() {
                eprintln!("no results");
            }
            return Ok(());
        }
        print_table(&mut out, hits, opts)?;
    }
    Ok(())
}

/// Longest details column when the width is not limited (output into a pipe).
const MAX_DETAILS: usize = 200;

/// The hits as a table as wide as the terminal (`$COLUMNS`), one row per hit.
fn print_table(out: &mut impl Write, hits: &[SearchHit], opts: &Options) -> Result<()> {
    use crate::style::Paint;
    let width = crate::style::width();
    let columns = product_columns(hits, &opts.columns);
    // rank, score, (cosine,) kind: fixed widths with two spaces between columns.
    let fixed = 4 + 2 + 5 + 2 + if opts.verbose { 6 + 2 } else { 0 } + 7 + 2;
    // Into a pipe, paths are never cut (like rg and fd); on a terminal, the path takes at most
    // half of what the fixed columns leave.
    let max_loc = width.map_or(usize::MAX, |w| (w.saturating_sub(fixed) / 2).max(12));
    let locs: Vec<String> = hits
        .iter()
        .map(|h| cut(&printable(&one_line(&locator(h))), max_loc))
        .collect();
    let w = locs
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(4)
        .max(10);
    let room = width.map_or(MAX_DETAILS, |t| t.saturating_sub(fixed + w + 2).max(10));
    let cosine_head = if opts.verbose { "cosine  " } else { "" };
    let head = format!(
        "{:>4}  {:>5}  {cosine_head}{:<7}  {:<w$}  details",
        "rank", "score", "kind", "path or id"
    );
    writeln!(out, "{}", Paint::Header.paint(&head))?;
    for (h, loc) in hits.iter().zip(&locs) {
        let d = one_line(&printable(&details(h, &columns))).into_owned();
        let score = format!("{:>5.2}", h.score);
        let score = if h.score >= 0.5 {
            Paint::Good.paint(&score)
        } else {
            Paint::Weak.paint(&score)
        };
        let cosine = if opts.verbose {
            format!("{:>6.3}  ", h.cosine)
        } else {
            String::new()
        };
        let loc_padded = format!("{loc:<w$}");
        let loc_shown = match loc.rsplit_once(':') {
            Some((p, range)) if h.kind == jsearch::Kind::Text && h.lines.is_some() => {
                let pad = " ".repeat(w.saturating_sub(loc.chars().count()));
                format!(
                    "{}{}{}{pad}",
                    Paint::Path.paint(p),
                    Paint::Dim.paint(":"),
                    Paint::Lines.paint(range)
                )
            }
            _ => Paint::Path.paint(&loc_padded),
        };
        writeln!(
            out,
            "{:>4}  {score}  {cosine}{:<7}  {loc_shown}  {}",
            h.rank,
            h.kind.as_str(),
            cut_start(&d, room)
        )?;
        if let Some(p) = opts.previews.get(&h.key) {
            write!(out, "{p}")?;
        }
    }
    Ok(())
}

/// Prints facets: a footer under the table, or one final JSON line `{"facets": {…}}`.
pub fn print_facets(
    facets: &[(String, jsearch::Facet)],
    json: bool,
    query: Option<&str>,
) -> Result<()> {
    if facets.is_empty() {
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        let mut m = serde_json::Map::new();
        for (f, facet) in facets {
            let v = match facet {
                jsearch::Facet::Values(vs) => serde_json::Value::Object(
                    vs.iter()
                        .map(|(k, n)| (k.clone(), serde_json::json!(n)))
                        .collect(),
                ),
                jsearch::Facet::Range { min, max, count } => {
                    serde_json::json!({"min": min, "max": max, "count": count})
                }
            };
            m.insert(f.clone(), v);
        }
        let mut line = serde_json::json!({ "facets": m });
        if let (Some(q), Some(o)) = (query, line.as_object_mut()) {
            o.insert("query".into(), serde_json::Value::String(q.to_string()));
        }
        writeln!(out, "{line}")?;
        return Ok(());
    }
    writeln!(out, "facets:")?;
    for (f, facet) in facets {
        let body = match facet {
            jsearch::Facet::Values(vs) if vs.is_empty() => "(none)".to_string(),
            jsearch::Facet::Values(vs) => {
                let shown: Vec<String> = vs
                    .iter()
                    .take(20)
                    .map(|(k, n)| format!("{} {n}", one_line(&printable(k))))
                    .collect();
                let more = if vs.len() > 20 {
                    format!(", … ({} more values)", vs.len() - 20)
                } else {
                    String::new()
                };
                format!("{}{more}", shown.join(", "))
            }
            jsearch::Facet::Range { count: 0, .. } => "(none)".to_string(),
            jsearch::Facet::Range { min, max, count } => {
                format!("{min} – {max} ({count} items)")
            }
        };
        writeln!(out, "  {}: {body}", printable(f))?;
    }
    Ok(())
}

/// Prints store statistics.
/// Hits of `query --backend`: JSON lines, paths, or one row each (rank, cosine, kind, id, title).
pub fn print_backend_hits(
    hits: &[jsearch_scale::postgres::BackendHit],
    json: bool,
    paths: bool,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for h in hits {
        if json {
            writeln!(out, "{}", serde_json::to_string(h)?)?;
        } else if paths {
            writeln!(out, "{}", printable(&h.path))?;
        } else {
            let title = h.title.as_deref().unwrap_or("");
            writeln!(
                out,
                "{:>3}  {:.3}  {:<7}  {}  {}",
                h.rank,
                h.cosine,
                h.kind,
                one_line(&printable(&h.id)),
                one_line(&printable(title))
            )?;
        }
    }
    Ok(())
}

pub fn print_stats(s: &Stats, json: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(s)?)?;
        return Ok(());
    }
    let mut rows: Vec<(String, String)> = vec![
        (
            "store".into(),
            format!(
                "{} ({:.1} MiB)",
                s.store.display(),
                s.store_bytes as f64 / 1048576.0
            ),
        ),
        (
            "model".into(),
            format!("{} ({})", s.model, s.model_fingerprint),
        ),
    ];
    if let Some(dir) = &s.model_dir {
        rows.push(("model folder".into(), dir.display().to_string()));
    }
    rows.push((
        "dims".into(),
        format!("{} (ANN graph {})", s.dim, s.ann_dim),
    ));
    rows.push(("files".into(), s.files.to_string()));
    for (kind, n) in &s.files_by_kind {
        rows.push((format!("  {kind}s"), n.to_string()));
    }
    for (k, n) in &s.items {
        let name = match k.as_str() {
            "text" => "passages".to_string(),
            other => format!("{other}s"),
        };
        rows.push((name, n.to_string()));
    }
    rows.push(("vectors".into(), s.vectors.to_string()));
    let w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    for (k, v) in rows {
        writeln!(out, "{:<w$} {}", format!("{k}:"), printable(&v))?;
    }
    Ok(())
}

/// Prints what `check` found: one line per damaged row, then a verdict.
pub fn print_check(c: &CheckSummary, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(c)?)?;
        return Ok(());
    }
    for d in &c.damage {
        writeln!(out, "damaged: {}", printable(d))?;
    }
    let verdict = if c.damage.is_empty() {
        "healthy".to_string()
    } else {
        format!(
            "{} problem(s); `jsearch repair` rebuilds what can be rebuilt",
            c.damage.len()
        )
    };
    writeln!(
        out,
        "{}: {} rows, {} vectors read: {verdict}",
        c.store.display(),
        c.rows,
        c.vectors
    )?;
    Ok(())
}

/// Prints what `repair` did to the store at `db`: the files to re-index, the records lost, a
/// summary line.
pub fn print_repair(r: &RepairSummary, db: &std::path::Path, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
        return Ok(());
    }
    for p in &r.reindex {
        writeln!(
            out,
            "lost items of {} (re-index it)",
            printable(&p.display().to_string())
        )?;
    }
    for k in &r.lost_records {
        writeln!(out, "lost record {}", printable(k))?;
    }
    writeln!(
        out,
        "repaired {}: {} vectors kept, {} lost; the damaged file is {}",
        db.display(),
        r.kept_vectors,
        r.lost_vectors.len(),
        r.backup.display()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\x1b[31mred\r"), "a\\u{1b}[31mred\\u{d}");
        assert_eq!(printable("two\nlines"), "two\nlines");
        assert_eq!(one_line("two\nlines"), "two lines");
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn dates_of_unix_seconds() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(951_782_400), "2000-02-29");
        assert_eq!(date_of(1_798_761_599), "2026-12-31");
        assert_eq!(date_of(-86_400), "1969-12-31");
    }
}
