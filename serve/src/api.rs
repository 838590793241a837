//! The routes: the JSON API under `/v1`, `/healthz`, and the web page at `/`.
//!
//! Items are named in URLs by their key (16 hex digits, the `key` of every hit), or by their id
//! (an image's path, a passage's `path#chunk`, a product's id) percent-encoded into one path
//! segment. Either way the store is asked for the item; a URL never names a file to read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::{rejection, ApiError};
use crate::AppState;

/// Most hits one request may ask for.
pub(crate) const MAX_LIMIT: usize = 200;
/// Deepest page: `offset` at most this.
pub(crate) const MAX_OFFSET: usize = 10_000;
/// Default thumbnail side, pixels.
const THUMB_SIDE: u32 = 256;

pub(crate) fn routes(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/search", post(search_post).get(search_get))
        .route("/v1/items/{id}", get(item))
        .route("/v1/items/{id}/similar", get(similar))
        .route("/v1/items/{id}/thumbnail", get(thumbnail))
        .route("/v1/stats", get(stats))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_token,
        ));
    Router::new()
        .merge(api)
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(crate::page::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(state.opts.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::log::log_request,
        ))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("the server failed on this request (a bug: please report it)")
                    .into_response()
            },
        ))
        .with_state(state)
}

/// Runs engine work on the blocking pool when a job permit is free, within the request time
/// limit (the wait for the permit included). A job past the limit still holds its permit until
/// it ends, so the limit on jobs at once holds.
async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&jsearch::Engine) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let failed =
        || ApiError::internal("the server failed on this request (a bug: please report it)");
    let engine = state.engine.clone();
    let jobs = state.jobs.clone();
    let job = async move {
        let permit = jobs.acquire_owned().await.map_err(|_| failed())?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&engine)
        })
        .await
        .map_err(|_| failed())?
    };
    match tokio::time::timeout(state.opts.timeout, job).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than {} s",
                state.opts.timeout.as_secs_f32()
            ),
        )),
    }
}

/// One kind or several (`"image"`, `["image", "product"]`, `"image,product"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Kinds {
    One(String),
    Many(Vec<String>),
}

impl Kinds {
    fn parse(&self) -> Result<Vec<jsearch::Kind>, ApiError> {
        let names: Vec<&str> = match self {
            Kinds::One(s) => s.split(',').collect(),
            Kinds::Many(v) => v.iter().map(String::as_str).collect(),
        };
        names
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|e| field_error("type", e)))
            .collect()
    }
}

/// The body of `POST /v1/search` (and, as form fields, of its multipart form).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    /// Query text, any language.
    text: Option<String>,
    /// An image to search by: base64, or a `data:` URL.
    image: Option<String>,
    image_weight: Option<f32>,
    limit: Option<usize>,
    offset: Option<usize>,
    #[serde(rename = "type")]
    kinds: Option<Kinds>,
    #[serde(rename = "where")]
    filter: Option<String>,
    mode: Option<String>,
    fusion: Option<String>,
    keyword_weight: Option<f32>,
    facets: Option<Vec<String>>,
    /// Smallest score shown (default 0.5: probably relevant).
    min_score: Option<f32>,
    /// Every hit, whatever its score (`min_score` off).
    all: Option<bool>,
    /// `FIELD`, `FIELD:asc` or `FIELD:desc`.
    sort: Option<String>,
    include_self: Option<bool>,
}

fn field_error(field: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("{field}: {e}"))
}

/// The query a request asks for, and its page size.
fn to_query(
    r: &SearchRequest,
    image: Option<Vec<u8>>,
    default_limit: usize,
) -> Result<(jsearch::Query, usize), ApiError> {
    let (mut q, limit) = page_query(r, default_limit)?;
    q.text = r.text.clone().filter(|t| !t.trim().is_empty());
    q.image_bytes = image.map(Arc::from);
    if q.text.is_none() && q.image_bytes.is_none() {
        return Err(ApiError::bad_request(
            "empty query: give text, an image, or both",
        ));
    }
    Ok((q, limit))
}

