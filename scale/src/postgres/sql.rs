//! The SQL jsearch runs on PostgreSQL + pgvector, in one place: the table's definition, the
//! two-stage query, and jsearch's filter grammar translated into a `WHERE` over the table's
//! `filter_attrs` column (the item's fields with strings folded, [`jsearch::attrs::filter_view`]),
//! with the same meaning as in a local store: strings compared without case and accents, a list
//! matching when any element does, a value of another type never matching, `a != v` keeping
//! items without `a`. Every value and field name is a bound parameter, never spliced into the text.

use jsearch::{attrs, CmpOp, Filter, Literal};

/// A bound parameter of a translated filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// `text`
    Text(String),
    /// `float8`
    Num(f64),
    /// `bool`
    Bool(bool),
    /// `text[]`
    TextArray(Vec<String>),
}

impl Param {
    /// The parameter as `postgres` binds it.
    pub(crate) fn as_sql(&self) -> &(dyn postgres::types::ToSql + Sync) {
        match self {
            Param::Text(s) => s,
            Param::Num(x) => x,
            Param::Bool(b) => b,
            Param::TextArray(v) => v,
        }
    }

    /// The parameter as an SQL literal (for printed queries only).
    pub fn literal(&self) -> String {
        fn text(s: &str) -> String {
            format!("'{}'", s.replace('\'', "''"))
        }
        match self {
            Param::Text(s) => text(s),
            Param::Num(x) => format!("{x}"),
            Param::Bool(b) => b.to_string(),
            Param::TextArray(v) => format!(
                "ARRAY[{}]::text[]",
                v.iter().map(|s| text(s)).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// A `WHERE` condition and its parameters, numbered from the `first` given to [`Where::new`].
#[derive(Debug, Clone, Default)]
pub struct Where {
    /// The conditions, joined with `AND` by [`Where::sql`].
    parts: Vec<String>,
    /// The parameters, in order.
    pub params: Vec<Param>,
    first: usize,
}

impl Where {
    /// An empty condition whose first parameter will be `$first`.
    pub fn new(first: usize) -> Self {
        Where {
            parts: Vec::new(),
            params: Vec::new(),
            first,
        }
    }

    fn bind(&mut self, p: Param) -> String {
        self.params.push(p);
        format!("${}", self.first + self.params.len() - 1)
    }

    fn key(&mut self, field: &str) -> String {
        format!("{}::text", self.bind(Param::Text(field.to_string())))
    }

    /// Adds `kind IN (kinds)`.
    pub fn kinds(&mut self, kinds: &[jsearch::Kind]) {
        if !kinds.is_empty() {
            let p = self.bind(Param::TextArray(
                kinds.iter().map(|k| k.as_str().to_string()).collect(),
            ));
            self.parts.push(format!("kind = ANY({p})"));
        }
    }

    /// Adds a jsearch filter.
    pub fn filter(&mut self, f: &Filter) {
        let s = self.node(f);
        self.parts.push(s);
    }

    /// The condition (`true` when empty).
    pub fn sql(&self) -> String {
        if self.parts.is_empty() {
            "true".into()
        } else {
            self.parts.join(" AND ")
        }
    }

    /// The condition with its parameters written in as literals (to print, not to run).
    pub fn inlined(&self) -> String {
        let mut s = self.sql();
        // Highest number first, so that `$1` does not eat the start of `$12`.
        for (i, p) in self.params.iter().enumerate().rev() {
            s = s.replace(&format!("${}", self.first + i), &p.literal());
        }
        s
    }

    fn node(&mut self, f: &Filter) -> String {
        match f {
            Filter::Cmp {
                field, op, value, ..
            } => self.cmp(field, *op, value),
            Filter::In { field, values, .. } => {
                let parts: Vec<String> = values
                    .iter()
                    .map(|(v, _)| self.cmp(field, CmpOp::Eq, v))
                    .collect();
                if parts.is_empty() {
                    "false".into()
                } else {
                    format!("({})", parts.join(" OR "))
                }
            }
            Filter::Exists { field, .. } => {
                let k = self.key(field);
                format!("(filter_attrs ? {k})")
            }
            Filter::Near { lat, lon, km } => {
                let (la, lo, r) = (
                    self.bind(Param::Num(*lat)),
                    self.bind(Param::Num(*lon)),
                    self.bind(Param::Num(*km)),
                );
                let y = "(filter_attrs->>'lat')::float8";
                let x = "(filter_attrs->>'lon')::float8";
                format!(
                    "COALESCE(CASE WHEN jsonb_typeof(filter_attrs->'lat') = 'number' AND \
                     jsonb_typeof(filter_attrs->'lon') = 'number' THEN 2 * 6371.0088 * \
                     asin(least(1, sqrt(power(sin(radians({y} - {la}::float8) / 2), 2) + \
                     cos(radians({la}::float8)) * cos(radians({y})) * \
                     power(sin(radians({x} - {lo}::float8) / 2), 2)))) <= {r}::float8 END, false)"
                )
            }
            Filter::Not(inner) => format!("(NOT {})", self.node(inner)),
            Filter::And(v) | Filter::Or(v) => {
                let join = if matches!(f, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = v.iter().map(|x| self.node(x)).collect();
                if parts.is_empty() {
                    (if join == " AND " { "true" } else { "false" }).into()
                } else {
                    format!("({})", parts.join(join))
                }
            }
        }
    }

    /// One comparison; never NULL (an item without the field, or with another type, is `false`).
    fn cmp(&mut self, field: &str, op: CmpOp, value: &Literal) -> String {
        match op {
            CmpOp::Eq => self.eq(field, value),
            CmpOp::Ne => format!("(NOT {})", self.eq(field, value)),
            CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge => {
                let o = match op {
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    _ => ">=",
                };
                match value {
                    Literal::Num(x) => {
                        let k = self.key(field);
                        let v = self.bind(Param::Num(*x));
                        format!(
                            "COALESCE(CASE WHEN jsonb_typeof(filter_attrs->{k}) = 'number' \
                             THEN (filter_attrs->>{k})::float8 {o} {v}::float8 END, false)"
                        )
                    }
                    Literal::Str(s) => {
                        let k = self.key(field);
                        let v = self.bind(Param::Text(attrs::fold(s)));
                        format!(
                            "COALESCE(CASE jsonb_typeof(filter_attrs->{k}) \
                             WHEN 'string' THEN (filter_attrs->>{k}) COLLATE \"C\" {o} {v}::text \
                             WHEN 'array' THEN EXISTS (SELECT 1 FROM \
                             jsonb_array_elements(filter_attrs->{k}) e WHERE \
                             jsonb_typeof(e) = 'string' AND (e #>> '{{}}') COLLATE \"C\" {o} {v}::text) \
                             END, false)"
                        )
                    }
                    // Booleans have no order: never true (the local store refuses it as a type
                    // mismatch when it knows the field).
                    Literal::Bool(_) => "false".into(),
                }
            }
        }
    }

    /// `field = value`: jsonb containment, which also finds a string inside a list.
    fn eq(&mut self, field: &str, value: &Literal) -> String {
        let k = self.key(field);
        match value {
            Literal::Str(s) => {
                let v = self.bind(Param::Text(attrs::fold(s)));
                format!(
                    "(filter_attrs @> jsonb_build_object({k}, {v}::text) OR \
                     filter_attrs @> jsonb_build_object({k}, jsonb_build_array({v}::text)))"
                )
            }
            Literal::Num(x) => {
                let v = self.bind(Param::Num(*x));
                format!("(filter_attrs @> jsonb_build_object({k}, {v}::float8))")
            }
            Literal::Bool(b) => {
                let v = self.bind(Param::Bool(*b));
                format!("(filter_attrs @> jsonb_build_object({k}, {v}::bool))")
            }
        }
    }
}

/// A table name as SQL writes it (validated by [`check_table_name`], so quoting is enough).
pub(crate) fn ident(name: &str) -> String {
    format!("\"{name}\"")
}

/// Table names jsearch creates: lower-case ASCII letters, digits and `_`, not starting with a
/// digit, at most 48 bytes (its indexes' names add a suffix within PostgreSQL's 63).
pub fn check_table_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid table name {name:?}: use lower-case letters, digits and _ (at most 48, not starting with a digit)"
        ))
    }
}

/// The sync bookkeeping table: one row per synced table.
pub(crate) const SYNC_TABLE: &str = "jsearch_sync";

pub(crate) fn create_sync_table() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {SYNC_TABLE} (
    table_name  text PRIMARY KEY,
    format      integer NOT NULL,
    model       text NOT NULL,
    fingerprint text NOT NULL,
    dim         integer NOT NULL,
    head_dim    integer NOT NULL,
    store       text NOT NULL,
    rows        bigint NOT NULL,
    synced_at   timestamptz NOT NULL DEFAULT now()
)"
    )
}

