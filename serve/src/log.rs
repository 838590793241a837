//! One line per request on stderr: method, path (no query string: it may hold what users
//! searched for), status, milliseconds. Off with `ServeOptions::quiet`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

pub(crate) async fn log_request(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if state.opts.quiet {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t = Instant::now();
    let res = next.run(req).await;
    eprintln!(
        "{method} {path} {} {:.1}ms",
        res.status().as_u16(),
        t.elapsed().as_secs_f64() * 1e3
    );
    res
}
