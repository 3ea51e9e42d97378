//! The torrent task: one per torrent, the owner of its picker, pool, choker, peer table,
//! piece assembly and statistics. No lock guards any of it; the task is the lock.
//!
//! Parts:
//! - `task`: the event loop, a dispatcher over handlers split by concern (connections,
//!   requests, pieces, the tick, statistics);
//! - [`peers`]: the per-peer record (rates, pipeline depth);
//! - [`dial`]: the [`Connector`] that opens streams to peers, and the dial + handshake;
//! - [`assembly`]: blocks gathered into piece buffers, with who sent each;
//! - [`pex`]: BEP 11 peer exchange bookkeeping (who was told what, what each may teach us);
//! - `smart_ban`: which sender of a failed piece lied.
//!
//! Outside code holds a [`TorrentHandle`]: it adds peer addresses, hands over inbound
//! connections, watches [`TorrentStats`], and stops the torrent.
pub mod assembly;
pub mod dial;
pub mod peers;
pub mod pex;
pub mod piece_buf;
mod smart_ban;
mod task;

pub use dial::{Connector, TcpConnector};

use crate::config::Options;
use crate::manager::{PoolStats, ScoreParts};
use crate::metainfo::{InfoHash, Metainfo};
use crate::metrics::{TorrentFigures, TorrentRow};
use crate::peer::{BoxStream, CloseReason};
use crate::types::{PeerAddr, PeerSource};
use crate::wire::{Handshake, HandshakeCodec, PeerId};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What happens in the pool, for whoever listens (tests, discovery, tools). Sent on a
/// bounded broadcast channel: a listener that falls behind misses events, it never slows
/// the torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TorrentEvent {
    PeerConnected {
        addr: PeerAddr,
        inbound: bool,
    },
    PeerDisconnected {
        addr: PeerAddr,
        reason: CloseReason,
    },
    /// A wanted block arrived (duplicates and unrequested blocks are not reported).
    BlockReceived {
        from: PeerAddr,
        piece: u32,
        begin: u32,
        length: u32,
    },
    /// A piece matched its hash and is written.
    PieceVerified(u32),
    /// The pool ran dry: nothing to dial and room for more connections.
    NeedPeers,
}

/// What a [`TorrentHandle`] asks of its running torrent, with where the answer goes.
pub(crate) enum Control {
    RemovePeer(PeerAddr, oneshot::Sender<bool>),
    PeersWithPiece(u32, oneshot::Sender<Vec<PeerAddr>>),
}

/// Events kept for a slow listener before it starts missing them.
const EVENT_BACKLOG: usize = 1024;

/// A torrent's event channel, made at the first subscription: its buffer of [`EVENT_BACKLOG`]
/// events (about 150 KiB) was three quarters of an idle torrent's memory, and most torrents (a
/// daemon's) never have a listener. Events sent while nobody listens are dropped, as a
/// broadcast channel without receivers drops them.
#[derive(Clone, Default)]
pub(crate) struct Events(Arc<std::sync::OnceLock<broadcast::Sender<TorrentEvent>>>);

