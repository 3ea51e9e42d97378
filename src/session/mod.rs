//! A session: our peer id, the TCP listener, and the torrents it routes connections to.
//!
//! One accept loop per transport (TCP listener, libp2p `/shoal/bt/1.0.0` streams), both the
//! same generic `accept_loop`, reads each incoming handshake (bounded by
//! `handshake_timeout`) and hands the connection to the torrent named by its info-hash;
//! unknown info-hashes are dropped. Handshakes in flight are bounded by one
//! [`Slots`] shared by both loops: `max_inbound_handshakes` in all and
//! `max_inbound_handshakes_per_ip` per IP (IPv6: per /64) or per libp2p peer. A connection
//! past either bound is closed before its handshake is read, so one host holding slow
//! handshakes open cannot starve everyone else.
//!
//! Each torrent also gets a tracker announcer when its metainfo lists trackers.
//!
//! Parts: this file (the session, its accept loops, routing; the handshake bound is a
//! [`Slots`]), `magnet.rs` (a magnet's metadata fetched with the session's sources), `manage.rs`
//! (removing torrents; the options new torrents get) and [`builder`], the composition root
//! that starts a session with its node, key-peer monitor and diagnostics.
use crate::config::Options;
use crate::discovery::dht::{self, LookupLog, LookupRecord};
use crate::discovery::mainline::MainlineDiscovery;
use crate::discovery::tracker::announcer::{self, AnnouncerConfig, AnnouncerLinks};
use crate::discovery::tracker::TransferTotals;
use crate::mainline::MainlineHandle;
use crate::metainfo::{InfoHash, Metainfo};
use crate::metrics::TorrentSourceGuard;
use crate::p2p::{into_box_stream, peer_addr, NodeHandle, P2pConnector};
use crate::peer::budget::SendBudget;
use crate::peer::rate::{PeerRates, Rates};
use crate::peer::{handshake, BoxStream};
use crate::storage::{PieceCache, CACHE_BYTES, CACHE_PIECES, PIECE_LOADS};
use crate::torrent::Phase;
use crate::torrent::TorrentSource;
use crate::torrent::{Connector, Inbound, TcpConnector, TorrentHandle, TorrentParams};
use crate::types::{PeerAddr, PeerSource, Slots};
use crate::wire::PeerId;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod builder;
mod magnet;
mod manage;

pub use builder::{SessionBuilder, StartError};

type Routes = Arc<Mutex<HashMap<InfoHash, TorrentHandle>>>;

pub struct Session {
    pub peer_id: PeerId,
    node: Option<NodeHandle>,
    /// The mainline DHT (BEP 5) node, when started (`SessionBuilder::mainline`).
    mainline: Option<MainlineHandle>,
    /// Discovery-interval reset events (from the keepalive layer) for every torrent's DHT task.
    resets: broadcast::Sender<()>,
    lookups: Arc<LookupLog>,
    started: std::time::Instant,
    options: Arc<Options>,
    /// Options for torrents added from now on (the daemon's config); `options` until set.
    torrent_options: Arc<Mutex<Arc<Options>>>,
    /// The configured `key_peers` as they change, for the key-peer monitor.
    key_peer_list: watch::Sender<Vec<String>>,
    listen_addr: Option<SocketAddr>,
    torrents: Routes,
    connector: Arc<dyn Connector>,
    /// Block bytes read for peers and not yet sent, across every torrent.
    send_budget: SendBudget,
    piece_cache: PieceCache,
    /// Session-wide rate limits, from the options and changed with them.
    rates: Arc<Rates>,
    handshakes: Arc<Slots>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The diagnostics server's address, and the registration keeping the torrents in
    /// `/metrics` while the session lives (set by the builder).
    diagnostics: Option<(SocketAddr, TorrentSourceGuard)>,
    /// The key-peer monitor's published view, when it runs (set by the builder).
    key_peers: Option<watch::Receiver<crate::keepalive::MonitorView>>,
}

/// How a torrent added with [`Session::add_torrent_with`] starts.
#[derive(Debug, Clone, Default)]
pub struct TorrentSetup {
    /// BEP 53: one flag per file (from [`crate::metainfo::select::select_files`]), only the
    /// flagged files are downloaded; `None` for all.
    pub selection: Option<Vec<bool>>,
    /// The fast-resume record to start from and keep current; `None` hashes whatever is on
    /// disk at every start.
    pub resume: Option<PathBuf>,
    /// This torrent's own limits in bytes per second (0: none; the session's apply as well).
    pub download_limit: u64,
    pub upload_limit: u64,
    /// BEP 16 super-seeding, if the data is complete when the torrent starts
    /// ([`crate::manager::superseed`]).
    pub super_seed: bool,
}

