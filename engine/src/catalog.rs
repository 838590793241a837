//! Catalogs: `.jsonl` (one JSON object per line) and `.csv` (header row) files of records.
//!
//! Recognised fields: `id` (required), `title` (or `name`), `description`, `text`, `image` (or
//! `image_path`: relative to the catalog file, or absolute). Every other field is kept as metadata.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::attrs::{type_csv_cell, AttrType};
use crate::error::{Error, Result};
use crate::{fsread, walk};

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

/// Where a catalog's records may point and how long one may be.
#[derive(Debug, Clone)]
pub(crate) struct CatalogLimits {
    /// Lines (JSONL) and records (CSV) longer than this are skipped with a problem.
    pub(crate) max_record_bytes: usize,
    /// Image paths must resolve inside this folder (canonical); `None` = the catalog's folder.
    pub(crate) root: Option<PathBuf>,
    /// Declared types of CSV columns (override the header suffix and the typing rule).
    pub(crate) csv_types: std::collections::HashMap<String, AttrType>,
}

impl Default for CatalogLimits {
    fn default() -> Self {
        CatalogLimits {
            max_record_bytes: fsread::DEFAULT_MAX_RECORD_BYTES,
            root: None,
            csv_types: Default::default(),
        }
    }
}

/// What a record's `image` field names, before it is confined to the catalog root.
fn image_ref(v: &Value) -> std::result::Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => {
            let t = s.trim();
            let lower = t.to_ascii_lowercase();
            if lower.contains("://") || lower.starts_with("data:") {
                return Err(format!(
                    "image {t:?} is a URL; jsearch does not fetch images: download them and give \
                     their paths (relative to the catalog)"
                ));
            }
            Ok(Some(t.to_string()))
        }
        Value::Number(_) => Err("image is a number; expected a file path (a string)".into()),
        Value::Bool(_) => Err("image is a boolean; expected a file path (a string)".into()),
        Value::Array(_) | Value::Object(_) => {
            Err("image is a JSON array/object; expected a file path (a string)".into())
        }
    }
}

/// Whether `image` (absolute) stays inside `root` (canonical), with symlinks resolved where
/// the file exists and `..` resolved lexically where it does not.
fn inside(image: &Path, root: &Path) -> bool {
    let resolved = match std::fs::canonicalize(image) {
        Ok(p) => p,
        Err(_) => {
            let mut out = PathBuf::new();
            for c in walk::absolute_lenient(image).components() {
                match c {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => out.push(other),
                }
            }
            out
        }
    };
    resolved.starts_with(root)
}

/// A record from a JSON object or CSV row. `Err` skips the record; a problem with only its image
/// keeps the record (text only) and comes back as the second value.
fn record_from_map(
    mut obj: Map<String, Value>,
    base: &Path,
    root: &Path,
) -> std::result::Result<(Record, Option<String>), String> {
    let id = obj
        .remove("id")
        .as_ref()
        .and_then(value_to_string)
        .ok_or_else(|| "missing \"id\"".to_string())?;
    let mut take = |names: &[&str]| -> Option<Value> {
        let mut found = None;
        for n in names {
            if let Some(v) = obj.remove(*n) {
                if found.is_none() && !v.is_null() {
                    found = Some(v);
                }
            }
        }
        found
    };
    let title = take(&["title", "name"]).as_ref().and_then(value_to_string);
    let description = take(&["description"]).as_ref().and_then(value_to_string);
    let text = take(&["text"]).as_ref().and_then(value_to_string);
    let mut warning = None;
    let image = match take(&["image", "image_path"]).as_ref().map(image_ref) {
        None | Some(Ok(None)) => None,
        Some(Err(msg)) => {
            warning = Some(format!("record {id:?}: {msg}; indexed without its image"));
            None
        }
        Some(Ok(Some(s))) => {
            let p = PathBuf::from(&s);
            let p = if p.is_absolute() { p } else { base.join(p) };
            if inside(&p, root) {
                Some(p)
            } else {
                warning = Some(format!(
                    "record {id:?}: image {s:?} is outside the catalog's folder {} (allow it \
                     with --catalog-root DIR); indexed without its image",
                    root.display()
                ));
                None
            }
        }
    };
    Ok((
        Record {
            id,
            title,
            description,
            text,
            image,
            metadata: obj,
        },
        warning,
    ))
}

