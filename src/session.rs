//! A session: our peer id, the TCP listener, and the torrents it routes connections to.
//!
//! The accept loop reads each incoming handshake (bounded by `handshake_timeout`) and hands
//! the connection to the torrent named by its info-hash; unknown info-hashes are dropped.
//! Each torrent also gets a tracker announcer when its metainfo lists trackers.
use crate::config::Options;
use crate::discovery::dht::{self, LookupLog, LookupRecord};
use crate::discovery::tracker::announcer::{self, AnnouncerConfig, AnnouncerLinks};
use crate::discovery::tracker::TransferTotals;
use crate::manager::PeerAddr;
use crate::metainfo::{InfoHash, Metainfo};
use crate::metrics::TorrentSource;
use crate::p2p::{into_box_stream, peer_addr, IncomingStreams, NodeHandle, P2pConnector};
use crate::peer::budget::SendBudget;
use crate::peer::{handshake, BoxStream};
use crate::torrent::{Connector, Inbound, TcpConnector, TorrentHandle, TorrentParams};
use crate::wire::PeerId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Inbound connections whose handshake is still being read, across all torrents.
const MAX_INBOUND_HANDSHAKES: usize = 256;

type Routes = Arc<Mutex<HashMap<InfoHash, TorrentHandle>>>;

pub struct Session {
    pub peer_id: PeerId,
    node: Option<NodeHandle>,
    /// Discovery-interval reset events (from the keepalive layer) for every torrent's DHT task.
    resets: broadcast::Sender<()>,
    lookups: Arc<LookupLog>,
    started: std::time::Instant,
    options: Arc<Options>,
    listen_addr: Option<SocketAddr>,
    torrents: Routes,
    connector: Arc<dyn Connector>,
    /// Block bytes read for peers and not yet sent, across every torrent.
    send_budget: SendBudget,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Session {
    /// Starts a session listening for BitTorrent peers on `listen` (none: outbound only).
    pub async fn start(options: Arc<Options>, listen: Option<SocketAddr>) -> std::io::Result<Session> {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let torrents: Routes = Arc::default();
        let send_budget = SendBudget::new(options.max_send_buffer);
        let mut listen_addr = None;
        if let Some(addr) = listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
            listen_addr = Some(listener.local_addr()?);
            tasks.spawn(accept_loop(listener, torrents.clone(), options.clone(), cancel.clone(), tasks.clone()));
        }
        Ok(Session {
            peer_id: PeerId::generate(),
            node: None,
            resets: broadcast::channel(16).0,
            lookups: Arc::default(),
            started: std::time::Instant::now(),
            options,
            listen_addr,
            torrents,
            connector: Arc::new(TcpConnector),
            send_budget,
            cancel,
            tasks,
        })
    }

    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    pub fn options(&self) -> &Arc<Options> {
        &self.options
    }

    /// Adds a libp2p node: peers found in the DHT are dialled over `/shoal/bt/1.0.0` streams,
    /// inbound streams are routed to torrents like TCP connections, and every torrent added
    /// from now on is provided and looked up in the DHT.
    pub fn attach_node(&mut self, node: NodeHandle) {
        self.connector = Arc::new(P2pConnector::new(node.clone()));
        if let Some(incoming) = node.take_incoming() {
            let (torrents, timeout, cancel, tasks) =
                (self.torrents.clone(), self.options.handshake_timeout, self.cancel.clone(), self.tasks.clone());
            self.tasks.spawn(accept_streams(incoming, torrents, timeout, cancel, tasks));
        }
        self.node = Some(node);
    }

    pub fn node(&self) -> Option<&NodeHandle> {
        self.node.as_ref()
    }

    /// Publishes a discovery-interval reset to every torrent's DHT task.
    pub fn reset_discovery(&self) {
        let _ = self.resets.send(());
    }

    /// What the key-peer monitor needs: the torrents and the reset channel.
    pub fn keepalive_link(&self) -> crate::keepalive::SessionLink {
        let routes = self.torrents.clone();
        let torrents = Arc::new(move || routes.lock().expect("routes lock").values().cloned().collect());
        crate::keepalive::SessionLink::new(torrents, self.resets.clone())
    }

    /// The log of recent DHT lookups, for diagnostics.
    pub fn lookup_log(&self) -> Arc<LookupLog> {
        self.lookups.clone()
    }

    /// The most recent DHT lookups, oldest first.
    pub fn recent_lookups(&self) -> Vec<LookupRecord> {
        self.lookups.recent()
    }

    /// Reads every torrent's latest statistics (for diagnostics and metrics).
    pub fn stats_source(&self) -> TorrentSource {
        let routes = self.torrents.clone();
        Arc::new(move || routes.lock().expect("routes lock").values().map(|h| h.stats().borrow().clone()).collect())
    }

    /// A token cancelled when the session shuts down.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Handles of the running torrents.
    pub fn torrents(&self) -> Vec<TorrentHandle> {
        self.torrents.lock().expect("routes lock").values().cloned().collect()
    }

    /// Replaces how peers are dialled (e.g. a libp2p-aware connector).
    pub fn set_connector(&mut self, connector: Arc<dyn Connector>) {
        self.connector = connector;
    }

