//! The daemon's HTTP API: an axum router over [`Daemon`].
//!
//! Every request needs `Authorization: Bearer <token>` (compared in constant time); without
//! it the answer is 401. Bodies are bounded before they are read: a `.torrent` to
//! [`MAX_TORRENT_BODY`], JSON to [`MAX_JSON_BODY`] (413 past them, judged from
//! `Content-Length` when sent, else while reading). Every error is JSON `{"error": "..."}`
//! naming the problem; handlers return errors, they never panic on input.
//! Connections are bounded by [`crate::httpd`]: a request head within 10 s, 64 open, 16 from
//! one address.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /api/torrents` | every torrent ([`TorrentView`]) |
//! | `GET /api/torrents/{id}` | one torrent |
//! | `POST /api/torrents` | add: a `.torrent` body (`?output=DIR&paused=true&peer=IP:PORT`) or JSON `{"source_path": PATH}`; 201 `{"id": ...}`, 409 when already added |
//! | `POST /api/torrents/{id}/pause`, `.../resume` (`disable`, `enable` alike) | stop the torrent's task / start it again |
//! | `POST /api/torrents/{id}/restart`, `.../recheck` | stop it and start it again from its resume record; `recheck` hashes all its data |
//! | `PATCH /api/torrents/{id}` | its own rate limits: `{"download_limit": N, "upload_limit": N}` in bytes/s, 0 for none |
//! | `DELETE /api/torrents/{id}` | stop and forget it (`?delete_data=true`: remove its data too) |
//! | `GET /api/config`, `PATCH /api/config` | the current options; change some keys (a new version) |
//! | `GET /api/config/versions`, `POST /api/config/rollback` | the history; `{"version": V}` made current again |
//! | `GET /api/config/diff?from=V&to=W` | the keys that differ between two versions, with both values |
//! | `GET /api/faults` | faults per torrent: time, kind, message, recovery taken |
//! | `GET /api/alerts`, `POST /api/alerts/{id}/resolve` | raised alerts (stalled, no_peers, hash_failures, disk_error); mark one resolved |
//! | `GET /api/events` | server-sent events: `torrents`, the whole list, every second |
//! | `GET /` (no token) | the web page, token from `/#token=T` |
use super::{AddOptions, Daemon, DaemonError, TorrentView};
use crate::httpd;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest `.torrent` body accepted.
pub const MAX_TORRENT_BODY: usize = 16 << 20;
/// Largest JSON body accepted.
pub const MAX_JSON_BODY: usize = 64 << 10;

/// An error answer: a status and a JSON `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> ApiError {
        let status = match &e {
            DaemonError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DaemonError::NotFound(_) | DaemonError::NoAlert(_) => StatusCode::NOT_FOUND,
            DaemonError::Exists(_) => StatusCode::CONFLICT,
            DaemonError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            DaemonError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// Binds `addr` and serves the API until `cancel` fires; returns the bound address (so
/// `127.0.0.1:0` picks a free port) and the server's task.
pub async fn serve(
    addr: SocketAddr,
    daemon: Arc<Daemon>,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("api listen on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let app = router(daemon);
    let task = tokio::spawn(async move {
        httpd::serve(listener, app, httpd::Bounds::default(), cancel.cancelled_owned()).await;
    });
    Ok((bound, task))
}

/// The routes, every one behind the token check.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/api/torrents", get(list).post(add))
        .route("/api/torrents/{id}", get(one).delete(remove).patch(patch_torrent))
        .route("/api/torrents/{id}/{action}", post(action))
        .route("/api/config", get(config).patch(patch_config))
        .route("/api/config/versions", get(config_versions))
        .route("/api/config/diff", get(config_diff))
        .route("/api/config/rollback", post(rollback_config))
        .route("/api/events", get(super::events::events))
        .route("/api/faults", get(faults))
        .route("/api/alerts", get(alerts))
        .route("/api/alerts/{id}/resolve", post(resolve_alert))
        .route("/", get(super::events::page))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(daemon.clone(), authorize))
        .with_state(daemon)
}

