//! Milvus: a store's vectors in a collection that Milvus shards and replicates itself, searched
//! in two stages expressed with Milvus's own features: the ANN search runs on the `head` field
//! (the 256-d heads, cosine) with the filter as Milvus's boolean expression on the
//! `filter_attrs` JSON field, the candidates' full vectors come back (FLOAT_VECTOR, full
//! dimension), and the client re-ranks them.
//!
//! The collection (default `jsearch_items`): `key` (INT64, primary: the vector's key's bits),
//! `item_key` (INT64), `id`, `kind`, `modality`, `path`, `title`, `digest` (VARCHAR), `attrs`
//! and `filter_attrs` (JSON), `head`, and `vector` where the server allows two vector fields
//! ([`schema`] has both layouts: on Milvus 2.3, one vector field per collection, the full
//! vectors live in `NAME_vectors` by the same key and the second stage fetches them by key).
//! Its properties record the model (`jsearch.model`, `jsearch.model_fingerprint`,
//! `jsearch.dim`, `jsearch.head_dim`, `jsearch.format`, `jsearch.layout`): a collection of
//! another model is refused. A sync reads every row's `(key, digest)`, upserts the rows whose
//! digest differs and deletes the keys the store no longer has. Milvus has no transactions: an
//! interrupted sync leaves some rows written, and the next sync, which trusts only the digests
//! it reads back, completes it (in the split layout a row's full vector is written before its
//! head and digest, and deleted before it, so a digest never vouches for a missing vector).
//!
//! Built on the gRPC API directly (the request and response types `milvus-sdk-rust` generates
//! from milvus-proto): that crate's high-level clients expect replies of Milvus 2.5 and later
//! (against milvus-lite 2.4 its row insert crashed the server and its search and load waits
//! failed on fields 2.4 does not send), while the wire protocol itself is the same.
//! Tested against milvus-lite 2.4 (one collection, FLAT indexes) and Milvus 2.3 standalone
//! (split, HNSW on the heads).

mod columns;
pub mod expr;
pub mod schema;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use half::f16;
use jsearch::Engine;
use milvus::proto::common::{
    ConsistencyLevel, DslType, KeyValuePair, PlaceholderGroup, PlaceholderType, PlaceholderValue,
    SegmentState, Status,
};
use milvus::proto::milvus::milvus_service_client::MilvusServiceClient;
use milvus::proto::milvus::{
    search_request, CreateCollectionRequest, CreateIndexRequest, DeleteRequest,
    DescribeCollectionRequest, DescribeIndexRequest, DropCollectionRequest, FlushRequest,
    GetFlushStateRequest, GetPersistentSegmentInfoRequest, GetQuerySegmentInfoRequest,
    GetVersionRequest, LoadCollectionRequest, QueryRequest, SearchRequest, UpsertRequest,
};
use milvus::proto::schema::{i_ds, CollectionSchema, FieldData};
use prost::Message;
use tonic::transport::Channel;

use crate::backend::{
    digest, head_of, redact, BackendHit, BackendQuery, Identity, SyncOptions, SyncSummary,
    TableInfo,
};
use crate::postgres::check_table_name;
use crate::{Result, ScaleError};
use columns::{float_vectors, json_column, long_column, string_column, Columns};
use schema::{kv, prop, vectors_collection, Layout};

/// Rows per upsert request (about 5 MB at 1024-d).
const UPSERT_ROWS: usize = 1000;
/// Milvus builds no index on a segment of fewer rows (its
/// `indexCoord.segment.minSegmentNumRowsToEnableIndex`) and searches it exactly.
const MIN_INDEXED_SEGMENT_ROWS: i64 = 1024;
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

