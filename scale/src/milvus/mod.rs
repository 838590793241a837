//! Milvus: a store's vectors in a collection that Milvus shards and replicates itself, searched
//! in two stages expressed with Milvus's own features: the ANN search runs on the `head` field
//! (FLOAT16_VECTOR of the 256-d heads, cosine) with the filter as Milvus's boolean expression on
//! the `filter_attrs` JSON field, returns the candidates with their `vector` field (FLOAT_VECTOR,
//! full dimension), and the client re-ranks them by the full vectors.
//!
//! The collection (default `jsearch_items`): `key` (INT64, primary: the vector's key's bits),
//! `item_key` (INT64), `id`, `kind`, `modality`, `path`, `title`, `digest` (VARCHAR), `attrs`
//! and `filter_attrs` (JSON), `head`, `vector`. Its properties record the model (`jsearch.model`,
//! `jsearch.model_fingerprint`, `jsearch.dim`, `jsearch.head_dim`, `jsearch.format`): a
//! collection of another model is refused. A sync reads every row's `(key, digest)`, upserts the
//! rows whose digest differs and deletes the keys the store no longer has. Milvus has no
//! transactions: an interrupted sync leaves some rows written, and the next sync, which trusts
//! only the digests it reads back, completes it.
//!
//! Built on the gRPC API directly (the request and response types `milvus-sdk-rust` generates
//! from milvus-proto): that crate's high-level clients expect replies of Milvus 2.5 and later
//! (against milvus-lite 2.4 its row insert crashed the server and its search and load waits
//! failed on fields 2.4 does not send), while the wire protocol itself is the same.
//! Tested against milvus-lite 2.4 (several vector fields per collection, FLAT indexes).

pub mod expr;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use half::f16;
use jsearch::Engine;
use milvus::proto::common::{
    ConsistencyLevel, DslType, KeyValuePair, PlaceholderGroup, PlaceholderType, PlaceholderValue,
    Status,
};
use milvus::proto::milvus::milvus_service_client::MilvusServiceClient;
use milvus::proto::milvus::{
    search_request, CreateCollectionRequest, CreateIndexRequest, DeleteRequest,
    DescribeCollectionRequest, DropCollectionRequest, LoadCollectionRequest, QueryRequest,
    SearchRequest, UpsertRequest,
};
use milvus::proto::schema::{
    field_data, i_ds, scalar_field, vector_field, CollectionSchema, DataType, FieldData,
    FieldSchema, FloatArray, JsonArray, LongArray, ScalarField, StringArray, VectorField,
};
use prost::Message;
use serde_json::Value;
use tonic::transport::Channel;

use crate::backend::{
    digest, head_of, redact, BackendHit, BackendQuery, Identity, SyncOptions, SyncSummary,
    TableInfo,
};
use crate::postgres::check_table_name;
use crate::{Result, ScaleError};

/// Version of the collection's layout (property `jsearch.format`).
const FORMAT: &str = "1";
/// Rows per upsert request (about 5 MB at 1024-d).
const UPSERT_ROWS: usize = 1000;
/// The most rows one query returns (Milvus's limit on offset + limit).
const QUERY_WINDOW: usize = 16_384;

fn err(url: &str, what: &str, e: impl std::fmt::Display) -> ScaleError {
    ScaleError::Backend {
        backend: redact(url),
        message: format!("{what}: {e}"),
    }
}

/// Whether a status is a failure: servers before 2.3 set only the (now deprecated) error code.
#[allow(deprecated)]
fn failed(s: &Status) -> bool {
    s.code != 0 || s.error_code != 0
}

/// A Milvus status as a result.
fn check(url: &str, what: &str, s: Option<&Status>) -> Result<()> {
    match s {
        Some(s) if failed(s) => Err(err(url, what, format!("{} (code {})", s.reason, s.code))),
        _ => Ok(()),
    }
}

fn kv(k: &str, v: impl Into<String>) -> KeyValuePair {
    KeyValuePair {
        key: k.into(),
        value: v.into(),
    }
}

/// `milvus://HOST:PORT` (or `http://`) as the gRPC endpoint.
fn endpoint(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("milvus://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            ScaleError::InvalidArgument(format!(
                "{}: not a Milvus URL (milvus://HOST:PORT)",
                redact(url)
            ))
        })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(ScaleError::InvalidArgument(format!(
            "{}: no host in the URL (milvus://HOST:PORT)",
            redact(url)
        )));
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:19530")
    };
    Ok(format!("http://{host}"))
}

