//! The torrent's event loop: the `Torrent` state and a dispatcher whose `select!` arms each
//! call one handler. The handlers never wait on a peer (commands go out with `try_send`), so
//! one slow peer cannot stall the rest. They live by concern:
//! - `connect`: the pool, dials, inbound handshakes, peer tasks started and forgotten;
//! - `requests`: peer messages, interest, the request pipeline and its timeouts;
//! - `fast`: the BEP 6 fast extension (allowed-fast sets, rejects, requests while choked);
//! - `pieces`: verification, have messages, smart-ban bans, completion;
//! - `periodic`: the tick (rates, scores, choker, pool upkeep);
//! - `pex`: BEP 11 peer exchange (peers learned as source `pex`, messages sent on the tick);
//! - `stats`: the published snapshot;
//! - `resume`: the fast-resume record kept current by a writer task;
//! - `superseed`: BEP 16 super-seeding (what a peer is shown, the offers).
mod connect;
mod control;
mod fast;
mod periodic;
mod pex;
mod pieces;
mod requests;
mod resume;
mod stats;
mod superseed;

use super::assembly::Assembly;
use super::dial::Connector;
use super::peers::PeerSlot;
use super::smart_ban::{Digest, SmartBan};
use super::{Inbound, Phase, TorrentError, TorrentEvent, TorrentParams, TorrentStats};
use crate::config::Options;
use crate::manager::choker::Choker;
use crate::manager::{Pool, PoolLimits};
use crate::metainfo::Metainfo;
use crate::peer::budget::SendBudget;
use crate::peer::handshake::MessageStream;
use crate::peer::rate::PeerRates;
use crate::peer::{BoxStream, PeerError, PeerEvent};
use crate::picker::Picker;
use crate::storage::{PieceVerdict, Storage, StorageError};
use crate::types::PeerAddr;
use crate::types::PeerKey;
use crate::types::PeerSource;
use crate::types::BLOCK_SIZE;
use crate::wire::{Handshake, PeerId};
use bitvec::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Fewest free request slots worth a refill command (a quarter of the depth if smaller).
const REFILL_BATCH: usize = 16;
// The tick, the pieces in flight (hash + write: a slow disk slows the sockets instead of
// filling memory) and the queue bounds are `Options` keys (`tick`, `max_pieces_in_flight`,
// `peer_event_queue`, `peer_command_queue`). The command queue also holds up to
// `max_requests_per_peer` requests: refilling the pipeline sends one `Request` command per
// block received, each counted as outstanding before the peer task has taken it, and a
// command that does not fit is lost (`try_send`).

pub(super) struct Channels {
    pub addrs: mpsc::Receiver<(PeerSource, Vec<PeerAddr>)>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub control: mpsc::Receiver<super::Control>,
    pub stats: watch::Sender<TorrentStats>,
    pub need_peers: watch::Sender<u64>,
    pub events: super::Events,
    /// New options while running ([`super::TorrentHandle::set_options`]).
    pub options: watch::Receiver<Arc<Options>>,
}

/// A finished dial (`inbound` false) or an answered inbound handshake (`inbound` true).
struct DialResult {
    addr: PeerAddr,
    inbound: bool,
    result: Result<(MessageStream<BoxStream>, Handshake), PeerError>,
}

/// The senders a torrent task keeps: to itself (peer events, dial results, verdicts) and out.
struct Links {
    events_tx: mpsc::Sender<PeerEvent>,
    dial_tx: mpsc::Sender<DialResult>,
    verdict_tx: mpsc::Sender<Verdict>,
    need_peers: watch::Sender<u64>,
    events: super::Events,
}

struct Verdict {
    piece: u32,
    /// Who sent each block of the piece.
    senders: Vec<PeerAddr>,
    /// Digests of its blocks, when smart ban needs them (the piece failed, or failed before).
    digests: Option<Vec<Digest>>,
    result: Result<PieceVerdict, StorageError>,
}

