//! The session's node in the mainline DHT (BEP 5), the DHT every other BitTorrent client
//! uses: through it a bare magnet (`xt=` only) finds peers, and other clients find us.
//!
//! The protocol is the `mainline` crate's (which also picks a BEP 42 node id from the public
//! address its peers report); this module owns one node of it for a session and turns its
//! answers into what discovery needs: [`MainlineHandle::get_peers`] (bounded, with a
//! deadline) and [`MainlineHandle::announce`]. The crate runs its node on a thread of its own
//! behind a channel; only its async API is used here, so no tokio worker ever blocks on it.
//! The node stops when the last handle is dropped.
//!
//! Parts: this file (config, start, queries), [`nodes`] (the routing table saved between
//! runs), [`offered`] (nodes named by peers' `port` messages), [`store`] (the bounds of what
//! the node keeps for others once it serves the DHT).
use crate::metainfo::InfoHash;
use futures::{Stream, StreamExt};
use mainline::async_dht::AsyncDht;
use mainline::Id;
use offered::Offered;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

pub mod nodes;
pub mod offered;
pub mod store;

/// The usual public bootstrap nodes, used unless the flags or the config name others.
pub const DEFAULT_BOOTSTRAP: [&str; 4] = [
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// How to start the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainlineConfig {
    /// `HOST:PORT` entries, resolved when the node starts (a name that does not resolve is
    /// skipped with a warning: the others may still do).
    pub bootstrap: Vec<String>,
    /// The UDP address to bind; `None`: every interface, port 6881 if free, else any.
    pub listen: Option<SocketAddrV4>,
    /// Where the routing table is saved at shutdown and read back at start (more bootstrap
    /// nodes, when it was learned from the same `bootstrap` list); `None`: not kept.
    pub nodes_file: Option<PathBuf>,
}

