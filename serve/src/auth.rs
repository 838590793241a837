//! The bearer-token check on `/v1`: `Authorization: Bearer TOKEN`, or the cookie
//! `jsearch_token=TOKEN` that the web page sets (an `<img>` cannot send a header).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// Name of the cookie the page keeps the token in.
pub(crate) const COOKIE: &str = "jsearch_token";

pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = state.opts.token.as_deref() else {
        return next.run(req).await;
    };
    if presented(&req).is_some_and(|t| same(t.as_bytes(), token.as_bytes())) {
        return next.run(req).await;
    }
    let mut r = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this server needs a token: send `Authorization: Bearer TOKEN`",
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// The token the request carries, if any.
fn presented(req: &Request) -> Option<&str> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        return v.to_str().ok()?.strip_prefix("Bearer ").map(str::trim);
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }

    #[test]
    fn header_or_cookie() {
        let r = |h: &str, v: &str| {
            Request::builder()
                .header(h, v)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(presented(&r("authorization", "Bearer abc")), Some("abc"));
        assert_eq!(presented(&r("authorization", "Basic abc")), None);
        assert_eq!(
            presented(&r("cookie", "a=1; jsearch_token=xyz")),
            Some("xyz")
        );
        assert_eq!(presented(&r("cookie", "a=1")), None);
    }
}
