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
//! runs).
use crate::metainfo::InfoHash;
use futures::{Stream, StreamExt};
use mainline::async_dht::AsyncDht;
use mainline::Id;
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

pub mod nodes;

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
    dht: AsyncDht,
    local: SocketAddrV4,
    nodes_file: Option<PathBuf>,
    /// The configured bootstrap list, which names the saved table.
    bootstrap: Vec<String>,
}

impl MainlineHandle {
    /// Resolves the bootstrap nodes (and reads the saved ones), binds the socket and starts
    /// the node. The crate's start-up blocks while the socket is bound, so it runs on the
    /// blocking pool.
    pub async fn start(config: MainlineConfig) -> Result<MainlineHandle, MainlineError> {
        let mut bootstrap = resolve(&config.bootstrap).await?;
        if let Some(path) = &config.nodes_file {
            bootstrap.extend(nodes::load(path, &config.bootstrap));
        }
        let listen = config.listen;
        let built = tokio::task::spawn_blocking(move || {
            let mut builder = mainline::Dht::builder();
            builder.bootstrap(&bootstrap);
            if let Some(addr) = listen {
                builder.bind_address(*addr.ip()).port(addr.port());
            }
            builder.build()
        })
        .await
        .map_err(|e| MainlineError::Thread(e.to_string()))?;
        let addr = listen.map_or_else(|| "0.0.0.0:6881".to_string(), |a| a.to_string());
        let dht = built.map_err(|source| MainlineError::Listen { addr, source })?.as_async();
        let local = dht.info().await.local_addr();
        tracing::info!(%local, "mainline DHT node started");
        Ok(MainlineHandle { dht, local, nodes_file: config.nodes_file, bootstrap: config.bootstrap })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// Peers of `info_hash`: a `get_peers` lookup as a stream of batches (one node's
    /// answer each, deduplicated), ending after `max` distinct addresses or at `deadline`,
    /// whichever comes first.
    pub fn get_peers(
        &self,
        info_hash: &InfoHash,
        max: usize,
        deadline: Duration,
    ) -> impl Stream<Item = Vec<SocketAddr>> + Send + 'static {
        let answers = self.dht.get_peers(Id::from(info_hash.as_bytes()));
        let end = tokio::time::Instant::now() + deadline;
        futures::stream::unfold((answers, HashSet::new()), move |(mut answers, mut seen)| async move {
            while seen.len() < max {
                let batch = tokio::time::timeout_at(end, answers.next()).await.ok()??;
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
        self.dht.announce_peer(Id::from(info_hash.as_bytes()), Some(port)).await.map(|_| ()).map_err(|e| e.to_string())
    }

    /// The nodes of the routing table as `IP:PORT`.
    pub async fn routing_nodes(&self) -> Vec<String> {
        self.dht.to_bootstrap().await
    }

    /// The node's view for diagnostics: its address, id, table size and mode.
    pub async fn view(&self) -> serde_json::Value {
        let info = self.dht.info().await;
        let nodes = self.routing_nodes().await.len();
        serde_json::json!({
            "enabled": true,
            "listen": self.local.to_string(),
            "node_id": info.id().to_string(),
            "routing_table_size": nodes,
            "public_address": info.public_address().map(|a| a.to_string()),
            "firewalled": info.firewalled(),
            "server_mode": info.server_mode(),
            "dht_size_estimate": info.dht_size_estimate().0,
        })
    }

    /// Saves the routing table for the next start, when a file was configured.
    pub async fn save(&self) {
        if let Some(path) = &self.nodes_file {
            let list = self.routing_nodes().await;
            let (path, bootstrap) = (path.clone(), self.bootstrap.clone());
            let _ = tokio::task::spawn_blocking(move || nodes::save(&path, &bootstrap, &list)).await;
        }
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