impl Events {
    pub(crate) fn send(&self, event: TorrentEvent) {
        if let Some(tx) = self.0.get() {
            let _ = tx.send(event);
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<TorrentEvent> {
        self.0.get_or_init(|| broadcast::channel(EVENT_BACKLOG).0).subscribe()
    }
}

/// An accepted connection whose handshake named this torrent.
pub struct Inbound {
    pub framed: Framed<BoxStream, HandshakeCodec>,
    pub handshake: Handshake,
    pub addr: PeerAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Hashing data already on disk.
    #[default]
    Checking,
    Downloading,
    /// Every wanted piece verified on disk.
    Seeding,
    /// Stopped after a fatal storage error.
    Failed,
}

/// Why a torrent stopped before it was told to. Its own storage failing is fatal; a peer's
/// fault never is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TorrentError {
    #[error("checking the data on disk: {0}")]
    Check(String),
    #[error("{0}")]
    Write(String),
    #[error("reading a block to serve: {0}")]
    Read(String),
    #[error("finishing the download: {0}")]
    Finalize(String),
    /// The torrent was stopped (or the session shut down) before it finished.
    #[error("torrent stopped")]
    Stopped,
}

impl Serialize for TorrentError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One peer, for progress and diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerStats {
    /// The peer's address, typed (the JSON carries `addr` and `transport` instead).
    #[serde(skip)]
    pub peer: PeerAddr,
    pub addr: String,
    pub transport: &'static str,
    pub direction: &'static str,
    /// Where the pool heard of it (`explicit`, `tracker`, `dht`, `pex`, `inbound`...).
    pub source: &'static str,
    pub client: Option<String>,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    pub snubbed: bool,
    /// Both sides negotiated the BEP 6 fast extension.
    pub fast: bool,
    /// BEP 10 extensions of ours the peer offered (`ut_metadata`, `ut_pex`).
    pub extensions: Vec<&'static str>,
    pub download_rate: f64,
    pub upload_rate: f64,
    /// Its share of our upload limit in bytes per second (0: none of its own).
    pub upload_cap: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    pub outstanding_requests: usize,
    pub rtt_ms: Option<f64>,
    pub pieces: usize,
    /// It has every piece (its bitfield, have-all or haves say so).
    pub is_seed: bool,
    /// When the connection was made, in seconds since the Unix epoch.
    pub added_time: u64,
    pub score: ScoreParts,
}

/// A snapshot published by the torrent task about once a second and on every change of phase.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct TorrentStats {
    pub info_hash: String,
    pub name: String,
    pub phase: Phase,
    /// Set when `phase` is `Failed`.
    pub error: Option<TorrentError>,
    /// When the torrent became complete in this session (every piece verified; at start when
    /// the data was already there), in milliseconds since the Unix epoch; none before.
    pub completed_at_ms: Option<u64>,
    /// BEP 16 super-seeding applies to peers that connect now (`super_seed`, until every
    /// piece has reached a peer).
    pub super_seeding: bool,
    /// Pieces a super-seeder offers again because the one peer that had them kept them (did
    /// not pass them on in time); none once another peer announced them.
    pub super_seed_stranded: u32,
    pub pieces_total: u32,
    pub pieces_have: u32,
    pub pieces_checked: u32,
    /// The pieces we have, as the wire's bitfield: piece 0 is the high bit of byte 0.
    pub have: Vec<u8>,
    pub bytes_total: u64,
    pub bytes_left: u64,
    /// Payload bytes received from peers this session (including discarded ones).
    pub downloaded: u64,
    pub uploaded: u64,
    pub download_rate: f64,
    pub upload_rate: f64,
    /// Pieces received and verified this session.
    pub pieces_received: u32,
    pub hash_failures: u32,
    /// Bytes received that were not needed (duplicates in endgame, unrequested blocks).
    pub wasted: u64,
    /// Messages from peers that broke the protocol and were dropped (unrequested blocks).
    pub protocol_violations: u64,
    /// Bytes held in buffers of pieces being assembled (bounded by `max_assembly_bytes`).
    pub assembly_bytes: usize,
    /// Pieces started and not yet complete (bounded by what `max_assembly_bytes` holds).
    pub pieces_in_progress: usize,
    /// Complete pieces being hashed and written (bounded by `max_pieces_in_flight`).
    pub pieces_verifying: usize,
    pub banned: usize,
    /// Distinct peers that sent us at least one piece.
    pub peers_used: usize,
    pub pool: PoolStats,
    pub peers: Vec<PeerStats>,
}

impl TorrentStats {
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Seeding
    }

    /// The libp2p peers sending us payload now (download rate above zero), with their rates.
    pub fn libp2p_contributors(&self) -> impl Iterator<Item = (libp2p::PeerId, f64)> + '_ {
        self.peers.iter().filter(|p| p.download_rate > 0.0).filter_map(|p| Some((p.libp2p_peer()?, p.download_rate)))
    }
}

impl PeerStats {
    /// The peer's libp2p PeerId; `None` for a TCP peer.
    pub fn libp2p_peer(&self) -> Option<libp2p::PeerId> {
        match self.peer {
            PeerAddr::P2p(id) => Some(id),
            PeerAddr::Tcp(_) => None,
        }
    }
}

impl TorrentFigures for TorrentStats {
    fn row(&self) -> TorrentRow {
        let p = &self.pool;
        TorrentRow {
            info_hash: self.info_hash.clone(),
            downloaded: self.downloaded,
            uploaded: self.uploaded,
            download_rate: self.download_rate,
            upload_rate: self.upload_rate,
            peers: [
                ("connected", p.connected),
                ("pending", p.pending),
                ("connecting", p.connecting),
                ("known", p.known),
            ],
            pieces_have: self.pieces_have,
            pieces_total: self.pieces_total,
        }
    }
}

