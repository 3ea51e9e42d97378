//! Connections: addresses into the pool, dials and inbound handshakes out of it, peer tasks
//! started and forgotten, and the useless peer evicted when a slot is needed.
use super::{DialResult, Torrent};
use crate::manager::evict::{pick_victim, EvictFacts, EvictPolicy};
use crate::manager::pool::Refusal;
use crate::metrics::{metrics, Direction};
use crate::peer::connection::{PeerContext, PeerLimits, OUR_REQQ};
use crate::peer::handshake::MessageStream;
use crate::peer::CloseReason;
use crate::peer::PeerError;
use crate::peer::{connection, handshake, BoxStream, PeerCounters};
use crate::torrent::peers::{PeerLink, PeerSlot};
use crate::torrent::TorrentError;
use crate::torrent::{dial, Inbound, TorrentEvent};
use crate::types::PeerAddr;
use crate::types::PeerKey;
use crate::types::PeerSource;
use crate::wire::extension::{ExtHandshake, UT_METADATA_ID};
use crate::wire::handshake::reserved;
use crate::wire::{Handshake, PeerId};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

impl Torrent {
    /// At most `max_addrs_per_message` of one batch are looked at: a tracker answering
    /// 20,000 peers costs no more than one answering 200.
    pub(super) fn on_addrs_from(&mut self, source: PeerSource, addrs: Vec<PeerAddr>) {
        let now = Instant::now().into_std();
        if addrs.len() > self.opts.max_addrs_per_message {
            tracing::debug!(count = addrs.len(), kept = self.opts.max_addrs_per_message, "peer batch truncated");
        }
        for a in addrs.into_iter().take(self.opts.max_addrs_per_message) {
            self.pool.add_from(a, source, now);
        }
        self.dial_more();
    }

