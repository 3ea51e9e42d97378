//! The diagnostics HTTP server: an axum router over [`DiagState`], one tiny handler per path.
//!
//! Handlers only read a source and serialize it; nothing here holds a lock across an await or
//! keeps state of its own. Unknown paths answer 404 with a JSON error.
//! Connections are bounded by [`crate::httpd`] (request heads within 10 s, 64 open, 16 from one
//! address).
use super::{views, DiagState, JsonSource};
use crate::httpd;
use crate::metrics::{metrics, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::io;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Binds `addr`, serves the diagnostics on `tasks` until `cancel` fires, and returns the bound
/// address (so `127.0.0.1:0` picks a free port). After `cancel` the server stops accepting
/// and its task ends once the requests in flight are answered.
pub async fn serve_tracked(
    addr: SocketAddr,
    state: DiagState,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> io::Result<SocketAddr> {
    let listener =
        TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("diag listen on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let app = router(state);
    tasks.spawn(async move {
        httpd::serve(listener, app, httpd::Bounds::default(), cancel.cancelled_owned()).await;
    });
    tracing::info!(addr = %bound, "diagnostics listening");
    Ok(bound)
}

/// [`serve_tracked`] for a caller that keeps no tracker of its own (tests, embedders): the
/// server still stops when `cancel` fires, but nobody can wait for it to be gone.
/// `Session::builder` serves on the session's tracker.
pub async fn serve(addr: SocketAddr, state: DiagState, cancel: CancellationToken) -> io::Result<SocketAddr> {
    serve_tracked(addr, state, &TaskTracker::new(), cancel).await
}

/// The routes, for embedding in another server or testing without a socket.
pub fn router(state: DiagState) -> Router {
    Router::new()
        .route("/debug/p2p/keepalive/metrics", get(keepalive_metrics))
        .route("/debug/p2p/keepalive", get(keepalive))
        .route("/debug/p2p/peers", get(peers))
        .route("/debug/p2p/torrents", get(torrents))
        .route("/debug/p2p/swarm", get(swarm))
        .route("/debug/p2p/routing", get(routing))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .with_state(state)
}

async fn keepalive_metrics() -> impl IntoResponse {
    Json(metrics().keepalive.snapshot())
}

async fn peers(State(s): State<DiagState>) -> impl IntoResponse {
    Json(json!(views::peers(&(s.torrents)())))
}

async fn torrents(State(s): State<DiagState>) -> impl IntoResponse {
    Json(json!(views::torrents(&(s.torrents)())))
}

async fn swarm(State(s): State<DiagState>) -> impl IntoResponse {
    Json(views::swarm(&(s.torrents)()))
}

async fn routing(State(s): State<DiagState>) -> impl IntoResponse {
    Json(report(s.routing.as_ref()))
}

async fn keepalive(State(s): State<DiagState>) -> impl IntoResponse {
    Json(report(s.keepalive.as_ref()))
}

fn report(source: Option<&JsonSource>) -> Value {
    source.map_or_else(|| json!({ "enabled": false }), |f| f())
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the 0.0.4 text otherwise.
async fn prometheus(headers: HeaderMap) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let m = metrics();
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], m.encode_openmetrics())
    } else {
        ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], m.encode())
    }
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, Json(json!({ "error": "not found" })))
}