/// Calls `done` every `every` until it holds or `limit` has passed. Running out is not an error:
/// the sync's rows are all written, searches may only go through Milvus's interim index a while.
fn poll(limit: Duration, every: Duration, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done()? {
            return Ok(());
        }
        std::thread::sleep(every);
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where and how to reach a server: `milvus://[USER:PASSWORD@]HOST[:PORT]` (or `http://`) in
/// plain gRPC, `https://[USER:PASSWORD@]HOST[:PORT][?ca=FILE&server_name=NAME]` over TLS (the
/// server's certificate checked against the CA file, else Mozilla's roots; its name against
/// `server_name`, else the host). The port defaults to 19530.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    uri: String,
    /// TLS: (CA file, server name).
    tls: Option<(Option<String>, Option<String>)>,
    /// `USER:PASSWORD`, sent base64-encoded as Milvus's `authorization` header.
    credentials: Option<String>,
}

fn endpoint(url: &str) -> Result<Endpoint> {
    let invalid = |what: &str| {
        ScaleError::InvalidArgument(format!(
            "{}: {what} (milvus://[USER:PASSWORD@]HOST[:PORT], or https://… for TLS)",
            redact(url)
        ))
    };
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url
        .strip_prefix("milvus://")
        .or_else(|| url.strip_prefix("http://"))
    {
        (false, r)
    } else {
        return Err(invalid("not a Milvus URL"));
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = rest.split('/').next().unwrap_or_default();
    let (credentials, host) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c.to_string()), h),
        None => (None, authority),
    };
    if host.is_empty() {
        return Err(invalid("no host in the URL"));
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:19530")
    };
    let (mut ca, mut server_name) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("ca", v) if tls => ca = Some(v.to_string()),
            ("server_name", v) if tls => server_name = Some(v.to_string()),
            (k, _) => {
                return Err(invalid(&format!(
                    "unknown parameter {k} (https:// URLs take ca=FILE and server_name=NAME)"
                )))
            }
        }
    }
    Ok(Endpoint {
        uri: format!("{}://{host}", if tls { "https" } else { "http" }),
        tls: tls.then_some((ca, server_name)),
        credentials,
    })
}

/// Adds the `authorization` header to every request.
#[derive(Clone)]
struct Auth(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Auth {
    fn call(
        &mut self,
        mut r: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

type Client = MilvusServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

/// A blocking connection (the CLI is synchronous): its own current-thread runtime.
struct Conn {
    rt: tokio::runtime::Runtime,
    client: Client,
    url: String,
}

impl Conn {
    /// Runs one RPC, `f` on a clone of the client, to its reply; a transport error is named
    /// with `what` (the reply's own status is the caller's to check).
    fn rpc<R, F, Fut>(&self, what: &str, f: F) -> Result<R>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>>,
    {
        self.rt
            .block_on(f(self.client.clone()))
            .map(tonic::Response::into_inner)
            .map_err(|e| err(&self.url, what, e.message()))
    }

    fn open(url: &str) -> Result<Self> {
        let ep = endpoint(url)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(url, "starting the client", e))?;
        let mut builder = Channel::from_shared(ep.uri.clone())
            .map_err(|e| err(url, "cannot connect", e))?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300));
        if let Some((ca, name)) = &ep.tls {
            let mut cfg = tonic::transport::ClientTlsConfig::new();
            cfg = match ca {
                Some(f) => {
                    let pem = std::fs::read(f).map_err(|e| {
                        ScaleError::InvalidArgument(format!("{}: ca={f}: {e}", redact(url)))
                    })?;
                    cfg.ca_certificate(tonic::transport::Certificate::from_pem(pem))
                }
                None => cfg.with_webpki_roots(),
            };
            if let Some(n) = name {
                cfg = cfg.domain_name(n.clone());
            }
            builder = builder
                .tls_config(cfg)
                .map_err(|e| err(url, "TLS settings", e))?;
        }
        let channel = rt
            .block_on(builder.connect())
            .map_err(|e| {
                let mut s = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(inner) = src {
                    s.push_str(&format!(": {inner}"));
                    src = inner.source();
                }
                s
            })
            .map_err(|e| err(url, "cannot connect", e))?;
        let auth = match &ep.credentials {
            None => None,
            Some(c) => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_bytes());
                Some(b64.parse().map_err(|e| err(url, "credentials", e))?)
            }
        };
        let client = MilvusServiceClient::with_interceptor(channel, Auth(auth))
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
        let r = self.rpc("describing the collection", |mut c| async move {
            c.describe_collection(DescribeCollectionRequest {
                collection_name: name.into(),
                ..Default::default()
            })
            .await
        })?;
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

