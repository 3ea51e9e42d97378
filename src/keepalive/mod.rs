//! The keepalive layer: the KeyPeerMonitor keeps the peers that matter connected.
//!
//! Key peers are the bootstrap nodes, the configured `key_peers`, the libp2p peers feeding
//! a download and, with `key_peers_from_routing_table`, the Kademlia routing table's peers
//! (bounded by `key_peer_set_max_size`). Each is probed every `key_peer_probe_interval`
//! (ping when connected, dial when not); after `probe_fail_threshold` failures in a row it is
//! looked up by PeerId in the DHT and redialled with the fresh addresses, and when that fails
//! a discovery-interval reset is published to the torrents' DHT tasks (rate-limited by the
//! cool-down). The node's own troubles (a closest-peers lookup that found nobody, an
//! address-book entry that expired) publish resets under the same cool-down.
//!
//! Parts, in reading order:
//! - [`monitor`]: the pure state machine (key-peer set, probe and repair states, rate limits);
//! - [`task`]: the tokio task that executes its actions, counts and logs them.
//!
//! The peer-wire keep-alive (BEP 3 keep-alive messages, idle timeout) is not here: it lives in
//! the peer task.
pub mod monitor;
pub mod task;

pub use monitor::{Action, KeyPeerMonitor, MonitorConfig, MonitorView, RepairState, Source};
pub use task::{spawn, KeyPeerSeeds, SessionLink};

use crate::diag::JsonSource;
use std::sync::Arc;
use tokio::sync::watch;

/// The `/debug/p2p/keepalive` source over the monitor's published view.
pub fn json_source(view: watch::Receiver<MonitorView>) -> JsonSource {
    Arc::new(move || serde_json::to_value(&*view.borrow()).unwrap_or_default())
}
