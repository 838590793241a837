//! PostgreSQL + pgvector: a store's vectors in a table that PostgreSQL replicates (streaming
//! replicas for reads) and that Citus or partitioning can shard, searched with the same two
//! stages as the local store: HNSW over the 256-d heads, re-rank by the full vectors.
//!
//! [`sync`] makes the table match the store: it creates the table on the first run (rows
//! first, then the HNSW and GIN indexes, which builds much faster than inserting into them),
//! and later upserts the vectors whose item or vector changed and deletes the vectors the store
//! no longer has. What changed is decided per row by a digest (SHA-256 of the item's record and
//! the f16 vector) kept in the table, so a sync never trusts bookkeeping the backend could have
//! lost: each run repairs whatever an earlier one, or a person, left behind. A sync is one
//! transaction (plus an advisory lock per table), so an interrupted one leaves the table as it
//! was. [`PgBackend`] runs the two-stage query ([`sql::two_stage_query`]) with jsearch's filter
//! grammar translated into the `WHERE` clause.
//!
//! The table, `TABLE` (default `jsearch_items`):
//!
//! | column | type | what |
//! |---|---|---|
//! | `key` | bigint, primary key | the vector's key in the store (the u64's bits) |
//! | `item_key` | bigint | the item's key (a product's text and image vectors share it) |
//! | `id`, `kind`, `modality`, `path`, `title` | text | as in `jsearch export` |
//! | `attrs` | jsonb | the item's attributes as stored |
//! | `filter_attrs` | jsonb | built-ins and attributes with strings folded: what filters compare (GIN index) |
//! | `head` | halfvec(256) | the Matryoshka head, normalised (HNSW index, cosine) |
//! | `vector` | halfvec(dim) | the full vector, as the store holds it |
//! | `digest` | bytea | what the next sync compares |
//!
//! and one row per synced table in `jsearch_sync` (model, fingerprint, dimensions, the store it
//! came from, rows, time): a table holding another model's vectors is refused.

pub mod sql;
pub mod tls;

use std::collections::HashMap;
use std::time::Instant;

use half::f16;
use jsearch::{Engine, ModelInfo};
use pgvector::HalfVector;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Transaction};
use serde_json::Value;

use crate::backend::{digest, head_of, Identity};
pub use crate::backend::{
    redact, BackendHit, BackendQuery, SyncOptions, SyncSummary, TableInfo, DEFAULT_TABLE,
};
use crate::{Result, ScaleError};
pub use sql::{check_table_name, two_stage_query, Param, Where};

/// Version of the table's layout (in `jsearch_sync.format`).
const FORMAT: i32 = 1;

/// Rows per COPY into the staging table of an incremental sync.
const STAGE_ROWS: usize = 4096;

/// A PostgreSQL error with the backend named and the server's own message (not just "db error").
fn backend_error(url: &str, what: &str, e: postgres::Error) -> ScaleError {
    let detail = match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(inner) = src {
                let t = inner.to_string();
                if !s.contains(&t) {
                    s.push_str(&format!(": {t}"));
                }
                src = inner.source();
            }
            s
        }
    };
    ScaleError::Backend {
        backend: redact(url),
        message: format!("{what}: {detail}"),
    }
}

/// Connects, naming the server and the reason when it cannot; TLS as the URL's `sslmode`
/// says ([`tls`]).
fn connect(url: &str) -> Result<Client> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ScaleError::InvalidArgument(format!(
            "{}: not a PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)",
            redact(url)
        )));
    }
    let invalid =
        |e: String| ScaleError::InvalidArgument(format!("{}: invalid URL: {e}", redact(url)));
    let (pg_url, tls) = tls::split_url(url).map_err(invalid)?;
    let mut config: postgres::Config = pg_url
        .parse()
        .map_err(|e: postgres::Error| invalid(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(10));
    }
    config.ssl_mode(tls.ssl_mode());
    let connected = if tls.mode == tls::Mode::Disable {
        config.connect(NoTls)
    } else {
        let connector = tls
            .connector()
            .map_err(|e| ScaleError::InvalidArgument(format!("{}: {e}", redact(url))))?;
        config.connect(connector)
    };
    connected.map_err(|e| {
        let mut err = backend_error(url, "cannot connect", e);
        if let ScaleError::Backend { message, .. } = &mut err {
            if message.contains("certificate") {
                message.push_str(
                    " (sslrootcert=FILE in the URL names the CA that signed the server's certificate; sslmode=require encrypts without checking it)",
                );
            }
        }
        err
    })
}