/// The items table: one row per vector.
pub(crate) fn create_items_table(table: &str, dim: usize, head_dim: usize) -> String {
    format!(
        "CREATE TABLE {t} (
    key          bigint PRIMARY KEY,
    item_key     bigint NOT NULL,
    id           text NOT NULL,
    kind         text NOT NULL,
    modality     text NOT NULL,
    path         text NOT NULL,
    title        text,
    attrs        jsonb NOT NULL,
    filter_attrs jsonb NOT NULL,
    head         halfvec({head_dim}) NOT NULL,
    vector       halfvec({dim}) NOT NULL,
    digest       bytea NOT NULL
)",
        t = ident(table)
    )
}

/// The indexes, built after the first load (an HNSW build over loaded rows is several times
/// faster than row-by-row inserts into it).
pub(crate) fn create_indexes(table: &str) -> [String; 2] {
    let t = ident(table);
    [
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} USING hnsw (head halfvec_cosine_ops)",
            ident(&format!("{table}_head_hnsw"))
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} USING gin (filter_attrs jsonb_path_ops)",
            ident(&format!("{table}_filter_gin"))
        ),
    ]
}

/// The columns of the items table with their types as `format_type` spells them.
pub(crate) fn expected_columns(dim: usize, head_dim: usize) -> Vec<(&'static str, String)> {
    vec![
        ("key", "bigint".into()),
        ("item_key", "bigint".into()),
        ("id", "text".into()),
        ("kind", "text".into()),
        ("modality", "text".into()),
        ("path", "text".into()),
        ("title", "text".into()),
        ("attrs", "jsonb".into()),
        ("filter_attrs", "jsonb".into()),
        ("head", format!("halfvec({head_dim})")),
        ("vector", format!("halfvec({dim})")),
        ("digest", "bytea".into()),
    ]
}

