//! The torrent's event loop. Each `select!` arm calls one handler; the handlers never
//! wait on a peer (commands go out with `try_send`), so one slow peer cannot stall the rest.
use super::assembly::Assembly;
use super::dial::{self, Connector};
use super::peers::{PeerLink, PeerSlot};
use super::smart_ban::{block_digests, Digest, SmartBan};
use super::{Inbound, PeerStats, Phase, TorrentEvent, TorrentParams, TorrentStats};
use crate::config::Options;
use crate::manager::choker::Choker;
use crate::manager::evict::{pick_victim, EvictFacts, EvictPolicy};
use crate::manager::pool::Refusal;
use crate::manager::{score, ChokeCandidate, PeerAddr, Pool, PoolLimits, ScoreScale};
use crate::metainfo::Metainfo;
use crate::metrics::{metrics, Direction};
use crate::peer::budget::SendBudget;
use crate::peer::connection::{self, PeerContext, PeerLimits, OUR_REQQ};
use crate::peer::handshake::{self, MessageStream};
use crate::peer::{BoxStream, PeerCommand, PeerCounters, PeerError, PeerEvent, PeerEventKind};
use crate::picker::{BlockRef, PeerKey, Picker};
use crate::storage::{PieceVerdict, Storage, StorageError};
use crate::wire::extension::ExtHandshake;
use crate::wire::{handshake::reserved, Handshake, PeerId, BLOCK_SIZE};
use bitvec::prelude::*;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often rates, timeouts, the choker and dialling are looked at.
const TICK: Duration = Duration::from_millis(500);
/// Pieces waiting for hash + write before we stop asking for more (a slow disk slows the
/// sockets instead of filling memory).
const MAX_PIECES_IN_FLIGHT: usize = 64;
/// Fewest free request slots worth a refill command (a quarter of the depth if smaller).
const REFILL_BATCH: usize = 16;
/// Bound on the peer → torrent event queue.
const EVENT_QUEUE: usize = 4096;
/// Room in each torrent → peer command queue for commands other than requests (have,
/// cancel, choke...). The queue also holds up to `max_requests_per_peer` requests: refilling
/// the pipeline sends one `Request` command per block received, each counted as outstanding
/// before the peer task has taken it, and a command that does not fit is lost (`try_send`).
const COMMAND_QUEUE: usize = 1024;
/// Unrequested blocks a peer may send (more than it sent good ones) before it is closed:
/// a few arrive honestly after a request timed out or a choke gave it back.
const MAX_UNREQUESTED: u32 = 64;

pub(super) struct Channels {
    pub addrs: mpsc::Receiver<Vec<PeerAddr>>,
    pub inbound: mpsc::Receiver<Inbound>,
    pub stats: watch::Sender<TorrentStats>,
    pub need_peers: watch::Sender<u64>,
    pub events: broadcast::Sender<TorrentEvent>,
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
    events: broadcast::Sender<TorrentEvent>,
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
    events_tx: mpsc::Sender<PeerEvent>,
    dial_tx: mpsc::Sender<DialResult>,
    verdict_tx: mpsc::Sender<Verdict>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    last_tick: Instant,
    need_peers: watch::Sender<u64>,
    wanted_peers: bool,
    events: broadcast::Sender<TorrentEvent>,
}

