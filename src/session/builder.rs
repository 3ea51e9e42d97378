//! The composition root: [`SessionBuilder`] starts what a program running torrents needs
//! besides the torrents themselves — the BitTorrent listener, the libp2p node, the key-peer
//! monitor on that node, and the diagnostics HTTP server — and spawns every task of theirs on
//! the session's `TaskTracker` under its `CancellationToken`, so [`Session::shutdown`] stops
//! them all and waits for them.
//!
//! It wires, it does not decide: the caller says what to start (the command line turns its
//! flags into a [`NodeConfig`], the benchmark makes loopback nodes), and a part not asked for
//! is not started. Started, in order:
//!
//! 1. the session and its listener ([`SessionBuilder::listen`]; none: outbound only);
//! 2. the libp2p node ([`SessionBuilder::node`]), attached so peers are also reached and
//!    accepted over `/shoal/bt/1.0.0` streams and torrents use the DHT;
//! 3. with a node and `enable_key_peer_monitor`, the key-peer monitor over the configured
//!    `key_peers` and the node's bootstrap peers;
//! 4. the mainline DHT node ([`SessionBuilder::mainline`]), so public torrents are also looked
//!    up and announced in the DHT other BitTorrent clients use;
//! 5. with [`SessionBuilder::diagnostics`], the HTTP server over the session's torrents (which
//!    are also put in `/metrics` for the life of the session), both DHTs' routing views and
//!    the monitor's view.
//!
//! When a step fails, what was started is shut down before the error is returned.
use super::Session;
use crate::config::Options;
use crate::diag::routing::{mainline_source, routing_source, with_mainline};
use crate::diag::server::serve_tracked;
use crate::diag::{DiagState, JsonSource};
use crate::keepalive::{self, KeyPeerSeeds};
use crate::mainline::{MainlineConfig, MainlineError, MainlineHandle};
use crate::metrics::metrics;
use crate::p2p::{NodeConfig, NodeError, NodeHandle};
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The BitTorrent listener could not bind (the message names the address).
    #[error(transparent)]
    Listen(std::io::Error),
    /// The libp2p node could not start: a bad listen or bootstrap address, or its transport.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A `key_peers` entry the key-peer monitor cannot use.
    #[error("config key `key_peers`: {0}")]
    KeyPeers(String),
    /// The diagnostics server could not bind (the message names the address).
    #[error(transparent)]
    Diagnostics(std::io::Error),
    /// The mainline DHT node could not start: its address, or a bootstrap entry.
    #[error(transparent)]
    Mainline(#[from] MainlineError),
}

/// What to start with a session; see the module documentation. Made by [`Session::builder`].
#[derive(Debug)]
#[must_use = "a builder starts nothing until `start` is awaited"]
pub struct SessionBuilder {
    options: Arc<Options>,
    listen: Option<SocketAddr>,
    node: Option<NodeConfig>,
    mainline: Option<MainlineConfig>,
    diagnostics: Option<SocketAddr>,
}

impl Session {
    /// A session with `options`, starting nothing besides it until told to.
    pub fn builder(options: Arc<Options>) -> SessionBuilder {
        SessionBuilder { options, listen: None, node: None, mainline: None, diagnostics: None }
    }
}

impl SessionBuilder {
    /// Accepts BitTorrent peers on `addr` (port 0 picks a free port).
    pub fn listen(mut self, addr: SocketAddr) -> SessionBuilder {
        self.listen = Some(addr);
        self
    }

    /// Starts a libp2p node with `config` (and on it, unless `enable_key_peer_monitor` is off,
    /// the key-peer monitor).
    pub fn node(mut self, config: NodeConfig) -> SessionBuilder {
        self.node = Some(config);
        self
    }

    /// Starts a mainline DHT (BEP 5) node with `config`.
    pub fn mainline(mut self, config: MainlineConfig) -> SessionBuilder {
        self.mainline = Some(config);
        self
    }

