//! The collections' fields, the identity they carry and the checks of an existing one.
//!
//! Two layouts, chosen by the server's version when the collection is created and recorded in
//! its identity (`jsearch.layout`):
//! - [`Layout::One`] (Milvus 2.4 and later, milvus-lite): one collection with both vector
//!   fields, `head` FLOAT16_VECTOR and `vector` FLOAT_VECTOR.
//! - [`Layout::Split`] (Milvus 2.3: one vector field per collection, no FLOAT16_VECTOR): the
//!   collection holds every scalar field and `head` as FLOAT_VECTOR, a second collection
//!   `NAME_vectors` holds `key` (the same primary key) and `vector`.

use milvus::proto::common::KeyValuePair;
use milvus::proto::schema::{CollectionSchema, DataType, FieldSchema};
use serde_json::Value;

use crate::backend::{redact, Identity};
use crate::{Result, ScaleError};

/// Version of the collections' fields (property `jsearch.format`).
const FORMAT: &str = "1";

/// Prefix of the schema description that also carries the identity (milvus-lite and Milvus 2.3
/// keep no collection properties).
const DESCRIPTION_PREFIX: &str = "jsearch sync: ";

/// How a synced collection holds the heads and the full vectors (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One collection, both vector fields (Milvus 2.4 and later).
    One,
    /// The heads with the attributes in one collection, the full vectors in `NAME_vectors`
    /// (Milvus before 2.4).
    Split,
}

impl Layout {
    /// Its name in the identity (`jsearch.layout`).
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::One => "one",
            Layout::Split => "split",
        }
    }

    /// The layout a server of `version` (as GetVersion says it: `v2.3.5-lite`, `2.4.12`) takes:
    /// split before 2.4, one otherwise (also when the version cannot be read).
    pub fn for_version(version: &str) -> Layout {
        let v = version.trim().trim_start_matches(['v', 'V']);
        let mut parts = v.split(|c: char| !c.is_ascii_digit());
        let major = parts.next().and_then(|p| p.parse::<u32>().ok());
        let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
        match (major, minor) {
            (Some(major), Some(minor)) if major < 2 || (major == 2 && minor < 4) => Layout::Split,
            _ => Layout::One,
        }
    }

    /// The layout an identity records; collections synced before it was recorded are `One`.
    pub(super) fn of(props: &[KeyValuePair]) -> Layout {
        match prop(props, "jsearch.layout") {
            Some("split") => Layout::Split,
            _ => Layout::One,
        }
    }

    /// The main collection's fields: (name, type, dimension or max length).
    fn fields(self, dim: usize, head_dim: usize) -> Vec<(&'static str, DataType, usize)> {
        let mut f = vec![
            ("key", DataType::Int64, 0),
            ("item_key", DataType::Int64, 0),
            ("id", DataType::VarChar, 65_535),
            ("kind", DataType::VarChar, 16),
            ("modality", DataType::VarChar, 16),
            ("path", DataType::VarChar, 65_535),
            ("title", DataType::VarChar, 65_535),
            ("digest", DataType::VarChar, 64),
            ("attrs", DataType::Json, 0),
            ("filter_attrs", DataType::Json, 0),
        ];
        match self {
            Layout::One => {
                f.push(("head", DataType::Float16Vector, head_dim));
                f.push(("vector", DataType::FloatVector, dim));
            }
            Layout::Split => f.push(("head", DataType::FloatVector, head_dim)),
        }
        f
    }
}

/// The fields of `NAME_vectors` in the split layout.
fn vector_fields(dim: usize) -> Vec<(&'static str, DataType, usize)> {
    vec![
        ("key", DataType::Int64, 0),
        ("vector", DataType::FloatVector, dim),
    ]
}

/// The collection that holds the full vectors in the split layout.
pub fn vectors_collection(name: &str) -> String {
    format!("{name}_vectors")
}

pub(super) fn kv(k: &str, v: impl Into<String>) -> KeyValuePair {
    KeyValuePair {
        key: k.into(),
        value: v.into(),
    }
}

pub(super) fn prop<'a>(props: &'a [KeyValuePair], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

/// The identity properties, also written as JSON into the schema's description.
pub(super) fn identity_props(id: &Identity, layout: Layout) -> Vec<KeyValuePair> {
    vec![
        kv("jsearch.format", FORMAT),
        kv("jsearch.layout", layout.as_str()),
        kv("jsearch.model", id.model.clone()),
        kv("jsearch.model_fingerprint", id.fingerprint.clone()),
        kv("jsearch.dim", id.dim.to_string()),
        kv("jsearch.head_dim", id.head_dim.to_string()),
        kv("jsearch.store", id.store.clone()),
    ]
}

/// The properties, else those in the description.
pub(super) fn identity_of(schema: &CollectionSchema, props: &[KeyValuePair]) -> Vec<KeyValuePair> {
    if prop(props, "jsearch.model_fingerprint").is_some() {
        return props.to_vec();
    }
    schema
        .description
        .strip_prefix(DESCRIPTION_PREFIX)
        .and_then(|j| serde_json::from_str::<serde_json::Map<String, Value>>(j).ok())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| kv(k, v)))
                .collect()
        })
        .unwrap_or_default()
}

fn field_schema(name: &str, ty: DataType, size: usize) -> FieldSchema {
    let params = match ty {
        DataType::VarChar => vec![kv("max_length", size.to_string())],
        DataType::FloatVector | DataType::Float16Vector => vec![kv("dim", size.to_string())],
        _ => Vec::new(),
    };
    FieldSchema {
        name: name.into(),
        data_type: ty as i32,
        is_primary_key: name == "key",
        type_params: params,
        ..Default::default()
    }
}

