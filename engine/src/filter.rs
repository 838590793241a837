//! Filter expressions: one grammar for the CLI (`--where`), the library ([`Filter`]) and the HTTP
//! API.
//!
//! ```text
//! expr    := and ( OR and )*
//! and     := not ( AND not )*
//! not     := NOT not | primary
//! primary := "(" expr ")"
//!          | field ( "=" | "!=" | "<" | "<=" | ">" | ">=" ) value
//!          | field [NOT] IN "(" value ( "," value )* ")"
//!          | field EXISTS
//! field   := [A-Za-z_][A-Za-z0-9_.-]*  |  `any name in backticks`
//! value   := "string" (\" and \\ escape) | number | true | false
//! ```
//!
//! Keywords are case-insensitive; `AND` binds tighter than `OR`, `NOT` tighter than both.
//! Semantics: string comparisons ignore case and accents (`"Cafe" = "café"`); a list field
//! matches when any element does; `<`, `>` compare numbers numerically and strings in (folded)
//! code-point order; `a != v` is `NOT a = v`, so it also keeps items without `a`. An item whose
//! value has another type than the literal (a field that is a number in most records and a
//! string in some) does not match the comparison. A filter naming a field no item has, or
//! comparing a field with a literal of a type it never holds (`price < "cheap"`), is an error
//! that points at its column.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::attrs::{AttrType, AttributeTable, Row, Val};
use crate::error::{Error, Result};
use crate::keyword::fold;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A literal value in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `"text"`
    Str(String),
    /// `12`, `-3.5`
    Num(f64),
    /// `true` / `false`
    Bool(bool),
}

impl Literal {
    fn ty(&self) -> AttrType {
        match self {
            Literal::Str(_) => AttrType::String,
            Literal::Num(_) => AttrType::Number,
            Literal::Bool(_) => AttrType::Bool,
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "{s:?}"),
            Literal::Num(x) => write!(f, "{x}"),
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl From<&str> for Literal {
    fn from(s: &str) -> Self {
        Literal::Str(s.to_string())
    }
}
impl From<String> for Literal {
    fn from(s: String) -> Self {
        Literal::Str(s)
    }
}
impl From<f64> for Literal {
    fn from(x: f64) -> Self {
        Literal::Num(x)
    }
}
impl From<i64> for Literal {
    fn from(x: i64) -> Self {
        Literal::Num(x as f64)
    }
}
impl From<bool> for Literal {
    fn from(b: bool) -> Self {
        Literal::Bool(b)
    }
}

/// A filter expression, parsed ([`Filter::parse`]) or built (`Filter::cmp("price", CmpOp::Lt,
/// 20.0).and(Filter::eq("in_stock", true))`). `col` fields are 1-based character columns in the
/// parsed text (0 for built expressions), used in error messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `field op value`
    Cmp {
        /// The field.
        field: String,
        /// The operator.
        op: CmpOp,
        /// The value.
        value: Literal,
        /// Column of the field.
        col: usize,
        /// Column of the value.
        value_col: usize,
    },
    /// `field IN (values)`
    In {
        /// The field.
        field: String,
        /// The values, each with its column.
        values: Vec<(Literal, usize)>,
        /// Column of the field.
        col: usize,
    },
    /// `field EXISTS`
    Exists {
        /// The field.
        field: String,
        /// Column of the field.
        col: usize,
    },
    /// Items whose `lat`/`lon` attributes (decimal degrees, [`crate::photo`]) lie within `km`
    /// kilometres of a point (great-circle distance). Built, not parsed (the CLI's `--near`).
    Near {
        /// Latitude of the point.
        lat: f64,
        /// Longitude of the point.
        lon: f64,
        /// Radius in kilometres.
        km: f64,
    },
    /// `NOT f`
    Not(Box<Filter>),
    /// `a AND b AND …`
    And(Vec<Filter>),
    /// `a OR b OR …`
    Or(Vec<Filter>),
}

impl Filter {
    /// Parses the grammar of the module docs.
    pub fn parse(text: &str) -> Result<Filter> {
        let tokens = lex(text)?;
        let mut p = Parser {
            text,
            tokens,
            pos: 0,
        };
        let f = p.or()?;
        if let Some(t) = p.peek() {
            return Err(p.err(
                t.col,
                format!("unexpected {} after the end of the filter", t.kind),
            ));
        }
        Ok(f)
    }
    /// `field op value`.
    pub fn cmp(field: impl Into<String>, op: CmpOp, value: impl Into<Literal>) -> Filter {
        Filter::Cmp {
            field: field.into(),
            op,
            value: value.into(),
            col: 0,
            value_col: 0,
        }
    }
    /// `field = value`.
    pub fn eq(field: impl Into<String>, value: impl Into<Literal>) -> Filter {
        Filter::cmp(field, CmpOp::Eq, value)
    }
    /// `field IN (values)`.
    pub fn is_in<L: Into<Literal>>(
        field: impl Into<String>,
        values: impl IntoIterator<Item = L>,
    ) -> Filter {
        Filter::In {
            field: field.into(),
            values: values.into_iter().map(|v| (v.into(), 0)).collect(),
            col: 0,
        }
    }
    /// `field EXISTS`.
    pub fn exists(field: impl Into<String>) -> Filter {
        Filter::Exists {
            field: field.into(),
            col: 0,
        }
    }
    /// Within `km` kilometres of (`lat`, `lon`), by the items' `lat` and `lon` attributes.
    pub fn near(lat: f64, lon: f64, km: f64) -> Filter {
        Filter::Near { lat, lon, km }
    }
    /// `self AND other`.
    pub fn and(self, other: Filter) -> Filter {
        match self {
            Filter::And(mut v) => {
                v.push(other);
                Filter::And(v)
            }
            f => Filter::And(vec![f, other]),
        }
    }
    /// `self OR other`.
    pub fn or(self, other: Filter) -> Filter {
        match self {
            Filter::Or(mut v) => {
                v.push(other);
                Filter::Or(v)
            }
            f => Filter::Or(vec![f, other]),
        }
    }
    /// `NOT self`.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Filter {
        Filter::Not(Box::new(self))
    }
}