    /// Serves diagnostics and metrics over HTTP on `addr` (port 0 picks a free port; the
    /// bound address is [`Session::diag_addr`]).
    pub fn diagnostics(mut self, addr: SocketAddr) -> SessionBuilder {
        self.diagnostics = Some(addr);
        self
    }

    /// Starts the session and everything asked for.
    pub async fn start(self) -> Result<Session, StartError> {
        let mut session = Session::start(self.options.clone(), self.listen).await.map_err(StartError::Listen)?;
        match self.wire(&mut session).await {
            Ok(()) => Ok(session),
            Err(e) => {
                session.shutdown().await;
                Err(e)
            }
        }
    }

    async fn wire(self, session: &mut Session) -> Result<(), StartError> {
        let mut keepalive = None;
        let mut node_and_mode = None;
        if let Some(config) = self.node {
            let (mode, bootstrap) = (config.dht_mode, config.bootstrap.clone());
            // On the session's tracker: `Session::shutdown` waits for the node's event loop,
            // which ends when the session's token is cancelled.
            let node = NodeHandle::spawn_tracked(config, &session.tasks, session.cancel_token().child_token()).await?;
            session.attach_node(node.clone());
            keepalive = start_key_peer_monitor(session, &node, &bootstrap).await?;
            node_and_mode = Some((node, mode));
        } else if session.options().enable_key_peer_monitor {
            // Key peers are libp2p peers: without a node there is nothing to watch. Said once
            // (at debug level: `--no-kad` is a choice, not a fault).
            tracing::debug!(
                key_peers = session.options().key_peers.len(),
                "key-peer monitor idle: no libp2p node to watch key peers from (--no-kad)"
            );
            let idle = serde_json::json!({"enabled": false, "reason": "no libp2p node (--no-kad)"});
            keepalive = Some(std::sync::Arc::new(move || idle.clone()) as JsonSource);
        }
        if let Some(config) = self.mainline {
            session.attach_mainline(MainlineHandle::start(config).await?);
        }
        if let Some(addr) = self.diagnostics {
            let routing = node_and_mode.map(|(node, mode)| {
                routing_source(node, mode, session.lookup_log(), &session.tasks, session.cancel_token())
            });
            let mainline =
                session.mainline().map(|dht| mainline_source(dht.clone(), &session.tasks, session.cancel_token()));
            start_diagnostics(session, addr, with_mainline(routing, mainline), keepalive).await?;
        }
        Ok(())
    }
}

/// Starts the key-peer monitor on `node` unless `enable_key_peer_monitor` is off; its key
/// peers are the configured `key_peers` and the node's `bootstrap` peers. Returns the source
/// of its `/debug/p2p/keepalive` view.
async fn start_key_peer_monitor(
    session: &mut Session,
    node: &NodeHandle,
    bootstrap: &[libp2p::Multiaddr],
) -> Result<Option<JsonSource>, StartError> {
    let options = session.options();
    if !options.enable_key_peer_monitor {
        tracing::info!("key-peer monitor disabled (enable_key_peer_monitor = false)");
        return Ok(None);
    }
    let seeds = KeyPeerSeeds::from_options(options, bootstrap).map_err(StartError::KeyPeers)?;
    let link = session.keepalive_link();
    let view = keepalive::spawn(node.clone(), options, seeds, link, &session.tasks, session.cancel_token()).await;
    session.key_peers = Some(view.clone());
    Ok(Some(keepalive::json_source(view)))
}