fn collection_schema(
    name: &str,
    id: &Identity,
    layout: Layout,
    fields: Vec<(&'static str, DataType, usize)>,
) -> CollectionSchema {
    let described: serde_json::Map<String, Value> = identity_props(id, layout)
        .into_iter()
        .map(|p| (p.key, Value::String(p.value)))
        .collect();
    CollectionSchema {
        name: name.into(),
        description: format!("{DESCRIPTION_PREFIX}{}", Value::Object(described)),
        fields: fields
            .into_iter()
            .map(|(n, ty, size)| field_schema(n, ty, size))
            .collect(),
        ..Default::default()
    }
}

/// The main collection's schema.
pub(super) fn schema(name: &str, id: &Identity, layout: Layout) -> CollectionSchema {
    collection_schema(name, id, layout, layout.fields(id.dim, id.head_dim))
}

/// The schema of `NAME_vectors` (split layout).
pub(super) fn vectors_schema(name: &str, id: &Identity) -> CollectionSchema {
    collection_schema(
        &vectors_collection(name),
        id,
        Layout::Split,
        vector_fields(id.dim),
    )
}

fn has_fields(
    schema: &CollectionSchema,
    fields: &[(&'static str, DataType, usize)],
) -> Option<String> {
    for (n, ty, size) in fields {
        let vector = matches!(ty, DataType::FloatVector | DataType::Float16Vector);
        let ok = schema.fields.iter().any(|f| {
            f.name == *n
                && f.data_type == *ty as i32
                && (!vector
                    || f.type_params
                        .iter()
                        .any(|p| p.key == "dim" && p.value == size.to_string()))
        });
        if !ok {
            return Some(if vector {
                format!("field {n} is not {ty:?}({size})")
            } else {
                format!("field {n} is not {ty:?}")
            });
        }
    }
    None
}

/// Checks an existing collection (jsearch's, this model, its layout's fields): its layout.
pub(super) fn check_collection(
    url: &str,
    name: &str,
    schema: &CollectionSchema,
    props: &[KeyValuePair],
    id: &Identity,
) -> Result<Layout> {
    let props = &identity_of(schema, props)[..];
    let fail = |message: String| {
        Err(ScaleError::Backend {
            backend: redact(url),
            message,
        })
    };
    let Some(fp) = prop(props, "jsearch.model_fingerprint") else {
        return fail(format!(
            "collection {name} exists but was not made by `jsearch sync` (no jsearch.model_fingerprint property): name another with --table, or drop it"
        ));
    };
    let model = prop(props, "jsearch.model").unwrap_or_default();
    if model != id.model || fp != id.fingerprint {
        return fail(format!(
            "collection {name} holds vectors of model {model} (fingerprint {fp}); this store's model is {} ({}): sync into another --table, or add --replace to drop it and start again",
            id.model, id.fingerprint
        ));
    }
    let layout = Layout::of(props);
    let wrong = if prop(props, "jsearch.format") != Some(FORMAT) {
        Some(format!(
            "format {} is not {FORMAT}",
            prop(props, "jsearch.format").unwrap_or("(none)")
        ))
    } else {
        has_fields(schema, &layout.fields(id.dim, id.head_dim))
    };
    if let Some(wrong) = wrong {
        return fail(format!(
            "collection {name}: {wrong} (layout {}): add --replace to rebuild it",
            layout.as_str()
        ));
    }
    Ok(layout)
}

/// Whether a collection was made by `jsearch sync` (any model).
pub(super) fn made_by_sync(schema: &CollectionSchema, props: &[KeyValuePair]) -> bool {
    prop(&identity_of(schema, props), "jsearch.model_fingerprint").is_some()
}

/// Checks an existing `NAME_vectors` of the split layout.
pub(super) fn check_vectors_collection(
    url: &str,
    name: &str,
    schema: &CollectionSchema,
    id: &Identity,
) -> Result<()> {
    let props = identity_of(schema, &[]);
    let vectors = vectors_collection(name);
    let wrong = if prop(&props, "jsearch.model_fingerprint") != Some(id.fingerprint.as_str()) {
        Some("it holds another model's vectors, or was not made by `jsearch sync`".to_string())
    } else {
        has_fields(schema, &vector_fields(id.dim))
    };
    match wrong {
        Some(w) => Err(ScaleError::Backend {
            backend: redact(url),
            message: format!("collection {vectors} (the full vectors of {name}): {w}: add --replace to rebuild both"),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_server_version() {
        for (v, l) in [
            ("v2.3.5-lite", Layout::Split),
            ("2.3.21", Layout::Split),
            ("v2.2.16", Layout::Split),
            ("v2.4.12", Layout::One),
            ("2.5.0-beta", Layout::One),
            ("v3.0.0", Layout::One),
            ("", Layout::One),
            ("unknown", Layout::One),
        ] {
            assert_eq!(Layout::for_version(v), l, "{v}");
        }
    }

    #[test]
    fn layouts_have_one_vector_field_per_collection_where_needed() {
        let vectors = |f: &[(&str, DataType, usize)]| {
            f.iter()
                .filter(|(_, t, _)| matches!(t, DataType::FloatVector | DataType::Float16Vector))
                .count()
        };
        assert_eq!(vectors(&Layout::One.fields(1024, 256)), 2);
        assert_eq!(vectors(&Layout::Split.fields(1024, 256)), 1);
        assert_eq!(vectors(&vector_fields(1024)), 1);
        assert!(!Layout::Split
            .fields(1024, 256)
            .iter()
            .any(|(_, t, _)| *t == DataType::Float16Vector));
    }
}