pub(super) async fn run(params: TorrentParams, mut ch: Channels, cancel: CancellationToken, tasks: TaskTracker) {
    let meta = params.meta.clone();
    let storage = Storage::new(meta.clone(), params.output.join(""));
    let stats_tx = ch.stats.clone();
    let progress: Arc<dyn Fn(u32) + Send + Sync> = Arc::new(move |n| stats_tx.send_modify(|s| s.pieces_checked = n));
    let have = tokio::select! {
        _ = cancel.cancelled() => return,
        r = storage.check_existing(progress) => r,
    };
    let have = match have {
        Ok(h) => h,
        Err(e) => {
            ch.stats.send_modify(|s| {
                s.phase = Phase::Failed;
                s.error = Some(e.to_string());
            });
            return;
        }
    };
    let (events_tx, mut events_rx) = mpsc::channel(EVENT_QUEUE);
    let (dial_tx, mut dial_rx) = mpsc::channel(64);
    let (verdict_tx, mut verdict_rx) = mpsc::channel(MAX_PIECES_IN_FLIGHT * 2);
    let links = Links { events_tx, dial_tx, verdict_tx, need_peers: ch.need_peers.clone(), events: ch.events.clone() };
    let mut t = Torrent::new(params, storage, have, links, cancel.clone(), tasks);
    if t.picker.is_complete() {
        t.complete().await;
    } else {
        t.stats.phase = Phase::Downloading;
    }
    t.publish(&ch.stats);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(ev) = events_rx.recv() => t.on_peer_event(ev),
            Some(addrs) = ch.addrs.recv() => t.on_addrs(addrs),
            Some(inb) = ch.inbound.recv() => t.on_inbound(inb),
            Some(d) = dial_rx.recv() => t.on_dialed(d),
            Some(v) = verdict_rx.recv() => {
                if t.on_verdict(v).await {
                    t.publish(&ch.stats);
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
        let limits = PoolLimits {
            max_connections: o.max_connections,
            max_connecting: o.max_connecting,
            max_pending: o.max_pending,
            reconnect_delay: o.reconnect_delay,
            max_connect_failures: o.max_connect_failures,
            max_known: o.max_known_peers,
            max_banned: o.max_banned_peers,
            max_per_ip: o.max_connections_per_ip,
        };
        let mut picker = Picker::new(meta.piece_length, meta.total_length, BLOCK_SIZE, have);
        // Each piece in progress holds a buffer of its size until it is verified.
        picker.set_max_partial((o.max_assembly_bytes / meta.piece_length.max(1) as usize).max(2));
        let stats = TorrentStats {
            info_hash: meta.info_hash.to_hex(),
            name: meta.name.clone(),
            pieces_total: meta.piece_count(),
            bytes_total: meta.total_length,
            pieces_checked: meta.piece_count(),
            ..Default::default()
        };
        Torrent {
            choker: Choker::new(o.unchoke_slots, o.unchoke_interval, o.optimistic_unchoke_interval),
            pool: Pool::new(limits),
            opts: params.options.clone(),
            peer_id: params.peer_id,
            listen_port: params.listen_port,
            connector: params.connector,
            storage,
            picker,
            peers: HashMap::new(),
            next_key: 1,
            assembly: Assembly::new(BLOCK_SIZE),
            smart_ban: SmartBan::new(),
            piece_started: HashMap::new(),
            verifying: 0,
            used: HashSet::new(),
            stats,
            gone_downloaded: 0,
            gone_uploaded: 0,
            rng: StdRng::from_entropy(),
            send_budget: params.send_budget.clone(),
            events_tx,
            dial_tx,
            verdict_tx,
            cancel,
            tasks,
            last_tick: Instant::now(),
            need_peers,
            wanted_peers: false,
            events,
            meta,
        }
    }

    /// Tells listeners, if any; nobody listening is fine.
    fn emit(&self, event: TorrentEvent) {
        let _ = self.events.send(event);
    }

    fn seeding(&self) -> bool {
        self.stats.phase == Phase::Seeding
    }

    // ---- discovery and connections ----

    /// At most `max_addrs_per_message` of one batch are looked at: a tracker answering
    /// 20,000 peers costs no more than one answering 200.
    fn on_addrs(&mut self, addrs: Vec<PeerAddr>) {
        let now = Instant::now().into_std();
        if addrs.len() > self.opts.max_addrs_per_message {
            tracing::debug!(count = addrs.len(), kept = self.opts.max_addrs_per_message, "peer batch truncated");
        }
        for a in addrs.into_iter().take(self.opts.max_addrs_per_message) {
            self.pool.add(a, now);
        }
        self.dial_more();
    }

    fn dial_more(&mut self) {
        let now = Instant::now().into_std();
        while let Some(addr) = self.pool.next_dial(now) {
            let ours = Handshake::new(self.meta.info_hash, self.peer_id);
            let (connector, tx, o) = (self.connector.clone(), self.dial_tx.clone(), self.opts.clone());
            let cancel = self.cancel.clone();
            self.tasks.spawn(async move {
                let r = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = dial::dial(connector, addr.clone(), ours, o.connect_timeout, o.handshake_timeout) => r,
                };
                let _ = tx.send(DialResult { addr, inbound: false, result: r }).await;
            });
        }
    }

    fn on_dialed(&mut self, d: DialResult) {
        let now = Instant::now().into_std();
        match d.result {
            Ok((framed, hs)) if !self.is_duplicate(&hs.peer_id) => {
                self.pool.connected(&d.addr);
                self.start_peer(d.addr, framed, hs, d.inbound);
            }
            Ok(_) if d.inbound => self.pool.disconnected(&d.addr, now),
            Ok(_) => {
                tracing::debug!(peer = %d.addr, "already connected to this peer id");
                self.pool.connect_failed(&d.addr, now);
            }
            Err(e) => {
                tracing::debug!(peer = %d.addr, error = %e, inbound = d.inbound, "connection failed");
                if d.inbound {
                    self.pool.disconnected(&d.addr, now);
                } else {
                    self.pool.connect_failed(&d.addr, now);
                }
            }
        }
        self.dial_more();
    }

    fn is_duplicate(&self, id: &PeerId) -> bool {
        self.peers.values().any(|p| p.peer_id == *id)
    }

    fn on_inbound(&mut self, inb: Inbound) {
        if self.is_duplicate(&inb.handshake.peer_id) {
            return;
        }
        match self.pool.accept_inbound(&inb.addr) {
            Ok(()) => {}
            // Every slot taken: a useless peer makes room for the newcomer.
            Err(Refusal::Full) if self.evict_useless(Instant::now()) && self.pool.accept_inbound(&inb.addr).is_ok() => {
            }
            Err(why) => {
                tracing::debug!(peer = %inb.addr, %why, "inbound connection refused");
                return;
            }
        }
        let ours = Handshake::new(self.meta.info_hash, self.peer_id);
        let timeout = self.opts.handshake_timeout;
        let tx = self.dial_tx.clone();
        // Answering is I/O: done in its own task, then handed back like a finished dial.
        self.tasks.spawn(async move {
            let r =
                handshake::answer_inbound(inb.framed, &inb.handshake, ours, timeout).await.map(|f| (f, inb.handshake));
            let _ = tx.send(DialResult { addr: inb.addr, inbound: true, result: r }).await;
        });
    }

    fn start_peer(&mut self, addr: PeerAddr, framed: MessageStream<BoxStream>, hs: Handshake, inbound: bool) {
        let key = self.next_key;
        self.next_key += 1;
        let (cmd_tx, cmd_rx) = mpsc::channel(self.opts.max_requests_per_peer + COMMAND_QUEUE);
        let counters = Arc::new(PeerCounters::default());
        let cancel = self.cancel.child_token();
        let extensions = hs.has(reserved::EXTENSION).then(|| ExtHandshake {
            client: Some(format!("shoal {}", env!("CARGO_PKG_VERSION"))),
            port: self.listen_port,
            reqq: Some(OUR_REQQ as u32),
            ..Default::default()
        });
        let ctx = PeerContext {
            key,
            piece_count: self.meta.piece_count(),
            piece_length: self.meta.piece_length,
            total_length: self.meta.total_length,
            storage: self.storage.clone(),
            have: self.picker.have().clone(),
            counters: counters.clone(),
            events: self.events_tx.clone(),
            commands: cmd_rx,
            extensions,
            limits: PeerLimits {
                keepalive_interval: self.opts.keepalive_interval,
                idle_timeout: self.opts.idle_timeout,
                write_stall_timeout: self.opts.write_stall_timeout,
                send_buffer: self.opts.peer_send_buffer,
                max_queued: self.opts.max_requests_per_peer + COMMAND_QUEUE,
                budget: self.send_budget.clone(),
            },
            cancel: cancel.clone(),
        };
        tracing::debug!(peer = %addr, id = ?hs.peer_id, "connected");
        metrics().inc_peer_connections(if inbound { Direction::Inbound } else { Direction::Outbound });
        self.emit(TorrentEvent::PeerConnected { addr: addr.clone(), inbound });
        let slot = PeerSlot::new(
            addr,
            hs.peer_id,
            inbound,
            PeerLink { commands: cmd_tx, counters, cancel },
            self.meta.piece_count() as usize,
            Instant::now(),
        );
        self.peers.insert(key, slot);
        self.tasks.spawn(connection::run(framed, ctx));
    }

    /// Closes a peer from our side; its task answers with `Closed`, which cleans up.
    fn close(&mut self, key: PeerKey) {
        if let Some(p) = self.peers.get(&key) {
            p.cancel.cancel();
        }
    }

    // ---- peer events ----

    fn on_peer_event(&mut self, ev: PeerEvent) {
        let key = ev.key;
        if !self.peers.contains_key(&key) {
            return;
        }
        match ev.kind {
            PeerEventKind::Extensions(ext) => self.on_extensions(key, ext),
            PeerEventKind::Bitfield(bits) => {
                // Merged, not replaced: a later bitfield (aria2 sends them) only adds pieces,
                // and each piece is counted once in the availability.
                let p = self.peer_mut(key);
                let new: Vec<usize> = bits.iter_ones().filter(|&i| !p.bitfield[i]).collect();
                for &i in &new {
                    p.bitfield.set(i, true);
                }
                for i in new {
                    self.picker.peer_has(i as u32);
                }
                self.update_interest(key);
            }
            PeerEventKind::Have(i) => {
                let p = self.peer_mut(key);
                if !p.bitfield[i as usize] {
                    p.bitfield.set(i as usize, true);
                    self.picker.peer_has(i);
                    self.update_interest(key);
                }
            }
            PeerEventKind::Choked => {
                let p = self.peer_mut(key);
                p.peer_choking = true;
                // Without the fast extension a choke discards every pending request.
                p.outstanding.clear();
                self.picker.release_all(key);
            }
            PeerEventKind::Unchoked => {
                self.peer_mut(key).peer_choking = false;
                self.fill_requests(key);
            }
            PeerEventKind::Interested => {
                self.peer_mut(key).peer_interested = true;
                // A free upload slot is given now rather than at the next 10 s round.
                if self.peers.values().filter(|p| !p.am_choking).count() <= self.opts.unchoke_slots {
                    self.rechoke(Instant::now());
                }
            }
            PeerEventKind::NotInterested => self.peer_mut(key).peer_interested = false,
            PeerEventKind::Block(b, data) => self.on_block(key, b, data),
            PeerEventKind::Closed(reason) => self.on_closed(key, reason),
        }
    }

    fn peer_mut(&mut self, key: PeerKey) -> &mut PeerSlot {
        self.peers.get_mut(&key).expect("caller checked the peer exists")
    }

    fn on_extensions(&mut self, key: PeerKey, ext: ExtHandshake) {
        let p = self.peer_mut(key);
        p.reqq = ext.reqq.map(|q| q as usize);
        p.client = ext.client.clone();
        // An inbound peer tells us where it listens: that address can be redialled later.
        // The pool keeps one such address per connection, so a peer repeating its handshake
        // with new ports cannot fill it.
        if let (true, Some(port), PeerAddr::Tcp(sa)) = (p.inbound, ext.port, p.addr.clone()) {
            let listen = PeerAddr::Tcp(std::net::SocketAddr::new(sa.ip(), port));
            self.pool.learn_listen_addr(&PeerAddr::Tcp(sa), listen, Instant::now().into_std());
        }
    }

    fn update_interest(&mut self, key: PeerKey) {
        let interesting = !self.seeding() && self.picker.is_interesting(&self.peers[&key].bitfield);
        let p = self.peer_mut(key);
        if interesting != p.am_interested {
            p.am_interested = interesting;
            if !p.command(PeerCommand::Interested(interesting)) {
                self.close(key);
                return;
            }
        }
        if interesting {
            self.fill_requests(key);
        }
    }

    /// Tops up a peer's request pipeline to its depth.
    fn fill_requests(&mut self, key: PeerKey) {
        if self.verifying >= MAX_PIECES_IN_FLIGHT {
            return;
        }
        let (target, cap) = (self.opts.target_request_queue, self.opts.max_requests_per_peer);
        let Some(p) = self.peers.get(&key) else { return };
        if !p.am_interested || p.peer_choking {
            return;
        }
        let depth = p.depth(target, cap, BLOCK_SIZE);
        let need = depth.saturating_sub(p.outstanding.len());
        // Top up in batches: one command (and one wake-up of the peer task) per several
        // blocks instead of one per block, while the pipe stays mostly full.
        let batch = REFILL_BATCH.min(depth / 4).max(1);
        if need == 0 || (need < batch && !p.outstanding.is_empty()) {
            return;
        }
        let blocks = self.picker.pick(key, &p.bitfield, need, &mut self.rng);
        if blocks.is_empty() {
            return;
        }
        let now = Instant::now();
        for b in &blocks {
            self.piece_started.entry(b.piece).or_insert(now);
        }
        let p = self.peer_mut(key);
        for b in &blocks {
            p.outstanding.insert(*b, now);
        }
        if !p.command(PeerCommand::Request(blocks)) {
            self.close(key);
        }
    }

    fn on_block(&mut self, key: PeerKey, b: BlockRef, data: Bytes) {
        let now = Instant::now();
        let p = self.peer_mut(key);
        let Some(sent) = p.outstanding.remove(&b) else {
            return self.on_unrequested(key, b);
        };
        p.observe_rtt(now - sent);
        metrics().observe_block_rtt(now - sent);
        let addr = p.addr.clone();
        let Some(r) = self.picker.block_received(key, b) else {
            // Asked of two peers in endgame, and the other was first.
            self.stats.wasted += data.len() as u64;
            self.fill_requests(key);
            return;
        };
        let p = self.peer_mut(key);
        p.last_block_at = now;
        p.snubbed = false;
        p.accepted += b.length as u64;
        self.used.insert(addr.clone());
        self.emit(TorrentEvent::BlockReceived { from: addr.clone(), piece: b.piece, begin: b.begin, length: b.length });
        for other in r.cancel {
            if let Some(o) = self.peers.get_mut(&other) {
                o.outstanding.remove(&b);
                o.command(PeerCommand::Cancel(b));
            }
        }
        let size = self.picker.piece_size(b.piece);
        self.assembly.add(b.piece, size, b.begin, &data, &addr);
        if r.piece_complete {
            self.verify(b.piece);
        }
        self.fill_requests(key);
    }

    /// A block we did not ask this peer for (or whose request we gave back): dropped, and
    /// counted against the peer. A peer that sends mostly junk is closed.
    fn on_unrequested(&mut self, key: PeerKey, b: BlockRef) {
        self.stats.wasted += b.length as u64;
        self.stats.protocol_violations += 1;
        metrics().inc_protocol_violations();
        let p = self.peer_mut(key);
        p.violations += 1;
        let good_blocks = p.accepted / BLOCK_SIZE as u64;
        if p.violations > MAX_UNREQUESTED && p.violations as u64 > good_blocks {
            tracing::debug!(peer = %p.addr, violations = p.violations, "closed: unrequested blocks");
            self.close(key);
        }
    }

    /// Hands a complete piece to storage: hashed from memory, written only if it matches.
    /// Block digests for smart ban are made off the async threads when the piece failed or
    /// failed before.
    fn verify(&mut self, piece: u32) {
        let Some(done) = self.assembly.take(piece) else { return };
        self.verifying += 1;
        let suspect = self.smart_ban.is_suspect(piece);
        let (storage, tx) = (self.storage.clone(), self.verdict_tx.clone());
        self.tasks.spawn(async move {
            let result = storage.write_piece(piece, done.data.clone()).await;
            let need = suspect || matches!(result, Ok(PieceVerdict::HashFailed));
            let digests = match need {
                true => {
                    let data = done.data;
                    tokio::task::spawn_blocking(move || block_digests(&data, BLOCK_SIZE as usize)).await.ok()
                }
                false => None,
            };
            let _ = tx.send(Verdict { piece, senders: done.senders, digests, result }).await;
        });
    }

    fn on_closed(&mut self, key: PeerKey, reason: String) {
        self.forget_peer(key, reason);
        self.dial_more();
    }

    /// Removes a peer from the torrent: its requests go back to the picker, its slot back to
    /// the pool. A `Closed` event that arrives later for it is ignored.
    fn forget_peer(&mut self, key: PeerKey, reason: String) {
        let Some(p) = self.peers.remove(&key) else { return };
        tracing::debug!(peer = %p.addr, %reason, "disconnected");
        self.emit(TorrentEvent::PeerDisconnected { addr: p.addr.clone(), reason });
        self.gone_downloaded += p.counters.downloaded();
        self.gone_uploaded += p.counters.uploaded();
        self.picker.peer_gone(key, &p.bitfield);
        self.pool.disconnected(&p.addr, Instant::now().into_std());
        if !p.am_choking {
            self.rechoke(Instant::now());
        }
        // Its released requests may go to others right away.
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.fill_requests(k);
        }
    }

    /// Closes the least valuable useless peer (snubbed, or no interest either way for
    /// `useless_peer_timeout`) to make room; false when every peer is useful.
    fn evict_useless(&mut self, now: Instant) -> bool {
        let facts: Vec<EvictFacts<PeerKey>> = self
            .peers
            .iter()
            .map(|(k, p)| EvictFacts {
                key: *k,
                inbound: p.inbound,
                connected_since: p.connected_at.into_std(),
                interested: p.am_interested || p.peer_interested,
                last_interested: p.last_interested.map(|t| t.into_std()),
                snubbed: p.snubbed,
                bytes: p.counters.downloaded() + p.counters.uploaded(),
                score: p.score.total,
            })
            .collect();
        let policy = EvictPolicy { useless_after: self.opts.useless_peer_timeout };
        let Some(victim) = pick_victim(&facts, &policy, now.into_std()) else { return false };
        tracing::debug!(peer = %self.peers[&victim].addr, "evicted: useless while a slot is needed");
        self.close(victim);
        self.forget_peer(victim, "evicted to make room".into());
        true
    }

    // ---- verified pieces ----

    /// Returns true when the phase changed.
    async fn on_verdict(&mut self, v: Verdict) -> bool {
        self.verifying -= 1;
        match v.result {
            Ok(PieceVerdict::Written) => {
                self.picker.piece_verified(v.piece);
                self.stats.pieces_received += 1;
                metrics().inc_pieces_verified();
                self.emit(TorrentEvent::PieceVerified(v.piece));
                if let Some(t) = self.piece_started.remove(&v.piece) {
                    metrics().observe_piece_download(t.elapsed());
                }
                if let Some(good) = &v.digests {
                    let liars = self.smart_ban.piece_passed(v.piece, good);
                    self.ban_all(liars, v.piece);
                }
                self.announce_have(v.piece);
                if self.picker.is_complete() && !self.seeding() {
                    self.complete().await;
                    return true;
                }
            }
            Ok(PieceVerdict::HashFailed) => self.on_hash_failed(v.piece, &v.senders, v.digests.unwrap_or_default()),
            Err(e) => {
                // Fatal for the torrent, not a peer's fault; the command prints the one error line.
                tracing::debug!(piece = v.piece, error = %e, "storage failed");
                self.stats.phase = Phase::Failed;
                self.stats.error = Some(e.to_string());
                return true;
            }
        }
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.fill_requests(k);
        }
        false
    }

    fn announce_have(&mut self, piece: u32) {
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            let p = &self.peers[&k];
            let had = p.bitfield[piece as usize];
            if !p.command(PeerCommand::Have(piece)) {
                self.close(k);
            } else if had && p.am_interested {
                self.update_interest(k);
            }
        }
    }

    /// A failed piece is fetched again. Smart ban decides who lied: the sender of every
    /// block at once, otherwise whoever's blocks differ from the good copy once it passes.
    fn on_hash_failed(&mut self, piece: u32, senders: &[PeerAddr], digests: Vec<Digest>) {
        tracing::warn!(piece, peers = senders.len(), "piece failed its hash check");
        self.stats.hash_failures += 1;
        metrics().inc_hash_failures();
        self.piece_started.remove(&piece);
        self.picker.piece_failed(piece);
        if digests.len() == senders.len() {
            let blocks: Vec<(PeerAddr, Digest)> = senders.iter().cloned().zip(digests).collect();
            let liars = self.smart_ban.piece_failed(piece, &blocks);
            self.ban_all(liars, piece);
        }
    }

    /// Bans peers found lying about `piece` and closes their connections.
    fn ban_all(&mut self, liars: Vec<PeerAddr>, piece: u32) {
        for a in liars {
            tracing::warn!(peer = %a, piece, "banned: sent data that failed the hash check");
            self.pool.ban(&a);
            metrics().inc_peers_banned();
            let keys: Vec<PeerKey> = self.peers.iter().filter(|(_, p)| p.addr == a).map(|(k, _)| *k).collect();
            for k in keys {
                self.close(k);
            }
        }
    }

    async fn complete(&mut self) {
        if let Err(e) = self.storage.finalize(self.opts.sync_on_complete).await {
            self.stats.phase = Phase::Failed;
            self.stats.error = Some(e.to_string());
            return;
        }
        tracing::info!(name = %self.meta.name, "download complete, every piece verified");
        self.stats.phase = Phase::Seeding;
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.update_interest(k);
        }
    }

    // ---- periodic work ----

    fn on_tick(&mut self) {
        let now = Instant::now();
        let dt = now - self.last_tick;
        self.last_tick = now;
        self.update_rates_and_timeouts(now, dt);
        self.update_scores();
        // A slot holder that stopped reading gives its slot up now, not at the next round.
        let holder_stalled = self.peers.values().any(|p| !p.am_choking && p.counters.stalled());
        if self.choker.due(now.into_std()) || holder_stalled {
            self.rechoke(now);
        }
        self.pool.maintain(now.into_std());
        if self.pool.needs_slot() {
            self.evict_useless(now);
        }
        self.dial_more();
        // Signalled on the edge, when the pool runs dry, not on every tick while it is dry.
        let needs = self.pool.needs_more_peers() && !self.seeding();
        if needs && !self.wanted_peers {
            self.need_peers.send_modify(|n| *n += 1);
            self.emit(TorrentEvent::NeedPeers);
        }
        self.wanted_peers = needs;
        let mut keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        keys.sort_by(|a, b| self.peers[b].score.total.total_cmp(&self.peers[a].score.total));
        for k in keys {
            self.fill_requests(k);
        }
    }

    fn update_rates_and_timeouts(&mut self, now: Instant, dt: Duration) {
        let (timeout, snub) = (self.opts.request_timeout, self.opts.snub_timeout);
        let mut expired: Vec<(PeerKey, BlockRef)> = Vec::new();
        for (k, p) in self.peers.iter_mut() {
            p.rate_down.update(p.accepted, dt);
            if p.am_interested || p.peer_interested {
                p.last_interested = Some(now);
            }
            p.rate_up.update(p.counters.uploaded(), dt);
            expired.extend(p.outstanding.iter().filter(|(_, t)| now - **t > timeout).map(|(b, _)| (*k, *b)));
            p.snubbed = p.am_interested && !p.peer_choking && now - p.last_block_at > snub;
        }
        for (k, b) in expired {
            self.peer_mut(k).outstanding.remove(&b);
            self.picker.release(k, b);
        }
    }

    fn update_scores(&mut self) {
        let inputs: Vec<(PeerKey, _)> =
            self.peers.iter().map(|(k, p)| (*k, p.score_inputs(self.picker.rarity_value(&p.bitfield)))).collect();
        let scale = ScoreScale::of(inputs.iter().map(|(_, i)| i));
        for (k, i) in inputs {
            let parts = score(&i, &scale);
            let p = self.peer_mut(k);
            p.score = parts;
            let addr = p.addr.clone();
            self.pool.set_score(&addr, parts.total);
        }
    }

    fn rechoke(&mut self, now: Instant) {
        let candidates: Vec<ChokeCandidate> = self
            .peers
            .iter()
            .map(|(k, p)| ChokeCandidate {
                key: *k,
                interested: p.peer_interested,
                rate_from: p.rate_down.get(),
                rate_to: p.rate_up.get(),
                snubbed: p.snubbed,
                stalled: p.counters.stalled(),
                connected_at: p.connected_at.into_std(),
                unchoked_since: p.unchoked_since.map(|t| t.into_std()),
                choked_since: p.choked_since.map(|t| t.into_std()),
            })
            .collect();
        let seeding = self.seeding();
        let round = self.choker.round(now.into_std(), &candidates, seeding, &mut self.rng);
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in keys {
            let unchoke = round.unchoke.contains(&k);
            let p = self.peer_mut(k);
            if unchoke != p.am_choking {
                continue;
            }
            p.am_choking = !unchoke;
            let regular = unchoke && round.optimistic != Some(k);
            p.unchoked_since = if regular { Some(now) } else { None };
            p.choked_since = if unchoke { None } else { Some(now) };
            let ok = p.command(if unchoke { PeerCommand::Unchoke } else { PeerCommand::Choke });
            if !ok {
                self.close(k);
            }
        }
    }

    fn publish(&mut self, tx: &watch::Sender<TorrentStats>) {
        let s = &mut self.stats;
        s.pieces_have = self.picker.have().count_ones() as u32;
        s.bytes_left = self.picker.bytes_left();
        s.downloaded = self.gone_downloaded + self.peers.values().map(|p| p.counters.downloaded()).sum::<u64>();
        s.uploaded = self.gone_uploaded + self.peers.values().map(|p| p.counters.uploaded()).sum::<u64>();
        s.download_rate = self.peers.values().map(|p| p.rate_down.get()).sum();
        s.upload_rate = self.peers.values().map(|p| p.rate_up.get()).sum();
        s.pool = self.pool.stats();
        s.assembly_bytes = self.assembly.bytes();
        s.banned = s.pool.banned;
        s.peers_used = self.used.len();
        s.peers = self.peers.values().map(peer_stats).collect();
        tx.send_replace(s.clone());
    }
}

fn peer_stats(p: &PeerSlot) -> PeerStats {
    PeerStats {
        addr: p.addr.to_string(),
        transport: match p.addr {
            PeerAddr::Tcp(_) => "tcp",
            PeerAddr::P2p(_) => "libp2p",
        },
        direction: if p.inbound { "inbound" } else { "outbound" },
        client: p.client.clone(),
        am_choking: p.am_choking,
        am_interested: p.am_interested,
        peer_choking: p.peer_choking,
        peer_interested: p.peer_interested,
        snubbed: p.snubbed,
        download_rate: p.rate_down.get(),
        upload_rate: p.rate_up.get(),
        downloaded: p.counters.downloaded(),
        uploaded: p.counters.uploaded(),
        outstanding_requests: p.outstanding.len(),
        rtt_ms: p.rtt.map(|r| r.as_secs_f64() * 1000.0),
        pieces: p.bitfield.count_ones(),
        score: p.score,
    }
}