/// The type of `halfvec` on this server (an extension type: its OID differs per database).
fn halfvec_type(tx: &mut Transaction<'_>, url: &str) -> Result<Type> {
    let st = tx
        .prepare("SELECT $1::halfvec")
        .map_err(|e| backend_error(url, "pgvector's halfvec type", e))?;
    Ok(st.params()[0].clone())
}

/// Checks that `table` (when it exists) is jsearch's, of this model and these dimensions.
/// Returns whether it exists.
fn check_table(tx: &mut Transaction<'_>, url: &str, table: &str, id: &Identity) -> Result<bool> {
    let cols = tx
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
             WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace
               AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&table],
        )
        .map_err(|e| backend_error(url, "reading the table's columns", e))?;
    if cols.is_empty() {
        return Ok(false);
    }
    let have: Vec<(String, String)> = cols.iter().map(|r| (r.get(0), r.get(1))).collect();
    let meta = tx
        .query_opt(
            &format!(
                "SELECT model, fingerprint, dim, head_dim, format FROM {} WHERE table_name = $1",
                sql::SYNC_TABLE
            ),
            &[&table],
        )
        .map_err(|e| backend_error(url, "reading jsearch_sync", e))?;
    let Some(meta) = meta else {
        return Err(ScaleError::Backend {
            backend: redact(url),
            message: format!(
                "table {table} exists but was not made by `jsearch sync` (no row in {}): name another table with --table, or drop it",
                sql::SYNC_TABLE
            ),
        });
    };
    let (model, fp, dim, head_dim, format): (String, String, i32, i32, i32) = (
        meta.get(0),
        meta.get(1),
        meta.get(2),
        meta.get(3),
        meta.get(4),
    );
    if model != id.model || fp != id.fingerprint {
        return Err(ScaleError::Backend {
            backend: redact(url),
            message: format!(
                "table {table} holds vectors of model {model} (fingerprint {fp}); this store's model is {} ({}): sync into another --table, or add --replace to drop it and start again",
                id.model, id.fingerprint
            ),
        });
    }
    if dim as usize != id.dim || head_dim as usize != id.head_dim || format != FORMAT {
        return Err(ScaleError::Backend {
            backend: redact(url),
            message: format!(
                "table {table} is of format {format} with {dim}-d vectors and {head_dim}-d heads; this store needs format {FORMAT}, {} and {}: add --replace to rebuild it",
                id.dim, id.head_dim
            ),
        });
    }
    let want = sql::expected_columns(id.dim, id.head_dim);
    for (name, ty) in &want {
        match have.iter().find(|(n, _)| n == name) {
            Some((_, t)) if t == ty => {}
            Some((_, t)) => {
                return Err(ScaleError::Backend {
                    backend: redact(url),
                    message: format!(
                        "table {table}: column {name} is {t}, expected {ty} (altered by hand?): add --replace to rebuild it"
                    ),
                })
            }
            None => {
                return Err(ScaleError::Backend {
                    backend: redact(url),
                    message: format!(
                        "table {table} has no column {name} (altered by hand?): add --replace to rebuild it"
                    ),
                })
            }
        }
    }
    Ok(true)
}

/// One row on its way to the backend.
struct Row {
    key: i64,
    item_key: i64,
    id: String,
    kind: String,
    modality: String,
    path: String,
    title: Option<String>,
    attrs: Value,
    filter_attrs: Value,
    head: HalfVector,
    vector: HalfVector,
    digest: Vec<u8>,
}