impl Session {
    /// Starts a session listening for BitTorrent peers on `listen` (none: outbound only),
    /// and nothing else; [`Session::builder`] also starts a node, monitor and diagnostics.
    pub async fn start(options: Arc<Options>, listen: Option<SocketAddr>) -> std::io::Result<Session> {
        let listener = match listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| std::io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?,
            ),
            None => None,
        };
        let listen_addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        let handshakes = Arc::new(Slots::new(options.max_inbound_handshakes, options.max_inbound_handshakes_per_ip));
        let options_budget = options.max_send_buffer;
        let rates = Arc::new(Rates::new(options.download_rate_limit, options.upload_rate_limit));
        let session = Session {
            peer_id: PeerId::generate(),
            node: None,
            mainline: None,
            resets: broadcast::channel(16).0,
            lookups: Arc::default(),
            started: std::time::Instant::now(),
            torrent_options: Arc::new(Mutex::new(options.clone())),
            key_peer_list: watch::channel(options.key_peers.clone()).0,
            options,
            listen_addr,
            torrents: Arc::default(),
            connector: Arc::new(TcpConnector),
            send_budget: SendBudget::new(options_budget),
            piece_cache: PieceCache::new(CACHE_PIECES, CACHE_BYTES, PIECE_LOADS),
            rates,
            handshakes,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            key_peers: None,
            diagnostics: None,
        };
        if let Some(listener) = listener {
            session.tasks.spawn(accept_loop(tcp_incoming(listener), session.acceptor()));
        }
        Ok(session)
    }

    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }

    /// Where the diagnostics server listens, when the builder started one.
    pub fn diag_addr(&self) -> Option<SocketAddr> {
        self.diagnostics.as_ref().map(|(addr, _)| *addr)
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
            let streams = incoming.map(|(peer, stream)| (into_box_stream(stream), peer_addr(&peer)));
            self.tasks.spawn(accept_loop(streams, self.acceptor()));
        }
        self.node = Some(node);
    }

    fn acceptor(&self) -> Acceptor {
        Acceptor {
            torrents: self.torrents.clone(),
            handshakes: self.handshakes.clone(),
            timeout: self.options.handshake_timeout,
            cancel: self.cancel.clone(),
            tasks: self.tasks.clone(),
        }
    }

    pub fn node(&self) -> Option<&NodeHandle> {
        self.node.as_ref()
    }

    /// Adds a mainline DHT node: torrents added from now on (but private ones) look up and
    /// announce in it, and magnets fetch their metadata from the peers it finds.
    pub fn attach_mainline(&mut self, dht: MainlineHandle) {
        self.mainline = Some(dht);
    }

    /// The mainline DHT node, when one runs.
    pub fn mainline(&self) -> Option<&MainlineHandle> {
        self.mainline.as_ref()
    }

    /// Publishes a discovery-interval reset to every torrent's DHT task.
    pub fn reset_discovery(&self) {
        let _ = self.resets.send(());
    }

    /// What the key-peer monitor needs: the torrents and the reset channel.
    /// The key-peer monitor's view now; `None` when no monitor runs (no node, or disabled).
    pub fn key_peers(&self) -> Option<crate::keepalive::MonitorView> {
        self.key_peers.as_ref().map(|v| v.borrow().clone())
    }

    pub fn keepalive_link(&self) -> crate::keepalive::SessionLink {
        let routes = self.torrents.clone();
        let torrents = Arc::new(move || routes.lock().expect("routes lock").values().cloned().collect());
        crate::keepalive::SessionLink::new(torrents, self.resets.clone(), self.key_peer_list.subscribe())
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
        self.add_torrent_with(meta, output, TorrentSetup::default())
    }

    /// Like [`Session::add_torrent`], with a file selection or a fast-resume record.
    pub fn add_torrent_with(&self, meta: Arc<Metainfo>, output: PathBuf, setup: TorrentSetup) -> TorrentHandle {
        let params = TorrentParams {
            meta: meta.clone(),
            output,
            options: self.torrent_options(),
            peer_id: self.peer_id,
            listen_port: self.listen_addr.map(|a| a.port()),
            mainline: self.mainline.clone().filter(|_| !meta.private),
            connector: self.connector.clone(),
            send_budget: self.send_budget.clone(),
            piece_cache: self.piece_cache.clone(),
            selection: setup.selection,
            resume: setup.resume,
            super_seed: setup.super_seed,
            rates: PeerRates {
                session: self.rates.clone(),
                torrent: Arc::new(Rates::new(setup.download_limit, setup.upload_limit)),
                share: Default::default(),
            },
        };
        let handle = TorrentHandle::spawn(params, &self.cancel);
        self.torrents.lock().expect("routes lock").insert(meta.info_hash, handle.clone());
        if !meta.trackers.is_empty() {
            self.start_trackers(&handle);
        }
        // BEP 27: a private torrent is neither provided nor looked up in the DHT.
        if meta.private {
            tracing::info!(info_hash = %meta.info_hash, "private torrent: peers from its trackers only (no DHT, no PEX)");
        }
        if let Some(node) = self.node.as_ref().filter(|_| !meta.private) {
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
        if let Some(dht) = self.mainline.as_ref().filter(|_| !meta.private) {
            self.start_mainline(dht, &handle);
        }
        handle
    }

    /// Looks the torrent up and announces it in the mainline DHT until it stops.
    fn start_mainline(&self, dht: &MainlineHandle, handle: &TorrentHandle) {
        let task = MainlineDiscovery {
            dht: dht.clone(),
            handle: handle.clone(),
            port: self.listen_addr.map(|a| a.port()),
            schedule: dht::schedule_config(&self.options),
            max_addrs: self.options.max_addrs_per_message,
            lookup_timeout: self.options.dht_query_timeout,
            log: self.lookups.clone(),
            started: self.started,
        };
        self.tasks.spawn(task.run(self.resets.subscribe(), handle.cancel_token()));
    }

    /// Keeps the torrent announced to its trackers and feeds what they return to its pool.
    /// The first announce waits for the check of the data on disk: before it `left` is not
    /// known, and a seeder announcing the whole size is counted as a leecher by the tracker
    /// (and then as a false `completed`). So a seeder's first announce says `left=0`, and
    /// `completed` follows only a download that really happened.
    fn start_trackers(&self, handle: &TorrentHandle) {
        let cfg = AnnouncerConfig {
            peer_id: self.peer_id,
            info_hash: handle.info_hash,
            port: self.listen_addr.map(|a| a.port()).unwrap_or(0),
            numwant: self.options.numwant,
            timeout: self.options.tracker_timeout,
            min_interval: self.options.tracker_min_interval,
        };
        let (handle, tasks) = (handle.clone(), self.tasks.clone());
        self.tasks.spawn(async move {
            let cancel = handle.cancel_token();
            let mut stats = handle.stats();
            let checked = tokio::select! {
                _ = cancel.cancelled() => return,
                r = stats.wait_for(|s| s.phase != Phase::Checking) => r.map(|s| s.clone()),
            };
            let Some(s) = checked.ok().filter(|s| s.phase != Phase::Failed) else { return };
            let totals = TransferTotals { uploaded: s.uploaded, downloaded: s.downloaded, left: s.bytes_left };
            let (totals_tx, totals_rx) = watch::channel(totals);
            let (peers_tx, peers_rx) = mpsc::channel(16);
            let (nudge_tx, nudge_rx) = mpsc::channel(1);
            let links = AnnouncerLinks { need_peers: Some(nudge_rx), status: None };
            let tiers = handle.meta.trackers.clone();
            tasks.spawn(bridge_tracker(handle.clone(), totals_tx, peers_rx, nudge_tx, cancel.clone()));
            let _ = announcer::spawn(tiers, cfg, totals_rx, peers_tx, links, cancel).await;
        });
    }

    /// Stops every torrent, the listener and whatever the builder started, and waits for all
    /// their tasks; then stops the node. The mainline routing table is saved first (the
    /// mainline node's thread ends when the session is dropped).
    pub async fn shutdown(&self) {
        // First: the CLI gives shutdown a short grace period, and the table is what it is.
        if let Some(dht) = &self.mainline {
            dht.save().await;
        }
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
                Some(p) => handle.add_peers_from(PeerSource::Tracker, p.into_iter().map(PeerAddr::Tcp).collect()).await,
            },
        }
    }
}

