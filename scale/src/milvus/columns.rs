//! Rows as Milvus's column-wise `FieldData`: built for upserts, read back from queries and
//! searches.

use half::f16;
use milvus::proto::schema::{
    field_data, scalar_field, vector_field, DataType, FieldData, FloatArray, JsonArray, LongArray,
    ScalarField, StringArray, VectorField,
};
use serde_json::Value;

use super::schema::Layout;

fn scalar(name: &str, ty: DataType, data: scalar_field::Data) -> FieldData {
    FieldData {
        r#type: ty as i32,
        field_name: name.into(),
        field: Some(field_data::Field::Scalars(ScalarField {
            data: Some(data),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn strings(name: &str, v: Vec<String>) -> FieldData {
    scalar(
        name,
        DataType::VarChar,
        scalar_field::Data::StringData(StringArray { data: v }),
    )
}

fn longs(name: &str, v: Vec<i64>) -> FieldData {
    scalar(
        name,
        DataType::Int64,
        scalar_field::Data::LongData(LongArray { data: v }),
    )
}

fn jsons(name: &str, v: Vec<Vec<u8>>) -> FieldData {
    scalar(
        name,
        DataType::Json,
        scalar_field::Data::JsonData(JsonArray { data: v }),
    )
}

fn floats(name: &str, dim: usize, data: Vec<f32>) -> FieldData {
    FieldData {
        r#type: DataType::FloatVector as i32,
        field_name: name.into(),
        field: Some(field_data::Field::Vectors(VectorField {
            dim: dim as i64,
            data: Some(vector_field::Data::FloatVector(FloatArray { data })),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A query vector as a placeholder's bytes: f16 for the one-collection layout's FLOAT16_VECTOR
/// heads, f32 for the split layout's FLOAT_VECTOR heads (little-endian both).
pub(super) fn head_bytes(layout: Layout, head: &[f32]) -> Vec<u8> {
    match layout {
        Layout::One => head
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        Layout::Split => head.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// Rows on their way to the collection(s), column by column.
#[derive(Default)]
pub(super) struct Columns {
    pub(super) key: Vec<i64>,
    pub(super) item_key: Vec<i64>,
    pub(super) id: Vec<String>,
    pub(super) kind: Vec<String>,
    pub(super) modality: Vec<String>,
    pub(super) path: Vec<String>,
    pub(super) title: Vec<String>,
    pub(super) digest: Vec<String>,
    pub(super) attrs: Vec<Vec<u8>>,
    pub(super) filter_attrs: Vec<Vec<u8>>,
    pub(super) head: Vec<f32>,
    pub(super) vector: Vec<f32>,
}

impl Columns {
    pub(super) fn len(&self) -> usize {
        self.key.len()
    }

    /// The main collection's fields and, in the split layout, those of `NAME_vectors`.
    pub(super) fn into_fields(
        self,
        layout: Layout,
        dim: usize,
        head_dim: usize,
    ) -> (Vec<FieldData>, Option<Vec<FieldData>>) {
        let mut main = vec![
            longs("key", self.key.clone()),
            longs("item_key", self.item_key),
            strings("id", self.id),
            strings("kind", self.kind),
            strings("modality", self.modality),
            strings("path", self.path),
            strings("title", self.title),
            strings("digest", self.digest),
            jsons("attrs", self.attrs),
            jsons("filter_attrs", self.filter_attrs),
        ];
        match layout {
            Layout::One => {
                main.push(FieldData {
                    r#type: DataType::Float16Vector as i32,
                    field_name: "head".into(),
                    field: Some(field_data::Field::Vectors(VectorField {
                        dim: head_dim as i64,
                        data: Some(vector_field::Data::Float16Vector(head_bytes(
                            layout, &self.head,
                        ))),
                        ..Default::default()
                    })),
                    ..Default::default()
                });
                main.push(floats("vector", dim, self.vector));
                (main, None)
            }
            Layout::Split => {
                main.push(floats("head", head_dim, self.head));
                let vectors = vec![longs("key", self.key), floats("vector", dim, self.vector)];
                (main, Some(vectors))
            }
        }
    }
}

pub(super) fn long_column(fields: &[FieldData], name: &str) -> Vec<i64> {
    fields
        .iter()
        .find(|f| f.field_name == name)
        .and_then(|f| match &f.field {
            Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::LongData(l)),
                ..
            })) => Some(l.data.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

pub(super) fn string_column(fields: &[FieldData], name: &str) -> Vec<String> {
    fields
        .iter()
        .find(|f| f.field_name == name)
        .and_then(|f| match &f.field {
            Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::StringData(s)),
                ..
            })) => Some(s.data.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

pub(super) fn json_column(fields: &[FieldData], name: &str) -> Vec<Value> {
    fields
        .iter()
        .find(|f| f.field_name == name)
        .and_then(|f| match &f.field {
            Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::JsonData(j)),
                ..
            })) => Some(
                j.data
                    .iter()
                    .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

/// A FLOAT_VECTOR column: its dimension and the vectors back to back.
pub(super) fn float_vectors(fields: &[FieldData], name: &str) -> (usize, Vec<f32>) {
    fields
        .iter()
        .find(|f| f.field_name == name)
        .and_then(|f| match &f.field {
            Some(field_data::Field::Vectors(VectorField {
                dim,
                data: Some(vector_field::Data::FloatVector(a)),
                ..
            })) => Some((*dim as usize, a.data.clone())),
            _ => None,
        })
        .unwrap_or_default()
}
