//! `jsearch serve`: one store over HTTP, a JSON API and a web page, with the model loaded once.
//!
//! ```no_run
//! # async fn run() -> Result<(), jsearch_serve::ServeError> {
//! use std::sync::Arc;
//! let engine = jsearch::Engine::open(jsearch::OpenOptions::default())?;
//! let opts = jsearch_serve::ServeOptions::default(); // 127.0.0.1:8080, no token
//! jsearch_serve::serve(Arc::new(engine), opts).await
//! # }
//! ```
//!
//! The server only reads the store: another process (`jsearch index`) may write it meanwhile,
//! and each request sees the last commit. Model work runs on tokio's blocking pool, so a slow
//! encode never stalls the threads that accept connections.
//!
//! | module | holds |
//! |---|---|
//! | `api` | the routes and their JSON shapes |
//! | `error` | the JSON errors (`{error: {code, message}}`) and their status codes |
//! | `auth` | the bearer-token check |
//! | `thumbs` | the bounded in-memory cache of thumbnails |
//! | `page` | the web page, served from the binary |
//! | `log` | one line per request |

mod api;
mod auth;
mod error;
mod log;
mod page;
mod thumbs;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use error::ServeError;

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on. Port 0 picks a free port (the start-up line names it).
    pub addr: SocketAddr,
    /// Bearer token every API request must carry (`Authorization: Bearer TOKEN`, or the page's
    /// `jsearch_token` cookie). Required when `addr` is not a loopback address.
    pub token: Option<String>,
    /// Per-request time limit (model work included).
    pub timeout: Duration,
    /// Largest request body (an uploaded image, base64 or multipart), in bytes.
    pub max_body_bytes: usize,
    /// Bytes of thumbnails kept in memory.
    pub thumbnail_cache_bytes: usize,
    /// No per-request log lines.
    pub quiet: bool,
    /// Load the text tower before listening (the first query is then as fast as the others).
    pub preload: bool,
    /// Engine calls (queries, thumbnails) running at once; the others wait their turn in
    /// arrival order (a bound on the memory and threads a burst can take). Default 64
    /// (measured, `benches/src/bin/serve.rs`: one per core cost the toy model a third of its
    /// throughput at 16 clients, four per core a few per cent, since a small query also waits on
    /// store reads; the real-size model's throughput is the same either way).
    pub jobs: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            timeout: Duration::from_secs(30),
            max_body_bytes: 16 << 20,
            thumbnail_cache_bytes: 64 << 20,
            quiet: false,
            preload: true,
            jobs: 64,
        }
    }
}

/// What the handlers share.
pub(crate) struct AppState {
    pub(crate) engine: Arc<jsearch::Engine>,
    pub(crate) opts: ServeOptions,
    pub(crate) thumbs: thumbs::Cache,
    /// Permits for engine calls ([`ServeOptions::jobs`]).
    pub(crate) jobs: Arc<tokio::sync::Semaphore>,
}

/// The routes of a server on `engine` (for embedding in another axum application, or for tests
/// that drive it without a socket).
pub fn router(engine: Arc<jsearch::Engine>, opts: ServeOptions) -> axum::Router {
    let state = Arc::new(AppState {
        engine,
        thumbs: thumbs::Cache::new(opts.thumbnail_cache_bytes),
        jobs: Arc::new(tokio::sync::Semaphore::new(opts.jobs.max(1))),
        opts,
    });
    api::routes(state)
}

/// Checks the options, binds, and serves until SIGINT or SIGTERM (requests in flight finish).
/// Prints one start-up line to stderr: the address and whether a token is required.
pub async fn serve(engine: Arc<jsearch::Engine>, opts: ServeOptions) -> Result<(), ServeError> {
    if !opts.addr.ip().is_loopback() && opts.token.as_deref().is_none_or(str::is_empty) {
        return Err(ServeError::TokenRequired(opts.addr));
    }
    // Fails early and clearly when there is no store or the model does not match it.
    let stats = {
        let engine = engine.clone();
        let preload = opts.preload;
        tokio::task::spawn_blocking(move || {
            if preload {
                engine.preload()?;
            }
            engine.stats()
        })
        .await
        .map_err(|e| ServeError::Start(format!("start-up failed: {e}")))??
    };
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| ServeError::Bind(opts.addr, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(opts.addr, e))?;
    let items: usize = stats.items.values().sum();
    let auth = if opts.token.is_some() {
        "token required on /v1 (Authorization: Bearer …)"
    } else {
        "no token (loopback only)"
    };
    eprintln!(
        "jsearch: serving {} ({items} items) on http://{local}/ · {auth} · Ctrl-C stops",
        stats.store.display()
    );
    let app = router(engine, opts);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| ServeError::Bind(local, e))?;
    eprintln!("jsearch: stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
