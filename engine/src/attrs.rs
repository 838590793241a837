//! Typed item attributes: the catalog fields and the built-in ones, the CSV typing rule, and the
//! in-memory attribute table that filters, facets and sorting read.
//!
//! **Types.** A JSONL field keeps its JSON type: string, number, bool, or a list of strings
//! (a JSON array of strings). Other JSON values (objects, mixed arrays) are stored and returned
//! with hits, but a filter can only ask whether they `EXISTS`. CSV cells are typed by
//! [`type_csv_cell`]: `true`/`false` (any case) are booleans, numbers are numbers (but not codes
//! with a leading zero such as `007`), everything else is a string; a header suffix
//! (`price:number`, `sku:string`, `tags:list`, `in_stock:bool`) or `--csv-types` overrides it.
//!
//! **Built-in attributes** of every item: `kind` (`image`, `text`, `product`), `path` (the file, the
//! catalog for products), `id` (the record id, the image's path, `path#chunk` for passages) and
//! `title`. A catalog field with one of these names is shadowed by the built-in (the record's
//! `id` and `title` are the built-ins' values anyway).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::idx::Store;
use crate::item::{self, ItemMeta};

/// Names of the attributes every item has.
pub const BUILTIN_FIELDS: [&str; 4] = ["kind", "path", "id", "title"];

/// How filters compare text: lower case, accents removed, `ß` as `ss`, whitespace runs as one
/// space (`"Café  Noir"` → `"cafe noir"`).
pub fn fold(s: &str) -> String {
    crate::keyword::fold(s)
}

/// An item's fields as a filter sees them: the built-ins (`kind`, `path`, `id`, `title`) and
/// the attributes (a catalog field named like a built-in is shadowed; nulls left out), with
/// strings and list elements [`fold`]ed; numbers, booleans and other JSON values as they are.
/// What a system that runs jsearch's filters elsewhere (`jsearch sync postgres://`) stores
/// beside the item.
pub fn filter_view(item: &ItemMeta) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::with_capacity(4 + item.metadata.len());
    out.insert("kind".into(), Value::String(item.kind.as_str().into()));
    out.insert("path".into(), Value::String(fold(&item.path)));
    out.insert("id".into(), Value::String(fold(&item.id)));
    if let Some(t) = &item.title {
        out.insert("title".into(), Value::String(fold(t)));
    }
    for (k, v) in &item.metadata {
        if BUILTIN_FIELDS.contains(&k.as_str()) {
            continue;
        }
        let v = match v {
            Value::Null => continue,
            Value::String(s) => Value::String(fold(s)),
            Value::Array(a) if a.iter().all(Value::is_string) => Value::Array(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|s| Value::String(fold(s)))
                    .collect(),
            ),
            other => other.clone(),
        };
        out.insert(k.clone(), v);
    }
    out
}

/// The type of an attribute value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttrType {
    /// A string.
    String,
    /// A number (JSON number; f64).
    Number,
    /// `true` or `false`.
    Bool,
    /// A list of strings.
    List,
    /// Anything else (an object, an array that is not all strings): returned, not filterable.
    Other,
}

impl AttrType {
    /// Lower-case name (`string`, `number`, `bool`, `list`, `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Number => "number",
            AttrType::Bool => "bool",
            AttrType::List => "list",
            AttrType::Other => "other",
        }
    }

    /// The type of a JSON value (`None` for null).
    pub fn of(v: &Value) -> Option<AttrType> {
        match v {
            Value::Null => None,
            Value::String(_) => Some(AttrType::String),
            Value::Number(_) => Some(AttrType::Number),
            Value::Bool(_) => Some(AttrType::Bool),
            Value::Array(a) if a.iter().all(|x| x.is_string()) => Some(AttrType::List),
            _ => Some(AttrType::Other),
        }
    }
}