/// Makes table `opts.table` at `url` hold exactly the store's vectors (see the module docs).
pub fn sync(engine: &Engine, url: &str, opts: &SyncOptions) -> Result<SyncSummary> {
    let started = Instant::now();
    let id = Identity::of(engine, &opts.table)?;
    let table = opts.table.as_str();
    let mut client = connect(url)?;
    let mut tx = client
        .transaction()
        .map_err(|e| backend_error(url, "starting a transaction", e))?;
    tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
        .map_err(|e| backend_error(url, "the pgvector extension (CREATE EXTENSION vector)", e))?;
    // One sync per table at a time; a second waits (the lock ends with the transaction).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('jsearch_sync:' || $1::text))",
        &[&table],
    )
    .map_err(|e| backend_error(url, "locking the table", e))?;
    tx.batch_execute(&sql::create_sync_table())
        .map_err(|e| backend_error(url, "creating jsearch_sync", e))?;
    if opts.replace {
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", sql::ident(table)))
            .map_err(|e| backend_error(url, "dropping the table (--replace)", e))?;
        tx.execute(
            &format!("DELETE FROM {} WHERE table_name = $1", sql::SYNC_TABLE),
            &[&table],
        )
        .map_err(|e| backend_error(url, "clearing jsearch_sync", e))?;
    }
    let exists = check_table(&mut tx, url, table, &id)?;
    let halfvec = halfvec_type(&mut tx, url)?;
    let mut summary = SyncSummary {
        table: table.to_string(),
        created: !exists,
        ..SyncSummary::default()
    };
    // What the backend holds: key -> digest.
    let mut remote: HashMap<i64, Vec<u8>> = HashMap::new();
    if exists {
        let rows = tx
            .query(
                &format!("SELECT key, digest FROM {}", sql::ident(table)),
                &[],
            )
            .map_err(|e| backend_error(url, "reading the table's digests", e))?;
        remote.reserve(rows.len());
        for r in rows {
            remote.insert(r.get(0), r.get(1));
        }
    } else {
        tx.batch_execute(&sql::create_items_table(table, id.dim, id.head_dim))
            .map_err(|e| backend_error(url, "creating the table", e))?;
    }
    // New tables are loaded straight into the table; changes go through a staging table and
    // one upsert.
    let target = if exists {
        tx.batch_execute(&format!(
            "CREATE TEMP TABLE jsearch_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
            sql::ident(table)
        ))
        .map_err(|e| backend_error(url, "creating the staging table", e))?;
        "jsearch_stage".to_string()
    } else {
        sql::ident(table)
    };
    let copy_sql = format!(
        "COPY {target} (key, item_key, id, kind, modality, path, title, attrs, filter_attrs, head, vector, digest) FROM STDIN BINARY"
    );
    let types = [
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::JSONB,
        Type::JSONB,
        halfvec.clone(),
        halfvec,
        Type::BYTEA,
    ];
    let mut pending: Vec<Row> = Vec::with_capacity(STAGE_ROWS);
    let mut seen: Vec<i64> = Vec::new();
    let mut failure: Option<ScaleError> = None;
    let flush = |tx: &mut Transaction<'_>, rows: &mut Vec<Row>| -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let w = tx
            .copy_in(copy_sql.as_str())
            .map_err(|e| backend_error(url, "COPY into the table", e))?;
        let mut w = BinaryCopyInWriter::new(w, &types);
        for r in rows.iter() {
            let cols: [&(dyn ToSql + Sync); 12] = [
                &r.key,
                &r.item_key,
                &r.id,
                &r.kind,
                &r.modality,
                &r.path,
                &r.title,
                &r.attrs,
                &r.filter_attrs,
                &r.head,
                &r.vector,
                &r.digest,
            ];
            w.write(&cols)
                .map_err(|e| backend_error(url, &format!("COPY of {}", r.id), e))?;
        }
        w.finish()
            .map_err(|e| backend_error(url, "COPY into the table", e))?;
        rows.clear();
        Ok(())
    };
    let walk = engine.for_each_vector(|key, item, modality, vector| {
        let k = key as i64;
        let v16: Vec<f16> = vector.iter().map(|&x| f16::from_f32(x)).collect();
        let d = digest(item, modality.as_str(), &v16);
        seen.push(k);
        if !summary.count(remote.get(&k), &d) {
            return Ok(());
        }
        pending.push(Row {
            key: k,
            item_key: jsearch::item_key_of(key) as i64,
            id: item.id.clone(),
            kind: item.kind.as_str().to_string(),
            modality: modality.as_str().to_string(),
            path: item.path.clone(),
            title: item.title.clone(),
            attrs: Value::Object(item.metadata.clone()),
            filter_attrs: Value::Object(jsearch::attrs::filter_view(item)),
            head: HalfVector::from_f32_slice(&head_of(vector, id.head_dim)),
            vector: HalfVector::from(v16),
            digest: d,
        });
        if pending.len() >= STAGE_ROWS {
            if let Err(e) = flush(&mut tx, &mut pending) {
                failure = Some(e);
                return Err(jsearch::Error::Internal("sync stopped".into()));
            }
        }
        Ok(())
    });
    if let Err(e) = walk {
        return Err(failure.take().unwrap_or(ScaleError::Engine(e)));
    }
    flush(&mut tx, &mut pending)?;
    if exists {
        if summary.inserted + summary.updated > 0 {
            let cols = "item_key, id, kind, modality, path, title, attrs, filter_attrs, head, vector, digest";
            let set = cols
                .split(", ")
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            tx.batch_execute(&format!(
                "INSERT INTO {t} (key, {cols}) SELECT key, {cols} FROM jsearch_stage
                 ON CONFLICT (key) DO UPDATE SET {set}",
                t = sql::ident(table)
            ))
            .map_err(|e| backend_error(url, "upserting the changed rows", e))?;
        }
        let seen: std::collections::HashSet<i64> = seen.into_iter().collect();
        let gone: Vec<i64> = remote
            .keys()
            .filter(|k| !seen.contains(k))
            .copied()
            .collect();
        if !gone.is_empty() {
            summary.deleted = tx
                .execute(
                    &format!("DELETE FROM {} WHERE key = ANY($1)", sql::ident(table)),
                    &[&gone],
                )
                .map_err(|e| backend_error(url, "deleting removed rows", e))?
                as usize;
        }
    }
    for s in sql::create_indexes(table) {
        tx.batch_execute(&s)
            .map_err(|e| backend_error(url, "building the indexes", e))?;
    }
    summary.rows = summary.inserted + summary.updated + summary.unchanged;
    tx.execute(
        &format!(
            "INSERT INTO {} (table_name, format, model, fingerprint, dim, head_dim, store, rows, synced_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
             ON CONFLICT (table_name) DO UPDATE SET format = EXCLUDED.format, model = EXCLUDED.model,
               fingerprint = EXCLUDED.fingerprint, dim = EXCLUDED.dim, head_dim = EXCLUDED.head_dim,
               store = EXCLUDED.store, rows = EXCLUDED.rows, synced_at = now()",
            sql::SYNC_TABLE
        ),
        &[
            &table,
            &FORMAT,
            &id.model,
            &id.fingerprint,
            &(id.dim as i32),
            &(id.head_dim as i32),
            &id.store,
            &(summary.rows as i64),
        ],
    )
    .map_err(|e| backend_error(url, "updating jsearch_sync", e))?;
    tx.commit()
        .map_err(|e| backend_error(url, "committing the sync", e))?;
    // Fresh statistics for the planner (a new table has none): outside the transaction.
    let _ = client.batch_execute(&format!("ANALYZE {}", sql::ident(table)));
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// A connection to a synced table, for two-stage queries.
pub struct PgBackend {
    client: Client,
    url: String,
    info: TableInfo,
    ef_search: usize,
}