impl MainlineConfig {
    /// The public network: [`DEFAULT_BOOTSTRAP`], any interface.
    pub fn public() -> MainlineConfig {
        MainlineConfig {
            bootstrap: DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
            listen: None,
            nodes_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MainlineError {
    /// The UDP socket could not be bound (the message names the address).
    #[error("mainline DHT: listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    /// A bootstrap entry is not `HOST:PORT`.
    #[error("mainline DHT bootstrap node `{0}`: not HOST:PORT")]
    Bootstrap(String),
    #[error("mainline DHT: the node's thread could not start: {0}")]
    Thread(String),
}

/// Checks that `entry` is `HOST:PORT` with a port number (without resolving the host).
pub fn check_host_port(entry: &str) -> Result<(), String> {
    let (host, port) = entry.rsplit_once(':').ok_or_else(|| format!("`{entry}` is not HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("`{entry}` is not HOST:PORT"));
    }
    Ok(())
}

/// A running mainline node; cloning shares it.
#[derive(Debug, Clone)]
pub struct MainlineHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The node; `None` only while it restarts with offered nodes ([`offered`]).
    dht: Mutex<Option<AsyncDht>>,
    local: SocketAddrV4,
    nodes_file: Option<PathBuf>,
    /// The configured bootstrap list, which names the saved table.
    bootstrap: Vec<String>,
    /// What the node bootstrapped from at start: `bootstrap` resolved, and the saved nodes.
    resolved: Vec<SocketAddrV4>,
    offered: Mutex<Offered>,
    /// Wakes the task that restarts a node with an empty table (capacity one: a nudge
    /// already waiting covers the next).
    nudge: mpsc::Sender<()>,
}

impl MainlineHandle {
    /// Resolves the bootstrap nodes (and reads the saved ones), binds the socket and starts
    /// the node.
    pub async fn start(config: MainlineConfig) -> Result<MainlineHandle, MainlineError> {
        let mut resolved = resolve(&config.bootstrap).await?;
        if let Some(path) = &config.nodes_file {
            resolved.extend(nodes::load(path, &config.bootstrap));
        }
        let addr = config.listen.map_or_else(|| "0.0.0.0:6881".to_string(), |a| a.to_string());
        let dht =
            build(resolved.clone(), config.listen).await.map_err(|source| MainlineError::Listen { addr, source })?;
        let local = dht.info().await.local_addr();
        tracing::info!(%local, "mainline DHT node started");
        let (nudge, nudges) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            dht: Mutex::new(Some(dht)),
            local,
            nodes_file: config.nodes_file,
            bootstrap: config.bootstrap,
            resolved,
            offered: Mutex::default(),
            nudge,
        });
        tokio::spawn(rejoin_when_alone(Arc::downgrade(&shared), nudges));
        tokio::spawn(warn_if_alone(Arc::downgrade(&shared)));
        Ok(MainlineHandle { shared })
    }

    /// The node, unless it is restarting.
    fn dht(&self) -> Option<AsyncDht> {
        self.shared.dht.lock().expect("mainline node").clone()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.shared.local
    }

    /// A node a peer named in a BEP 5 `port` message (its IP, the port it sent). Kept
    /// (bounded) for the next start, and used at once if our table is empty ([`offered`]).
    pub fn offer_node(&self, addr: SocketAddr) {
        let SocketAddr::V4(addr) = addr else { return };
        if self.shared.offered.lock().expect("offered nodes").offer(addr) {
            tracing::debug!(node = %addr, "mainline DHT node offered by a peer");
            let _ = self.shared.nudge.try_send(());
        }
    }

    /// Peers of `info_hash`: a `get_peers` lookup as a stream of batches (one node's
    /// answer each, deduplicated), ending after `max` distinct addresses or at `deadline`,
    /// whichever comes first (at once while the node restarts).
    pub fn get_peers(
        &self,
        info_hash: &InfoHash,
        max: usize,
        deadline: Duration,
    ) -> impl Stream<Item = Vec<SocketAddr>> + Send + 'static {
        let answers = self.dht().map(|d| d.get_peers(Id::from(info_hash.as_bytes())));
        let end = tokio::time::Instant::now() + deadline;
        futures::stream::unfold((answers, HashSet::new()), move |(mut answers, mut seen)| async move {
            while seen.len() < max {
                let batch = tokio::time::timeout_at(end, answers.as_mut()?.next()).await.ok()??;
                let room = max - seen.len();
                let fresh: Vec<SocketAddr> = batch
                    .into_iter()
                    .filter(|a| a.port() != 0 && !a.ip().is_unspecified() && seen.insert(*a))
                    .take(room)
                    .map(SocketAddr::V4)
                    .collect();
                if !fresh.is_empty() {
                    return Some((fresh, (answers, seen)));
                }
            }
            None
        })
    }