struct Torrent {
    meta: Arc<Metainfo>,
    opts: Arc<Options>,
    peer_id: PeerId,
    listen_port: Option<u16>,
    mainline: Option<crate::mainline::MainlineHandle>,
    connector: Arc<dyn Connector>,
    storage: Storage,
    picker: Picker,
    pool: Pool,
    choker: Choker,
    peers: HashMap<PeerKey, PeerSlot>,
    next_key: PeerKey,
    assembly: Assembly,
    smart_ban: SmartBan,
    /// When each piece was first requested, for the piece download time.
    piece_started: HashMap<u32, Instant>,
    verifying: usize,
    used: HashSet<PeerAddr>,
    stats: TorrentStats,
    /// Bytes received by peers that have since left, so totals never go down.
    gone_downloaded: u64,
    gone_uploaded: u64,
    rng: StdRng,
    send_budget: SendBudget,
    rates: PeerRates,
    events_tx: mpsc::Sender<PeerEvent>,
    dial_tx: mpsc::Sender<DialResult>,
    verdict_tx: mpsc::Sender<Verdict>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    last_tick: Instant,
    need_peers: watch::Sender<u64>,
    wanted_peers: bool,
    events: super::Events,
    pex: super::pex::Pex,
    /// BEP 16 super-seeding: asked for ([`TorrentParams`]), and on when the data was
    /// complete at start.
    super_seed_wanted: bool,
    super_seed: Option<crate::manager::superseed::SuperSeed>,
}

fn pool_limits(o: &Options) -> PoolLimits {
    PoolLimits {
        max_connections: o.max_connections,
        min_peers: o.min_peers,
        max_connecting: o.max_connecting,
        max_pending: o.max_pending,
        reconnect_delay: o.reconnect_delay,
        max_connect_failures: o.max_connect_failures,
        max_known: o.max_known_peers,
        max_banned: o.max_banned_peers,
        max_per_ip: o.max_connections_per_ip,
    }
}

/// When a torrent's first tick falls: on a grid of `period` steps shared by every torrent in
/// the process, so the ticks of a daemon's torrents come together and one wake-up of a
/// worker thread serves them all, not one wake-up per torrent.
fn first_tick(period: std::time::Duration) -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    let now = tokio::time::Instant::now();
    let steps = (now.into_std().saturating_duration_since(epoch).as_nanos() / period.as_nanos().max(1)) as u32;
    tokio::time::Instant::from_std(epoch) + period * (steps + 1)
}

pub(super) async fn run(params: TorrentParams, mut ch: Channels, cancel: CancellationToken, tasks: TaskTracker) {
    let meta = params.meta.clone();
    let storage =
        Storage::with_selection(meta.clone(), params.output.join(""), params.selection.clone(), &params.piece_cache)
            .with_direct_io(params.options.direct_io);
    let stats_tx = ch.stats.clone();
    let progress: Arc<dyn Fn(u32) + Send + Sync> = Arc::new(move |n| stats_tx.send_modify(|s| s.pieces_checked = n));
    let have = tokio::select! {
        _ = cancel.cancelled() => return,
        r = storage.check_existing(params.resume.clone(), progress) => r,
    };
    let have = match have {
        Ok(h) => h,
        Err(e) => {
            ch.stats.send_modify(|s| {
                s.phase = Phase::Failed;
                s.error = Some(TorrentError::Check(e.to_string()));
            });
            return;
        }
    };
    let (events_tx, mut events_rx) = mpsc::channel(params.options.peer_event_queue);
    let (dial_tx, mut dial_rx) = mpsc::channel(64);
    let (verdict_tx, mut verdict_rx) = mpsc::channel(params.options.max_pieces_in_flight * 2);
    let links = Links { events_tx, dial_tx, verdict_tx, need_peers: ch.need_peers.clone(), events: ch.events.clone() };
    let record = params.resume.clone();
    let mut t = Torrent::new(params, storage, have, links, cancel.clone(), tasks);
    if t.picker.is_complete() {
        t.complete().await;
        t.start_super_seeding();
    } else {
        t.stats.phase = Phase::Downloading;
    }
    let recorder =
        record.map(|path| resume::Recorder::spawn(t.storage.clone(), path, t.picker.have(), &t.tasks, cancel.clone()));
    t.publish(&ch.stats);
    let mut tick = tokio::time::interval_at(first_tick(t.opts.tick), t.opts.tick);
    // A late tick is skipped, not made up or followed a period later: the ticks stay on the
    // grid (`on_tick` measures the time since the last one itself).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(ev) = events_rx.recv() => t.on_peer_event(ev),
            Some((source, addrs)) = ch.addrs.recv() => t.on_addrs_from(source, addrs),
            Some(inb) = ch.inbound.recv() => t.on_inbound(inb),
            Some(c) = ch.control.recv() => t.on_control(c),
            Some(d) = dial_rx.recv() => t.on_dialed(d),
            Ok(()) = ch.options.changed() => {
                let options = ch.options.borrow_and_update().clone();
                t.apply_options(options);
            }
            Some(v) = verdict_rx.recv() => {
                if t.on_verdict(v).await {
                    t.publish(&ch.stats);
                }
                if let Some(r) = &recorder {
                    r.note(t.picker.have());
                }
            }
            _ = tick.tick() => {
                t.on_tick();
                t.publish(&ch.stats);
            }
        }
        if t.stats.phase == Phase::Failed {
            t.publish(&ch.stats);
            break;
        }
    }
    for p in t.peers.values() {
        p.cancel.cancel();
    }
}