/// The records of a catalog, and the problems of the lines that were skipped or cut.
struct Reading {
    records: Vec<Record>,
    problems: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl Reading {
    fn push(&mut self, line: usize, parsed: std::result::Result<(Record, Option<String>), String>) {
        match parsed {
            Ok((rec, warning)) => {
                if let Some(w) = warning {
                    self.problems.push(format!("line {line}: {w}"));
                }
                if self.seen.insert(rec.id.clone()) {
                    self.records.push(rec);
                } else {
                    self.problems.push(format!(
                        "line {line}: duplicate id {:?} (kept the first)",
                        rec.id
                    ));
                }
            }
            Err(msg) => self.problems.push(format!("line {line}: {msg}")),
        }
    }
}

const NOT_UTF8: &str = "not UTF-8 (catalogs are read as UTF-8; convert the file, e.g. \
                        `iconv -f latin1 -t utf-8`): skipped";

fn too_long(n: u64, limit: usize) -> String {
    format!(
        "{} long, above the limit of {} for one record (raise it with --max-record-kb): skipped",
        fsread::human(n),
        fsread::human(limit as u64)
    )
}

/// Reads a catalog. Bad lines/rows are returned as problems (`"line N: ..."`) and skipped;
/// a file that cannot be read, is not a regular file, or has no `id` column is an error. Memory
/// stays bounded by `limits.max_record_bytes` per record whatever the file holds.
pub(crate) fn read_catalog(
    path: &Path,
    limits: &CatalogLimits,
) -> Result<(Vec<Record>, Vec<String>)> {
    let base = path.parent().unwrap_or(Path::new("."));
    let root = match &limits.root {
        Some(r) => walk::absolute(r)?,
        None => walk::absolute_lenient(base),
    };
    let catalog_err = |message: String| Error::Catalog {
        path: path.to_path_buf(),
        message,
    };
    let unbounded = fsread::Limit {
        bytes: u64::MAX,
        what: "catalogs",
        flag: None,
    };
    let (file, _) = fsread::open_regular(path, unbounded).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = std::io::BufReader::with_capacity(64 << 10, file);
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let mut out = Reading {
        records: Vec::new(),
        problems: Vec::new(),
        seen: Default::default(),
    };
    let limit = limits.max_record_bytes;
    let mut buf = Vec::new();
    if ext == "csv" {
        let mut rows = CsvRecords::new(&mut reader, limit);
        let headers = match rows.next_record(&mut buf).map_err(|e| Error::io(path, e))? {
            None => return Err(catalog_err("empty file (no header row)".into())),
            Some((_, Row::TooLong(n))) => {
                return Err(catalog_err(format!("header row: {}", too_long(n, limit))))
            }
            Some((_, Row::Bytes)) => match parse_csv_row(strip_bom(&buf)) {
                Ok(h) => h,
                Err(e) => return Err(catalog_err(format!("header row: {e}"))),
            },
        };
        // `name:type` headers declare a column's type; --csv-types overrides both.
        let columns: Vec<(String, Option<AttrType>)> = headers
            .iter()
            .map(|h| {
                let (name, ty) = crate::attrs::split_header(h);
                // The recognised text columns stay text (a title "1.50" is not the number 1.5).
                let text_column = matches!(
                    name,
                    "id" | "title" | "name" | "description" | "text" | "image" | "image_path"
                );
                let ty = if text_column {
                    Some(AttrType::String)
                } else {
                    limits.csv_types.get(name).copied().or(ty)
                };
                (name.to_string(), ty)
            })
            .collect();
        if !columns.iter().any(|(h, _)| h == "id") {
            return Err(catalog_err("no \"id\" column in the header row".into()));
        }
        while let Some((line, row)) = rows.next_record(&mut buf).map_err(|e| Error::io(path, e))? {
            if matches!(row, Row::Bytes) && buf.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let parsed = match row {
                Row::TooLong(n) => Err(too_long(n, limit)),
                Row::Bytes => parse_csv_row(&buf).and_then(|fields| {
                    let mut obj = Map::new();
                    let mut bad = Vec::new();
                    for ((h, ty), v) in columns.iter().zip(fields.iter()) {
                        if v.trim().is_empty() {
                            continue;
                        }
                        let value = match type_csv_cell(v, *ty) {
                            Ok(x) => x,
                            Err(why) => {
                                bad.push(format!("column {h:?}: {why}"));
                                Value::String(v.to_string())
                            }
                        };
                        obj.insert(h.clone(), value);
                    }
                    record_from_map(obj, base, &root).map(|(rec, warning)| {
                        let warning = match (warning, bad.is_empty()) {
                            (w, true) => w,
                            (w, false) => Some(
                                w.into_iter()
                                    .chain(std::iter::once(format!(
                                        "record {:?}: {} (kept as a string)",
                                        rec.id,
                                        bad.join("; ")
                                    )))
                                    .collect::<Vec<_>>()
                                    .join("; "),
                            ),
                        };
                        (rec, warning)
                    })
                }),
            };
            out.push(line, parsed);
        }
    } else {
        let mut line = 0usize;
        loop {
            line += 1;
            let status = fsread::read_line_bounded(&mut reader, &mut buf, limit)
                .map_err(|e| Error::io(path, e))?;
            let parsed = match status {
                fsread::Line::Eof => break,
                fsread::Line::TooLong(n) => Err(too_long(n, limit)),
                fsread::Line::Full => {
                    let bytes = if line == 1 { strip_bom(&buf) } else { &buf[..] };
                    match std::str::from_utf8(bytes) {
                        Err(_) => Err(NOT_UTF8.to_string()),
                        Ok(l) if l.trim().is_empty() => continue,
                        Ok(l) => match serde_json::from_str::<Value>(l.trim()) {
                            Ok(Value::Object(obj)) => record_from_map(obj, base, &root),
                            Ok(_) => Err("not a JSON object".to_string()),
                            Err(e) => Err(format!("invalid JSON: {e}")),
                        },
                    }
                }
            };
            out.push(line, parsed);
        }
    }
    out.problems.extend(mixed_types(&out.records));
    if out.records.is_empty() && !out.problems.is_empty() {
        return Err(catalog_err(format!(
            "no usable record ({} problems, first: {})",
            out.problems.len(),
            out.problems[0]
        )));
    }
    Ok((out.records, out.problems))
}

/// One problem per field whose values have more than one type across the catalog's records
/// (the records are kept, each value as given).
fn mixed_types(records: &[Record]) -> Vec<String> {
    use std::collections::BTreeMap;
    // field -> type -> (count, first record id)
    let mut seen: BTreeMap<&str, BTreeMap<AttrType, (usize, &str)>> = BTreeMap::new();
    for r in records {
        for (k, v) in &r.metadata {
            if let Some(t) = AttrType::of(v) {
                let e = seen.entry(k).or_default().entry(t).or_insert((0, &r.id));
                e.0 += 1;
            }
        }
    }
    seen.into_iter()
        .filter(|(_, types)| types.len() > 1)
        .map(|(field, types)| {
            let mut parts: Vec<(AttrType, (usize, &str))> = types.into_iter().collect();
            parts.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
            let desc: Vec<String> = parts
                .iter()
                .map(|(t, (n, first))| format!("{t} in {n} (first: record {first:?})"))
                .collect();
            format!(
                "field {field:?} has mixed types: {}; every record is kept with its value as \
                 given, and a filter on {field:?} only matches values of the literal's type",
                desc.join(", ")
            )
        })
        .collect()
}

/// A UTF-8 byte-order mark at the start of a file is not part of the first record.
fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

/// One CSV row's fields.
fn parse_csv_row(bytes: &[u8]) -> std::result::Result<Vec<String>, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let mut rec = csv::ByteRecord::new();
    match rdr.read_byte_record(&mut rec) {
        Ok(_) => rec
            .iter()
            .map(|f| {
                std::str::from_utf8(f)
                    .map(str::to_string)
                    .map_err(|_| NOT_UTF8.to_string())
            })
            .collect(),
        Err(e) => Err(e.to_string()),
    }
}