    pub(super) fn dial_more(&mut self) {
        let now = Instant::now().into_std();
        while let Some(addr) = self.pool.next_dial(now) {
            let ours = self.our_handshake();
            let (connector, tx, o) = (self.connector.clone(), self.dial_tx.clone(), self.opts.clone());
            let cancel = self.cancel.clone();
            self.tasks.spawn(async move {
                let r = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = dial::dial(connector, addr, ours, o.connect_timeout, o.handshake_timeout) => r,
                };
                let _ = tx.send(DialResult { addr, inbound: false, result: r }).await;
            });
        }
    }

    pub(super) fn on_dialed(&mut self, d: DialResult) {
        let now = Instant::now().into_std();
        match d.result {
            Ok((framed, hs)) if !self.is_duplicate(&hs.peer_id) => {
                self.pool.connected(&d.addr);
                self.start_peer(d.addr, framed, hs, d.inbound);
            }
            Ok(_) if d.inbound => self.pool.disconnected(&d.addr, now),
            Ok((_, hs)) => {
                tracing::debug!(peer = %d.addr, "already connected to this peer id");
                match self.peer_with_id(&hs.peer_id).map(|p| p.addr) {
                    Some(conn) => self.pool.dialed_connected_peer(&d.addr, &conn, now),
                    None => self.pool.connect_failed(&d.addr, now),
                }
            }
            Err(e) => {
                tracing::debug!(peer = %d.addr, error = %e, inbound = d.inbound, "connection failed");
                if d.inbound {
                    self.pool.disconnected(&d.addr, now);
                } else if matches!(e, PeerError::SelfConnection) {
                    self.pool.refuse_own(&d.addr);
                } else if closed_during_handshake(&e) {
                    self.pool.connect_closed(&d.addr, now);
                } else {
                    self.pool.connect_failed(&d.addr, now);
                }
            }
        }
        self.dial_more();
    }

    pub(super) fn is_duplicate(&self, id: &PeerId) -> bool {
        self.peer_with_id(id).is_some()
    }

    fn peer_with_id(&self, id: &PeerId) -> Option<&PeerSlot> {
        self.peers.values().find(|p| p.peer_id == *id)
    }

    pub(super) fn on_inbound(&mut self, inb: Inbound) {
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
        let ours = self.our_handshake();
        let timeout = self.opts.handshake_timeout;
        let tx = self.dial_tx.clone();
        // Answering is I/O: done in its own task, then handed back like a finished dial.
        self.tasks.spawn(async move {
            let r =
                handshake::answer_inbound(inb.framed, &inb.handshake, ours, timeout).await.map(|f| (f, inb.handshake));
            let _ = tx.send(DialResult { addr: inb.addr, inbound: true, result: r }).await;
        });
    }

    /// A peer named its mainline DHT node's port (BEP 5): the node at its IP and that port is
    /// offered to ours.
    pub(super) fn on_dht_port(&mut self, key: PeerKey, port: u16) {
        let (Some(dht), Some(PeerAddr::Tcp(addr))) = (&self.mainline, self.peers.get(&key).map(|p| p.addr)) else {
            return;
        };
        dht.offer_node(SocketAddr::new(addr.ip(), port));
    }

    /// Our handshake, with the DHT bit when a mainline node runs for this torrent.
    fn our_handshake(&self) -> Handshake {
        let hs = Handshake::new(self.meta.info_hash, self.peer_id);
        if self.mainline.is_some() {
            hs.with_dht()
        } else {
            hs
        }
    }

    pub(super) fn start_peer(
        &mut self,
        addr: PeerAddr,
        framed: MessageStream<BoxStream>,
        hs: Handshake,
        inbound: bool,
    ) {
        let key = self.next_key;
        self.next_key += 1;
        let (cmd_tx, cmd_rx) = mpsc::channel(self.opts.max_requests_per_peer + self.opts.peer_command_queue);
        let counters = Arc::new(PeerCounters::default());
        let cancel = self.cancel.child_token();
        let extensions = hs.has(reserved::EXTENSION).then(|| ExtHandshake {
            client: Some(format!("shoal {}", env!("CARGO_PKG_VERSION"))),
            port: self.listen_port,
            reqq: Some(OUR_REQQ as u32),
            metadata_size: Some(self.meta.info_bytes.len() as u64),
            m: [("ut_metadata".to_string(), UT_METADATA_ID)].into(),
        });
        let fast = hs.has(reserved::FAST);
        let allowed_fast = if fast { self.allowed_fast_for(&addr) } else { Vec::new() };
        let extensions = extensions.map(|e| self.with_pex(e));
        let (rates, upload_share) = self.rates.for_peer();
        let ctx = PeerContext {
            key,
            geometry: self.meta.geometry(),
            storage: self.storage.clone(),
            have: self.pieces_to_show(),
            counters: counters.clone(),
            events: self.events_tx.clone(),
            commands: cmd_rx,
            extensions,
            metadata: self.meta.info_bytes.clone(),
            fast,
            allowed_fast,
            dht_port: self.mainline.as_ref().filter(|_| hs.has(reserved::DHT)).map(|m| m.local_addr().port()),
            limits: PeerLimits {
                keepalive_interval: self.opts.keepalive_interval,
                idle_timeout: self.opts.idle_timeout,
                write_stall_timeout: self.opts.write_stall_timeout,
                send_buffer: self.opts.peer_send_buffer,
                max_queued: self.opts.max_requests_per_peer + self.opts.peer_command_queue,
                budget: self.send_budget.clone(),
                rates,
            },
            cancel: cancel.clone(),
        };
        let source = self.pool.source(&addr).unwrap_or(PeerSource::Inbound).as_str();
        tracing::debug!(peer = %addr, id = ?hs.peer_id, fast, %source, "connected");
        metrics().inc_peer_connections(if inbound { Direction::Inbound } else { Direction::Outbound });
        self.emit(TorrentEvent::PeerConnected { addr, inbound });
        let mut slot = PeerSlot::new(
            addr,
            hs.peer_id,
            inbound,
            PeerLink { commands: cmd_tx, counters, cancel, upload_share },
            self.meta.piece_count() as usize,
            Instant::now(),
        );
        slot.fast = fast;
        self.peers.insert(key, slot);
        self.tasks.spawn(connection::run(framed, ctx));
        self.super_seed_connected(key);
    }

    /// Closes a peer from our side, for `reason`; its task answers with `Closed`, which
    /// cleans up.
    pub(super) fn close(&mut self, key: PeerKey, reason: CloseReason) {
        if let Some(p) = self.peers.get_mut(&key) {
            p.closing.get_or_insert(reason);
            p.cancel.cancel();
        }
    }

    /// The peer task ended. When we closed it, the reason is the one we recorded; when our
    /// storage failed serving it, the torrent fails.
    pub(super) fn on_closed(&mut self, key: PeerKey, reason: CloseReason) {
        let reason = match (reason, self.peers.get(&key).and_then(|p| p.closing.clone())) {
            (CloseReason::ByUs, Some(ours)) => ours,
            (reason, _) => reason,
        };
        if let CloseReason::Storage(e) = &reason {
            self.fail(TorrentError::Read(e.clone()));
        }
        self.forget_peer(key, reason);
        self.dial_more();
    }

    /// Removes a peer from the torrent: its requests go back to the picker, its slot back to
    /// the pool. A `Closed` event that arrives later for it is ignored.
    pub(super) fn forget_peer(&mut self, key: PeerKey, reason: CloseReason) {
        let Some(p) = self.peers.remove(&key) else { return };
        self.pex.remove(key);
        tracing::debug!(peer = %p.addr, %reason, "disconnected");
        self.emit(TorrentEvent::PeerDisconnected { addr: p.addr, reason });
        self.gone_downloaded += p.counters.downloaded();
        self.gone_uploaded += p.counters.uploaded();
        self.picker.peer_gone(key, &p.bitfield);
        self.super_seed_gone(key);
        self.pool.disconnected(&p.addr, Instant::now().into_std());
        if !p.am_choking {
            self.rechoke(Instant::now());
        }
        // Its released requests may go to others right away.
        self.fill_all_requests();
    }

    /// Closes the least valuable useless peer (snubbed, or no interest either way for
    /// `useless_peer_timeout`) to make room; false when every peer is useful.
    pub(super) fn evict_useless(&mut self, now: Instant) -> bool {
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
        self.close(victim, CloseReason::Evicted);
        self.forget_peer(victim, CloseReason::Evicted);
        true
    }
}

/// The peer took the connection and closed it before its handshake was through: a client
/// that has only just added the torrent does this for a moment (Transmission 3.00).
fn closed_during_handshake(e: &PeerError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        PeerError::Eof => true,
        PeerError::Io(io) => matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof),
        _ => false,
    }
}