/// Everything a request asks for but the query itself (text, image): the page, filter, facets,
/// sorting, the cut.
fn page_query(
    r: &SearchRequest,
    default_limit: usize,
) -> Result<(jsearch::Query, usize), ApiError> {
    let mut q = jsearch::Query::default();
    let limit = r.limit.unwrap_or(default_limit);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(field_error(
            "limit",
            format!("must be 1 to {MAX_LIMIT}, got {limit}"),
        ));
    }
    let offset = r.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(field_error(
            "offset",
            format!("must be at most {MAX_OFFSET}, got {offset}"),
        ));
    }
    q.limit = limit;
    q.offset = offset;
    if let Some(w) = r.image_weight {
        q.image_weight = w;
    }
    if let Some(k) = &r.kinds {
        q.kinds = k.parse()?;
    }
    if let Some(f) = r.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        q = q.filter_str(f).map_err(|e| field_error("where", e))?;
    }
    if let Some(m) = &r.mode {
        q.mode = m.parse().map_err(|e| field_error("mode", e))?;
    }
    if let Some(f) = &r.fusion {
        q.fusion = f.parse().map_err(|e| field_error("fusion", e))?;
    }
    if let Some(w) = r.keyword_weight {
        q.keyword_weight = w;
    }
    q.facets = r.facets.clone().unwrap_or_default();
    q.min_score = if r.all.unwrap_or(false) {
        None
    } else {
        Some(r.min_score.unwrap_or(DEFAULT_MIN_SCORE))
    };
    if let Some(s) = r.sort.as_deref().filter(|s| !s.is_empty()) {
        q.sort = Some(s.parse().map_err(|e| field_error("sort", e))?);
    }
    q.include_self = r.include_self.unwrap_or(false);
    Ok((q, limit))
}

/// The CLI's default cut: hits that are probably relevant.
const DEFAULT_MIN_SCORE: f32 = 0.5;

/// One hit as the API returns it: the CLI's JSON hit plus the URLs that name it. (Spelled out
/// rather than `#[serde(flatten)]`: flattening buffers every hit through a map, measurable at
/// hundreds of queries per second.)
#[derive(Serialize)]
struct Hit {
    rank: usize,
    score: f32,
    cosine: f32,
    vector_score: Option<f32>,
    keyword_score: Option<f32>,
    exact: bool,
    kind: jsearch::Kind,
    id: String,
    /// The item's key (16 hex digits) for `/v1/items/{key}`.
    key: String,
    path: String,
    path_bytes: Option<Vec<u8>>,
    title: Option<String>,
    part: Option<u32>,
    chunk: Option<u32>,
    lines: Option<(u32, u32)>,
    image: Option<String>,
    snippet: Option<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
    /// `/v1/items/{key}/thumbnail` for images and products with an image.
    thumbnail: Option<String>,
    /// `/v1/items/{key}/similar`.
    similar: String,
}

/// The names of an item in URLs.
struct Links {
    /// 16 hex digits.
    key: String,
    /// `/v1/items/{key}/thumbnail` for images and products with an image.
    thumbnail: Option<String>,
    /// `/v1/items/{key}/similar`.
    similar: String,
}

impl Links {
    fn of(key: u64, kind: jsearch::Kind, has_image: bool) -> Links {
        let key = format!("{key:016x}");
        let has_picture = kind == jsearch::Kind::Image || has_image;
        Links {
            thumbnail: has_picture.then(|| format!("/v1/items/{key}/thumbnail")),
            similar: format!("/v1/items/{key}/similar"),
            key,
        }
    }
}

fn hit_of(h: jsearch::SearchHit) -> Hit {
    let links = Links::of(h.key, h.kind, h.image.is_some());
    Hit {
        rank: h.rank,
        score: h.score,
        cosine: h.cosine,
        vector_score: h.vector_score,
        keyword_score: h.keyword_score,
        exact: h.exact,
        kind: h.kind,
        id: h.id,
        thumbnail: links.thumbnail,
        similar: links.similar,
        key: links.key,
        path: h.path,
        path_bytes: h.path_bytes,
        title: h.title,
        part: h.part,
        chunk: h.chunk,
        lines: h.lines,
        image: h.image,
        snippet: h.snippet,
        metadata: h.metadata,
    }
}

#[derive(Serialize)]
struct SearchResponse {
    hits: Vec<Hit>,
    /// Requested facets, by field.
    #[serde(skip_serializing_if = "Option::is_none")]
    facets: Option<BTreeMap<String, jsearch::Facet>>,
    /// The mode that ran (`auto` resolved).
    mode: &'static str,
    offset: usize,
    limit: usize,
    /// There are more hits after this page.
    more: bool,
    took_ms: f64,
}

fn respond(
    r: jsearch::SearchResult,
    offset: usize,
    limit: usize,
    asked_facets: bool,
    t: Instant,
) -> Json<SearchResponse> {
    let more = r.more;
    Json(SearchResponse {
        hits: r.hits.into_iter().map(hit_of).collect(),
        facets: asked_facets.then(|| r.facets.into_iter().collect()),
        mode: r.mode.as_str(),
        offset,
        limit,
        more,
        took_ms: t.elapsed().as_secs_f64() * 1e3,
    })
}