/// What an accept loop needs: where to route, the shared handshake bound, the timeout.
struct Acceptor {
    torrents: Routes,
    handshakes: Arc<Slots>,
    timeout: std::time::Duration,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Accepted TCP connections as a stream of peer streams; never ends.
fn tcp_incoming(listener: TcpListener) -> impl Stream<Item = (BoxStream, PeerAddr)> + Send + Unpin {
    Box::pin(futures::stream::unfold(listener, |listener| async move {
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return Some(((Box::new(stream) as BoxStream, PeerAddr::Tcp(addr)), listener));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// Routes inbound connections of one transport until cancelled or the transport ends.
/// A connection past the handshake bounds is dropped (closed) at once, unread.
async fn accept_loop(mut incoming: impl Stream<Item = (BoxStream, PeerAddr)> + Unpin, acceptor: Acceptor) {
    loop {
        let (stream, addr) = tokio::select! {
            _ = acceptor.cancel.cancelled() => return,
            next = incoming.next() => match next {
                Some(x) => x,
                None => return,
            },
        };
        let permit = match acceptor.handshakes.try_acquire(&addr) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(peer = %addr, %why, "inbound connection closed before its handshake (max_inbound_handshakes)");
                continue;
            }
        };
        let (torrents, timeout) = (acceptor.torrents.clone(), acceptor.timeout);
        acceptor.tasks.spawn(async move {
            route(stream, addr, torrents, timeout).await;
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