/// The expression for keys in `lo..hi` (bounds as i128: `hi` may be `i64::MAX + 1`). Neither
/// bound is written as `-9223372036854775808`, which Milvus 2.3's parser reads as the negation of
/// an out-of-range number.
fn key_range(lo: i128, hi: i128) -> String {
    let upper = if hi > i64::MAX as i128 {
        format!("key <= {}", i64::MAX)
    } else {
        format!("key < {hi}")
    };
    if lo <= i64::MIN as i128 {
        upper
    } else {
        format!("key >= {lo} and {upper}")
    }
}

impl Conn {
    /// Every row's `(key, digest)`: key ranges small enough for one query each (split again
    /// when one comes back full).
    fn digests(&mut self, name: &str) -> Result<HashMap<i64, String>> {
        let mut out = HashMap::new();
        let mut ranges: Vec<(i128, i128)> = vec![(i64::MIN as i128, i64::MAX as i128 + 1)];
        while let Some((lo, hi)) = ranges.pop() {
            let expr = key_range(lo, hi);
            let r = self.rpc("reading the collection's digests", |mut c| async move {
                c.query(QueryRequest {
                    collection_name: name.into(),
                    expr,
                    output_fields: vec!["key".into(), "digest".into()],
                    query_params: vec![kv("limit", QUERY_WINDOW.to_string())],
                    consistency_level: ConsistencyLevel::Strong as i32,
                    ..Default::default()
                })
                .await
            })?;
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

    /// Writes `fields` (`n` rows, the first named `first`) into collection `name`.
    fn upsert_fields(
        &mut self,
        name: &str,
        fields: Vec<FieldData>,
        n: usize,
        first: &str,
    ) -> Result<()> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.upsert(UpsertRequest {
                collection_name: name.into(),
                fields_data: fields,
                num_rows: n as u32,
                ..Default::default()
            }))
            .map_err(|e| {
                err(
                    &self.url,
                    &format!("upserting {n} rows into {name} (from {first})"),
                    e.message(),
                )
            })?
            .into_inner();
        check(
            &self.url,
            &format!("upserting rows into {name}"),
            r.status.as_ref(),
        )
    }

    /// Writes the rows: in the split layout the full vectors first, then the heads with their
    /// digests (module docs).
    fn upsert(&mut self, name: &str, layout: Layout, cols: Columns, id: &Identity) -> Result<()> {
        let n = cols.len();
        if n == 0 {
            return Ok(());
        }
        let first = cols.id.first().cloned().unwrap_or_default();
        let (main, vectors) = cols.into_fields(layout, id.dim, id.head_dim);
        if let Some(vectors) = vectors {
            self.upsert_fields(&vectors_collection(name), vectors, n, &first)?;
        }
        self.upsert_fields(name, main, n, &first)
    }

    /// Seals what a sync wrote into segments, and waits (at most a minute) until they are
    /// flushed: Milvus builds the HNSW index only on sealed segments and searches growing ones
    /// through a coarse interim index (Milvus 2.3 at 100k rows left growing: recall@10 0.978,
    /// 0.894 with a filter); [`Conn::wait_for_index`] then waits until they are served with it.
    fn flush(&mut self, name: &str) -> Result<()> {
        let what = format!("flushing collection {name}");
        let r = self.rpc(&what, |mut c| async move {
            c.flush(FlushRequest {
                collection_names: vec![name.into()],
                ..Default::default()
            })
            .await
        })?;
        check(&self.url, &what, r.status.as_ref())?;
        let segments = r
            .coll_seg_i_ds
            .get(name)
            .map(|l| l.data.clone())
            .unwrap_or_default();
        let flush_ts = r.coll_flush_ts.get(name).copied().unwrap_or(0);
        poll(Duration::from_secs(60), Duration::from_millis(200), || {
            let req = GetFlushStateRequest {
                segment_i_ds: segments.clone(),
                flush_ts,
                collection_name: name.into(),
                ..Default::default()
            };
            let st = self.rpc(&what, |mut c| async move { c.get_flush_state(req).await })?;
            check(&self.url, &what, st.status.as_ref())?;
            Ok(st.flushed)
        })
    }