/// 401 unless the request carries the daemon's bearer token (the page `/` needs none).
async fn authorize(State(daemon): State<Arc<Daemon>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if !given.is_some_and(|t| same_token(t.as_bytes(), daemon.token().as_bytes())) {
        let body = Json(json!({ "error": "missing or wrong bearer token (see <state-dir>/api-token)" }));
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
    }
    next.run(req).await
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn list(State(d): State<Arc<Daemon>>) -> Json<Vec<TorrentView>> {
    Json(d.list().await)
}

async fn one(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Result<Json<TorrentView>, ApiError> {
    Ok(Json(d.get(&id).await?))
}

async fn action(
    State(d): State<Arc<Daemon>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Json<TorrentView>, ApiError> {
    match action.as_str() {
        // `disable`/`enable` (the fault-isolation words) are pause and resume: a disabled
        // torrent is not retried, an enabled one starts at once.
        "pause" | "disable" => Ok(Json(d.pause(&id).await?)),
        "resume" | "enable" => Ok(Json(d.resume(&id).await?)),
        "restart" => Ok(Json(d.restart(&id, false).await?)),
        "recheck" => Ok(Json(d.restart(&id, true).await?)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no action `{action}` (pause, resume, restart, recheck, disable, enable)"),
        )),
    }
}

async fn patch_torrent(
    State(d): State<Arc<Daemon>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Json<TorrentView>, ApiError> {
    let patch: super::limits::TorrentPatch = json_body(req).await?;
    Ok(Json(d.patch_torrent(&id, patch).await?))
}

async fn remove(State(d): State<Arc<Daemon>>, Path(id): Path<String>, uri: Uri) -> Result<StatusCode, ApiError> {
    let mut delete_data = false;
    for (k, v) in query(&uri) {
        match k.as_str() {
            "delete_data" => delete_data = flag(&k, &v)?,
            _ => return Err(ApiError::bad(format!("unknown query parameter `{k}` (delete_data)"))),
        }
    }
    d.remove(&id, delete_data).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn config(State(d): State<Arc<Daemon>>) -> Json<Value> {
    Json(d.config())
}

async fn config_versions(State(d): State<Arc<Daemon>>) -> Json<Value> {
    Json(d.config_versions())
}

/// `?from=V&to=W`, both required.
async fn config_diff(State(d): State<Arc<Daemon>>, uri: Uri) -> Result<Json<Value>, ApiError> {
    let (mut from, mut to) = (None, None);
    for (k, v) in query(&uri) {
        let n = v.parse::<u32>().map_err(|_| ApiError::bad(format!("{k}: not a version number: {v:?}")))?;
        match k.as_str() {
            "from" => from = Some(n),
            "to" => to = Some(n),
            _ => return Err(ApiError::bad(format!("unknown query key `{k}` (from, to)"))),
        }
    }
    let (Some(from), Some(to)) = (from, to) else { return Err(ApiError::bad("diff needs ?from=V&to=W")) };
    Ok(Json(d.config_diff(from, to)?))
}

async fn patch_config(State(d): State<Arc<Daemon>>, req: Request) -> Result<Json<Value>, ApiError> {
    let patch: Map<String, Value> = json_body(req).await?;
    Ok(Json(d.patch_config(&patch)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: u32,
}

async fn rollback_config(State(d): State<Arc<Daemon>>, req: Request) -> Result<Json<Value>, ApiError> {
    let r: Rollback = json_body(req).await?;
    Ok(Json(d.rollback_config(r.version)?))
}

/// A bounded JSON body parsed as `T`; 400 naming the problem.
async fn json_body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, &parts.headers, MAX_JSON_BODY).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))
}

async fn faults(State(d): State<Arc<Daemon>>) -> Json<Vec<super::faults::Fault>> {
    Json(d.faults())
}

async fn alerts(State(d): State<Arc<Daemon>>) -> Json<Vec<super::alerts::Alert>> {
    Json(d.alerts())
}

async fn resolve_alert(State(d): State<Arc<Daemon>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::bad(format!("alert id {id:?}: not a number")))?;
    Ok(Json(json!(d.resolve_alert(id)?)))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

/// `POST /api/torrents`: a `.torrent` body or a JSON request, told apart by content type.
async fn add(State(d): State<Arc<Daemon>>, req: Request) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (parts, body) = req.into_parts();
    let kind = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = kind.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let id = match mime.as_str() {
        "application/json" => {
            let bytes = read_body(body, &parts.headers, MAX_JSON_BODY).await?;
            add_json(&d, &bytes).await?
        }
        "application/x-bittorrent" | "application/octet-stream" => {
            let opts = torrent_query(&parts.uri)?;
            let bytes = read_body(body, &parts.headers, MAX_TORRENT_BODY).await?;
            d.add_torrent_bytes(&bytes, opts).await?
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type {kind:?}: send application/x-bittorrent or application/json"),
            ))
        }
    };
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