/// A blocking connection (the CLI is synchronous): its own current-thread runtime.
struct Conn {
    rt: tokio::runtime::Runtime,
    client: MilvusServiceClient<Channel>,
    url: String,
}

impl Conn {
    fn open(url: &str) -> Result<Self> {
        let ep = endpoint(url)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(url, "starting the client", e))?;
        let channel = rt
            .block_on(async {
                Channel::from_shared(ep.clone())
                    .map_err(|e| e.to_string())?
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(300))
                    .connect()
                    .await
                    .map_err(|e| {
                        let mut s = e.to_string();
                        let mut src = std::error::Error::source(&e);
                        while let Some(inner) = src {
                            s.push_str(&format!(": {inner}"));
                            src = inner.source();
                        }
                        s
                    })
            })
            .map_err(|e| err(url, "cannot connect", e))?;
        let client = MilvusServiceClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        Ok(Conn {
            rt,
            client,
            url: url.to_string(),
        })
    }

    /// The collection's schema and properties, or `None` when there is none of that name.
    fn describe(&mut self, name: &str) -> Result<Option<(CollectionSchema, Vec<KeyValuePair>)>> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.describe_collection(DescribeCollectionRequest {
                collection_name: name.into(),
                ..Default::default()
            }))
            .map_err(|e| err(&self.url, "describing the collection", e.message()))?
            .into_inner();
        match &r.status {
            Some(s) if failed(s) => {
                let reason = s.reason.to_ascii_lowercase();
                if reason.contains("not found") || reason.contains("not exist") || s.code == 100 {
                    return Ok(None);
                }
                check(&self.url, "describing the collection", r.status.as_ref())?;
            }
            _ => {}
        }
        Ok(r.schema.map(|s| (s, r.properties)))
    }
}

fn field(name: &str, ty: DataType, params: &[(&str, String)]) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type: ty as i32,
        is_primary_key: name == "key",
        type_params: params.iter().map(|(k, v)| kv(k, v.clone())).collect(),
        ..Default::default()
    }
}

/// The collection's fields: (name, type, dimension or max length).
fn layout(dim: usize, head_dim: usize) -> Vec<(&'static str, DataType, usize)> {
    vec![
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
        ("head", DataType::Float16Vector, head_dim),
        ("vector", DataType::FloatVector, dim),
    ]
}

/// The identity properties, also written as JSON into the schema's description (milvus-lite
/// keeps no collection properties).
fn identity_props(id: &Identity) -> Vec<KeyValuePair> {
    vec![
        kv("jsearch.format", FORMAT),
        kv("jsearch.model", id.model.clone()),
        kv("jsearch.model_fingerprint", id.fingerprint.clone()),
        kv("jsearch.dim", id.dim.to_string()),
        kv("jsearch.head_dim", id.head_dim.to_string()),
        kv("jsearch.store", id.store.clone()),
    ]
}

const DESCRIPTION_PREFIX: &str = "jsearch sync: ";