    /// Waits (at most three minutes) until the query nodes serve every flushed segment of `name`
    /// with the index on `field`: until they do, Milvus 2.3 searches freshly sealed segments
    /// through its coarse interim index (20k rows searched right after a flush: recall@10 0.81).
    ///
    /// Served means: the index is built (`DescribeIndex`), every flushed segment the data
    /// coordinator lists (`GetPersistentSegmentInfo`, compacted segments included) is loaded by
    /// a query node (`GetQuerySegmentInfo`), and every loaded segment carries the index. A
    /// segment under [`MIN_INDEXED_SEGMENT_ROWS`] rows never gets one and is searched exactly,
    /// sealed or growing, so it is not waited for. A server that cannot say (milvus-lite, which
    /// has neither call) is taken at its word. Traced on Milvus 2.3.5: a 100k collection's
    /// incremental sync waits about a minute, for the query coordinator to hand over the
    /// segment compaction made and the new one; the condition then holds.
    fn wait_for_index(&mut self, name: &str, field: &str) -> Result<()> {
        let what = format!("waiting for the index on {name}.{field}");
        poll(Duration::from_secs(180), Duration::from_millis(500), || {
            let r = self.rpc(&what, |mut c| async move {
                c.describe_index(DescribeIndexRequest {
                    collection_name: name.into(),
                    field_name: field.into(),
                    ..Default::default()
                })
                .await
            })?;
            check(&self.url, &what, r.status.as_ref())?;
            let built = r
                .index_descriptions
                .iter()
                .all(|d| d.pending_index_rows == 0 && d.indexed_rows >= d.total_rows);
            Ok(built && matches!(self.unserved_segments(name), None | Some(0)))
        })
    }

    /// How many segments of `name` holding at least [`MIN_INDEXED_SEGMENT_ROWS`] rows are
    /// flushed but not loaded by a query node, or loaded without their index; `None` when the
    /// server does not say.
    fn unserved_segments(&self, name: &str) -> Option<usize> {
        let what = "listing the segments";
        let flushed = self
            .rpc(what, |mut c| async move {
                c.get_persistent_segment_info(GetPersistentSegmentInfoRequest {
                    collection_name: name.into(),
                    ..Default::default()
                })
                .await
            })
            .ok()?;
        let loaded = self
            .rpc(what, |mut c| async move {
                c.get_query_segment_info(GetQuerySegmentInfoRequest {
                    collection_name: name.into(),
                    ..Default::default()
                })
                .await
            })
            .ok()?;
        if flushed.status.as_ref().is_some_and(failed) || loaded.status.as_ref().is_some_and(failed)
        {
            return None;
        }
        let big = |rows: i64| rows >= MIN_INDEXED_SEGMENT_ROWS;
        let served: HashSet<i64> = loaded.infos.iter().map(|i| i.segment_id).collect();
        let not_loaded = flushed
            .infos
            .iter()
            .filter(|s| s.state == SegmentState::Flushed as i32 && big(s.num_rows))
            .filter(|s| !served.contains(&s.segment_id))
            .count();
        let unindexed = loaded
            .infos
            .iter()
            .filter(|i| i.index_id == 0 && big(i.num_rows))
            .count();
        Some(not_loaded + unindexed)
    }