async fn run_search(
    state: &Arc<AppState>,
    r: SearchRequest,
    image: Option<Vec<u8>>,
) -> Result<Json<SearchResponse>, ApiError> {
    let t = Instant::now();
    let (q, limit) = to_query(&r, image, 10)?;
    let (offset, facets) = (q.offset, !q.facets.is_empty());
    let result = blocking(state, move |e| e.search(&q).map_err(ApiError::from)).await?;
    Ok(respond(result, offset, limit, facets, t))
}

/// `POST /v1/search`: a JSON body, or a multipart form with an `image` file part and the other
/// fields as parts (or one `request` part holding the JSON body).
async fn search_post(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Json<SearchResponse>, ApiError> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if multipart {
        let form = Multipart::from_request(req, &state)
            .await
            .map_err(|e| rejection(e.status(), "multipart body", e.body_text()))?;
        let (r, image) = read_form(form).await?;
        return run_search(&state, r, image).await;
    }
    let Json(r) = Json::<SearchRequest>::from_request(req, &state)
        .await
        .map_err(|e| rejection(e.status(), "JSON body", e.body_text()))?;
    let image = match r.image.as_deref() {
        Some(b64) => Some(decode_base64(b64)?),
        None => None,
    };
    run_search(&state, r, image).await
}

/// Base64 (standard or URL-safe, padded or not), or a `data:image/...;base64,` URL.
fn decode_base64(s: &str) -> Result<Vec<u8>, ApiError> {
    let data = match s.split_once(";base64,") {
        Some((head, data)) if head.starts_with("data:") => data,
        _ => s,
    };
    let data: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(&data).ok())
        .ok_or_else(|| field_error("image", "not base64 (nor a data: URL holding base64)"))
}

/// The fields of a multipart search form.
async fn read_form(mut form: Multipart) -> Result<(SearchRequest, Option<Vec<u8>>), ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        rejection(e.status(), "multipart body", e.body_text())
    };
    let mut image = None;
    let mut fields = serde_json::Map::new();
    while let Some(part) = form.next_field().await.map_err(bad)? {
        let name = part.name().unwrap_or_default().to_string();
        match name.as_str() {
            "image" => image = Some(part.bytes().await.map_err(bad)?.to_vec()),
            "request" => {
                let text = part.text().await.map_err(bad)?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| field_error("request part", e))?;
                let serde_json::Value::Object(m) = v else {
                    return Err(field_error("request part", "not a JSON object"));
                };
                fields.extend(m);
            }
            _ => {
                let text = part.text().await.map_err(bad)?;
                fields.insert(name, form_value(&text));
            }
        }
    }
    let r: SearchRequest = serde_json::from_value(serde_json::Value::Object(fields))
        .map_err(|e| ApiError::bad_request(format!("multipart fields: {e}")))?;
    if r.image.is_some() && image.is_some() {
        return Err(field_error("image", "given twice (a file part and base64)"));
    }
    let image = match (image, r.image.as_deref()) {
        (Some(b), _) => Some(b),
        (None, Some(b64)) => Some(decode_base64(b64)?),
        (None, None) => None,
    };
    Ok((r, image))
}

/// A form field's text as the JSON value it stands for: numbers and booleans typed, a
/// comma list for `facets`, strings otherwise.
fn form_value(text: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
        Ok(v @ serde_json::Value::Array(_)) => v,
        _ => serde_json::Value::String(text.to_string()),
    }
}

/// `GET /v1/search` parameters (and those of `/v1/items/{id}/similar`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchParams {
    q: Option<String>,
    k: Option<usize>,
    limit: Option<usize>,
    offset: Option<usize>,
    #[serde(rename = "type")]
    kinds: Option<String>,
    #[serde(rename = "where")]
    filter: Option<String>,
    mode: Option<String>,
    fusion: Option<String>,
    keyword_weight: Option<f32>,
    /// Comma-separated field names.
    facets: Option<String>,
    min_score: Option<f32>,
    all: Option<bool>,
    sort: Option<String>,
    include_self: Option<bool>,
}

impl SearchParams {
    fn into_request(self) -> SearchRequest {
        SearchRequest {
            text: self.q,
            limit: self.limit.or(self.k),
            offset: self.offset,
            kinds: self.kinds.map(Kinds::One),
            filter: self.filter,
            mode: self.mode,
            fusion: self.fusion,
            keyword_weight: self.keyword_weight,
            facets: self.facets.map(|f| {
                f.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }),
            min_score: self.min_score,
            all: self.all,
            sort: self.sort,
            include_self: self.include_self,
            ..Default::default()
        }
    }
}