/// A CSV record found by [`CsvRecords`].
enum Row {
    /// The record's bytes are in the buffer.
    Bytes,
    /// The record was longer than the limit (its length); it was consumed, not kept.
    TooLong(u64),
}

impl Row {
    /// A record of `total` bytes, kept unless it went `over` the limit.
    fn of(over: bool, total: u64) -> Row {
        if over {
            Row::TooLong(total)
        } else {
            Row::Bytes
        }
    }
}

/// Splits a CSV stream into records (a newline inside a quoted field does not end one) without
/// holding more than the limit of any record in memory. The quoting rules are RFC 4180's, as the
/// `csv` crate reads them: a quote opens a quoted field only at the start of a field.
struct CsvRecords<'a, R> {
    reader: &'a mut R,
    limit: usize,
    line: usize,
}

impl<'a, R: std::io::BufRead> CsvRecords<'a, R> {
    fn new(reader: &'a mut R, limit: usize) -> Self {
        CsvRecords {
            reader,
            limit,
            line: 0,
        }
    }

    /// The next record (with its first line number), or `None` at the end.
    fn next_record(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<(usize, Row)>> {
        #[derive(Clone, Copy, PartialEq)]
        enum S {
            FieldStart,
            Unquoted,
            Quoted,
            QuoteInQuoted,
        }
        buf.clear();
        let mut state = S::FieldStart;
        let mut total: u64 = 0;
        let mut over = false;
        let first_line = self.line + 1;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                if total == 0 {
                    return Ok(None);
                }
                self.line += 1;
                return Ok(Some((first_line, Row::of(over, total))));
            }
            let mut end = None;
            for (i, &b) in chunk.iter().enumerate() {
                state = match (state, b) {
                    (S::Quoted, b'"') => S::QuoteInQuoted,
                    (S::Quoted, _) => S::Quoted,
                    (S::QuoteInQuoted, b'"') => S::Quoted,
                    (S::FieldStart, b'"') => S::Quoted,
                    (_, b',') => S::FieldStart,
                    (_, b'\n') => {
                        end = Some(i);
                        break;
                    }
                    (_, _) => S::Unquoted,
                };
                if b == b'\n' {
                    self.line += 1;
                }
            }
            let take = end.unwrap_or(chunk.len());
            total += take as u64;
            if !over {
                if buf.len() + take > self.limit {
                    over = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(&chunk[..take]);
                }
            }
            self.reader.consume(take + usize::from(end.is_some()));
            if end.is_some() {
                self.line += 1;
                return Ok(Some((first_line, Row::of(over, total))));
            }
        }
    }
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
        let (recs, problems) = read_catalog(&p, &CatalogLimits::default()).unwrap();
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
        let (recs, problems) = read_catalog(&p, &CatalogLimits::default()).unwrap();
        assert!(problems.is_empty());
        assert_eq!(recs[0].title.as_deref(), Some("Red, round"));
        assert_eq!(recs[0].metadata["color"], "red");
        assert_eq!(recs[1].embed_text(), None);
        let bad = dir.path().join("b.csv");
        std::fs::write(&bad, "name\nx\n").unwrap();
        assert!(read_catalog(&bad, &CatalogLimits::default())
            .unwrap_err()
            .to_string()
            .contains("no \"id\" column"));
    }

    #[test]
    fn csv_cells_are_typed_and_mixed_types_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.csv");
        std::fs::write(
            &p,
            "id,title,price,in_stock,zip,sku:string,tags:list,size\n\
             1,1.50,12.5,true,007,123,a|b,3\n\
             2,t,cheap,FALSE,,124,,4\n\
             3,t,7,false,,125,c,x\n",
        )
        .unwrap();
        let mut limits = CatalogLimits::default();
        limits.csv_types.insert("size".into(), AttrType::Number);
        let (recs, problems) = read_catalog(&p, &limits).unwrap();
        assert_eq!(recs.len(), 3);
        let m = &recs[0].metadata;
        assert_eq!(
            recs[0].title.as_deref(),
            Some("1.50"),
            "text columns stay text"
        );
        assert_eq!(m["price"], serde_json::json!(12.5));
        assert_eq!(m["in_stock"], serde_json::json!(true));
        assert_eq!(m["zip"], serde_json::json!("007"));
        assert_eq!(m["sku"], serde_json::json!("123"));
        assert_eq!(m["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(m["size"], serde_json::json!(3));
        assert_eq!(recs[1].metadata["price"], serde_json::json!("cheap"));
        assert_eq!(recs[1].metadata["in_stock"], serde_json::json!(false));
        // "x" in a declared number column: kept as a string, with a problem for that record.
        assert_eq!(recs[2].metadata["size"], serde_json::json!("x"));
        let joined = problems.join("\n");
        assert!(
            joined.contains("column \"size\": \"x\" is not a number"),
            "{joined}"
        );
        let mixed: Vec<&String> = problems
            .iter()
            .filter(|p| p.contains("mixed types"))
            .collect();
        assert_eq!(mixed.len(), 2, "price and size, once each: {problems:?}");
        assert!(
            mixed[0].contains("\"price\"") && mixed[0].contains("number in 2"),
            "{mixed:?}"
        );
    }

    fn problems_of(p: &Path, limits: &CatalogLimits) -> (Vec<Record>, Vec<String>) {
        read_catalog(p, limits).unwrap()
    }

    #[test]
    fn bom_latin1_and_huge_records_cost_one_row_each() {
        let dir = tempfile::tempdir().unwrap();
        let limits = CatalogLimits {
            max_record_bytes: 1 << 20,
            ..CatalogLimits::default()
        };
        // JSONL: a BOM before record 1, a Latin-1 line, a 10 MB field.
        let p = dir.path().join("c.jsonl");
        let mut data = b"\xEF\xBB\xBF{\"id\": \"1\", \"title\": \"first\"}\n".to_vec();
        data.extend_from_slice(b"{\"id\": \"2\", \"title\": \"caf\xe9\"}\n");
        data.extend_from_slice(b"{\"id\": \"3\", \"text\": \"");
        data.extend(std::iter::repeat_n(b'a', 10 << 20));
        data.extend_from_slice(b"\"}\n{\"id\": \"4\", \"title\": \"last\"}\n");
        std::fs::write(&p, &data).unwrap();
        let (recs, problems) = problems_of(&p, &limits);
        let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["1", "4"], "{problems:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("line 2: not UTF-8"), "{problems:?}");
        assert!(
            problems[1].starts_with("line 3: 10.0 MiB long, above the limit of 1.0 MiB"),
            "{problems:?}"
        );
        // CSV: the same, with a quoted multi-line field that is fine.
        let p = dir.path().join("c.csv");
        let mut data =
            b"\xEF\xBB\xBFid,title\n1,\"two\nlines, \"\"quoted\"\"\"\n2,caf\xe9\n3,\"".to_vec();
        data.extend(std::iter::repeat_n(b'b', 10 << 20));
        data.extend_from_slice(b"\"\n4,12\" screen\n");
        std::fs::write(&p, &data).unwrap();
        let (recs, problems) = problems_of(&p, &limits);
        let ids: Vec<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["1", "4"], "{problems:?}");
        assert_eq!(recs[0].title.as_deref(), Some("two\nlines, \"quoted\""));
        assert_eq!(recs[1].title.as_deref(), Some("12\" screen"));
        assert!(problems[0].starts_with("line 4: not UTF-8"), "{problems:?}");
        assert!(
            problems[1].starts_with("line 5: 10.0 MiB long"),
            "{problems:?}"
        );
    }

    #[test]
    fn image_references_stay_inside_the_catalog_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let shop = root.join("shop");
        std::fs::create_dir_all(shop.join("img")).unwrap();
        std::fs::write(shop.join("img/a.png"), b"x").unwrap();
        std::fs::write(root.join("outside.png"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("outside.png"), shop.join("img/link.png")).unwrap();
        let p = shop.join("c.jsonl");
        let lines = [
            r#"{"id": "ok", "title": "t", "image": "img/a.png"}"#.to_string(),
            r#"{"id": "up", "title": "t", "image": "../../../../etc/passwd"}"#.to_string(),
            format!(
                r#"{{"id": "abs", "title": "t", "image": "{}"}}"#,
                root.join("outside.png").display()
            ),
            r#"{"id": "url", "title": "t", "image": "https://example.com/a.png"}"#.to_string(),
            r#"{"id": "num", "title": "t", "image": 42}"#.to_string(),
            r#"{"id": "link", "title": "t", "image": "img/link.png"}"#.to_string(),
        ];
        std::fs::write(&p, lines.join("\n")).unwrap();
        let (recs, problems) = problems_of(&p, &CatalogLimits::default());
        assert_eq!(recs.len(), 6, "every record keeps its text");
        let with_image: Vec<&str> = recs
            .iter()
            .filter(|r| r.image.is_some())
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(with_image, ["ok"], "{problems:?}");
        let joined = problems.join("\n");
        for needle in [
            "\"up\": image \"../../../../etc/passwd\" is outside",
            "\"abs\": image",
            "\"url\": image \"https://example.com/a.png\" is a URL",
            "\"num\": image is a number",
            "\"link\": image \"img/link.png\" is outside",
        ] {
            assert!(joined.contains(needle), "{needle} in {joined}");
        }
        // --catalog-root widens it.
        let wide = CatalogLimits {
            root: Some(root.clone()),
            ..CatalogLimits::default()
        };
        let (recs, _) = problems_of(&p, &wide);
        let with_image: Vec<&str> = recs
            .iter()
            .filter(|r| r.image.is_some())
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(with_image, ["ok", "abs", "link"]);
    }
}