    /// Waits until the server serves every write made so far on `name` (a read at Strong
    /// consistency), so that searches at Milvus's default Bounded consistency, which read what
    /// the query nodes have consumed, see them.
    fn barrier(&mut self, name: &str) -> Result<()> {
        let what = "waiting for the writes to be served";
        let r = self.rpc(what, |mut c| async move {
            c.query(QueryRequest {
                collection_name: name.into(),
                expr: key_range(i64::MIN as i128, i64::MAX as i128 + 1),
                output_fields: vec!["key".into()],
                query_params: vec![kv("limit", "1")],
                consistency_level: ConsistencyLevel::Strong as i32,
                ..Default::default()
            })
            .await
        })?;
        check(&self.url, what, r.status.as_ref())
    }

    fn delete(&mut self, name: &str, keys: &[i64]) -> Result<usize> {
        let mut done = 0;
        for chunk in keys.chunks(1000) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let r = self.rpc("deleting removed rows", |mut c| async move {
                c.delete(DeleteRequest {
                    collection_name: name.into(),
                    expr: format!("key in [{}]", list.join(", ")),
                    ..Default::default()
                })
                .await
            })?;
            check(&self.url, "deleting removed rows", r.status.as_ref())?;
            done += chunk.len();
        }
        Ok(done)
    }

    /// The server's version as GetVersion says it (`v2.3.5-lite`), empty when it does not.
    fn version(&mut self) -> String {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.get_version(GetVersionRequest::default()))
            .map(|r| r.into_inner().version)
            .unwrap_or_default()
    }

    /// Creates one collection and an index on each of its vector fields: the first of `kinds`
    /// the server accepts (HNSW where it has it, else FLAT, milvus-lite's only index).
    fn create_collection(
        &mut self,
        schema: CollectionSchema,
        props: Vec<KeyValuePair>,
        indexes: &[(&str, &[&str])],
    ) -> Result<()> {
        let name = schema.name.clone();
        let req = CreateCollectionRequest {
            collection_name: name.clone(),
            schema: schema.encode_to_vec(),
            shards_num: 1,
            consistency_level: ConsistencyLevel::Strong as i32,
            properties: props,
            ..Default::default()
        };
        let r = self.rpc("creating the collection", |mut c| async move {
            c.create_collection(req).await
        })?;
        check(&self.url, &format!("creating collection {name}"), Some(&r))?;
        for (f, kinds) in indexes {
            let mut last = None;
            for kind in *kinds {
                let mut params = vec![kv("index_type", *kind), kv("metric_type", "COSINE")];
                if *kind == "HNSW" {
                    params.push(kv("params", r#"{"M": 16, "efConstruction": 64}"#));
                }
                let req = CreateIndexRequest {
                    collection_name: name.clone(),
                    field_name: (*f).into(),
                    index_name: format!("{f}_index"),
                    extra_params: params,
                    ..Default::default()
                };
                let r = self.rpc("creating the indexes", |mut c| async move {
                    c.create_index(req).await
                })?;
                last = Some(r.clone());
                if !failed(&r) {
                    last = None;
                    break;
                }
            }
            if let Some(s) = last {
                check(
                    &self.url,
                    &format!("creating the index on {name}.{f}"),
                    Some(&s),
                )?;
            }
        }
        Ok(())
    }

    /// Creates the collection(s) of `layout`: in the split layout `NAME_vectors` first, so that
    /// a collection `NAME` always has its vectors' collection.
    fn create(&mut self, name: &str, id: &Identity, layout: Layout) -> Result<()> {
        const HEADS: &[&str] = &["HNSW", "FLAT"];
        // The full vectors are only read back, but every vector field needs an index before
        // a load.
        const FULL: &[&str] = &["FLAT"];
        let props = schema::identity_props(id, layout);
        match layout {
            Layout::One => self.create_collection(
                schema::schema(name, id, layout),
                props,
                &[("head", HEADS), ("vector", FULL)],
            ),
            Layout::Split => {
                self.create_collection(
                    schema::vectors_schema(name, id),
                    props.clone(),
                    &[("vector", FULL)],
                )?;
                self.create_collection(schema::schema(name, id, layout), props, &[("head", HEADS)])
            }
        }
    }

    fn load(&mut self, name: &str) -> Result<()> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.load_collection(LoadCollectionRequest {
                collection_name: name.into(),
                ..Default::default()
            }))
            .map_err(|e| {
                err(
                    &self.url,
                    &format!("loading collection {name}"),
                    e.message(),
                )
            })?
            .into_inner();
        check(&self.url, &format!("loading collection {name}"), Some(&r))
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
                    &format!("dropping collection {name} (--replace)"),
                    e.message(),
                )
            })?
            .into_inner();
        check(
            &self.url,
            &format!("dropping collection {name} (--replace)"),
            Some(&r),
        )
    }

    /// Drops `NAME_vectors` when it exists and `jsearch sync` made it; refuses one it did not.
    fn drop_vectors_collection(&mut self, name: &str) -> Result<()> {
        let vectors = vectors_collection(name);
        match self.describe(&vectors)? {
            None => Ok(()),
            Some((s, p)) if schema::made_by_sync(&s, &p) => self.drop(&vectors),
            Some(_) => Err(ScaleError::Backend {
                backend: redact(&self.url),
                message: format!(
                    "collection {vectors} exists but was not made by `jsearch sync`, and the collection {name} on this server would need it for its full vectors: sync into another --table, or drop it"
                ),
            }),
        }
    }
}

