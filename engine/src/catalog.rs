//! Catalogs: `.jsonl` (one JSON object per line) and `.csv` (header row) files of records.
//!
//! Recognised fields: `id` (required), `title` (or `name`), `description`, `text`, `image` (or
//! `image_path`: relative to the catalog file, or absolute). Every other field is kept as metadata.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One catalog record (a product): text and/or an image, indexed as one item.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Identifier, unique within its catalog.
    pub id: String,
    /// Title.
    pub title: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Any further text.
    pub text: Option<String>,
    /// Image file (absolute, or relative to the current directory for records passed in code).
    pub image: Option<PathBuf>,
    /// Other fields, returned with hits.
    pub metadata: Map<String, Value>,
}

impl Record {
    /// The text that is embedded: title, description and text, one per line.
    pub fn embed_text(&self) -> Option<String> {
        let parts: Vec<&str> = [&self.title, &self.description, &self.text]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if parts.is_empty() {
            None
        } else {
            Some(parts.join("\n"))
        }
    }
}

fn value_to_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_string())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn record_from_map(
    mut obj: Map<String, Value>,
    base: &Path,
) -> std::result::Result<Record, String> {
    let id = obj
        .remove("id")
        .as_ref()
        .and_then(value_to_string)
        .ok_or_else(|| "missing \"id\"".to_string())?;
    let mut take = |names: &[&str]| -> Option<String> {
        let mut found = None;
        for n in names {
            if let Some(v) = obj.remove(*n) {
                if found.is_none() {
                    found = value_to_string(&v);
                }
            }
        }
        found
    };
    let title = take(&["title", "name"]);
    let description = take(&["description"]);
    let text = take(&["text"]);
    let image = take(&["image", "image_path"]).map(|s| {
        let p = PathBuf::from(s);
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    });
    Ok(Record {
        id,
        title,
        description,
        text,
        image,
        metadata: obj,
    })
}

/// Reads a catalog. Bad lines/rows are returned as problems (`"line N: ..."`) and skipped;
/// a file that cannot be read or has no `id` column is an error.
pub(crate) fn read_catalog(path: &Path) -> Result<(Vec<Record>, Vec<String>)> {
    let base = path.parent().unwrap_or(Path::new("."));
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let mut records = Vec::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut push = |rec: Record, line: usize, problems: &mut Vec<String>| {
        if seen.insert(rec.id.clone()) {
            records.push(rec);
        } else {
            problems.push(format!(
                "line {line}: duplicate id {:?} (kept the first)",
                rec.id
            ));
        }
    };
    if ext == "csv" {
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(path)
            .map_err(|e| Error::Catalog {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let headers = rdr
            .headers()
            .map_err(|e| Error::Catalog {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
            .clone();
        if !headers.iter().any(|h| h.trim() == "id") {
            return Err(Error::Catalog {
                path: path.to_path_buf(),
                message: "no \"id\" column in the header row".to_string(),
            });
        }
        for (i, row) in rdr.records().enumerate() {
            let line = i + 2;
            let row = match row {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("line {line}: {e}"));
                    continue;
                }
            };
            let mut obj = Map::new();
            for (h, v) in headers.iter().zip(row.iter()) {
                if !v.trim().is_empty() {
                    obj.insert(h.trim().to_string(), Value::String(v.to_string()));
                }
            }
            match record_from_map(obj, base) {
                Ok(rec) => push(rec, line, &mut problems),
                Err(msg) => problems.push(format!("line {line}: {msg}")),
            }
        }
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        for (i, l) in text.lines().enumerate() {
            let line = i + 1;
            let l = l.trim();
            if l.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(obj)) => match record_from_map(obj, base) {
                    Ok(rec) => push(rec, line, &mut problems),
                    Err(msg) => problems.push(format!("line {line}: {msg}")),
                },
                Ok(_) => problems.push(format!("line {line}: not a JSON object")),
                Err(e) => problems.push(format!("line {line}: invalid JSON: {e}")),
            }
        }
        if records.is_empty() && !problems.is_empty() {
            return Err(Error::Catalog {
                path: path.to_path_buf(),
                message: format!(
                    "no usable record ({} problems, first: {})",
                    problems.len(),
                    problems[0]
                ),
            });
        }
    }
    Ok((records, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jsonl_with_metadata_and_relative_images() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.jsonl");
        std::fs::write(
            &p,
            "{\"id\": \"a\", \"title\": \"Red\", \"image\": \"img/a.png\", \"price\": 3}\n\
             \n{\"id\": 7, \"description\": \"Blue\"}\nnot json\n{\"title\": \"no id\"}\n\
             {\"id\": \"a\", \"title\": \"dup\"}\n",
        )
        .unwrap();
        let (recs, problems) = read_catalog(&p).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].id, "a");
        assert_eq!(
            recs[0].image.as_deref(),
            Some(dir.path().join("img/a.png").as_path())
        );
        assert_eq!(recs[0].metadata["price"], 3);
        assert_eq!(recs[1].id, "7");
        assert_eq!(recs[1].embed_text().as_deref(), Some("Blue"));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("line 4:"));
    }

    #[test]
    fn reads_csv() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.csv");
        std::fs::write(
            &p,
            "id,title,image,color\n1,\"Red, round\",a.png,red\n2,,,\n",
        )
        .unwrap();
        let (recs, problems) = read_catalog(&p).unwrap();
        assert!(problems.is_empty());
        assert_eq!(recs[0].title.as_deref(), Some("Red, round"));
        assert_eq!(recs[0].metadata["color"], "red");
        assert_eq!(recs[1].embed_text(), None);
        let bad = dir.path().join("b.csv");
        std::fs::write(&bad, "name\nx\n").unwrap();
        assert!(read_catalog(&bad)
            .unwrap_err()
            .to_string()
            .contains("no \"id\" column"));
    }
}