    /// Starts a torrent whose data lives at `output/<name>`.
    pub fn add_torrent(&self, meta: Arc<Metainfo>, output: PathBuf) -> TorrentHandle {
        let params = TorrentParams {
            meta: meta.clone(),
            output,
            options: self.options.clone(),
            peer_id: self.peer_id,
            listen_port: self.listen_addr.map(|a| a.port()),
            connector: self.connector.clone(),
            send_budget: self.send_budget.clone(),
        };
        let handle = TorrentHandle::spawn(params, &self.cancel);
        self.torrents.lock().expect("routes lock").insert(meta.info_hash, handle.clone());
        if !meta.trackers.is_empty() {
            self.start_trackers(&handle);
        }
        if let Some(node) = &self.node {
            let cfg = dht::schedule_config(&self.options);
            let task = dht::run(
                node.clone(),
                handle.clone(),
                cfg,
                self.resets.subscribe(),
                self.lookups.clone(),
                self.started,
                handle.cancel_token(),
            );
            self.tasks.spawn(task);
        }
        handle
    }

    /// Keeps the torrent announced to its trackers and feeds what they return to its pool.
    fn start_trackers(&self, handle: &TorrentHandle) {
        let cfg = AnnouncerConfig {
            peer_id: self.peer_id,
            info_hash: handle.info_hash,
            port: self.listen_addr.map(|a| a.port()).unwrap_or(0),
            numwant: self.options.numwant,
            timeout: self.options.tracker_timeout,
            min_interval: self.options.tracker_min_interval,
        };
        let (totals_tx, totals_rx) = watch::channel(TransferTotals::default());
        let (peers_tx, peers_rx) = mpsc::channel(16);
        let (nudge_tx, nudge_rx) = mpsc::channel(1);
        let cancel = handle.cancel_token();
        let links = AnnouncerLinks { need_peers: Some(nudge_rx), status: None };
        let tiers = handle.meta.trackers.clone();
        // The announcer must see the torrent's totals before its first announce.
        self.tasks.spawn(bridge_tracker(handle.clone(), totals_tx, peers_rx, nudge_tx, cancel.clone()));
        let announcer = announcer::spawn(tiers, cfg, totals_rx, peers_tx, links, cancel);
        self.tasks.spawn(async move {
            let _ = announcer.await;
        });
    }

    /// Stops every torrent and the listener, and waits for all their tasks.
    pub async fn shutdown(&self) {
        let handles: Vec<TorrentHandle> = self.torrents.lock().expect("routes lock").drain().map(|(_, h)| h).collect();
        for h in &handles {
            h.shutdown().await;
        }
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Some(node) = &self.node {
            node.shutdown().await;
        }
    }
}

/// Carries totals to the announcer, its peers to the torrent, and the torrent's "need more
/// peers" to the announcer, until the torrent stops.
async fn bridge_tracker(
    handle: TorrentHandle,
    totals: watch::Sender<TransferTotals>,
    mut peers: mpsc::Receiver<Vec<SocketAddr>>,
    nudge: mpsc::Sender<()>,
    cancel: CancellationToken,
) {
    let mut stats = handle.stats();
    let mut need = handle.need_peers();
    loop {
        {
            let s = stats.borrow_and_update();
            let t = TransferTotals { uploaded: s.uploaded, downloaded: s.downloaded, left: s.bytes_left };
            totals.send_if_modified(|old| {
                let changed = old.uploaded != t.uploaded || old.downloaded != t.downloaded || old.left != t.left;
                *old = t;
                changed
            });
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = stats.changed() => if r.is_err() { return },
            r = need.changed() => {
                if r.is_err() { return }
                let _ = nudge.try_send(());
            }
            p = peers.recv() => match p {
                None => return,
                Some(p) => handle.add_peers(p.into_iter().map(PeerAddr::Tcp).collect()).await,
            },
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    torrents: Routes,
    options: Arc<Options>,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_INBOUND_HANDSHAKES));
    loop {
        let (stream, addr) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Bounded handshakes in flight: a flood of connections is turned away at once
        // instead of holding a task and a socket each for the handshake timeout.
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(peer = %addr, "too many handshakes in flight; connection dropped");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (torrents, timeout) = (torrents.clone(), options.handshake_timeout);
        tasks.spawn(async move {
            route(Box::new(stream), PeerAddr::Tcp(addr), torrents, timeout).await;
            drop(permit);
        });
    }
}

/// Routes inbound `/shoal/bt/1.0.0` streams like accepted TCP connections.
async fn accept_streams(
    mut incoming: IncomingStreams,
    torrents: Routes,
    timeout: std::time::Duration,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    use futures::StreamExt;
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_INBOUND_HANDSHAKES));
    loop {
        let (peer, stream) = tokio::select! {
            _ = cancel.cancelled() => return,
            next = incoming.next() => match next {
                Some(x) => x,
                None => return,
            },
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many handshakes in flight; stream dropped");
            continue;
        };
        let torrents = torrents.clone();
        tasks.spawn(async move {
            route(into_box_stream(stream), peer_addr(&peer), torrents, timeout).await;
            drop(permit);
        });
    }
}

/// Reads a handshake and gives the connection to its torrent.
pub async fn route(stream: BoxStream, addr: PeerAddr, torrents: Routes, timeout: std::time::Duration) {
    let (framed, hs) = match handshake::read_inbound(stream, timeout).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(peer = %addr, error = %e, "inbound handshake failed");
            return;
        }
    };
    let handle = torrents.lock().expect("routes lock").get(&hs.info_hash).cloned();
    match handle {
        Some(h) => h.accept(Inbound { framed, handshake: hs, addr }).await,
        None => tracing::debug!(peer = %addr, info_hash = %hs.info_hash, "inbound for an unknown torrent"),
    }
}