/// The properties, else those in the description.
fn identity_of(schema: &CollectionSchema, props: &[KeyValuePair]) -> Vec<KeyValuePair> {
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

fn schema(name: &str, id: &Identity) -> CollectionSchema {
    let (dim, head_dim) = (id.dim, id.head_dim);
    let described: serde_json::Map<String, Value> = identity_props(id)
        .into_iter()
        .map(|p| (p.key, Value::String(p.value)))
        .collect();
    CollectionSchema {
        name: name.into(),
        description: format!("{DESCRIPTION_PREFIX}{}", Value::Object(described)),
        fields: layout(dim, head_dim)
            .into_iter()
            .map(|(n, ty, size)| match ty {
                DataType::VarChar => field(n, ty, &[("max_length", size.to_string())]),
                DataType::FloatVector | DataType::Float16Vector => {
                    field(n, ty, &[("dim", size.to_string())])
                }
                _ => field(n, ty, &[]),
            })
            .collect(),
        ..Default::default()
    }
}

fn prop<'a>(props: &'a [KeyValuePair], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

/// Checks an existing collection: jsearch's, this model, this layout.
fn check_collection(
    url: &str,
    name: &str,
    schema: &CollectionSchema,
    props: &[KeyValuePair],
    id: &Identity,
) -> Result<()> {
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
    for (n, ty, size) in layout(id.dim, id.head_dim) {
        let ok = schema.fields.iter().any(|f| {
            f.name == n
                && f.data_type == ty as i32
                && (!matches!(ty, DataType::FloatVector | DataType::Float16Vector)
                    || f.type_params
                        .iter()
                        .any(|p| p.key == "dim" && p.value == size.to_string()))
        });
        if !ok || prop(props, "jsearch.format") != Some(FORMAT) {
            return fail(format!(
                "collection {name}: field {n} is not {ty:?}{} of format {FORMAT}: add --replace to rebuild it",
                if size > 0 && matches!(ty, DataType::FloatVector | DataType::Float16Vector) {
                    format!("({size})")
                } else {
                    String::new()
                }
            ));
        }
    }
    Ok(())
}

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

/// Rows on their way to the collection, column by column.
#[derive(Default)]
struct Columns {
    key: Vec<i64>,
    item_key: Vec<i64>,
    id: Vec<String>,
    kind: Vec<String>,
    modality: Vec<String>,
    path: Vec<String>,
    title: Vec<String>,
    digest: Vec<String>,
    attrs: Vec<Vec<u8>>,
    filter_attrs: Vec<Vec<u8>>,
    head: Vec<u8>,
    vector: Vec<f32>,
}

impl Columns {
    fn len(&self) -> usize {
        self.key.len()
    }

    fn into_fields(self, dim: usize, head_dim: usize) -> Vec<FieldData> {
        vec![
            longs("key", self.key),
            longs("item_key", self.item_key),
            strings("id", self.id),
            strings("kind", self.kind),
            strings("modality", self.modality),
            strings("path", self.path),
            strings("title", self.title),
            strings("digest", self.digest),
            jsons("attrs", self.attrs),
            jsons("filter_attrs", self.filter_attrs),
            FieldData {
                r#type: DataType::Float16Vector as i32,
                field_name: "head".into(),
                field: Some(field_data::Field::Vectors(VectorField {
                    dim: head_dim as i64,
                    data: Some(vector_field::Data::Float16Vector(self.head)),
                    ..Default::default()
                })),
                ..Default::default()
            },
            FieldData {
                r#type: DataType::FloatVector as i32,
                field_name: "vector".into(),
                field: Some(field_data::Field::Vectors(VectorField {
                    dim: dim as i64,
                    data: Some(vector_field::Data::FloatVector(FloatArray {
                        data: self.vector,
                    })),
                    ..Default::default()
                })),
                ..Default::default()
            },
        ]
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn long_column(fields: &[FieldData], name: &str) -> Vec<i64> {
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

fn string_column(fields: &[FieldData], name: &str) -> Vec<String> {
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

fn json_column(fields: &[FieldData], name: &str) -> Vec<Value> {
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

fn float_vectors(fields: &[FieldData], name: &str) -> (usize, Vec<f32>) {
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

impl Conn {
    /// Every row's `(key, digest)`: key ranges small enough for one query each (split again
    /// when one comes back full).
    fn digests(&mut self, name: &str) -> Result<HashMap<i64, String>> {
        let mut out = HashMap::new();
        let mut ranges: Vec<(i128, i128)> = vec![(i64::MIN as i128, i64::MAX as i128 + 1)];
        while let Some((lo, hi)) = ranges.pop() {
            let expr = format!("key >= {lo} and key < {hi}").replace(
                &format!("key < {}", i64::MAX as i128 + 1),
                "key <= 9223372036854775807",
            );
            let mut c = self.client.clone();
            let r = self
                .rt
                .block_on(c.query(QueryRequest {
                    collection_name: name.into(),
                    expr,
                    output_fields: vec!["key".into(), "digest".into()],
                    query_params: vec![kv("limit", QUERY_WINDOW.to_string())],
                    consistency_level: ConsistencyLevel::Strong as i32,
                    ..Default::default()
                }))
                .map_err(|e| err(&self.url, "reading the collection's digests", e.message()))?
                .into_inner();
            check(
                &self.url,
                "reading the collection's digests",
                r.status.as_ref(),
            )?;
            let keys = long_column(&r.fields_data, "key");
            let digests = string_column(&r.fields_data, "digest");
            if keys.len() >= QUERY_WINDOW && hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                ranges.push((lo, mid));
                ranges.push((mid, hi));
                continue;
            }
            out.extend(keys.into_iter().zip(digests));
        }
        Ok(out)
    }

    fn upsert(&mut self, name: &str, cols: Columns, dim: usize, head_dim: usize) -> Result<()> {
        let n = cols.len();
        if n == 0 {
            return Ok(());
        }
        let first = cols.id.first().cloned().unwrap_or_default();
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.upsert(UpsertRequest {
                collection_name: name.into(),
                fields_data: cols.into_fields(dim, head_dim),
                num_rows: n as u32,
                ..Default::default()
            }))
            .map_err(|e| {
                err(
                    &self.url,
                    &format!("upserting {n} rows (from {first})"),
                    e.message(),
                )
            })?
            .into_inner();
        check(&self.url, "upserting rows", r.status.as_ref())
    }

    fn delete(&mut self, name: &str, keys: &[i64]) -> Result<usize> {
        let mut done = 0;
        for chunk in keys.chunks(1000) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let mut c = self.client.clone();
            let r = self
                .rt
                .block_on(c.delete(DeleteRequest {
                    collection_name: name.into(),
                    expr: format!("key in [{}]", list.join(", ")),
                    ..Default::default()
                }))
                .map_err(|e| err(&self.url, "deleting removed rows", e.message()))?
                .into_inner();
            check(&self.url, "deleting removed rows", r.status.as_ref())?;
            done += chunk.len();
        }
        Ok(done)
    }

    fn create(&mut self, name: &str, id: &Identity) -> Result<()> {
        let mut c = self.client.clone();
        let props = identity_props(id);
        let r = self
            .rt
            .block_on(c.create_collection(CreateCollectionRequest {
                collection_name: name.into(),
                schema: schema(name, id).encode_to_vec(),
                shards_num: 1,
                consistency_level: ConsistencyLevel::Strong as i32,
                properties: props,
                ..Default::default()
            }))
            .map_err(|e| err(&self.url, "creating the collection", e.message()))?
            .into_inner();
        check(&self.url, "creating the collection", Some(&r))?;
        // The heads: HNSW where the server has it, else FLAT (milvus-lite); the full vectors
        // are only read back, but every vector field needs an index before a load.
        for (f, kinds) in [("head", &["HNSW", "FLAT"][..]), ("vector", &["FLAT"][..])] {
            let mut last = None;
            for kind in kinds {
                let mut params = vec![kv("index_type", *kind), kv("metric_type", "COSINE")];
                if *kind == "HNSW" {
                    params.push(kv("params", r#"{"M": 16, "efConstruction": 64}"#));
                }
                let mut c = self.client.clone();
                let r = self
                    .rt
                    .block_on(c.create_index(CreateIndexRequest {
                        collection_name: name.into(),
                        field_name: f.into(),
                        index_name: format!("{f}_index"),
                        extra_params: params,
                        ..Default::default()
                    }))
                    .map_err(|e| err(&self.url, "creating the indexes", e.message()))?
                    .into_inner();
                last = Some(r.clone());
                if !failed(&r) {
                    last = None;
                    break;
                }
            }
            if let Some(s) = last {
                check(&self.url, &format!("creating the index on {f}"), Some(&s))?;
            }
        }
        Ok(())
    }

    fn load(&mut self, name: &str) -> Result<()> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.load_collection(LoadCollectionRequest {
                collection_name: name.into(),
                ..Default::default()
            }))
            .map_err(|e| err(&self.url, "loading the collection", e.message()))?
            .into_inner();
        check(&self.url, "loading the collection", Some(&r))
    }

    fn drop(&mut self, name: &str) -> Result<()> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.drop_collection(DropCollectionRequest {
                collection_name: name.into(),
                ..Default::default()
            }))
            .map_err(|e| {
                err(
                    &self.url,
                    "dropping the collection (--replace)",
                    e.message(),
                )
            })?
            .into_inner();
        check(&self.url, "dropping the collection (--replace)", Some(&r))
    }
}

/// Makes collection `opts.table` at `url` hold exactly the store's vectors (module docs).
pub fn sync(engine: &Engine, url: &str, opts: &SyncOptions) -> Result<SyncSummary> {
    let started = Instant::now();
    let id = Identity::of(engine, &opts.table)?;
    let name = opts.table.as_str();
    let mut conn = Conn::open(url)?;
    let mut existing = conn.describe(name)?;
    if opts.replace && existing.is_some() {
        conn.drop(name)?;
        existing = None;
    }
    let created = existing.is_none();
    match &existing {
        Some((schema, props)) => check_collection(url, name, schema, props, &id)?,
        None => conn.create(name, &id)?,
    }
    conn.load(name)?;
    let remote = if created {
        HashMap::new()
    } else {
        conn.digests(name)?
    };
    let mut summary = SyncSummary {
        table: name.to_string(),
        created,
        ..SyncSummary::default()
    };
    let mut cols = Columns::default();
    let mut seen: HashSet<i64> = HashSet::with_capacity(remote.len());
    let mut failure = None;
    let walk = engine.for_each_vector(|key, item, modality, vector| {
        let k = key as i64;
        let v16: Vec<f16> = vector.iter().map(|&x| f16::from_f32(x)).collect();
        let d = hex(&digest(item, modality.as_str(), &v16));
        seen.insert(k);
        if !summary.count(remote.get(&k), &d) {
            return Ok(());
        }
        cols.key.push(k);
        cols.item_key.push(jsearch::item_key_of(key) as i64);
        cols.id.push(item.id.clone());
        cols.kind.push(item.kind.as_str().into());
        cols.modality.push(modality.as_str().into());
        cols.path.push(item.path.clone());
        cols.title.push(item.title.clone().unwrap_or_default());
        cols.digest.push(d);
        cols.attrs
            .push(serde_json::to_vec(&item.metadata).unwrap_or_default());
        cols.filter_attrs
            .push(serde_json::to_vec(&jsearch::attrs::filter_view(item)).unwrap_or_default());
        for x in head_of(vector, id.head_dim) {
            cols.head.extend(f16::from_f32(x).to_le_bytes());
        }
        cols.vector.extend_from_slice(vector);
        if cols.len() >= UPSERT_ROWS {
            if let Err(e) = conn.upsert(name, std::mem::take(&mut cols), id.dim, id.head_dim) {
                failure = Some(e);
                return Err(jsearch::Error::Internal("sync stopped".into()));
            }
        }
        Ok(())
    });
    if let Err(e) = walk {
        return Err(failure.take().unwrap_or(ScaleError::Engine(e)));
    }
    conn.upsert(name, cols, id.dim, id.head_dim)?;
    let gone: Vec<i64> = remote
        .keys()
        .filter(|k| !seen.contains(k))
        .copied()
        .collect();
    summary.deleted = conn.delete(name, &gone)?;
    summary.rows = summary.inserted + summary.updated + summary.unchanged;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// A connection to a synced collection, for two-stage queries.
pub struct MilvusBackend {
    conn: Conn,
    info: TableInfo,
}

impl MilvusBackend {
    /// Connects and reads the collection's properties (an error names a missing collection).
    pub fn connect(url: &str, collection: &str) -> Result<Self> {
        check_table_name(collection).map_err(ScaleError::InvalidArgument)?;
        let mut conn = Conn::open(url)?;
        let Some((schema, props)) = conn.describe(collection)? else {
            return Err(ScaleError::Backend {
                backend: redact(url),
                message: format!(
                    "no collection {collection} synced here: run `jsearch sync URL --table {collection}` first"
                ),
            });
        };
        let props = identity_of(&schema, &props);
        let get = |k: &str| prop(&props, k).unwrap_or_default().to_string();
        if get("jsearch.model_fingerprint").is_empty() {
            return Err(ScaleError::Backend {
                backend: redact(url),
                message: format!("collection {collection} was not made by `jsearch sync`"),
            });
        }
        conn.load(collection)?;
        let info = TableInfo {
            table: collection.to_string(),
            model: get("jsearch.model"),
            fingerprint: get("jsearch.model_fingerprint"),
            dim: get("jsearch.dim").parse().unwrap_or(0),
            head_dim: get("jsearch.head_dim").parse().unwrap_or(0),
            store: get("jsearch.store"),
            rows: 0,
        };
        Ok(MilvusBackend { conn, info })
    }

    /// What the collection holds.
    pub fn info(&self) -> &TableInfo {
        &self.info
    }

    /// The boolean expression the search runs with (kinds, then the filter).
    pub fn expr(q: &BackendQuery) -> Result<String> {
        let mut parts = Vec::new();
        if !q.kinds.is_empty() {
            let kinds: Vec<String> = q
                .kinds
                .iter()
                .map(|k| format!("\"{}\"", k.as_str()))
                .collect();
            parts.push(format!("kind in [{}]", kinds.join(", ")));
        }
        if let Some(f) = &q.filter {
            parts.push(expr::filter_expr(f)?);
        }
        Ok(parts.join(" and "))
    }

    /// The two-stage search for `vector` (any norm): up to `q.limit` items, best vector per
    /// item, by cosine of the full vectors.
    pub fn search(&mut self, vector: &[f32], q: &BackendQuery) -> Result<Vec<BackendHit>> {
        if vector.len() != self.info.dim {
            return Err(ScaleError::InvalidArgument(format!(
                "query vector of {} dimensions for a collection of {}",
                vector.len(),
                self.info.dim
            )));
        }
        let mut full = vector.to_vec();
        jsearch::normalize(&mut full);
        let head: Vec<u8> = head_of(&full, self.info.head_dim)
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect();
        let group = PlaceholderGroup {
            placeholders: vec![PlaceholderValue {
                tag: "$0".into(),
                r#type: PlaceholderType::Float16Vector as i32,
                values: vec![head],
                ..Default::default()
            }],
        };
        let candidates = q.candidates().min(QUERY_WINDOW);
        let fields = [
            "key", "item_key", "id", "kind", "modality", "path", "title", "attrs", "vector",
        ];
        let req = SearchRequest {
            collection_name: self.info.table.clone(),
            dsl: Self::expr(q)?,
            dsl_type: DslType::BoolExprV1 as i32,
            search_input: Some(search_request::SearchInput::PlaceholderGroup(
                group.encode_to_vec(),
            )),
            output_fields: fields.iter().map(|s| s.to_string()).collect(),
            search_params: vec![
                kv("anns_field", "head"),
                kv("topk", candidates.to_string()),
                kv("metric_type", "COSINE"),
                kv("params", format!(r#"{{"ef": {}}}"#, candidates.max(64))),
                kv("round_decimal", "-1"),
            ],
            nq: 1,
            consistency_level: ConsistencyLevel::Strong as i32,
            ..Default::default()
        };
        let url = self.conn.url.clone();
        let mut c = self.conn.client.clone();
        let r = self
            .conn
            .rt
            .block_on(c.search(req))
            .map_err(|e| err(&url, "the two-stage search", e.message()))?
            .into_inner();
        check(&url, "the two-stage search", r.status.as_ref())?;
        let Some(d) = r.results else {
            return Ok(Vec::new());
        };
        let f = &d.fields_data;
        let keys = match d.ids.and_then(|i| i.id_field) {
            Some(i_ds::IdField::IntId(l)) => l.data,
            _ => long_column(f, "key"),
        };
        if keys.is_empty() {
            // Nothing passed the filter (the reply then carries no field data at all).
            return Ok(Vec::new());
        }
        let (item_keys, ids, kinds, modalities, paths, titles, attrs) = (
            long_column(f, "item_key"),
            string_column(f, "id"),
            string_column(f, "kind"),
            string_column(f, "modality"),
            string_column(f, "path"),
            string_column(f, "title"),
            json_column(f, "attrs"),
        );
        let (dim, vectors) = float_vectors(f, "vector");
        let n = keys.len();
        if [
            item_keys.len(),
            ids.len(),
            kinds.len(),
            modalities.len(),
            paths.len(),
        ]
        .iter()
        .any(|&l| l != n)
            || dim != self.info.dim
            || vectors.len() != n * dim
        {
            return Err(err(
                &url,
                "the two-stage search",
                "an answer with missing fields",
            ));
        }
        // Stage two: the full vectors.
        let mut ranked: Vec<(f32, usize)> = (0..n)
            .map(|i| {
                let v = &vectors[i * dim..(i + 1) * dim];
                let dot: f32 = v.iter().zip(&full).map(|(a, b)| a * b).sum();
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                (dot / norm, i)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut hits = Vec::with_capacity(q.limit);
        let mut items = HashSet::new();
        for (cos, i) in ranked {
            if !items.insert(item_keys[i]) {
                continue;
            }
            hits.push(BackendHit {
                rank: hits.len() + 1,
                cosine: cos,
                key: keys[i] as u64,
                item_key: item_keys[i] as u64,
                id: ids[i].clone(),
                kind: kinds[i].clone(),
                modality: modalities[i].clone(),
                path: paths[i].clone(),
                title: titles.get(i).filter(|t| !t.is_empty()).cloned(),
                metadata: attrs.get(i).cloned().unwrap_or(Value::Null),
            });
            if hits.len() == q.limit {
                break;
            }
        }
        Ok(hits)
    }
}