impl FromStr for Filter {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Filter::parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = |name: &str| {
            if is_plain_field(name) {
                name.to_string()
            } else {
                format!("`{name}`")
            }
        };
        match self {
            Filter::Cmp {
                field: n,
                op,
                value,
                ..
            } => write!(f, "{} {} {value}", field(n), op.as_str()),
            Filter::In {
                field: n, values, ..
            } => {
                let vs: Vec<String> = values.iter().map(|(v, _)| v.to_string()).collect();
                write!(f, "{} IN ({})", field(n), vs.join(", "))
            }
            Filter::Exists { field: n, .. } => write!(f, "{} EXISTS", field(n)),
            Filter::Near { lat, lon, km } => write!(f, "near({lat}, {lon}, {km} km)"),
            Filter::Not(x) => write!(f, "NOT ({x})"),
            Filter::And(v) | Filter::Or(v) => {
                let sep = if matches!(self, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = v.iter().map(|x| format!("({x})")).collect();
                f.write_str(&parts.join(sep))
            }
        }
    }
}

fn is_plain_field(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|ch| ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-'))
        && !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(s))
}

const KEYWORDS: [&str; 7] = ["AND", "OR", "NOT", "IN", "EXISTS", "TRUE", "FALSE"];

// ---------------------------------------------------------------------------------------------
// Lexer and parser

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(CmpOp),
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Not,
    In,
    Exists,
    True,
    False,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "field name {s:?}"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Num(x) => write!(f, "number {x}"),
            Tok::Op(o) => write!(f, "'{}'", o.as_str()),
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::Comma => f.write_str("','"),
            Tok::And => f.write_str("AND"),
            Tok::Or => f.write_str("OR"),
            Tok::Not => f.write_str("NOT"),
            Tok::In => f.write_str("IN"),
            Tok::Exists => f.write_str("EXISTS"),
            Tok::True => f.write_str("true"),
            Tok::False => f.write_str("false"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    /// 1-based character column.
    col: usize,
}