/// Where the current statistics of every torrent are read from (cheap, non-blocking): by
/// diagnostics and, through [`TorrentFigures`], by metrics.
pub type TorrentSource = Arc<dyn Fn() -> Vec<TorrentStats> + Send + Sync>;

/// What a torrent needs to run.
pub struct TorrentParams {
    pub meta: Arc<Metainfo>,
    /// Output directory: the data lives at `output/<name>`.
    pub output: PathBuf,
    pub options: Arc<Options>,
    pub peer_id: PeerId,
    /// Our BitTorrent listen port, told to peers in the extension handshake.
    pub listen_port: Option<u16>,
    /// Our mainline DHT node: the handshake's DHT bit is set, peers that set it get a BEP 5
    /// `port` message, and the nodes they name in theirs are offered to it. `None`: no DHT
    /// (and always for a private torrent).
    pub mainline: Option<crate::mainline::MainlineHandle>,
    pub connector: Arc<dyn Connector>,
    /// Block bytes waiting to be sent, bounded across the session.
    pub send_budget: crate::peer::budget::SendBudget,
    /// Whole pieces read for serving, bounded across the session.
    pub piece_cache: crate::storage::PieceCache,
    /// BEP 53: one flag per file, only the flagged files are downloaded; `None` for all.
    pub selection: Option<Vec<bool>>,
    /// The fast-resume record to start from and keep current ([`crate::storage::resume`]);
    /// `None` hashes whatever is on disk at every start.
    pub resume: Option<PathBuf>,
    /// The session's rate limits and this torrent's own (see [`TorrentHandle::rates`]).
    pub rates: crate::peer::rate::PeerRates,
    /// BEP 16 super-seeding, if the data is complete at start.
    pub super_seed: bool,
}

/// The cloneable face of a running torrent.
#[derive(Clone)]
pub struct TorrentHandle {
    pub info_hash: InfoHash,
    pub meta: Arc<Metainfo>,
    addrs: mpsc::Sender<(PeerSource, Vec<PeerAddr>)>,
    inbound: mpsc::Sender<Inbound>,
    control: mpsc::Sender<Control>,
    stats: watch::Receiver<TorrentStats>,
    need_peers: watch::Receiver<u64>,
    events: Events,
    cancel: CancellationToken,
    tasks: TaskTracker,
    rates: Arc<crate::peer::rate::Rates>,
    options: Arc<watch::Sender<Arc<crate::config::Options>>>,
}

/// Bytes to download: the whole torrent, or the pieces holding data of selected files.
pub fn wanted_bytes(meta: &Metainfo, selection: Option<&[bool]>) -> u64 {
    match selection {
        None => meta.total_length,
        Some(selected) => {
            let layout = crate::storage::layout::Layout::new(meta);
            layout.bytes_of(&layout.selected_pieces(selected).0)
        }
    }
}

impl TorrentHandle {
    /// Starts the torrent: checks existing data, then downloads and/or seeds.
    pub fn spawn(params: TorrentParams, parent: &CancellationToken) -> TorrentHandle {
        let (addrs_tx, addrs_rx) = mpsc::channel(64);
        let (inbound_tx, inbound_rx) = mpsc::channel(16);
        let (control_tx, control_rx) = mpsc::channel(16);
        let info_hash = params.meta.info_hash;
        let meta = params.meta.clone();
        let rates = params.rates.torrent.clone();
        let wanted = wanted_bytes(&meta, params.selection.as_deref());
        let initial = TorrentStats {
            info_hash: info_hash.to_hex(),
            name: meta.name.clone(),
            bytes_total: wanted,
            bytes_left: wanted,
            pieces_total: meta.piece_count(),
            ..Default::default()
        };
        let (stats_tx, stats_rx) = watch::channel(initial);
        let (need_tx, need_rx) = watch::channel(0u64);
        let (options_tx, options_rx) = watch::channel(params.options.clone());
        let cancel = parent.child_token();
        let tasks = TaskTracker::new();
        let events = Events::default();
        let channels = task::Channels {
            addrs: addrs_rx,
            inbound: inbound_rx,
            control: control_rx,
            stats: stats_tx,
            need_peers: need_tx,
            events: events.clone(),
            options: options_rx,
        };
        tasks.spawn(task::run(params, channels, cancel.clone(), tasks.clone()));
        tasks.close();
        TorrentHandle {
            info_hash,
            meta,
            addrs: addrs_tx,
            inbound: inbound_tx,
            control: control_tx,
            stats: stats_rx,
            need_peers: need_rx,
            events,
            cancel,
            tasks,
            rates,
            options: Arc::new(options_tx),
        }
    }