/// Makes collection `opts.table` at `url` hold exactly the store's vectors (module docs).
pub fn sync(engine: &Engine, url: &str, opts: &SyncOptions) -> Result<SyncSummary> {
    let started = Instant::now();
    let id = Identity::of(engine, &opts.table)?;
    let name = opts.table.as_str();
    let mut conn = Conn::open(url)?;
    let mut existing = conn.describe(name)?;
    if opts.replace {
        if let Some((s, p)) = &existing {
            let split = Layout::of(&schema::identity_of(s, p)) == Layout::Split;
            conn.drop(name)?;
            if split {
                conn.drop_vectors_collection(name)?;
            }
            existing = None;
        }
    }
    let created = existing.is_none();
    // Whether the digests on the server vouch for the rows (not when the full vectors'
    // collection had to be made again).
    let mut trust_digests = !created;
    let layout = match &existing {
        Some((s, p)) => {
            let layout = schema::check_collection(url, name, s, p, &id)?;
            if layout == Layout::Split {
                match conn.describe(&vectors_collection(name))? {
                    Some((vs, _)) => schema::check_vectors_collection(url, name, &vs, &id)?,
                    None => {
                        conn.create_collection(
                            schema::vectors_schema(name, &id),
                            schema::identity_props(&id, layout),
                            &[("vector", &["FLAT"])],
                        )?;
                        trust_digests = false;
                    }
                }
            }
            layout
        }
        None => {
            let layout = Layout::for_version(&conn.version());
            if layout == Layout::Split {
                // Left by an interrupted first sync: nothing in it is vouched for.
                conn.drop_vectors_collection(name)?;
            }
            conn.create(name, &id, layout)?;
            layout
        }
    };
    if layout == Layout::Split {
        conn.load(&vectors_collection(name))?;
    }
    conn.load(name)?;
    let remote = if trust_digests {
        conn.digests(name)?
    } else if created {
        HashMap::new()
    } else {
        // Keys still to delete if the store lost them; every row is written again.
        conn.digests(name)?
            .into_keys()
            .map(|k| (k, String::new()))
            .collect()
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
        cols.head.extend(head_of(vector, id.head_dim));
        cols.vector.extend_from_slice(vector);
        if cols.len() >= UPSERT_ROWS {
            if let Err(e) = conn.upsert(name, layout, std::mem::take(&mut cols), &id) {
                failure = Some(e);
                return Err(jsearch::Error::Internal("sync stopped".into()));
            }
        }
        Ok(())
    });
    if let Err(e) = walk {
        return Err(failure.take().unwrap_or(ScaleError::Engine(e)));
    }
    conn.upsert(name, layout, cols, &id)?;
    let gone: Vec<i64> = remote
        .keys()
        .filter(|k| !seen.contains(k))
        .copied()
        .collect();
    if layout == Layout::Split {
        conn.delete(&vectors_collection(name), &gone)?;
    }
    summary.deleted = conn.delete(name, &gone)?;
    let changed = summary.inserted + summary.updated + summary.deleted > 0;
    if layout == Layout::Split {
        if changed {
            conn.flush(&vectors_collection(name))?;
        }
        conn.barrier(&vectors_collection(name))?;
    }
    if changed {
        conn.flush(name)?;
        conn.wait_for_index(name, "head")?;
    }
    conn.barrier(name)?;
    summary.rows = summary.inserted + summary.updated + summary.unchanged;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// A connection to a synced collection, for two-stage queries.