/// `only`: a list of file indices, or the same in BEP 53 text (`"0,2-3"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Only {
    List(Vec<u32>),
    Text(String),
}

/// The JSON form of an add.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddJson {
    source_path: Option<PathBuf>,
    magnet: Option<String>,
    output: Option<PathBuf>,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    peers: Vec<SocketAddr>,
    /// File indices to download (a magnet's `so=` otherwise).
    only: Option<Only>,
    metadata_timeout_secs: Option<u64>,
}

async fn add_json(d: &Daemon, bytes: &[u8]) -> Result<String, ApiError> {
    let req: AddJson = serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("bad JSON body: {e}")))?;
    match (req.source_path, req.magnet) {
        (Some(_), None) if req.only.is_some() => {
            Err(ApiError::bad("`only` needs a magnet (a seeded path has every file)"))
        }
        (Some(path), None) => Ok(d.add_source(path, req.paused, req.peers).await?),
        (None, Some(uri)) => {
            let output =
                req.output.ok_or_else(|| ApiError::bad("a magnet needs `output` (the absolute output directory)"))?;
            let only = match req.only {
                Some(Only::List(list)) if list.is_empty() => return Err(ApiError::bad("only: names no file")),
                Some(Only::List(list)) => Some(list.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
                Some(Only::Text(text)) => Some(text),
                None => None,
            };
            let opts = AddOptions { output, paused: req.paused, peers: req.peers, only };
            Ok(d.add_magnet(&uri, opts, req.metadata_timeout_secs).await?)
        }
        (Some(_), Some(_)) => Err(ApiError::bad("give one of `source_path` and `magnet`, not both")),
        (None, None) => Err(ApiError::bad("JSON body needs `source_path` (or POST a .torrent body)")),
    }
}

/// `?output=DIR&paused=true&peer=IP:PORT...` of a `.torrent` add.
fn torrent_query(uri: &Uri) -> Result<AddOptions, ApiError> {
    let mut opts = AddOptions { output: PathBuf::new(), paused: false, peers: Vec::new(), only: None };
    for (k, v) in query(uri) {
        match k.as_str() {
            "output" => opts.output = PathBuf::from(v),
            "paused" => opts.paused = flag(&k, &v)?,
            "peer" => opts.peers.push(v.parse().map_err(|e| ApiError::bad(format!("peer {v:?}: {e}")))?),
            "only" => opts.only = Some(v),
            _ => return Err(ApiError::bad(format!("unknown query parameter `{k}` (output, paused, peer, only)"))),
        }
    }
    if opts.output.as_os_str().is_empty() {
        return Err(ApiError::bad("query parameter `output` (the absolute output directory) is required"));
    }
    Ok(opts)
}

fn query(uri: &Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect()
}

fn flag(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad(format!("query parameter `{key}`: {value:?} is not true or false"))),
    }
}

/// The whole body, refused with 413 past `limit` (before reading when `Content-Length` says so).
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("body over {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"abcd", b"abcd"));
        assert!(!same_token(b"abcd", b"abce"));
        assert!(!same_token(b"abc", b"abcd"));
        assert!(!same_token(b"", b"abcd"));
    }

    #[test]
    fn the_torrent_query_is_checked() {
        let uri: Uri = "/api/torrents?output=%2Ftmp%2Fx&paused=true&peer=127.0.0.1:5".parse().unwrap();
        let opts = torrent_query(&uri).unwrap();
        assert_eq!(opts.output, PathBuf::from("/tmp/x"));
        assert!(opts.paused);
        assert_eq!(opts.peers, vec!["127.0.0.1:5".parse::<SocketAddr>().unwrap()]);
        let no_output: Uri = "/api/torrents?paused=true".parse().unwrap();
        assert!(torrent_query(&no_output).unwrap_err().message.contains("output"));
        let bad: Uri = "/api/torrents?output=/x&paused=maybe".parse().unwrap();
        assert!(torrent_query(&bad).unwrap_err().message.contains("paused"));
    }
}