/// The two-stage query: the HNSW index on the 256-d heads finds `$3` candidates that pass the
/// filter, the full vectors re-rank them, `$4` rows come back. `$1` is the query's head, `$2`
/// the whole query vector (both `halfvec`); the filter's parameters follow from `$5`. Run with
/// `hnsw.ef_search` at least `$3` and `hnsw.iterative_scan = relaxed_order` (pgvector 0.8), so
/// that a selective filter keeps scanning the graph until `$3` rows pass it instead of
/// returning fewer.
pub fn two_stage_query(table: &str, condition: &str) -> String {
    format!(
        "WITH candidates AS MATERIALIZED (
    SELECT key, item_key, id, kind, modality, path, title, attrs, vector
    FROM {t}
    WHERE {condition}
    ORDER BY head <=> $1::halfvec
    LIMIT $3
)
SELECT key, item_key, id, kind, modality, path, title, attrs,
       (1 - (vector <=> $2::halfvec))::float4 AS cosine
FROM candidates
ORDER BY vector <=> $2::halfvec
LIMIT $4",
        t = ident(table)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_bind_every_value_and_fold_strings() {
        let f =
            Filter::parse(r#"price < 20 AND brand = "Lúmo" AND NOT tags IN ("a'b", "c")"#).unwrap();
        let mut w = Where::new(5);
        w.filter(&f);
        let sql = w.sql();
        assert!(!sql.contains("Lúmo") && !sql.contains("a'b"), "{sql}");
        assert!(sql.contains("$5") && sql.contains("$11"), "{sql}");
        assert!(
            w.params.contains(&Param::Text("lumo".into())),
            "{:?}",
            w.params
        );
        assert!(w.params.contains(&Param::Num(20.0)));
        let printed = w.inlined();
        assert!(
            printed.contains("'a''b'") && !printed.contains('$'),
            "{printed}"
        );
    }

    #[test]
    fn table_names_are_checked() {
        assert!(check_table_name("jsearch_items").is_ok());
        for bad in [
            "",
            "Items",
            "1x",
            "a-b",
            "x\"; drop table y; --",
            &"a".repeat(49),
        ] {
            assert!(check_table_name(bad).is_err(), "{bad}");
        }
    }
}