pub struct MilvusBackend {
    conn: Conn,
    info: TableInfo,
    layout: Layout,
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
        let props = schema::identity_of(&schema, &props);
        let get = |k: &str| prop(&props, k).unwrap_or_default().to_string();
        if get("jsearch.model_fingerprint").is_empty() {
            return Err(ScaleError::Backend {
                backend: redact(url),
                message: format!("collection {collection} was not made by `jsearch sync`"),
            });
        }
        let layout = Layout::of(&props);
        if layout == Layout::Split {
            let vectors = vectors_collection(collection);
            if conn.describe(&vectors)?.is_none() {
                return Err(ScaleError::Backend {
                    backend: redact(url),
                    message: format!(
                        "collection {collection} keeps its full vectors in {vectors}, which is missing: run `jsearch sync URL --table {collection}` again"
                    ),
                });
            }
            conn.load(&vectors)?;
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
        Ok(MilvusBackend { conn, info, layout })
    }

    /// What the collection holds.
    pub fn info(&self) -> &TableInfo {
        &self.info
    }

    /// How the collection holds the heads and the full vectors.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The two-stage search in Milvus's terms, as `jsearch sync` prints it.
    pub fn plan(&self) -> String {
        let t = &self.info.table;
        let first = format!(
            "search field head ({}, COSINE) of collection {t} with the filter as expression on filter_attrs, e.g. filter_attrs[\"price\"] < 20",
            match self.layout {
                Layout::One => "FLOAT16_VECTOR",
                Layout::Split => "FLOAT_VECTOR",
            }
        );
        match self.layout {
            Layout::One => format!("{first}, output field vector; re-rank the candidates by cosine with the full query vector"),
            Layout::Split => format!(
                "{first}, output field key; query collection {} with `key in [the candidates' keys]`, output field vector; re-rank the candidates by cosine with the full query vector",
                vectors_collection(t)
            ),
        }
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
        let group = PlaceholderGroup {
            placeholders: vec![PlaceholderValue {
                tag: "$0".into(),
                r#type: match self.layout {
                    Layout::One => PlaceholderType::Float16Vector,
                    Layout::Split => PlaceholderType::FloatVector,
                } as i32,
                values: vec![columns::head_bytes(
                    self.layout,
                    &head_of(&full, self.info.head_dim),
                )],
                ..Default::default()
            }],
        };
        let candidates = q.candidates().min(QUERY_WINDOW);
        // HNSW's search list (FLAT ignores it): 8x the candidates, 16x with a filter, whose
        // rejected nodes the walk passes over (Milvus 2.3 at 20k, filtered: recall@10 0.958 at
        // 4x, 0.994 at 16x).
        let ef = (candidates.max(64) * if q.filter.is_some() { 16 } else { 8 }).min(QUERY_WINDOW);
        // With a filter Milvus 2.3's HNSW misses more of the nearest passing heads: four times
        // the candidates go to the re-rank there (fetched by key in the split layout anyway).
        let topk = if q.filter.is_some() && self.layout == Layout::Split {
            (candidates * 4).min(ef)
        } else {
            candidates
        };
        let mut fields = vec![
            "key", "item_key", "id", "kind", "modality", "path", "title", "attrs",
        ];
        if self.layout == Layout::One {
            fields.push("vector");
        }
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
                kv("topk", topk.to_string()),
                kv("metric_type", "COSINE"),
                // nprobe: Milvus 2.3 searches segments the HNSW index does not cover yet
                // (growing, or sealed before the query node loads their index) through an
                // interim IVF index of 128 lists; all of them makes that search exact.
                kv("params", format!(r#"{{"ef": {ef}, "nprobe": 128}}"#)),
                kv("round_decimal", "-1"),
            ],
            nq: 1,
            consistency_level: ConsistencyLevel::Bounded as i32,
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
        let (dim, vectors) = match self.layout {
            Layout::One => float_vectors(f, "vector"),
            Layout::Split => (self.info.dim, self.full_vectors(&keys)?),
        };
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
        // A candidate whose full vector is missing (split layout, mid-sync) has NaN: dropped.
        ranked.retain(|(cos, _)| cos.is_finite());
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
                metadata: attrs.get(i).cloned().unwrap_or(serde_json::Value::Null),
            });
            if hits.len() == q.limit {
                break;
            }
        }
        Ok(hits)
    }

    /// Stage two's input in the split layout: the full vectors of `keys` from `NAME_vectors`,
    /// in the order of `keys` (NaN for a key that has none).
    fn full_vectors(&mut self, keys: &[i64]) -> Result<Vec<f32>> {
        let dim = self.info.dim;
        let url = self.conn.url.clone();
        let list: Vec<String> = keys.iter().map(i64::to_string).collect();
        let mut c = self.conn.client.clone();
        let r = self
            .conn
            .rt
            .block_on(c.query(QueryRequest {
                collection_name: vectors_collection(&self.info.table),
                expr: format!("key in [{}]", list.join(", ")),
                output_fields: vec!["key".into(), "vector".into()],
                query_params: vec![kv("limit", keys.len().to_string())],
                consistency_level: ConsistencyLevel::Bounded as i32,
                ..Default::default()
            }))
            .map_err(|e| err(&url, "fetching the candidates' full vectors", e.message()))?
            .into_inner();
        check(
            &url,
            "fetching the candidates' full vectors",
            r.status.as_ref(),
        )?;
        let got = long_column(&r.fields_data, "key");
        let (d, data) = float_vectors(&r.fields_data, "vector");
        if d != dim || data.len() != got.len() * dim {
            return Err(err(
                &url,
                "fetching the candidates' full vectors",
                "an answer with missing fields",
            ));
        }
        let at: HashMap<i64, usize> = got.iter().enumerate().map(|(i, k)| (*k, i)).collect();
        let mut out = Vec::with_capacity(keys.len() * dim);
        for k in keys {
            match at.get(k) {
                Some(&i) => out.extend_from_slice(&data[i * dim..(i + 1) * dim]),
                None => out.extend(std::iter::repeat_n(f32::NAN, dim)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_endpoint_tls_and_credentials() {
        let e = endpoint("milvus://db.example").unwrap();
        assert_eq!(e.uri, "http://db.example:19530");
        assert_eq!((e.tls, e.credentials), (None, None));
        let e =
            endpoint("https://root:pw@db.example:443?ca=/etc/ca.pem&server_name=milvus").unwrap();
        assert_eq!(e.uri, "https://db.example:443");
        assert_eq!(
            e.tls,
            Some((Some("/etc/ca.pem".into()), Some("milvus".into())))
        );
        assert_eq!(e.credentials.as_deref(), Some("root:pw"));
        assert!(endpoint("milvus://h?ca=x").is_err(), "ca= only with TLS");
        assert!(endpoint("grpc://h").is_err());
        let e = endpoint("milvus://u:secret@").unwrap_err().to_string();
        assert!(e.contains("no host") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn key_ranges_never_write_i64_min() {
        let (min, end) = (i64::MIN as i128, i64::MAX as i128 + 1);
        assert_eq!(key_range(min, end), "key <= 9223372036854775807");
        assert_eq!(key_range(min, 0), "key < 0");
        assert_eq!(key_range(0, end), "key >= 0 and key <= 9223372036854775807");
        assert_eq!(key_range(-5, 7), "key >= -5 and key < 7");
    }
}