    /// Hands the running torrent new options: pool limits and choker slots apply at once,
    /// per-peer bounds to peers that connect from then on.
    pub fn set_options(&self, options: Arc<crate::config::Options>) {
        self.options.send_replace(options);
    }

    /// This torrent's own upload and download limits, settable while it runs (the session's
    /// apply as well).
    pub fn rates(&self) -> &crate::peer::rate::Rates {
        &self.rates
    }

    /// Hands over peer addresses the user named (`--peer`, a magnet's `x.pe`): dialled
    /// first, retried quickly, never forgotten while the torrent runs.
    pub async fn add_peers(&self, addrs: Vec<PeerAddr>) {
        self.add_peers_from(PeerSource::Explicit, addrs).await;
    }

    /// Hands over peer addresses found by discovery (`source`: tracker, DHT...).
    pub async fn add_peers_from(&self, source: PeerSource, addrs: Vec<PeerAddr>) {
        let _ = self.addrs.send((source, addrs)).await;
    }

    /// Adds one peer to dial, as `--peer` does.
    pub async fn add_peer(&self, addr: PeerAddr) {
        self.add_peers(vec![addr]).await;
    }

    /// Closes the connection to `addr`, if there is one, and forgets the address: it is not
    /// dialled again until a source names it anew. False when the torrent neither knew it
    /// nor was connected to it (or has stopped).
    pub async fn remove_peer(&self, addr: PeerAddr) -> bool {
        let (tx, rx) = oneshot::channel();
        let _ = self.control.send(Control::RemovePeer(addr, tx)).await;
        rx.await.unwrap_or(false)
    }

    /// The connected peers that have `piece`, by their bitfields and `have`s (empty once the
    /// torrent stopped).
    pub async fn peers_with_piece(&self, piece: u32) -> Vec<PeerAddr> {
        let (tx, rx) = oneshot::channel();
        let _ = self.control.send(Control::PeersWithPiece(piece, tx)).await;
        rx.await.unwrap_or_default()
    }

    /// Hands over an inbound connection whose handshake named this torrent. Waits while the
    /// torrent is busy (the caller holds one of the bounded handshake slots meanwhile), so a
    /// burst of peers is queued rather than silently dropped.
    pub async fn accept(&self, inbound: Inbound) {
        let _ = self.inbound.send(inbound).await;
    }

    pub fn stats(&self) -> watch::Receiver<TorrentStats> {
        self.stats.clone()
    }

    /// Bumped each time the pool runs dry: discovery listens to look for more peers.
    pub fn need_peers(&self) -> watch::Receiver<u64> {
        self.need_peers.clone()
    }

    /// Subscribes to the torrent's events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TorrentEvent> {
        self.events.subscribe()
    }

    /// Waits until every wanted piece is verified on disk; Err with the reason if it failed.
    pub async fn wait_complete(&self) -> Result<(), TorrentError> {
        let mut rx = self.stats.clone();
        let r = rx.wait_for(|s| matches!(s.phase, Phase::Seeding | Phase::Failed)).await;
        match r {
            Ok(s) if s.phase == Phase::Seeding => Ok(()),
            Ok(s) => Err(s.error.clone().unwrap_or(TorrentError::Stopped)),
            Err(_) => Err(TorrentError::Stopped),
        }
    }

    /// Stops the torrent and waits for every one of its tasks to end.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_need_no_channel_until_someone_listens() {
        let events = Events::default();
        events.send(TorrentEvent::PieceVerified(1));
        assert!(events.0.get().is_none(), "a channel was made with nobody listening");
        let mut rx = events.clone().subscribe();
        events.send(TorrentEvent::PieceVerified(2));
        assert_eq!(rx.recv().await.unwrap(), TorrentEvent::PieceVerified(2), "a clone's listener hears the sender");
        assert!(rx.try_recv().is_err(), "the event sent before the subscription is not replayed");
    }
}
