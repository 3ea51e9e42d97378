//! A session: our peer id, the TCP listener, and the torrents it routes connections to.
//!
//! One accept loop per transport (TCP listener, libp2p `/shoal/bt/1.0.0` streams), both the
//! same generic `accept_loop`, reads each incoming handshake (bounded by
//! `handshake_timeout`) and hands the connection to the torrent named by its info-hash;
//! unknown info-hashes are dropped. Handshakes in flight are bounded by one
//! [`HandshakeLimiter`] shared by both loops: `max_inbound_handshakes` in all and
//! `max_inbound_handshakes_per_ip` per IP (IPv6: per /64) or per libp2p peer. A connection
//! past either bound is closed before its handshake is read, so one host holding slow
//! handshakes open cannot starve everyone else.
//!
//! Each torrent also gets a tracker announcer when its metainfo lists trackers.
//!
//! Parts: this file (the session, its accept loops, the handshake bound) and [`builder`], the
//! composition root that starts a session with its node, key-peer monitor and diagnostics.
use crate::config::Options;
use crate::discovery::dht::{self, LookupLog, LookupRecord};
use crate::discovery::tracker::announcer::{self, AnnouncerConfig, AnnouncerLinks};
use crate::discovery::tracker::TransferTotals;
use crate::metainfo::{InfoHash, Metainfo};
use crate::metrics::TorrentSourceGuard;
use crate::p2p::{into_box_stream, peer_addr, NodeHandle, P2pConnector};
use crate::peer::budget::SendBudget;
use crate::peer::{handshake, BoxStream};
use crate::torrent::TorrentSource;
use crate::torrent::{Connector, Inbound, TcpConnector, TorrentHandle, TorrentParams};
use crate::types::ip_key;
use crate::types::PeerAddr;
use crate::wire::PeerId;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod builder;
mod manage;

pub use builder::{SessionBuilder, StartError};

type Routes = Arc<Mutex<HashMap<InfoHash, TorrentHandle>>>;

pub struct Session {
    pub peer_id: PeerId,
    node: Option<NodeHandle>,
    /// Discovery-interval reset events (from the keepalive layer) for every torrent's DHT task.
    resets: broadcast::Sender<()>,
    lookups: Arc<LookupLog>,
    started: std::time::Instant,
    options: Arc<Options>,
    /// Options for torrents added from now on (the daemon's config); `options` until set.
    torrent_options: Arc<Mutex<Arc<Options>>>,
    listen_addr: Option<SocketAddr>,
    torrents: Routes,
    connector: Arc<dyn Connector>,
    /// Block bytes read for peers and not yet sent, across every torrent.
    send_budget: SendBudget,
    handshakes: Arc<HandshakeLimiter>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// The diagnostics server's address, and the registration keeping the torrents in
    /// `/metrics` while the session lives (set by the builder).
    diagnostics: Option<(SocketAddr, TorrentSourceGuard)>,
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
        let handshakes =
            Arc::new(HandshakeLimiter::new(options.max_inbound_handshakes, options.max_inbound_handshakes_per_ip));
        let options_budget = options.max_send_buffer;
        let session = Session {
            peer_id: PeerId::generate(),
            node: None,
            resets: broadcast::channel(16).0,
            lookups: Arc::default(),
            started: std::time::Instant::now(),
            torrent_options: Arc::new(Mutex::new(options.clone())),
            options,
            listen_addr,
            torrents: Arc::default(),
            connector: Arc::new(TcpConnector),
            send_budget: SendBudget::new(options_budget),
            handshakes,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
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
        self.add_torrent_selected(meta, output, None)
    }

