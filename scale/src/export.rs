//! Parquet export: one row per stored vector.
//!
//! Columns, in this order:
//!
//! | column | Arrow type | what |
//! |---|---|---|
//! | `key` | uint64 | the vector's key in the store (a product's text and image vectors differ) |
//! | `item_key` | uint64 | the item's key (`jsearch serve`'s `/v1/items/{key}`) |
//! | `id` | utf8 | the item's id: an image's path, a passage's `path#chunk`, a record's id |
//! | `kind` | utf8 | `image`, `text` or `product` |
//! | `modality` | utf8 | `text` or `image`: the tower that made the vector |
//! | `path` | utf8 | the file (a product's catalog) |
//! | `title` | utf8, nullable | the item's title |
//! | `vector` | `fixed_size_list<float32 or float16>[dim]` | the full vector, L2-normalised, as stored (f16 widened) |
//! | `head` | `fixed_size_list<float32 or float16>[256]` | its Matryoshka head, L2-normalised: what the store's graph walks |
//! | one per attribute | utf8, float64, bool or `list<utf8>`, nullable | the catalogs' fields and the photos' attributes, typed as the store types them; a field holding several types is utf8 (JSON text) |
//!
//! An attribute whose name is one of the columns above is written as `attr.NAME`. The file's
//! key-value metadata carries `jsearch.format` (1), `jsearch.model`, `jsearch.model_fingerprint`,
//! `jsearch.dim`, `jsearch.head_dim` and `jsearch.vector_type`, so that a reader can refuse
//! vectors of another model. Files are `part-00000.parquet`, `part-00001.parquet`, … (at most
//! [`ExportOptions::rows_per_file`] rows each), zstd-compressed, each written under a temporary
//! name and renamed when complete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float16Array, Float32Array, Float64Array,
    RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use jsearch::{Engine, FieldInfo};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde_json::Value;

use crate::{Result, ScaleError};

/// The element type of the `vector` and `head` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VectorType {
    /// float32: read by every Parquet reader (the default).
    #[default]
    F32,
    /// float16 (Parquet's FLOAT16 logical type): half the size, exactly what the store holds;
    /// read by pyarrow 26, polars 2.1 and DuckDB 2.0 (as FLOAT), older readers may refuse it.
    F16,
}

impl VectorType {
    /// `f32` or `f16`.
    pub fn as_str(self) -> &'static str {
        match self {
            VectorType::F32 => "f32",
            VectorType::F16 => "f16",
        }
    }
}

impl std::str::FromStr for VectorType {
    type Err = ScaleError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(VectorType::F32),
            "f16" | "float16" => Ok(VectorType::F16),
            _ => Err(ScaleError::InvalidArgument(format!(
                "invalid vector type {s:?}: expected f32 or f16"
            ))),
        }
    }
}

/// How to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Element type of the vectors.
    pub vector_type: VectorType,
    /// Rows per file (a new `part-NNNNN.parquet` after that many). Default 1,000,000.
    pub rows_per_file: usize,
    /// Rows per Parquet row group and per Arrow batch. Default 8192.
    pub rows_per_group: usize,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            vector_type: VectorType::F32,
            rows_per_file: 1_000_000,
            rows_per_group: 8192,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportSummary {
    /// The files, in order.
    pub files: Vec<PathBuf>,
    /// Rows (vectors) written.
    pub rows: usize,
    /// Attribute columns (after the fixed ones).
    pub attributes: Vec<String>,
    /// Bytes written.
    pub bytes: u64,
    /// Wall seconds.
    pub seconds: f64,
}

/// The fixed columns; an attribute of the same name becomes `attr.NAME`.
const FIXED: [&str; 9] = [
    "key", "item_key", "id", "kind", "modality", "path", "title", "vector", "head",
];

/// Built-in fields that are columns of their own (not read from an item's metadata).
const BUILT_IN: [&str; 4] = ["kind", "path", "id", "title"];

/// An attribute column: its name in the store, its column name and type.
struct AttrColumn {
    field: String,
    column: String,
    kind: AttrKind,
}

