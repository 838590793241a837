//! jsearch's filter grammar as a Milvus boolean expression over the collection's
//! `filter_attrs` JSON field (the item's fields with strings folded), with the local store's
//! meaning where Milvus can express it: strings compared folded, a list matching when any
//! element does (`ARRAY_CONTAINS`), `a != v` keeping items without `a`. Milvus has no way to
//! compute a distance on two JSON numbers, so `--near` is refused.

use jsearch::{attrs, CmpOp, Filter, Literal};

use crate::{Result, ScaleError};

/// A string literal as Milvus's expression grammar reads it.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn field(name: &str) -> String {
    format!("filter_attrs[{}]", quote(name))
}

fn number(x: f64) -> Result<String> {
    if x.is_finite() {
        Ok(format!("{x:?}"))
    } else {
        Err(ScaleError::InvalidArgument(format!(
            "filter: {x} is not a number Milvus can compare"
        )))
    }
}

/// The expression of `f` (`None`: no filter).
pub fn filter_expr(f: &Filter) -> Result<String> {
    Ok(match f {
        Filter::Cmp {
            field: name,
            op,
            value,
            ..
        } => cmp(name, *op, value)?,
        Filter::In {
            field: name,
            values,
            ..
        } => {
            let parts: Vec<String> = values
                .iter()
                .map(|(v, _)| cmp(name, CmpOp::Eq, v))
                .collect::<Result<_>>()?;
            if parts.is_empty() {
                "false".into()
            } else {
                format!("({})", parts.join(" or "))
            }
        }
        Filter::Exists { field: name, .. } => format!("(exists {})", field(name)),
        Filter::Near { .. } => {
            return Err(ScaleError::InvalidArgument(
                "--near is not available with a Milvus backend (no distance on JSON numbers there)"
                    .into(),
            ))
        }
        Filter::Not(inner) => format!("(not {})", filter_expr(inner)?),
        Filter::And(v) | Filter::Or(v) => {
            let and = matches!(f, Filter::And(_));
            let parts: Vec<String> = v.iter().map(filter_expr).collect::<Result<_>>()?;
            if parts.is_empty() {
                (if and { "true" } else { "false" }).into()
            } else {
                format!("({})", parts.join(if and { " and " } else { " or " }))
            }
        }
    })
}

fn cmp(name: &str, op: CmpOp, value: &Literal) -> Result<String> {
    let f = field(name);
    let eq = |v: &str| format!("({f} == {v} or ARRAY_CONTAINS({f}, {v}))");
    Ok(match (op, value) {
        (CmpOp::Eq, Literal::Str(s)) => eq(&quote(&attrs::fold(s))),
        (CmpOp::Ne, Literal::Str(s)) => format!("(not {})", eq(&quote(&attrs::fold(s)))),
        (CmpOp::Eq, Literal::Num(x)) => format!("({f} == {})", number(*x)?),
        (CmpOp::Ne, Literal::Num(x)) => format!("(not ({f} == {}))", number(*x)?),
        (CmpOp::Eq, Literal::Bool(b)) => format!("({f} == {b})"),
        (CmpOp::Ne, Literal::Bool(b)) => format!("(not ({f} == {b}))"),
        (_, Literal::Bool(_)) => "false".into(),
        (op, lit) => {
            let o = match op {
                CmpOp::Lt => "<",
                CmpOp::Le => "<=",
                CmpOp::Gt => ">",
                _ => ">=",
            };
            let v = match lit {
                Literal::Num(x) => number(*x)?,
                Literal::Str(s) => quote(&attrs::fold(s)),
                Literal::Bool(_) => unreachable!("handled above"),
            };
            format!("({f} {o} {v})")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_and_folded() {
        let f =
            Filter::parse(r#"brand = "Lúmo \"X\"" AND price < 20 AND NOT tags IN ("a")"#).unwrap();
        let e = filter_expr(&f).unwrap();
        assert!(
            e.contains(r#"filter_attrs["brand"] == "lumo \"x\"""#),
            "{e}"
        );
        assert!(e.contains(r#"(filter_attrs["price"] < 20.0)"#), "{e}");
        assert!(
            e.contains(r#"ARRAY_CONTAINS(filter_attrs["tags"], "a")"#),
            "{e}"
        );
        assert!(filter_expr(&Filter::near(1.0, 2.0, 3.0)).is_err());
    }
}