    /// Like [`Session::add_torrent`], downloading only the files flagged in `selection` (one
    /// flag per file, from [`crate::metainfo::select::select_files`]).
    pub fn add_torrent_selected(
        &self,
        meta: Arc<Metainfo>,
        output: PathBuf,
        selection: Option<Vec<bool>>,
    ) -> TorrentHandle {
        let params = TorrentParams {
            meta: meta.clone(),
            output,
            options: self.torrent_options(),
            peer_id: self.peer_id,
            listen_port: self.listen_addr.map(|a| a.port()),
            connector: self.connector.clone(),
            send_budget: self.send_budget.clone(),
            selection,
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

    /// Stops every torrent, the listener and whatever the builder started, and waits for all
    /// their tasks; then stops the node.
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

/// What an accept loop needs: where to route, the shared handshake bound, the timeout.
struct Acceptor {
    torrents: Routes,
    handshakes: Arc<HandshakeLimiter>,
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
                tracing::debug!(peer = %addr, %why, "inbound connection closed before its handshake");
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

/// Who a handshake in flight counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Ip(IpAddr),
    P2p(libp2p::PeerId),
}

impl Source {
    fn of(addr: &PeerAddr) -> Source {
        match addr {
            PeerAddr::Tcp(a) => Source::Ip(ip_key(a.ip())),
            PeerAddr::P2p(id) => Source::P2p(*id),
        }
    }
}

/// Why an inbound connection found no handshake slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeBusy {
    #[error("max_inbound_handshakes in flight")]
    Total,
    #[error("max_inbound_handshakes_per_ip in flight from this source")]
    Source,
}

/// Inbound handshakes in flight, in all and per source. A permit is held while the
/// handshake is read and routed, and given back when dropped.
#[derive(Debug)]
pub struct HandshakeLimiter {
    max_total: usize,
    max_per_source: usize,
    /// Total in flight, and per source (sources with none are removed).
    state: Mutex<(usize, HashMap<Source, usize>)>,
}

impl HandshakeLimiter {
    pub fn new(max_total: usize, max_per_source: usize) -> HandshakeLimiter {
        HandshakeLimiter { max_total, max_per_source, state: Mutex::default() }
    }

    pub fn try_acquire(self: &Arc<Self>, addr: &PeerAddr) -> Result<HandshakePermit, HandshakeBusy> {
        let source = Source::of(addr);
        let mut guard = self.state.lock().expect("handshake limiter lock");
        let (total, per_source) = &mut *guard;
        if *total >= self.max_total {
            return Err(HandshakeBusy::Total);
        }
        let n = per_source.entry(source.clone()).or_default();
        if *n >= self.max_per_source {
            return Err(HandshakeBusy::Source);
        }
        *n += 1;
        *total += 1;
        Ok(HandshakePermit { limiter: self.clone(), source })
    }

    /// Handshakes in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("handshake limiter lock").0
    }
}

/// One inbound handshake slot; freed on drop.
pub struct HandshakePermit {
    limiter: Arc<HandshakeLimiter>,
    source: Source,
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        let mut guard = self.limiter.state.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_source) = &mut *guard;
        *total -= 1;
        if let Some(n) = per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                per_source.remove(&self.source);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(ip: [u8; 4], port: u16) -> PeerAddr {
        PeerAddr::Tcp(SocketAddr::from((ip, port)))
    }

    #[test]
    fn handshakes_are_bounded_per_source_and_in_all() {
        let l = Arc::new(HandshakeLimiter::new(5, 2));
        let a1 = l.try_acquire(&tcp([10, 0, 0, 1], 1)).unwrap();
        let _a2 = l.try_acquire(&tcp([10, 0, 0, 1], 2)).unwrap();
        assert_eq!(l.try_acquire(&tcp([10, 0, 0, 1], 3)).err(), Some(HandshakeBusy::Source), "any port counts");
        let _b = l.try_acquire(&tcp([10, 0, 0, 2], 1)).unwrap();
        let p2p = PeerAddr::P2p(libp2p::PeerId::random());
        let _c1 = l.try_acquire(&p2p).unwrap();
        let _c2 = l.try_acquire(&p2p).unwrap();
        assert_eq!(l.try_acquire(&p2p).err(), Some(HandshakeBusy::Total), "TCP and libp2p share one bound");
        drop(a1);
        assert_eq!(l.in_flight(), 4);
        let _a3 = l.try_acquire(&tcp([10, 0, 0, 1], 4)).unwrap();
        assert_eq!(l.in_flight(), 5);
    }
}