fn filter_err(text: &str, column: usize, message: String) -> Error {
    Error::Filter {
        expr: text.to_string(),
        column,
        message,
    }
}

fn lex(text: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            ',' => Some(Tok::Comma),
            '=' => Some(Tok::Op(CmpOp::Eq)),
            _ => None,
        };
        if let Some(t) = single {
            // `==` is accepted as `=`.
            i += if c == '=' && chars.get(i + 1) == Some(&'=') {
                2
            } else {
                1
            };
            out.push(Token { kind: t, col });
            continue;
        }
        match c {
            '!' | '<' | '>' => {
                let eq = chars.get(i + 1) == Some(&'=');
                let op = match (c, eq) {
                    ('!', true) => CmpOp::Ne,
                    ('<', false) => CmpOp::Lt,
                    ('<', true) => CmpOp::Le,
                    ('>', false) => CmpOp::Gt,
                    ('>', true) => CmpOp::Ge,
                    _ => {
                        return Err(filter_err(
                            text,
                            col,
                            "'!' must be followed by '=' (use NOT for negation)".into(),
                        ))
                    }
                };
                i += 1 + usize::from(eq);
                out.push(Token {
                    kind: Tok::Op(op),
                    col,
                });
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(filter_err(
                                text,
                                col,
                                "string is not closed (missing quote)".into(),
                            ))
                        }
                        Some('\\') => {
                            match chars.get(i + 1) {
                                Some(&e) if e == quote || e == '\\' => s.push(e),
                                Some(&e) => {
                                    s.push('\\');
                                    s.push(e);
                                }
                                None => {}
                            }
                            i += 2;
                        }
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token {
                    kind: Tok::Str(s),
                    col,
                });
            }
            '`' => {
                let start = i + 1;
                let Some(len) = chars[start..].iter().position(|&ch| ch == '`') else {
                    return Err(filter_err(
                        text,
                        col,
                        "field name is not closed (missing backtick)".into(),
                    ));
                };
                let name: String = chars[start..start + len].iter().collect();
                i = start + len + 1;
                out.push(Token {
                    kind: Tok::Ident(name),
                    col,
                });
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '.' | '+' | '-'))
                {
                    // An exponent sign only right after 'e'; otherwise '+'/'-' end the number.
                    if matches!(chars[i], '+' | '-') && !matches!(chars[i - 1], 'e' | 'E') {
                        break;
                    }
                    i += 1;
                }
                let s: String = chars[start..i].iter().collect();
                match s.parse::<f64>() {
                    Ok(x) if x.is_finite() => out.push(Token {
                        kind: Tok::Num(x),
                        col,
                    }),
                    _ => {
                        return Err(filter_err(
                            text,
                            col,
                            format!("{s:?} is not a number (strings go in double quotes)"),
                        ))
                    }
                }
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-'))
                {
                    i += 1;
                }
                let w: String = chars[start..i].iter().collect();
                let kind = match w.to_ascii_uppercase().as_str() {
                    "AND" => Tok::And,
                    "OR" => Tok::Or,
                    "NOT" => Tok::Not,
                    "IN" => Tok::In,
                    "EXISTS" => Tok::Exists,
                    "TRUE" => Tok::True,
                    "FALSE" => Tok::False,
                    _ => Tok::Ident(w),
                };
                out.push(Token { kind, col });
            }
            other => {
                return Err(filter_err(
                    text,
                    col,
                    format!("unexpected character {other:?}"),
                ))
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }
    fn end_col(&self) -> usize {
        self.text.chars().count() + 1
    }
    fn err(&self, col: usize, message: String) -> Error {
        filter_err(self.text, col, message)
    }
    fn next(&mut self, want: &str) -> Result<Token> {
        match self.tokens.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t.clone())
            }
            None => Err(self.err(
                self.end_col(),
                format!("the filter ends where {want} was expected"),
            )),
        }
    }
    fn eat(&mut self, k: &Tok) -> bool {
        if self.peek().is_some_and(|t| &t.kind == k) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Filter> {
        self.chain(Tok::Or, Self::and, Filter::Or)
    }

    fn and(&mut self) -> Result<Filter> {
        self.chain(Tok::And, Self::not, Filter::And)
    }

    /// `part (sep part)*`: the part alone, or `join` of all of them.
    fn chain(
        &mut self,
        sep: Tok,
        part: fn(&mut Self) -> Result<Filter>,
        join: fn(Vec<Filter>) -> Filter,
    ) -> Result<Filter> {
        let mut parts = vec![part(self)?];
        while self.eat(&sep) {
            parts.push(part(self)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            join(parts)
        })
    }

    fn not(&mut self) -> Result<Filter> {
        if self.eat(&Tok::Not) {
            return Ok(Filter::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn value(&mut self) -> Result<(Literal, usize)> {
        let t = self.next("a value")?;
        let v = match t.kind {
            Tok::Str(s) => Literal::Str(s),
            Tok::Num(x) => Literal::Num(x),
            Tok::True => Literal::Bool(true),
            Tok::False => Literal::Bool(false),
            Tok::Ident(w) => {
                return Err(self.err(
                    t.col,
                    format!("expected a value, found {w:?}: strings go in double quotes (\"{w}\")"),
                ))
            }
            other => return Err(self.err(t.col, format!("expected a value, found {other}"))),
        };
        Ok((v, t.col))
    }

    fn primary(&mut self) -> Result<Filter> {
        let t = self.next("a field name or '('")?;
        let (field, col) = match t.kind {
            Tok::LParen => {
                let inner = self.or()?;
                let close = self.next("')'")?;
                if close.kind != Tok::RParen {
                    return Err(self.err(close.col, format!("expected ')', found {}", close.kind)));
                }
                return Ok(inner);
            }
            Tok::Ident(name) => (name, t.col),
            other => {
                return Err(self.err(
                    t.col,
                    format!("expected a field name or '(', found {other}"),
                ))
            }
        };
        let t = self.next("an operator (=, !=, <, <=, >, >=, IN, EXISTS)")?;
        match t.kind {
            Tok::Op(op) => {
                let (value, value_col) = self.value()?;
                Ok(Filter::Cmp {
                    field,
                    op,
                    value,
                    col,
                    value_col,
                })
            }
            Tok::Exists => Ok(Filter::Exists { field, col }),
            Tok::In => self.in_list(field, col),
            Tok::Not => {
                let t2 = self.next("IN")?;
                if t2.kind != Tok::In {
                    return Err(
                        self.err(t2.col, format!("expected IN after NOT, found {}", t2.kind))
                    );
                }
                Ok(Filter::Not(Box::new(self.in_list(field, col)?)))
            }
            other => Err(self.err(
                t.col,
                format!("expected an operator (=, !=, <, <=, >, >=, IN, EXISTS), found {other}"),
            )),
        }
    }

    fn in_list(&mut self, field: String, col: usize) -> Result<Filter> {
        let open = self.next("'('")?;
        if open.kind != Tok::LParen {
            return Err(self.err(
                open.col,
                format!("expected '(' after IN, found {}", open.kind),
            ));
        }
        let mut values = vec![self.value()?];
        loop {
            let t = self.next("',' or ')'")?;
            match t.kind {
                Tok::Comma => values.push(self.value()?),
                Tok::RParen => break,
                other => return Err(self.err(t.col, format!("expected ',' or ')', found {other}"))),
            }
        }
        Ok(Filter::In { field, values, col })
    }
}

// ---------------------------------------------------------------------------------------------
// Compiled against a store's attributes

/// A literal prepared for comparisons: strings folded.
#[derive(Debug, Clone)]
enum Lit {
    Str(Arc<str>),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone)]
enum Node {
    Cmp(u16, CmpOp, Lit),
    In(u16, Vec<Lit>),
    Exists(u16),
    /// Latitude field, longitude field, the point, the radius in km.
    Near(u16, u16, f64, f64, f64),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    /// A field no item holds (only when the store is empty): nothing matches.
    Never,
}

/// A filter checked against a store's attributes: field names resolved, literals typed.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    node: Node,
}

fn nearest<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_lowercase();
    names
        .iter()
        .map(|n| (edit_distance(&lower, &n.to_lowercase()), *n))
        .filter(|(d, n)| *d <= (n.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Compiled {
    /// Resolves `f`'s fields in `table` and checks its literals' types. `text` is the filter as
    /// the user wrote it (for error messages; empty for built filters).
    pub(crate) fn new(f: &Filter, table: &AttributeTable, text: &str) -> Result<Compiled> {
        let expr = if text.is_empty() {
            f.to_string()
        } else {
            text.to_string()
        };
        Ok(Compiled {
            node: compile(f, table, &expr)?,
        })
    }

    /// Whether the item in `row` passes.
    pub(crate) fn matches(&self, table: &AttributeTable, row: Row) -> bool {
        eval(&self.node, table, row)
    }

    /// Rows that may pass, from the attribute index, when the index can narrow the filter down
    /// to at most `max` rows (sorted, deduplicated), and whether they are exactly the passing
    /// rows (else each is still to be checked with [`Self::matches`]). `None` when it cannot, or
    /// would give more.
    /// Every passing row (unordered, possibly repeated), when the attribute index yields them
    /// exactly (see [`gathers_exactly`]): a number range is a slice of the sorted numbers.
    pub(crate) fn exact_rows(&self, table: &AttributeTable) -> Option<Vec<Row>> {
        if gathers_exactly(&self.node) {
            gather(&self.node, table)
        } else {
            None
        }
    }

    pub(crate) fn candidates(
        &self,
        table: &AttributeTable,
        max: usize,
    ) -> Option<(Vec<Row>, bool)> {
        let est = estimate(&self.node, table)?;
        if est > max {
            return None;
        }
        let mut rows = gather(&self.node, table)?;
        rows.sort_unstable();
        rows.dedup();
        Some((rows, gathers_exactly(&self.node)))
    }
}

fn compile(f: &Filter, table: &AttributeTable, expr: &str) -> Result<Node> {
    let field = |name: &str, col: usize| -> Result<Option<u16>> {
        match table.field_of(name) {
            Some(fi) if table.len() == 0 || !table.types[fi as usize].types().is_empty() => {
                Ok(Some(fi))
            }
            _ if table.len() == 0 => Ok(None),
            _ => {
                let names = table.field_names();
                let hint = match nearest(name, &names) {
                    Some(n) => format!("; did you mean {n:?}?"),
                    None => String::new(),
                };
                Err(filter_err(
                    expr,
                    col,
                    format!(
                        "unknown field {name:?}{hint} (the store's fields: {})",
                        names.join(", ")
                    ),
                ))
            }
        }
    };
    let lit = |name: &str, fi: u16, op: Option<CmpOp>, v: &Literal, col: usize| -> Result<Lit> {
        let types = &table.types[fi as usize];
        let present = types.types();
        let lt = v.ty();
        let ok = types.has(lt) || (lt == AttrType::String && types.has(AttrType::List));
        let ordered = matches!(op, Some(CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge));
        let holds = present
            .iter()
            .map(|t| match t {
                AttrType::String => "strings",
                AttrType::Number => "numbers",
                AttrType::Bool => "booleans",
                AttrType::List => "lists of strings",
                AttrType::Other => "JSON objects or mixed arrays",
            })
            .collect::<Vec<_>>()
            .join(" and ");
        if !present.is_empty() && present.iter().all(|t| *t == AttrType::Other) {
            return Err(filter_err(
                expr,
                col,
                format!("field {name:?} holds {holds}: a filter can only ask `{name} EXISTS`"),
            ));
        }
        if !ok && table.len() > 0 {
            return Err(filter_err(
                expr,
                col,
                format!(
                    "type mismatch: field {name:?} holds {holds}, but {v} is a {}",
                    match lt {
                        AttrType::String => "string",
                        AttrType::Number => "number",
                        _ => "boolean",
                    }
                ),
            ));
        }
        if ordered && lt == AttrType::Bool {
            return Err(filter_err(
                expr,
                col,
                format!(
                    "{} compares numbers or strings, not booleans",
                    op.map_or("", CmpOp::as_str)
                ),
            ));
        }
        Ok(match v {
            Literal::Str(s) => Lit::Str(Arc::from(fold(s).as_str())),
            Literal::Num(x) => Lit::Num(*x),
            Literal::Bool(b) => Lit::Bool(*b),
        })
    };
    Ok(match f {
        Filter::Cmp {
            field: name,
            op,
            value,
            col,
            value_col,
        } => match field(name, *col)? {
            None => Node::Never,
            Some(fi) => {
                let l = lit(name, fi, Some(*op), value, *value_col)?;
                match op {
                    CmpOp::Ne => Node::Not(Box::new(Node::Cmp(fi, CmpOp::Eq, l))),
                    _ => Node::Cmp(fi, *op, l),
                }
            }
        },
        Filter::In {
            field: name,
            values,
            col,
        } => match field(name, *col)? {
            None => Node::Never,
            Some(fi) => Node::In(
                fi,
                values
                    .iter()
                    .map(|(v, c)| lit(name, fi, None, v, *c))
                    .collect::<Result<_>>()?,
            ),
        },
        Filter::Exists { field: name, col } => match field(name, *col)? {
            None => Node::Never,
            Some(fi) => Node::Exists(fi),
        },
        Filter::Near { lat, lon, km } => {
            let ok = lat.is_finite()
                && lon.is_finite()
                && km.is_finite()
                && lat.abs() <= 90.0
                && lon.abs() <= 180.0
                && *km >= 0.0;
            if !ok {
                return Err(Error::InvalidArgument(format!(
                    "near {lat},{lon},{km}: latitude -90..90, longitude -180..180, radius >= 0 km"
                )));
            }
            match (table.field_of("lat"), table.field_of("lon")) {
                (Some(a), Some(b)) => Node::Near(a, b, *lat, *lon, *km),
                _ => Node::Never,
            }
        }
        Filter::Not(x) => Node::Not(Box::new(compile(x, table, expr)?)),
        Filter::And(v) => Node::And(
            v.iter()
                .map(|x| compile(x, table, expr))
                .collect::<Result<_>>()?,
        ),
        Filter::Or(v) => Node::Or(
            v.iter()
                .map(|x| compile(x, table, expr))
                .collect::<Result<_>>()?,
        ),
    })
}

fn cmp<T: PartialOrd + ?Sized>(op: CmpOp, a: &T, b: &T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}

fn test(v: &Val, op: CmpOp, l: &Lit) -> bool {
    match (v, l) {
        (Val::Str(_, f), Lit::Str(s)) => cmp(op, &**f, &**s),
        (Val::List(items), Lit::Str(s)) => items.iter().any(|(_, f)| cmp(op, &**f, &**s)),
        (Val::Num(x), Lit::Num(y)) => cmp(op, x, y),
        (Val::Bool(a), Lit::Bool(b)) => match op {
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
            _ => false,
        },
        _ => false,
    }
}

fn eval(n: &Node, t: &AttributeTable, row: Row) -> bool {
    match n {
        Node::Cmp(f, op, l) => t.value(row, *f).is_some_and(|v| test(v, *op, l)),
        Node::In(f, ls) => t
            .value(row, *f)
            .is_some_and(|v| ls.iter().any(|l| test(v, CmpOp::Eq, l))),
        Node::Exists(f) => t.value(row, *f).is_some(),
        Node::Near(a, b, lat, lon, km) => match (t.value(row, *a), t.value(row, *b)) {
            (Some(Val::Num(y)), Some(Val::Num(x))) => km_between(*lat, *lon, *y, *x) <= *km,
            _ => false,
        },
        Node::Not(x) => !eval(x, t, row),
        Node::And(v) => v.iter().all(|x| eval(x, t, row)),
        Node::Or(v) => v.iter().any(|x| eval(x, t, row)),
        Node::Never => false,
    }
}

/// Great-circle distance in km (haversine, mean Earth radius 6371.0088 km).
pub(crate) fn km_between(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * h.sqrt().min(1.0).asin()
}

/// The rows whose latitude lies in the band a radius of `km` around `lat` can reach.
fn latitude_band(t: &AttributeTable, f: u16, lat: f64, km: f64) -> Vec<Row> {
    let d = km / 111.0 + 1e-9;
    number_range(t, f, CmpOp::Ge, lat - d)
        .iter()
        .take_while(|(v, _)| *v <= lat + d)
        .map(|p| p.1)
        .collect()
}

fn bool_key(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Sorted-number range of `op l` in field `f`: the slice of `table.numbers[f]` that passes.
fn number_range(t: &AttributeTable, f: u16, op: CmpOp, x: f64) -> &[(f64, Row)] {
    let nums = &t.numbers[f as usize];
    let lo = |strict: bool| nums.partition_point(|(v, _)| if strict { *v <= x } else { *v < x });
    match op {
        CmpOp::Eq => &nums[lo(false)..lo(true)],
        CmpOp::Lt => &nums[..lo(false)],
        CmpOp::Le => &nums[..lo(true)],
        CmpOp::Gt => &nums[lo(true)..],
        CmpOp::Ge => &nums[lo(false)..],
        CmpOp::Ne => &[],
    }
}

/// An upper bound on the rows passing `n`, from the index alone; `None` when the index cannot
/// bound it cheaply (NOT, string ranges).
fn estimate(n: &Node, t: &AttributeTable) -> Option<usize> {
    let eq = |f: u16, l: &Lit| -> usize {
        match l {
            Lit::Str(s) => t.postings[f as usize].get(s).map_or(0, Vec::len),
            Lit::Bool(b) => t.postings[f as usize].get(bool_key(*b)).map_or(0, Vec::len),
            Lit::Num(x) => number_range(t, f, CmpOp::Eq, *x).len(),
        }
    };
    match n {
        Node::Cmp(f, CmpOp::Eq, l) => Some(eq(*f, l)),
        Node::Cmp(f, op, Lit::Num(x)) => Some(number_range(t, *f, *op, *x).len()),
        Node::Cmp(..) => None,
        Node::In(f, ls) => Some(ls.iter().map(|l| eq(*f, l)).sum()),
        Node::Exists(f) => Some(t.present[*f as usize].len()),
        Node::Near(a, _, lat, _, km) => Some(latitude_band(t, *a, *lat, *km).len()),
        Node::Never => Some(0),
        Node::Not(_) => None,
        Node::And(v) => v.iter().filter_map(|x| estimate(x, t)).min(),
        Node::Or(v) => v.iter().map(|x| estimate(x, t)).sum(),
    }
}

/// The rows [`estimate`] counts (a superset of the passing rows; unsorted, may repeat).
/// Whether [`gather`] yields exactly the rows passing `n`: a number comparison (the sorted
/// numbers are the values it tests), `EXISTS`, and `OR`s of those. (Strings go through their
/// folded postings and `AND` gathers one conjunct: those rows are checked.)
fn gathers_exactly(n: &Node) -> bool {
    match n {
        Node::Cmp(_, op, Lit::Num(_)) => *op != CmpOp::Ne,
        Node::Exists(_) | Node::Never => true,
        Node::Or(v) => v.iter().all(gathers_exactly),
        _ => false,
    }
}

fn gather(n: &Node, t: &AttributeTable) -> Option<Vec<Row>> {
    let eq = |f: u16, l: &Lit| -> Vec<Row> {
        match l {
            Lit::Str(s) => t.postings[f as usize].get(s).cloned().unwrap_or_default(),
            Lit::Bool(b) => t.postings[f as usize]
                .get(bool_key(*b))
                .cloned()
                .unwrap_or_default(),
            Lit::Num(x) => number_range(t, f, CmpOp::Eq, *x)
                .iter()
                .map(|p| p.1)
                .collect(),
        }
    };
    match n {
        Node::Cmp(f, CmpOp::Eq, l) => Some(eq(*f, l)),
        Node::Cmp(f, op, Lit::Num(x)) => {
            Some(number_range(t, *f, *op, *x).iter().map(|p| p.1).collect())
        }
        Node::Cmp(..) | Node::Not(_) => None,
        Node::In(f, ls) => Some(ls.iter().flat_map(|l| eq(*f, l)).collect()),
        Node::Exists(f) => Some(t.present[*f as usize].clone()),
        Node::Near(a, _, lat, _, km) => Some(latitude_band(t, *a, *lat, *km)),
        Node::Never => Some(Vec::new()),
        Node::And(v) => {
            let best = v
                .iter()
                .filter_map(|x| estimate(x, t).map(|e| (e, x)))
                .min_by_key(|(e, _)| *e)?;
            gather(best.1, t)
        }
        Node::Or(v) => {
            let mut out = Vec::new();
            for x in v {
                out.extend(gather(x, t)?);
            }
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col_of(text: &str) -> (usize, String) {
        match Filter::parse(text) {
            Err(Error::Filter {
                column, message, ..
            }) => (column, message),
            other => panic!("{text}: expected a filter error, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_operator_with_precedence() {
        let f = Filter::parse(
            r#"price < 20 AND in_stock = true OR NOT category IN ("card", 'sticker') AND x EXISTS"#,
        )
        .unwrap();
        // OR of (price<20 AND in_stock) and (NOT IN AND EXISTS).
        let Filter::Or(parts) = &f else {
            panic!("{f:?}")
        };
        assert_eq!(parts.len(), 2);
        assert!(matches!(&parts[0], Filter::And(v) if v.len() == 2));
        let Filter::And(right) = &parts[1] else {
            panic!()
        };
        assert!(matches!(&right[0], Filter::Not(x) if matches!(**x, Filter::In { .. })));
        assert!(matches!(&right[1], Filter::Exists { field, .. } if field == "x"));
        for (text, op) in [
            ("a = 1", CmpOp::Eq),
            ("a == 1", CmpOp::Eq),
            ("a != 1", CmpOp::Ne),
            ("a < 1", CmpOp::Lt),
            ("a <= 1", CmpOp::Le),
            ("a > 1", CmpOp::Gt),
            ("a >= -1.5e1", CmpOp::Ge),
        ] {
            assert!(
                matches!(Filter::parse(text).unwrap(), Filter::Cmp { op: o, .. } if o == op),
                "{text}"
            );
        }
        let f = Filter::parse("(a = 1 OR b = 2) AND c = 3").unwrap();
        assert!(matches!(&f, Filter::And(v) if matches!(v[0], Filter::Or(_))));
        let f = Filter::parse("a NOT IN (1, 2)").unwrap();
        assert!(matches!(f, Filter::Not(_)));
        let f = Filter::parse(r#"`size (cm)` >= 3 and b = "say \"hi\"""#).unwrap();
        let Filter::And(v) = f else { panic!() };
        assert!(matches!(&v[0], Filter::Cmp { field, .. } if field == "size (cm)"));
        assert!(matches!(&v[1], Filter::Cmp { value: Literal::Str(s), .. } if s == "say \"hi\""));
        // Display round-trips.
        let f = Filter::parse(r#"price < 20 AND category IN ("card", "sticker")"#).unwrap();
        assert_eq!(
            Filter::parse(&f.to_string()).unwrap().to_string(),
            f.to_string()
        );
    }

    #[test]
    fn errors_point_at_the_column() {
        assert_eq!(col_of("price < ").0, 9);
        assert_eq!(col_of("price < 20 AND").0, 15);
        let (c, m) = col_of("price < cheap");
        assert_eq!(c, 9);
        assert!(m.contains("double quotes"), "{m}");
        assert_eq!(col_of(r#"brand = "Korrin"#).0, 9);
        assert_eq!(col_of("price ! 3").0, 7);
        assert_eq!(col_of("(a = 1").0, 7);
        assert_eq!(col_of("a = 1)").0, 6);
        assert_eq!(col_of("a IN 1, 2").0, 6);
        assert_eq!(col_of("a = 1 b = 2").0, 7);
        assert_eq!(col_of("a = 1 AND = 2").0, 11);
        assert_eq!(col_of("a ~ 2").0, 3);
        assert_eq!(col_of("a = 1.2.3").0, 5);
        let (c, m) = col_of("a LIKE 2");
        assert_eq!(c, 3);
        assert!(m.contains("expected an operator"), "{m}");
    }
}