/// Serves diagnostics on `addr` over the session's torrents and the optional views, and keeps
/// the session's torrents in `/metrics` while the session lives.
async fn start_diagnostics(
    session: &mut Session,
    addr: SocketAddr,
    routing: Option<JsonSource>,
    keepalive: Option<JsonSource>,
) -> Result<(), StartError> {
    let torrents = session.stats_source();
    let guard = metrics().register_torrents(torrents.clone());
    let mut state = DiagState::new(torrents);
    state.routing = routing;
    state.keepalive = keepalive;
    let at =
        serve_tracked(addr, state, &session.tasks, session.cancel_token()).await.map_err(StartError::Diagnostics)?;
    session.diagnostics = Some((at, guard));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::DhtMode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn node_config(options: &Options) -> NodeConfig {
        let mut cfg = NodeConfig::new(libp2p::identity::Keypair::generate_ed25519(), options.dht_query_timeout);
        cfg.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        cfg.dht_mode = DhtMode::Server;
        cfg
    }

    /// The body of `GET path`, over HTTP/1.0 so the server closes when done.
    async fn get(addr: SocketAddr, path: &str) -> serde_json::Value {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        let (_, body) = reply.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no body in {reply:?}"));
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"))
    }

    #[tokio::test]
    async fn starts_node_monitor_and_diagnostics_and_shutdown_waits_for_them() {
        let options = Arc::new(Options::default());
        let session = Session::builder(options.clone())
            .listen(loopback())
            .node(node_config(&options))
            .diagnostics(loopback())
            .start()
            .await
            .unwrap();
        let node = session.node().expect("node attached").clone();
        let diag = session.diag_addr().expect("diagnostics started");
        let routing = get(diag, "/debug/p2p/routing").await;
        assert_eq!(routing["enabled"], true, "{routing}");
        assert_eq!(routing["peer_id"], node.peer_id().to_base58(), "{routing}");
        let keepalive = get(diag, "/debug/p2p/keepalive").await;
        assert_eq!(keepalive["enabled"], true, "the key-peer monitor runs: {keepalive}");

        session.shutdown().await;
        // Every task the builder spawned was waited for: the server's listener is gone.
        let refused = tokio::net::TcpStream::connect(diag).await;
        assert!(refused.is_err(), "diagnostics still accept after shutdown");
    }

    #[tokio::test]
    async fn starts_only_what_is_asked_for() {
        let options = Arc::new(Options { enable_key_peer_monitor: false, ..Options::default() });
        let session = Session::builder(options.clone()).diagnostics(loopback()).start().await.unwrap();
        assert!(session.listen_addr().is_none() && session.node().is_none());
        let diag = session.diag_addr().expect("diagnostics started");
        assert_eq!(get(diag, "/debug/p2p/routing").await["enabled"], false);
        assert_eq!(get(diag, "/debug/p2p/keepalive").await["enabled"], false);
        session.shutdown().await;
    }

    #[tokio::test]
    async fn the_routing_view_shows_the_mainline_node() {
        let net = tokio::task::spawn_blocking(|| mainline::Testnet::builder(2).build().unwrap()).await.unwrap();
        let config = MainlineConfig {
            bootstrap: net.bootstrap.clone(),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            nodes_file: None,
        };
        let options = Arc::new(Options::default());
        let session = Session::builder(options).mainline(config).diagnostics(loopback()).start().await.unwrap();
        let local = session.mainline().expect("mainline attached").local_addr();
        let diag = session.diag_addr().expect("diagnostics started");
        // The node learns the network's two nodes as it bootstraps; the view follows.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let routing = loop {
            let routing = get(diag, "/debug/p2p/routing").await;
            if routing["mainline"]["routing_table_size"].as_u64() >= Some(1) {
                break routing;
            }
            assert!(std::time::Instant::now() < deadline, "no mainline table in {routing}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        assert_eq!(routing["enabled"], false, "no Kademlia node: {routing}");
        assert_eq!(routing["mainline"]["listen"], local.to_string(), "{routing}");
        session.shutdown().await;
    }

    #[tokio::test]
    async fn a_diagnostics_address_in_use_is_named() {
        let taken = std::net::TcpListener::bind(loopback()).unwrap();
        let addr = taken.local_addr().unwrap();
        let options = Arc::new(Options::default());
        let err = Session::builder(options.clone())
            .node(node_config(&options))
            .diagnostics(addr)
            .start()
            .await
            .err()
            .expect("the address is taken");
        assert!(matches!(err, StartError::Diagnostics(_)), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()), "names the address: {err}");
    }
}
