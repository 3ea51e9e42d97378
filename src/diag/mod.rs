//! HTTP diagnostics: JSON views under `/debug/p2p/` and the Prometheus `/metrics`.
//!
//! The diagnostics own no state. Everything is read, at request time, through the sources in
//! [`DiagState`]: the torrents' own [`TorrentStats`] snapshots, the DHT's routing report and
//! the key-peer monitor's report (both optional, plugged in by their owners), and the
//! process-wide [`metrics()`](crate::metrics::metrics). A source must be cheap and must not
//! block: it is called on an async worker thread.
//!
//! Parts:
//! - [`views`]: the JSON shapes, plain functions of the statistics;
//! - [`server`]: the axum router and [`serve`].
pub mod routing;
pub mod server;
pub mod views;

pub use crate::torrent::TorrentSource;
pub use server::serve;

use crate::torrent::{TorrentHandle, TorrentStats};
use std::sync::Arc;

/// A JSON report from a subsystem that plugs into the diagnostics (DHT, key-peer monitor).
pub type JsonSource = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the diagnostics read from.
#[derive(Clone)]
pub struct DiagState {
    pub torrents: TorrentSource,
    /// DHT mode, routing table size, last lookups; `{"enabled": false}` when absent.
    pub routing: Option<JsonSource>,
    /// Key peers and their probe state; `{"enabled": false}` when absent.
    pub keepalive: Option<JsonSource>,
}

impl DiagState {
    pub fn new(torrents: TorrentSource) -> DiagState {
        DiagState { torrents, routing: None, keepalive: None }
    }

    pub fn with_routing(mut self, routing: JsonSource) -> DiagState {
        self.routing = Some(routing);
        self
    }

    pub fn with_keepalive(mut self, keepalive: JsonSource) -> DiagState {
        self.keepalive = Some(keepalive);
        self
    }
}

/// A source reading the latest statistics of a fixed set of torrents.
pub fn torrent_source(handles: impl IntoIterator<Item = TorrentHandle>) -> TorrentSource {
    let stats: Vec<_> = handles.into_iter().map(|h| h.stats()).collect();
    Arc::new(move || stats.iter().map(|rx| rx.borrow().clone()).collect::<Vec<TorrentStats>>())
}