impl fmt::Display for AttrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AttrType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "string" | "str" | "text" => Ok(AttrType::String),
            "number" | "num" | "float" | "int" | "integer" => Ok(AttrType::Number),
            "bool" | "boolean" => Ok(AttrType::Bool),
            "list" | "tags" => Ok(AttrType::List),
            _ => Err(Error::InvalidArgument(format!(
                "unknown attribute type {s:?}: expected string, number, bool or list"
            ))),
        }
    }
}

/// Separator of list values in a CSV cell (`tags:list` column: `red|round|small`).
pub const CSV_LIST_SEPARATOR: char = '|';

/// Whether `s` is a number as the CSV rule reads one: JSON's number syntax, without a leading
/// zero before another digit (`007` and `0123` stay strings: codes, postcodes).
fn looks_numeric(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let st = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - st
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// The typed value of a CSV cell. With no declared type: `true`/`false` (any case) are
/// booleans, numeric cells (JSON number syntax, no leading zero before a digit) are numbers, the
/// rest strings. A declared type that the cell does not fit (`abc` in a `number` column) is an
/// error; the caller keeps the cell as a string.
pub fn type_csv_cell(cell: &str, declared: Option<AttrType>) -> std::result::Result<Value, String> {
    let t = cell.trim();
    let number = |t: &str| -> Option<Value> {
        t.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(|n| {
                // Whole numbers stay integers in JSON output (12, not 12.0).
                if looks_numeric(t) && !t.contains(['.', 'e', 'E']) {
                    t.parse::<i64>()
                        .map(Value::from)
                        .unwrap_or(Value::Number(n))
                } else {
                    Value::Number(n)
                }
            })
    };
    match declared {
        None => {
            if t.eq_ignore_ascii_case("true") {
                Ok(Value::Bool(true))
            } else if t.eq_ignore_ascii_case("false") {
                Ok(Value::Bool(false))
            } else if looks_numeric(t) {
                Ok(number(t).unwrap_or_else(|| Value::String(cell.to_string())))
            } else {
                Ok(Value::String(cell.to_string()))
            }
        }
        Some(AttrType::String) | Some(AttrType::Other) => Ok(Value::String(cell.to_string())),
        Some(AttrType::Number) => number(t).ok_or_else(|| format!("{t:?} is not a number")),
        Some(AttrType::Bool) => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("{t:?} is not a boolean (true/false)")),
        },
        Some(AttrType::List) => Ok(Value::Array(
            t.split(CSV_LIST_SEPARATOR)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
    }
}

/// Splits a CSV header `name:type` into the name and its declared type (`None` when the header
/// has no known type suffix: a colon in a name without one stays part of the name).
pub fn split_header(h: &str) -> (&str, Option<AttrType>) {
    if let Some((name, ty)) = h.rsplit_once(':') {
        if let Ok(t) = ty.parse::<AttrType>() {
            return (name.trim(), Some(t));
        }
    }
    (h.trim(), None)
}

/// One attribute value, as the table holds it.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    /// A string, and its folded form.
    Str(Arc<str>, Arc<str>),
    Num(f64),
    Bool(bool),
    /// Strings, each with its folded form.
    List(Vec<(Arc<str>, Arc<str>)>),
    Other,
}

impl Val {
    pub(crate) fn ty(&self) -> AttrType {
        match self {
            Val::Str(..) => AttrType::String,
            Val::Num(_) => AttrType::Number,
            Val::Bool(_) => AttrType::Bool,
            Val::List(_) => AttrType::List,
            Val::Other => AttrType::Other,
        }
    }
}

/// How often each type occurs in a field.
#[derive(Debug, Clone, Default)]
pub(crate) struct TypeCounts(pub(crate) [usize; 5]);