    /// Announces that we serve `info_hash` on TCP `port` to the nodes closest to it.
    pub async fn announce(&self, info_hash: &InfoHash, port: u16) -> Result<(), String> {
        let dht = self.dht().ok_or("the node is restarting")?;
        dht.announce_peer(Id::from(info_hash.as_bytes()), Some(port)).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// The nodes of the routing table as `IP:PORT`.
    pub async fn routing_nodes(&self) -> Vec<String> {
        match self.dht() {
            Some(dht) => dht.to_bootstrap().await,
            None => Vec::new(),
        }
    }

    /// The node's view for diagnostics: its address, id, table size and mode.
    pub async fn view(&self) -> serde_json::Value {
        let offered = self.shared.offered.lock().expect("offered nodes").nodes().len();
        let Some(dht) = self.dht() else {
            return serde_json::json!({"enabled": true, "restarting": true, "listen": self.shared.local.to_string()});
        };
        let info = dht.info().await;
        let nodes = dht.to_bootstrap().await.len();
        serde_json::json!({
            "enabled": true,
            "listen": self.shared.local.to_string(),
            "node_id": info.id().to_string(),
            "routing_table_size": nodes,
            "offered_nodes": offered,
            "public_address": info.public_address().map(|a| a.to_string()),
            "firewalled": info.firewalled(),
            "server_mode": info.server_mode(),
            "dht_size_estimate": info.dht_size_estimate().0,
        })
    }

    /// Saves the routing table, and the nodes peers offered, for the next start, when a file
    /// was configured.
    pub async fn save(&self) {
        if let Some(path) = &self.shared.nodes_file {
            let mut list = self.routing_nodes().await;
            let offered = self.shared.offered.lock().expect("offered nodes").nodes();
            for node in offered.iter().rev().map(|a| a.to_string()) {
                if !list.contains(&node) {
                    list.push(node);
                }
            }
            let (path, bootstrap) = (path.clone(), self.shared.bootstrap.clone());
            let _ = tokio::task::spawn_blocking(move || nodes::save(&path, &bootstrap, &list)).await;
        }
    }
}

/// Builds a node bootstrapping from `bootstrap`, bound to `listen`. The crate's start-up
/// blocks while the socket is bound, so it runs on the blocking pool.
async fn build(bootstrap: Vec<SocketAddrV4>, listen: Option<SocketAddrV4>) -> std::io::Result<AsyncDht> {
    let built = tokio::task::spawn_blocking(move || builder(&bootstrap, listen).build())
        .await
        .map_err(std::io::Error::other)?;
    Ok(built?.as_async())
}

/// A node's settings: its bootstrap nodes, its address, and the bounds of what it stores for
/// others ([`store`]).
fn builder(bootstrap: &[SocketAddrV4], listen: Option<SocketAddrV4>) -> mainline::DhtBuilder {
    let mut builder = mainline::Dht::builder();
    builder.bootstrap(bootstrap).server_settings(store::server_settings());
    if let Some(addr) = listen {
        builder.bind_address(*addr.ip()).port(addr.port());
    }
    builder
}

/// Warns once if the routing table is still empty [`offered::REJOIN_AFTER`] after the start:
/// no bootstrap node answered. The `mainline` crate says so itself at ERROR level every two
/// seconds, which the binary's logging hides: a DHT without nodes is not an error of the
/// download (trackers and peers still work, and the node joins through the first node a peer
/// names, [`rejoin_when_alone`]).
async fn warn_if_alone(shared: Weak<Shared>) {
    tokio::time::sleep(offered::REJOIN_AFTER).await;
    let Some(shared) = shared.upgrade() else { return };
    let handle = MainlineHandle { shared };
    if handle.routing_nodes().await.is_empty() {
        let tried = handle.shared.resolved.len();
        tracing::warn!(tried, "no mainline DHT node answered; the DHT finds peers once a peer names a node");
    }
}

/// The task behind [`MainlineHandle::offer_node`]: when a node is offered and the routing
/// table is still empty [`offered::REJOIN_AFTER`] after the node started, restarts the node
/// on the same address with the offered nodes added to its bootstrap list. Ends when the
/// last handle is dropped.
async fn rejoin_when_alone(shared: Weak<Shared>, mut nudges: mpsc::Receiver<()>) {
    let mut started = tokio::time::Instant::now();
    while nudges.recv().await.is_some() {
        tokio::time::sleep_until(started + offered::REJOIN_AFTER).await;
        let Some(shared) = shared.upgrade() else { return };
        let handle = MainlineHandle { shared };
        if !handle.routing_nodes().await.is_empty() {
            continue;
        }
        started = tokio::time::Instant::now();
        if !handle.rejoin().await {
            // Try again later even if no other node is offered.
            let _ = handle.shared.nudge.try_send(());
        }
    }
}

impl MainlineHandle {
    /// Replaces the node with one bootstrapping from the offered nodes too, on the same
    /// address; false when the address could not be bound again (the node is then down
    /// until the next try).
    async fn rejoin(&self) -> bool {
        let mut bootstrap = self.shared.resolved.clone();
        bootstrap.extend(self.shared.offered.lock().expect("offered nodes").nodes());
        let old = self.shared.dht.lock().expect("mainline node").take();
        // The old node's thread lets go of the socket once the last clone is gone and its
        // read times out (50 ms); a lookup still holding one ends fast on an empty table.
        drop(old);
        let mut tries = 0;
        let dht = loop {
            match build(bootstrap.clone(), Some(self.shared.local)).await {
                Ok(dht) => break dht,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => tries += 1,
                Err(e) => {
                    tracing::warn!(addr = %self.shared.local, error = %e, "mainline DHT node not restarted");
                    return false;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        *self.shared.dht.lock().expect("mainline node") = Some(dht);
        tracing::info!(bootstrap = bootstrap.len(), "mainline DHT node restarted with the nodes its peers named");
        true
    }
}

/// Resolves `HOST:PORT` entries to IPv4 addresses (the crate speaks IPv4 only).
async fn resolve(entries: &[String]) -> Result<Vec<SocketAddrV4>, MainlineError> {
    let mut out = Vec::new();
    for entry in entries {
        check_host_port(entry).map_err(|_| MainlineError::Bootstrap(entry.clone()))?;
        match tokio::net::lookup_host(entry.as_str()).await {
            Ok(addrs) => out.extend(addrs.filter_map(|a| match a {
                SocketAddr::V4(v4) if *v4.ip() != Ipv4Addr::UNSPECIFIED => Some(v4),
                _ => None,
            })),
            Err(e) => tracing::warn!(node = %entry, error = %e, "mainline DHT bootstrap node not resolved; skipped"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_checked() {
        check_host_port("router.bittorrent.com:6881").unwrap();
        check_host_port("127.0.0.1:1").unwrap();
        for bad in ["router.bittorrent.com", ":6881", "host:0", "host:port", "host:70000", ""] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }

    /// A node whose bootstrap node never answers joins the network through a node a peer
    /// offered: after [`offered::REJOIN_AFTER`] it restarts, on the same address, and its
    /// table fills from the offered node.
    #[tokio::test]
    async fn an_offered_node_brings_a_lonely_node_into_the_network() {
        let net = tokio::task::spawn_blocking(|| mainline::Testnet::builder(4).build().unwrap()).await.unwrap();
        let config = MainlineConfig {
            // Nothing answers on port 9 of loopback (discard, not run).
            bootstrap: vec!["127.0.0.1:9".into()],
            listen: Some("127.0.0.1:0".parse().unwrap()),
            nodes_file: None,
        };
        let lonely = MainlineHandle::start(config).await.unwrap();
        let local = lonely.local_addr();
        lonely.offer_node(net.bootstrap[0].parse().unwrap());
        lonely.offer_node(net.bootstrap[0].parse().unwrap());
        lonely.offer_node("[::1]:6881".parse().unwrap());
        assert_eq!(lonely.shared.offered.lock().unwrap().nodes().len(), 1, "one distinct IPv4 node");
        let deadline = std::time::Instant::now() + offered::REJOIN_AFTER + Duration::from_secs(120);
        while lonely.routing_nodes().await.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the offered node never filled the table");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(lonely.local_addr(), local, "restarted on the same address");
        assert_eq!(lonely.dht().unwrap().info().await.local_addr(), local);
    }

    #[tokio::test]
    async fn a_lookup_is_bounded_and_finds_what_was_announced() {
        let net = tokio::task::spawn_blocking(|| mainline::Testnet::builder(4).build().unwrap()).await.unwrap();
        let config = MainlineConfig {
            bootstrap: net.bootstrap.clone(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            nodes_file: None,
        };
        let a = MainlineHandle::start(config.clone()).await.unwrap();
        let b = MainlineHandle::start(config).await.unwrap();
        assert_eq!(a.local_addr().ip(), &Ipv4Addr::LOCALHOST);
        let hash = InfoHash([7; 20]);
        a.announce(&hash, 5555).await.unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while got.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the announced peer was never found");
            let batches: Vec<_> = b.get_peers(&hash, 1, Duration::from_secs(30)).collect().await;
            got.extend(batches.into_iter().flatten());
        }
        assert_eq!(
            got,
            vec!["127.0.0.1:5555".parse::<SocketAddr>().unwrap()],
            "one address at most, the announced one"
        );
    }
}