fn query_params<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| rejection(e.status(), "query string", e.body_text()))
}

/// `GET /v1/search?q=…&k=…` (and the other fields of the POST body, `facets` comma-separated).
async fn search_get(
    State(state): State<Arc<AppState>>,
    q: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let p = query_params(q)?;
    run_search(&state, p.into_request(), None).await
}

/// The key of the item a URL names: 16 hex digits, or an item id (percent-decoded by the
/// router), looked up in the store.
fn key_of(e: &jsearch::Engine, id: &str) -> jsearch::Result<Option<u64>> {
    if id.len() == 16 {
        if let Ok(key) = u64::from_str_radix(id, 16) {
            if e.item(key)?.is_some() {
                return Ok(Some(key));
            }
        }
    }
    e.item_key(id)
}

/// The 404 of an id no item has.
fn no_item(id: &str) -> ApiError {
    let shown: String = id.chars().take(200).collect();
    ApiError::not_found(format!("no item {shown:?} in the store"))
}

/// `GET /v1/items/{id}`: the item's record.
async fn item(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (key, meta) = blocking(&state, {
        let id = id.clone();
        move |e| match key_of(e, &id)? {
            Some(k) => Ok(e.item(k)?.map(|m| (k, m))),
            None => Ok(None),
        }
    })
    .await?
    .ok_or_else(|| no_item(&id))?;
    let links = Links::of(key, meta.kind, meta.image.is_some());
    let mut v = serde_json::to_value(&meta).map_err(|e| ApiError::internal(e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("thumbnail".into(), links.thumbnail.into());
        m.insert("similar".into(), links.similar.into());
        m.insert("key".into(), links.key.into());
    }
    Ok(Json(v).into_response())
}

/// `GET /v1/items/{id}/similar?k=…`: items like this one (it and its twins left out).
async fn similar(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let t = Instant::now();
    let p = query_params(q)?;
    if p.q.is_some() {
        return Err(field_error(
            "q",
            "not used by similar (the item is the query)",
        ));
    }
    // The item is the query.
    let (q, limit) = page_query(&p.into_request(), 10)?;
    let (offset, facets) = (q.offset, !q.facets.is_empty());
    let result = blocking(&state, {
        let id = id.clone();
        move |e| match key_of(e, &id)? {
            Some(k) => Ok(e.similar_item(k, &q)?),
            None => Ok(None),
        }
    })
    .await?
    .ok_or_else(|| no_item(&id))?;
    Ok(respond(result, offset, limit, facets, t))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThumbParams {
    /// Longest side in pixels (16 to 1024; default 256).
    size: Option<u32>,
}

/// `GET /v1/items/{id}/thumbnail?size=256`: a JPEG of the item's picture.
async fn thumbnail(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<ThumbParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(q)?;
    let side = p.size.unwrap_or(THUMB_SIDE);
    if !(16..=jsearch::MAX_THUMBNAIL_SIDE).contains(&side) {
        return Err(field_error(
            "size",
            format!("must be 16 to {}, got {side}", jsearch::MAX_THUMBNAIL_SIDE),
        ));
    }
    let key = blocking(&state, {
        let id = id.clone();
        move |e| Ok(key_of(e, &id)?)
    })
    .await?
    .ok_or_else(|| no_item(&id))?;
    let jpeg = match state.thumbs.get((key, side)) {
        Some(j) => j,
        None => {
            let made = blocking(&state, move |e| match e.thumbnail(key, side) {
                Ok(t) => Ok(t),
                // The file changed or went since it was indexed: nothing to show.
                Err(err) => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_thumbnail",
                    err.to_string(),
                )),
            })
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_thumbnail",
                    "this item has no picture (a passage, or a product without an image)",
                )
            })?;
            let made = Arc::new(made);
            state.thumbs.put((key, side), made.clone());
            made
        }
    };
    let mut r = Response::new(Body::from(jpeg.as_ref().clone()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    Ok(r)
}

/// `GET /v1/stats`: the store's counts and model, and its fields (for filters and facets).
async fn stats(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let (stats, fields) = blocking(&state, |e| Ok((e.stats()?, e.fields()?))).await?;
    let mut v = serde_json::to_value(&stats).map_err(|e| ApiError::internal(e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert(
            "fields".into(),
            serde_json::to_value(fields).map_err(|e| ApiError::internal(e.to_string()))?,
        );
        m.insert(
            "limits".into(),
            serde_json::json!({
                "max_limit": MAX_LIMIT,
                "max_offset": MAX_OFFSET,
                "max_body_bytes": state.opts.max_body_bytes,
            }),
        );
    }
    Ok(Json(v))
}