impl TypeCounts {
    fn add(&mut self, t: AttrType) {
        self.0[t as usize] += 1;
    }
    pub(crate) fn has(&self, t: AttrType) -> bool {
        self.0[t as usize] > 0
    }
    /// The types present, most frequent first.
    pub(crate) fn types(&self) -> Vec<AttrType> {
        let all = [
            AttrType::String,
            AttrType::Number,
            AttrType::Bool,
            AttrType::List,
            AttrType::Other,
        ];
        let mut v: Vec<AttrType> = all.into_iter().filter(|t| self.has(*t)).collect();
        v.sort_by_key(|t| std::cmp::Reverse(self.0[*t as usize]));
        v
    }
}

/// Interns strings so that a value shared by many items (a brand, a catalog path) is held once.
#[derive(Default)]
struct Interner(HashSet<Arc<str>>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.0.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.0.insert(a.clone());
        a
    }
    fn pair(&mut self, s: &str) -> (Arc<str>, Arc<str>) {
        let f = fold(s);
        (self.get(s), self.get(&f))
    }
}

/// Rows of the table: one per item (a product's two vectors share a row).
pub(crate) type Row = u32;

/// Every item's attributes in memory, with an index per field: the items holding each (folded)
/// string value, and the items' numbers sorted. Built from the store's item records in one read
/// transaction and cached by the engine until the store changes.
pub(crate) struct AttributeTable {
    /// Field names; a field's number is its position.
    pub(crate) fields: Vec<String>,
    field_ix: HashMap<String, u16>,
    pub(crate) types: Vec<TypeCounts>,
    /// Item id of each row.
    pub(crate) item_ids: Vec<u64>,
    /// Row of each item id.
    row_of: jsearch_base::ids::IdMap<Row>,
    /// Each row's values, sorted by field number.
    values: Vec<Vec<(u16, Val)>>,
    /// field -> folded string (or list element, or "true"/"false") -> rows holding it (ascending).
    pub(crate) postings: Vec<HashMap<Arc<str>, Vec<Row>>>,
    /// field -> (number, row) sorted by number.
    pub(crate) numbers: Vec<Vec<(f64, Row)>>,
    /// field -> rows holding any value of it (ascending).
    pub(crate) present: Vec<Vec<Row>>,
}