#[derive(Clone, Copy)]
enum AttrKind {
    Text,
    Number,
    Bool,
    List,
    /// Several types: JSON text.
    Json,
}

impl AttrKind {
    fn of(info: &FieldInfo) -> Self {
        match info.types.as_slice() {
            ["string"] => AttrKind::Text,
            ["number"] => AttrKind::Number,
            ["bool"] => AttrKind::Bool,
            ["list"] => AttrKind::List,
            _ => AttrKind::Json,
        }
    }

    fn data_type(self) -> DataType {
        match self {
            AttrKind::Text | AttrKind::Json => DataType::Utf8,
            AttrKind::Number => DataType::Float64,
            AttrKind::Bool => DataType::Boolean,
            AttrKind::List => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        }
    }
}

/// One row, gathered before a batch is built.
struct Row {
    key: u64,
    item_key: u64,
    id: String,
    kind: &'static str,
    modality: &'static str,
    path: String,
    title: Option<String>,
    attrs: Vec<Option<Value>>,
}

/// Writes every vector of `engine`'s store into Parquet files in `out` (created when missing;
/// refused when it already holds `part-*.parquet` files, so that two exports never mix).
pub fn export_parquet(engine: &Engine, out: &Path, opts: &ExportOptions) -> Result<ExportSummary> {
    let started = Instant::now();
    if opts.rows_per_file == 0 || opts.rows_per_group == 0 {
        return Err(ScaleError::InvalidArgument(
            "rows per file and per group must be at least 1".into(),
        ));
    }
    let stats = engine.stats()?;
    std::fs::create_dir_all(out).map_err(|e| write_error(out, e))?;
    let existing = std::fs::read_dir(out)
        .map_err(|e| write_error(out, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("part-") && n.ends_with(".parquet"));
    if let Some(name) = existing {
        return Err(ScaleError::InvalidArgument(format!(
            "{} already holds an export ({name}): choose an empty folder or remove its part-*.parquet files",
            out.display()
        )));
    }
    let attrs: Vec<AttrColumn> = engine
        .fields()?
        .iter()
        .filter(|f| !BUILT_IN.contains(&f.name.as_str()))
        .map(|f| AttrColumn {
            field: f.name.clone(),
            column: if FIXED.contains(&f.name.as_str()) {
                format!("attr.{}", f.name)
            } else {
                f.name.clone()
            },
            kind: AttrKind::of(f),
        })
        .collect();
    let head_dim = stats.ann_dim.min(stats.dim);
    let schema = schema(stats.dim, head_dim, opts.vector_type, &attrs);
    let metadata = vec![
        KeyValue::new("jsearch.format".into(), "1".to_string()),
        KeyValue::new("jsearch.model".into(), stats.model.clone()),
        KeyValue::new(
            "jsearch.model_fingerprint".into(),
            stats.model_fingerprint.clone(),
        ),
        KeyValue::new("jsearch.dim".into(), stats.dim.to_string()),
        KeyValue::new("jsearch.head_dim".into(), head_dim.to_string()),
        KeyValue::new(
            "jsearch.vector_type".into(),
            opts.vector_type.as_str().to_string(),
        ),
    ];
    // The vectors get no dictionary (no float repeats) and no min/max statistics (a reader never
    // prunes on an embedding's element): 6 % of the write time went to their statistics. The
    // attributes keep both (DuckDB and Spark prune row groups on `price < 20`).
    let mut props = WriterProperties::builder();
    for col in ["vector", "head"] {
        let path = ColumnPath::new(vec![col.into(), "list".into(), "item".into()]);
        props = props
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_statistics_enabled(path, EnabledStatistics::None);
    }
    let props = props
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(opts.rows_per_group))
        .set_key_value_metadata(Some(metadata))
        .build();

    let mut sink = Sink {
        out: out.to_path_buf(),
        schema: schema.clone(),
        props,
        writer: None,
        files: Vec::new(),
        in_file: 0,
        rows_per_file: opts.rows_per_file,
    };
    let mut rows: Vec<Row> = Vec::with_capacity(opts.rows_per_group);
    // The batch's vectors, row after row (one buffer, not one allocation per row).
    let mut flat: Vec<f32> = Vec::with_capacity(opts.rows_per_group.min(65_536) * stats.dim);
    let mut total = 0usize;
    let mut failure: Option<ScaleError> = None;
    engine
        .for_each_vector(|key, item, modality, vector| {
            if vector.len() != stats.dim {
                failure = Some(ScaleError::InvalidArgument(format!(
                    "{}: vector of {} dimensions in a store of {}",
                    item.id,
                    vector.len(),
                    stats.dim
                )));
                return Err(jsearch::Error::Internal("export stopped".into()));
            }
            rows.push(Row {
                key,
                item_key: jsearch::item_key_of(key),
                id: item.id.clone(),
                kind: item.kind.as_str(),
                modality: modality.as_str(),
                path: item.path.clone(),
                title: item.title.clone(),
                attrs: attrs
                    .iter()
                    .map(|a| item.metadata.get(&a.field).cloned())
                    .collect(),
            });
            flat.extend_from_slice(vector);
            total += 1;
            if rows.len() == opts.rows_per_group || sink.room() == rows.len() {
                let batch = batch(&schema, &rows, &flat, head_dim, opts.vector_type, &attrs);
                rows.clear();
                flat.clear();
                if let Err(e) = batch.and_then(|b| sink.write(&b)) {
                    failure = Some(e);
                    return Err(jsearch::Error::Internal("export stopped".into()));
                }
            }
            Ok(())
        })
        .map_err(|e| match failure.take() {
            Some(f) => f,
            None => ScaleError::Engine(e),
        })?;
    if !rows.is_empty() {
        let b = batch(&schema, &rows, &flat, head_dim, opts.vector_type, &attrs)?;
        sink.write(&b)?;
    }
    sink.close_file()?;
    let files = std::mem::take(&mut sink.files);
    let bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    Ok(ExportSummary {
        files,
        rows: total,
        attributes: attrs.into_iter().map(|a| a.column).collect(),
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The Arrow schema of an export.
fn schema(dim: usize, head_dim: usize, vt: VectorType, attrs: &[AttrColumn]) -> SchemaRef {
    let elem = match vt {
        VectorType::F32 => DataType::Float32,
        VectorType::F16 => DataType::Float16,
    };
    let list = |n: usize| {
        DataType::FixedSizeList(Arc::new(Field::new("item", elem.clone(), false)), n as i32)
    };
    let mut fields = vec![
        Field::new("key", DataType::UInt64, false),
        Field::new("item_key", DataType::UInt64, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("modality", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("vector", list(dim), false),
        Field::new("head", list(head_dim), false),
    ];
    fields.extend(
        attrs
            .iter()
            .map(|a| Field::new(&a.column, a.kind.data_type(), true)),
    );
    Arc::new(Schema::new(fields))
}

/// One Arrow batch of `rows`, whose vectors are `flat` (row after row).
fn batch(
    schema: &SchemaRef,
    rows: &[Row],
    flat: &[f32],
    head_dim: usize,
    vt: VectorType,
    attrs: &[AttrColumn],
) -> Result<RecordBatch> {
    let arrow_err = |e: arrow_schema::ArrowError| ScaleError::InvalidArgument(e.to_string());
    let dim = flat.len() / rows.len().max(1);
    let heads: Vec<f32> = flat
        .chunks_exact(dim.max(1))
        .flat_map(|v| {
            let h = &v[..head_dim];
            let n = h.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            h.iter().map(move |x| x / n)
        })
        .collect();
    let list = |values: Vec<f32>, n: usize| -> Result<ArrayRef> {
        let (elem, array): (DataType, ArrayRef) = match vt {
            VectorType::F32 => (DataType::Float32, Arc::new(Float32Array::from(values))),
            VectorType::F16 => {
                use half::slice::HalfFloatSliceExt;
                let mut halves = vec![half::f16::ZERO; values.len()];
                halves.convert_from_f32_slice(&values); // vectorised where the CPU has F16C
                (DataType::Float16, Arc::new(Float16Array::from(halves)))
            }
        };
        let field = Arc::new(Field::new("item", elem, false));
        Ok(Arc::new(
            FixedSizeListArray::try_new(field, n as i32, array, None).map_err(arrow_err)?,
        ))
    };
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.key))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.item_key),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.id))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.kind))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.modality),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.path))),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.title.as_deref()).collect::<Vec<_>>(),
        )),
        list(flat.to_vec(), dim)?,
        list(heads, head_dim)?,
    ];
    for (i, a) in attrs.iter().enumerate() {
        let values = rows.iter().map(|r| r.attrs[i].as_ref());
        let col: ArrayRef = match a.kind {
            AttrKind::Text => Arc::new(StringArray::from(
                values
                    .map(|v| v.and_then(Value::as_str).map(str::to_string))
                    .collect::<Vec<_>>(),
            )),
            AttrKind::Number => Arc::new(Float64Array::from(
                values
                    .map(|v| v.and_then(Value::as_f64))
                    .collect::<Vec<_>>(),
            )),
            AttrKind::Bool => Arc::new(BooleanArray::from(
                values
                    .map(|v| v.and_then(Value::as_bool))
                    .collect::<Vec<_>>(),
            )),
            AttrKind::List => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for v in values {
                    match v.and_then(Value::as_array) {
                        Some(items) => {
                            for it in items {
                                match it {
                                    Value::String(s) => b.values().append_value(s),
                                    other => b.values().append_value(other.to_string()),
                                }
                            }
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                Arc::new(b.finish())
            }
            AttrKind::Json => Arc::new(StringArray::from(
                values
                    .map(|v| {
                        v.map(|v| match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                    })
                    .collect::<Vec<_>>(),
            )),
        };
        columns.push(col);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err)
}

/// The files being written: a new one every `rows_per_file` rows.
struct Sink {
    out: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    writer: Option<(ArrowWriter<File>, PathBuf, PathBuf)>,
    files: Vec<PathBuf>,
    in_file: usize,
    rows_per_file: usize,
}

impl Sink {
    /// Rows the current file still takes.
    fn room(&self) -> usize {
        self.rows_per_file - self.in_file
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.writer.is_none() {
            let n = self.files.len();
            let name = format!("part-{n:05}.parquet");
            let final_path = self.out.join(&name);
            let tmp = self.out.join(format!(".{name}.tmp"));
            let file = File::create(&tmp).map_err(|e| write_error(&tmp, e))?;
            let w = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone()))
                .map_err(|e| write_error(&tmp, e))?;
            self.writer = Some((w, tmp, final_path));
        }
        if let Some((w, tmp, _)) = self.writer.as_mut() {
            w.write(batch).map_err(|e| write_error(tmp, e))?;
        }
        self.in_file += batch.num_rows();
        if self.in_file >= self.rows_per_file {
            self.close_file()?;
        }
        Ok(())
    }

    /// Closes the current file (footer written, synced) and gives it its final name.
    fn close_file(&mut self) -> Result<()> {
        if let Some((w, tmp, final_path)) = self.writer.take() {
            let file = w.into_inner().map_err(|e| write_error(&tmp, e))?;
            file.sync_all().map_err(|e| write_error(&tmp, e))?;
            drop(file);
            std::fs::rename(&tmp, &final_path).map_err(|e| write_error(&tmp, e))?;
            self.files.push(final_path);
            self.in_file = 0;
        }
        Ok(())
    }
}

/// A failed write of `path`, with the reason.
pub(crate) fn write_error(path: &Path, e: impl std::fmt::Display) -> ScaleError {
    ScaleError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Drop for Sink {
    /// A file left unfinished by an error is removed (its temporary name says it is not whole).
    fn drop(&mut self) {
        if let Some((_, tmp, _)) = self.writer.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