impl Torrent {
    fn new(
        params: TorrentParams,
        storage: Storage,
        have: BitVec<u8, Msb0>,
        links: Links,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) -> Torrent {
        let Links { events_tx, dial_tx, verdict_tx, need_peers, events } = links;
        let meta = params.meta;
        let o = &params.options;
        let limits = pool_limits(o);
        let mut picker = Picker::new(meta.geometry(), have);
        picker.set_max_partial(Assembly::max_pieces(o.max_assembly_bytes, meta.piece_length));
        let mut bytes_total = meta.total_length;
        if let Some(selected) = &params.selection {
            let (wanted, _) = storage.layout().selected_pieces(selected);
            bytes_total = storage.layout().bytes_of(&wanted);
            picker.set_wanted(wanted);
        }
        let stats = TorrentStats {
            info_hash: meta.info_hash.to_hex(),
            name: meta.name.clone(),
            pieces_total: meta.piece_count(),
            bytes_total,
            pieces_checked: meta.piece_count(),
            ..Default::default()
        };
        Torrent {
            choker: Choker::new(o.unchoke_slots, o.unchoke_interval, o.optimistic_unchoke_interval)
                .with_slot_rate(o.unchoke_slot_rate)
                .with_quota(meta.piece_length as u64),
            pool: Pool::new(limits),
            opts: params.options.clone(),
            peer_id: params.peer_id,
            listen_port: params.listen_port,
            mainline: params.mainline,
            connector: params.connector,
            storage,
            picker,
            peers: HashMap::new(),
            next_key: 1,
            assembly: Assembly::new(BLOCK_SIZE, o.max_assembly_bytes),
            smart_ban: SmartBan::new(),
            piece_started: HashMap::new(),
            verifying: 0,
            used: HashSet::new(),
            stats,
            gone_downloaded: 0,
            gone_uploaded: 0,
            rng: StdRng::from_entropy(),
            send_budget: params.send_budget.clone(),
            rates: params.rates.clone(),
            events_tx,
            dial_tx,
            verdict_tx,
            cancel,
            tasks,
            last_tick: Instant::now(),
            need_peers,
            wanted_peers: false,
            events,
            pex: super::pex::Pex::new(!meta.private, o.pex_interval),
            super_seed_wanted: params.super_seed,
            super_seed: None,
            meta,
        }
    }

    /// Takes new options while running: the pool's limits, the choker's slots and intervals
    /// now; per-peer bounds and timeouts for peers that connect from now on.
    fn apply_options(&mut self, options: Arc<Options>) {
        self.pool.set_limits(pool_limits(&options));
        self.choker.configure(
            options.unchoke_slots,
            options.unchoke_slot_rate,
            options.unchoke_interval,
            options.optimistic_unchoke_interval,
        );
        tracing::info!(name = %self.meta.name, "options changed while running");
        self.opts = options;
    }

    /// Tells listeners, if any; nobody listening is fine.
    fn emit(&self, event: TorrentEvent) {
        self.events.send(event);
    }

    fn seeding(&self) -> bool {
        self.stats.phase == Phase::Seeding
    }

    /// Stops the torrent on its own storage's failure: the event loop publishes and ends.
    fn fail(&mut self, error: TorrentError) {
        tracing::debug!(%error, "torrent failed");
        self.stats.phase = Phase::Failed;
        self.stats.error = Some(error);
    }

    fn peer_mut(&mut self, key: PeerKey) -> &mut PeerSlot {
        self.peers.get_mut(&key).expect("caller checked the peer exists")
    }
}

#[cfg(test)]
mod tests {
    use super::first_tick;
    use std::time::Duration;

    #[tokio::test]
    async fn every_torrent_ticks_on_one_grid() {
        let period = Duration::from_millis(700);
        let before = tokio::time::Instant::now();
        let a = first_tick(period);
        std::thread::sleep(Duration::from_millis(30));
        let b = first_tick(period);
        for t in [a, b] {
            assert!(t > before && t <= tokio::time::Instant::now() + period, "not within one period");
        }
        let apart = if a > b { a - b } else { b - a };
        assert_eq!(apart.as_nanos() % period.as_nanos(), 0, "ticks {apart:?} apart, off the grid");
    }
}