impl AttributeTable {
    /// Reads every item's attributes from the store.
    pub(crate) fn load(store: &Store) -> Result<Self> {
        let mut t = AttributeTable {
            fields: Vec::new(),
            field_ix: HashMap::new(),
            types: Vec::new(),
            item_ids: Vec::new(),
            row_of: Default::default(),
            values: Vec::new(),
            postings: Vec::new(),
            numbers: Vec::new(),
            present: Vec::new(),
        };
        for f in BUILTIN_FIELDS {
            t.field(f);
        }
        let mut strings = Interner::default();
        store.for_each_meta(|id, bytes| {
            let key = item::item_id(id);
            if t.row_of.contains_key(&key) {
                return Ok(());
            }
            let meta = match ItemMeta::from_bytes(id, bytes) {
                Ok(m) => m,
                // An unreadable record has no attributes; the search reports it if it is a hit.
                Err(_) => return Ok(()),
            };
            let row = t.item_ids.len() as Row;
            t.item_ids.push(key);
            t.row_of.insert(key, row);
            let mut vals: Vec<(u16, Val)> = Vec::with_capacity(4 + meta.metadata.len());
            vals.push((
                0,
                Val::Str(
                    strings.get(meta.kind.as_str()),
                    strings.get(meta.kind.as_str()),
                ),
            ));
            let (p, pf) = strings.pair(&meta.path);
            vals.push((1, Val::Str(p, pf)));
            let (i, iff) = strings.pair(&meta.id);
            vals.push((2, Val::Str(i, iff)));
            if let Some(title) = &meta.title {
                let (a, b) = strings.pair(title);
                vals.push((3, Val::Str(a, b)));
            }
            for (k, v) in &meta.metadata {
                if BUILTIN_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let val = match v {
                    Value::Null => continue,
                    Value::String(s) => {
                        let (a, b) = strings.pair(s);
                        Val::Str(a, b)
                    }
                    Value::Number(n) => match n.as_f64() {
                        Some(x) => Val::Num(x),
                        None => Val::Other,
                    },
                    Value::Bool(b) => Val::Bool(*b),
                    Value::Array(a) if a.iter().all(|x| x.is_string()) => Val::List(
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .map(|s| strings.pair(s))
                            .collect(),
                    ),
                    _ => Val::Other,
                };
                let f = t.field(k);
                vals.push((f, val));
            }
            vals.sort_by_key(|(f, _)| *f);
            for (f, v) in &vals {
                let fi = *f as usize;
                t.types[fi].add(v.ty());
                t.present[fi].push(row);
                match v {
                    Val::Str(_, folded) => {
                        t.postings[fi].entry(folded.clone()).or_default().push(row)
                    }
                    Val::Bool(b) => t.postings[fi]
                        .entry(strings.get(if *b { "true" } else { "false" }))
                        .or_default()
                        .push(row),
                    Val::List(items) => {
                        let mut seen: Vec<&Arc<str>> = Vec::new();
                        for (_, folded) in items {
                            if !seen.contains(&folded) {
                                seen.push(folded);
                                t.postings[fi].entry(folded.clone()).or_default().push(row);
                            }
                        }
                    }
                    Val::Num(x) => t.numbers[fi].push((*x, row)),
                    Val::Other => {}
                }
            }
            t.values.push(vals);
            Ok(())
        })?;
        for n in &mut t.numbers {
            n.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        Ok(t)
    }

    fn field(&mut self, name: &str) -> u16 {
        if let Some(&f) = self.field_ix.get(name) {
            return f;
        }
        let f = self.fields.len() as u16;
        self.fields.push(name.to_string());
        self.field_ix.insert(name.to_string(), f);
        self.types.push(TypeCounts::default());
        self.postings.push(HashMap::new());
        self.numbers.push(Vec::new());
        self.present.push(Vec::new());
        f
    }

    /// The number of field `name`.
    pub(crate) fn field_of(&self, name: &str) -> Option<u16> {
        self.field_ix.get(name).copied()
    }

    /// Items in the table.
    pub(crate) fn len(&self) -> usize {
        self.item_ids.len()
    }

    /// The row of the item a vector id belongs to.
    pub(crate) fn row_of_vector(&self, id: u64) -> Option<Row> {
        self.row_of.get(&item::item_id(id)).copied()
    }

    /// The row of an item id.
    pub(crate) fn row_of_item(&self, item_id: u64) -> Option<Row> {
        self.row_of.get(&item_id).copied()
    }

    /// The value of field `f` in `row`.
    pub(crate) fn value(&self, row: Row, f: u16) -> Option<&Val> {
        let vals = &self.values[row as usize];
        vals.binary_search_by_key(&f, |(k, _)| *k)
            .ok()
            .map(|i| &vals[i].1)
    }

    /// The field names, built-ins first, then the others sorted (for messages).
    pub(crate) fn field_names(&self) -> Vec<&str> {
        let mut rest: Vec<&str> = self.fields[BUILTIN_FIELDS.len()..]
            .iter()
            .map(String::as_str)
            .collect();
        rest.sort_unstable();
        BUILTIN_FIELDS.iter().copied().chain(rest).collect()
    }
}

/// A field of the store's items (built in or from a catalog), as [`crate::Engine::fields`]
/// lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FieldInfo {
    /// The field's name, as filters and facets name it.
    pub name: String,
    /// The value types it holds, most frequent first (`string`, `number`, `bool`, `list`, `other`).
    pub types: Vec<&'static str>,
    /// Items holding a value of it.
    pub items: usize,
    /// Distinct values (string, bool and list fields, case and accents folded); `None` for a
    /// number field.
    pub distinct: Option<usize>,
}

