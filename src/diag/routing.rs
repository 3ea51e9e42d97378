//! The `/debug/p2p/routing` view: DHT mode, routing table, connected peers and the last
//! lookups of the Kademlia node at the top level, and the mainline DHT node's address, id
//! and table size under `mainline`. Each node is asked every few seconds by a small task;
//! the HTTP handler only reads the latest answer, so a slow node never blocks a request.
use crate::discovery::dht::LookupLog;
use crate::mainline::MainlineHandle;
use crate::p2p::{DhtMode, NodeHandle, Reachability};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::JsonSource;

/// How often the node is asked.
const POLL: Duration = Duration::from_secs(2);

/// Starts the poller on `tasks` (it runs until `cancel`) and returns the source the
/// diagnostics server reads.
pub fn routing_source(
    node: NodeHandle,
    mode: DhtMode,
    lookups: Arc<LookupLog>,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> JsonSource {
    let latest = Arc::new(Mutex::new(json!({ "enabled": true, "peer_id": node.peer_id().to_base58() })));
    let out = latest.clone();
    tasks.spawn(async move {
        loop {
            // A node call in flight is cut short too: the session waits for this task.
            let view = tokio::select! {
                _ = cancel.cancelled() => return,
                view = snapshot(&node, mode) => view,
            };
            *latest.lock().expect("routing view") = view;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    });
    Arc::new(move || {
        let mut v = out.lock().expect("routing view").clone();
        v["last_lookups"] = serde_json::to_value(lookups.recent()).unwrap_or(Value::Null);
        v
    })
}

async fn snapshot(node: &NodeHandle, mode: DhtMode) -> Value {
    let size = node.routing_table_size().await.ok();
    let connected = node.connected_peers().await.map(|p| p.len()).ok();
    let listen: Vec<String> =
        node.listen_addrs().await.map(|a| a.iter().map(|m| m.to_string()).collect()).unwrap_or_default();
    let (nat, kad_mode) = node.reachability_and_mode().await.unwrap_or((Reachability::Unknown, "unknown"));
    let public = match &nat {
        Reachability::Public(addr) => Some(addr.to_string()),
        _ => None,
    };
    json!({
        "enabled": true,
        "peer_id": node.peer_id().to_base58(),
        "mode": format!("{mode:?}").to_lowercase(),
        "routing_table_size": size,
        "connected_peers": connected,
        "listen_addrs": listen,
        "kad_mode": kad_mode,
        "reachability": { "status": nat.as_str(), "address": public },
    })
}

/// Starts a poller of the mainline node on `tasks` (until `cancel`) and returns its view.
pub fn mainline_source(dht: MainlineHandle, tasks: &TaskTracker, cancel: CancellationToken) -> JsonSource {
    let latest = Arc::new(Mutex::new(json!({ "enabled": true, "listen": dht.local_addr().to_string() })));
    let out = latest.clone();
    tasks.spawn(async move {
        loop {
            let view = tokio::select! {
                _ = cancel.cancelled() => return,
                view = dht.view() => view,
            };
            *latest.lock().expect("mainline view") = view;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    });
    Arc::new(move || out.lock().expect("mainline view").clone())
}

/// The routing view with the mainline node's under `mainline` (`{"enabled": false}` when
/// none runs); `None` when neither DHT runs.
pub fn with_mainline(kad: Option<JsonSource>, mainline: Option<JsonSource>) -> Option<JsonSource> {
    let Some(mainline) = mainline else { return kad };
    Some(Arc::new(move || {
        let mut v = kad.as_ref().map_or_else(|| json!({ "enabled": false }), |k| k());
        v["mainline"] = mainline();
        v
    }))
}
