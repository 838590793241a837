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

/// Shorter path for display: relative to the current folder when inside it.
fn shown_path(p: &str) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(rel) = std::path::Path::new(p).strip_prefix(&cwd) {
            return rel.display().to_string();
        }
    }
    p.to_string()
}

/// The path or id shown for a hit.
fn locator(h: &SearchHit) -> String {
    match h.kind {
        jsearch::Kind::Image => shown_path(&h.path),
        jsearch::Kind::Text => match (h.part, h.chunk) {
            (Some(p), Some(c)) => format!("{}#{p}.{c}", shown_path(&h.path)),
            (None, Some(c)) => format!("{}#{c}", shown_path(&h.path)),
            _ => shown_path(&h.path),
        },
        jsearch::Kind::Product => h.id.clone(),
    }
}

/// Prints hits as JSON lines (`json`), paths (`paths`) or a table.
pub fn print_hits(hits: &[SearchHit], json: bool, paths: bool) -> Result<()> {
    print_hits_for(hits, json, paths, None)
}

/// [`print_hits`], JSON lines tagged with `"query": query` when given.
pub fn print_hits_for(
    hits: &[SearchHit],
    json: bool,
    paths: bool,
    query: Option<&str>,
) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
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
                if let Some(b) = &h.path_bytes {
                    o.insert("path_bytes".into(), serde_json::json!(b));
                }
                if let Some(q) = query {
                    o.insert("query".into(), serde_json::Value::String(q.to_string()));
                }
            }
            writeln!(out, "{v}")?;
        }
    } else if paths {
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
        let locs: Vec<String> = hits
            .iter()
            .map(|h| cut(&printable(&one_line(&locator(h))), 60))
            .collect();
        let w = locs
            .iter()
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(4)
            .max(12);
        writeln!(
            out,
            "{:>4}  {:>6}  {:<7}  {:<w$}  title",
            "rank", "score", "kind", "path or id"
        )?;
        for (h, loc) in hits.iter().zip(&locs) {
            let title = one_line(&printable(h.title.as_deref().unwrap_or(""))).into_owned();
            writeln!(
                out,
                "{:>4}  {:>6.2}  {:<7}  {:<w$}  {}",
                h.rank,
                h.score,
                h.kind.as_str(),
                loc,
                cut_start(&title, 60)
            )?;
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
pub fn print_stats(s: &Stats, json: bool) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(s)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "store:   {} ({:.1} MiB)",
        s.store.display(),
        s.store_bytes as f64 / 1048576.0
    )?;
    writeln!(out, "model:   {} ({})", s.model, s.model_fingerprint)?;
    writeln!(out, "dims:    {} (ANN graph {})", s.dim, s.ann_dim)?;
    writeln!(out, "files:   {}", s.files)?;
    writeln!(out, "vectors: {}", s.vectors)?;
    for (k, n) in &s.items {
        writeln!(out, "{:<8} {n}", format!("{k}s:"))?;
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
}