impl AttributeTable {
    /// Every field with its types and counts, built-in fields first.
    pub(crate) fn field_infos(&self) -> Vec<FieldInfo> {
        self.field_names()
            .into_iter()
            .filter_map(|name| {
                let f = self.field_of(name)? as usize;
                let types: Vec<&'static str> =
                    self.types[f].types().iter().map(|t| t.as_str()).collect();
                let numeric = self.types[f].types().first() == Some(&AttrType::Number);
                Some(FieldInfo {
                    name: name.to_string(),
                    types,
                    items: self.present[f].len(),
                    distinct: (!numeric).then(|| self.postings[f].len()),
                })
            })
            .collect()
    }
}

/// A facet: the values of one field counted over the items that pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Facet {
    /// String, bool and list fields: each value (as first seen) with its count, most frequent
    /// first (ties by value).
    Values(Vec<(String, usize)>),
    /// Number fields: the range and how many items hold a number.
    Range {
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
        /// Items holding a number in this field.
        count: usize,
    },
}

/// Counts field `f` over `rows`.
pub(crate) fn facet(table: &AttributeTable, f: u16, rows: &[Row]) -> Facet {
    let numeric = table.types[f as usize].types().first() == Some(&AttrType::Number);
    if numeric {
        let (mut min, mut max, mut count) = (f64::INFINITY, f64::NEG_INFINITY, 0);
        for &r in rows {
            if let Some(Val::Num(x)) = table.value(r, f) {
                min = min.min(*x);
                max = max.max(*x);
                count += 1;
            }
        }
        if count == 0 {
            (min, max) = (0.0, 0.0);
        }
        return Facet::Range { min, max, count };
    }
    let mut counts: HashMap<Arc<str>, (usize, Arc<str>)> = HashMap::new();
    let mut bump = |folded: &Arc<str>, shown: &Arc<str>| {
        counts
            .entry(folded.clone())
            .or_insert_with(|| (0, shown.clone()))
            .0 += 1;
    };
    let (t, f_) = (Arc::<str>::from("true"), Arc::<str>::from("false"));
    for &r in rows {
        match table.value(r, f) {
            Some(Val::Str(shown, folded)) => bump(folded, shown),
            Some(Val::Bool(b)) => {
                let s = if *b { &t } else { &f_ };
                bump(s, s)
            }
            Some(Val::List(items)) => {
                let mut seen: Vec<&Arc<str>> = Vec::new();
                for (shown, folded) in items {
                    if !seen.contains(&folded) {
                        seen.push(folded);
                        bump(folded, shown);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<(String, usize)> = counts
        .into_values()
        .map(|(n, shown)| (shown.to_string(), n))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Facet::Values(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_typed_by_the_rule() {
        assert_eq!(type_csv_cell("12", None).unwrap(), Value::from(12));
        assert_eq!(type_csv_cell("12.5", None).unwrap(), Value::from(12.5));
        assert_eq!(type_csv_cell("-3e2", None).unwrap(), Value::from(-300.0));
        assert_eq!(type_csv_cell("TRUE", None).unwrap(), Value::Bool(true));
        assert_eq!(type_csv_cell("007", None).unwrap(), Value::from("007"));
        assert_eq!(type_csv_cell("SKU-1", None).unwrap(), Value::from("SKU-1"));
        assert_eq!(type_csv_cell("1.", None).unwrap(), Value::from("1."));
        assert_eq!(
            type_csv_cell("12", Some(AttrType::String)).unwrap(),
            Value::from("12")
        );
        assert_eq!(
            type_csv_cell("a| b |", Some(AttrType::List)).unwrap(),
            serde_json::json!(["a", "b"])
        );
        assert!(type_csv_cell("cheap", Some(AttrType::Number)).is_err());
        assert_eq!(
            split_header("price:number"),
            ("price", Some(AttrType::Number))
        );
        assert_eq!(split_header("a:b"), ("a:b", None));
    }
}