impl PgBackend {
    /// Connects and reads the table's `jsearch_sync` row (an error names a missing one).
    pub fn connect(url: &str, table: &str) -> Result<Self> {
        check_table_name(table).map_err(ScaleError::InvalidArgument)?;
        let mut client = connect(url)?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT model, fingerprint, dim, head_dim, store, rows FROM {} WHERE table_name = $1",
                    sql::SYNC_TABLE
                ),
                &[&table],
            )
            .map_err(|e| match e.code() {
                Some(c) if *c == postgres::error::SqlState::UNDEFINED_TABLE => ScaleError::Backend {
                    backend: redact(url),
                    message: "nothing synced here yet (no jsearch_sync table): run `jsearch sync` first".into(),
                },
                _ => backend_error(url, "reading jsearch_sync", e),
            })?
            .ok_or_else(|| ScaleError::Backend {
                backend: redact(url),
                message: format!("no table {table} synced here: run `jsearch sync URL --table {table}` first"),
            })?;
        client
            .batch_execute("SET hnsw.iterative_scan = relaxed_order")
            .map_err(|e| backend_error(url, "pgvector 0.8's hnsw.iterative_scan", e))?;
        Ok(PgBackend {
            client,
            url: url.to_string(),
            info: TableInfo {
                table: table.to_string(),
                model: row.get(0),
                fingerprint: row.get(1),
                dim: row.get::<_, i32>(2) as usize,
                head_dim: row.get::<_, i32>(3) as usize,
                store: row.get(4),
                rows: row.get::<_, i64>(5) as usize,
            },
            ef_search: 0,
        })
    }

    /// What the table holds.
    pub fn info(&self) -> &TableInfo {
        &self.info
    }

    /// Refuses a model that did not make the table's vectors.
    pub fn check_model(&self, model: &ModelInfo) -> Result<()> {
        let i = &self.info;
        if model.made(&i.model, &i.fingerprint, i.dim) {
            Ok(())
        } else {
            Err(ScaleError::Backend {
                backend: redact(&self.url),
                message: format!(
                    "table {} holds vectors of model {} (fingerprint {}, {}-d); the query would be encoded with {} ({}, {}-d): pass --model with the store's model",
                    i.table, i.model, i.fingerprint, i.dim, model.name, model.fingerprint, model.dim
                ),
            })
        }
    }

    /// The SQL of a query, its parameters inlined, the vectors left as `$1` and `$2`.
    pub fn explain(&self, q: &BackendQuery) -> String {
        let (cond, params) = condition(q);
        let mut s = two_stage_query(&self.info.table, &cond);
        for (i, p) in params.iter().enumerate().rev() {
            s = s.replace(&format!("${}", 5 + i), &p.literal());
        }
        s.replace("$3", &q.candidates().to_string())
            .replace("$4", &(q.limit * 2).to_string())
    }

    /// The two-stage search for `vector` (the query's full embedding, any norm): up to
    /// `q.limit` items, best vector per item, by cosine.
    pub fn search(&mut self, vector: &[f32], q: &BackendQuery) -> Result<Vec<BackendHit>> {
        if vector.len() != self.info.dim {
            return Err(ScaleError::InvalidArgument(format!(
                "query vector of {} dimensions for a table of {}",
                vector.len(),
                self.info.dim
            )));
        }
        let candidates = q.candidates();
        // The graph returns at most ef_search rows per scan pass: at least the candidates.
        let ef = candidates.clamp(40, 1000);
        if ef != self.ef_search {
            self.client
                .batch_execute(&format!("SET hnsw.ef_search = {ef}"))
                .map_err(|e| backend_error(&self.url, "setting hnsw.ef_search", e))?;
            self.ef_search = ef;
        }
        let mut full = vector.to_vec();
        jsearch::normalize(&mut full);
        let head = HalfVector::from_f32_slice(&head_of(&full, self.info.head_dim));
        let full = HalfVector::from_f32_slice(&full);
        let (cond, params) = condition(q);
        let text = two_stage_query(&self.info.table, &cond);
        let (cand, rows_wanted) = (candidates as i64, (q.limit * 2) as i64);
        let mut args: Vec<&(dyn ToSql + Sync)> = vec![&head, &full, &cand, &rows_wanted];
        args.extend(params.iter().map(Param::as_sql));
        let rows = self
            .client
            .query(text.as_str(), &args)
            .map_err(|e| backend_error(&self.url, "the two-stage query", e))?;
        let mut hits: Vec<BackendHit> = Vec::with_capacity(q.limit);
        let mut items = std::collections::HashSet::new();
        for r in rows {
            let item_key = r.get::<_, i64>(1) as u64;
            if !items.insert(item_key) {
                continue;
            }
            hits.push(BackendHit {
                rank: hits.len() + 1,
                key: r.get::<_, i64>(0) as u64,
                item_key,
                id: r.get(2),
                kind: r.get(3),
                modality: r.get(4),
                path: r.get(5),
                title: r.get(6),
                metadata: r.get(7),
                cosine: r.get(8),
            });
            if hits.len() == q.limit {
                break;
            }
        }
        Ok(hits)
    }
}

/// The query's `WHERE` (kinds, then the filter) with parameters from `$5`.
fn condition(q: &BackendQuery) -> (String, Vec<Param>) {
    let mut w = Where::new(5);
    w.kinds(&q.kinds);
    if let Some(f) = &q.filter {
        w.filter(f);
    }
    (w.sql(), w.params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_repeated() {
        assert_eq!(
            redact("postgres://shop:s3cret@db:5432/x"),
            "postgres://shop:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
    }
}
