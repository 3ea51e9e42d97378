//! What peers tell us (bitfields, haves, chokes, blocks) and what we ask of them: interest,
//! the request pipeline, request timeouts, snubbing, and blocks overdue at a slow peer asked
//! again of a faster one.
use super::super::peers::PeerSlot;
use super::{Torrent, REFILL_BATCH};
use crate::manager::scarce::{self, Rival};
use crate::metrics::metrics;
use crate::peer::CloseReason;
use crate::peer::{PeerCommand, PeerEvent, PeerEventKind};
use crate::torrent::TorrentEvent;
use crate::types::BlockRef;
use crate::types::PeerAddr;
use crate::types::PeerKey;
use crate::types::BLOCK_SIZE;
use crate::wire::extension::{ExtHandshake, SPOKEN};
use bitvec::prelude::*;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

impl Torrent {
    pub(super) fn on_peer_event(&mut self, ev: PeerEvent) {
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
                let new: Vec<u32> = new.into_iter().map(|i| i as u32).collect();
                for &i in &new {
                    self.picker.peer_has(i);
                }
                self.super_seed_announced(key, &new);
                self.update_interest(key);
            }
            PeerEventKind::Have(i) => {
                let p = self.peer_mut(key);
                if !p.bitfield[i as usize] {
                    p.bitfield.set(i as usize, true);
                    self.picker.peer_has(i);
                    self.super_seed_announced(key, &[i]);
                    self.update_interest(key);
                }
            }
            PeerEventKind::Choked => self.on_choked(key),
            PeerEventKind::Unchoked => {
                self.peer_mut(key).peer_choking = false;
                self.fill_requests(key);
            }
            PeerEventKind::Interested => {
                self.peer_mut(key).peer_interested = true;
                // A free upload slot is given now rather than at the next round.
                if self.peers.values().filter(|p| !p.am_choking).count() <= self.opts.unchoke_slots {
                    self.rechoke(Instant::now());
                }
            }
            PeerEventKind::NotInterested => {
                let p = self.peer_mut(key);
                p.peer_interested = false;
                // A seeder's slot goes to a peer that wants it now, not at the next round.
                if !p.am_choking && self.seeding() {
                    self.rechoke(Instant::now());
                }
            }
            PeerEventKind::Block(b, data) => self.on_block(key, b, data),
            PeerEventKind::Rejected(b) => self.on_rejected(key, b),
            PeerEventKind::AllowedFast(piece) => self.on_allowed_fast(key, piece),
            PeerEventKind::Pex(msg) => self.on_pex(key, msg),
            PeerEventKind::DhtPort(port) => self.on_dht_port(key, port),
            PeerEventKind::Closed(reason) => self.on_closed(key, reason),
        }
    }

    pub(super) fn on_extensions(&mut self, key: PeerKey, ext: ExtHandshake) {
        self.pex_on_extensions(key, &ext);
        let p = self.peer_mut(key);
        p.reqq = ext.reqq.map(|q| q as usize);
        p.client = ext.client.clone();
        p.extensions = SPOKEN.into_iter().filter(|n| ext.m.get(*n).is_some_and(|id| *id != 0)).collect();
        // An inbound peer tells us where it listens: that address can be redialled later.
        // The pool keeps one such address per connection, so a peer repeating its handshake
        // with new ports cannot fill it.
        if let (true, Some(port), PeerAddr::Tcp(sa)) = (p.inbound, ext.port, p.addr) {
            let listen = PeerAddr::Tcp(std::net::SocketAddr::new(sa.ip(), port));
            self.pool.learn_listen_addr(&PeerAddr::Tcp(sa), listen, Instant::now().into_std());
        }
    }

    /// Tells the peer whether we are interested, if that changed, and tops up its pipe.
    pub(super) fn update_interest(&mut self, key: PeerKey) {
        if self.refresh_interest(key) {
            self.fill_requests(key);
        }
    }

    /// [`Torrent::update_interest`] without the top-up; true when we are interested (and the
    /// peer is still open).
    pub(super) fn refresh_interest(&mut self, key: PeerKey) -> bool {
        let interesting = !self.seeding() && self.picker.is_interesting(&self.peers[&key].bitfield);
        let p = self.peer_mut(key);
        if interesting != p.am_interested {
            p.am_interested = interesting;
            if !p.command(PeerCommand::Interested(interesting)) {
                self.close(key, CloseReason::Lagging);
                return false;
            }
        }
        interesting
    }

    /// Tops up a peer's request pipeline to its depth.
    pub(super) fn fill_requests(&mut self, key: PeerKey) {
        if self.verifying >= self.opts.max_pieces_in_flight {
            return;
        }
        let (target, cap) = (self.opts.target_request_queue, self.opts.max_requests_per_peer);
        // A peer that chokes us may still be asked for its allowed-fast pieces (BEP 6).
        let offer = match self.peers.get(&key) {
            Some(p) if p.am_interested && p.peer_choking => self.choked_offer(key),
            _ => None,
        };
        let Some(p) = self.peers.get(&key) else { return };
        if !p.am_interested || (p.peer_choking && offer.is_none()) {
            return;
        }
        let theirs = offer.as_deref().unwrap_or(&p.bitfield);
        let Some(need) = wants_requests(p, target, cap) else { return };
        // Peers that could take requests now, for the scarce pieces (design §5).
        let rivals: Vec<Rival> = self
            .peers
            .iter()
            .filter(|(k, q)| **k != key && q.score.total > p.score.total && !q.peer_choking && q.am_interested)
            .filter(|(_, q)| wants_requests(q, target, cap).is_some())
            .map(|(k, q)| Rival { key: *k, score: q.score.total, has: &q.bitfield })
            .collect();
        let scarce_left = {
            let picker = &self.picker;
            scarce::offer(theirs, p.score.total, picker.availability(), |i| picker.is_started(i), &rivals)
        };
        // In endgame the last blocks are scarce too: duplicates go to the better-scored first.
        let better: Vec<(PeerKey, &BitSlice<u8, Msb0>)> = rivals.iter().map(|r| (r.key, r.has)).collect();
        let mut blocks =
            scarce::pick(&mut self.picker, key, theirs, scarce_left.as_deref(), need, &mut self.rng, &better);
        if blocks.len() < need {
            if let Some(overdue) = overdue_at(&self.peers, key, Instant::now()) {
                blocks.extend(self.picker.pick_overdue(key, theirs, need - blocks.len(), overdue));
            }
        }
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
            self.close(key, CloseReason::Lagging);
        }
    }

    /// Tops up every peer's pipeline, the one whose queue runs dry soonest first. Blocks
    /// freed together (a verified piece makes room for a new one, a peer that left gives its
    /// asks back) go to whoever would idle first, not always to the same peer: in map order
    /// one of three seeders took every new piece and sent us about 90 % of the bytes while
    /// the other two sat unchoked and unasked.
    pub(super) fn fill_all_requests(&mut self) {
        let mut order: Vec<(f64, PeerKey)> = self.peers.iter().map(|(k, p)| (p.queued_secs(BLOCK_SIZE), *k)).collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, k) in order {
            self.fill_requests(k);
        }
    }

    pub(super) fn on_block(&mut self, key: PeerKey, b: BlockRef, data: Bytes) {
        let now = Instant::now();
        let p = self.peer_mut(key);
        let addr = p.addr;
        let taken = match p.outstanding.remove(&b) {
            Some(sent) => {
                p.observe_rtt(now - sent);
                metrics().observe_block_rtt(now - sent);
                self.picker.block_received(key, b)
            }
            None if p.withdrawn.take(&b) => self.picker.late_block_received(key, b),
            None => return self.on_unrequested(key, b),
        };
        let Some(r) = taken else {
            // Asked of two peers in endgame and the other was first, or late and no longer
            // wanted.
            self.stats.wasted += data.len() as u64;
            self.fill_requests(key);
            return;
        };
        let p = self.peer_mut(key);
        p.last_block_at = now;
        p.snubbed = false;
        p.accepted += b.length as u64;
        self.used.insert(addr);
        self.emit(TorrentEvent::BlockReceived { from: addr, piece: b.piece, begin: b.begin, length: b.length });
        for other in r.cancel {
            if let Some(o) = self.peers.get_mut(&other) {
                o.withdraw(b);
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

    /// Aims each unchoking peer that holds the only copy of a piece we want at that piece: our
    /// requests to it for pieces others hold too, queued ahead of any for that piece, are
    /// cancelled and given back (a block already on its way is still taken), and the refill asks
    /// for the sole piece first. A peer serves requests in order: in `scripts/swarm-sim` a free
    /// rider's 14 KiB/s went for 85 s to pieces asked of it while the seeder was still there,
    /// and the piece only it had, wanted by 38 peers, waited behind them.
    pub(super) fn aim_at_sole_pieces(&mut self) {
        let sole = self.picker.sole_sourced();
        if sole.is_empty() {
            return;
        }
        let availability = self.picker.availability();
        let cancels: Vec<(PeerKey, BlockRef)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.peer_choking && sole.iter().any(|&i| p.bitfield[i as usize]))
            .flat_map(|(k, p)| p.requests_ahead_of_sole_piece(availability).into_iter().map(|b| (*k, b)))
            .collect();
        for (k, b) in cancels {
            let p = self.peer_mut(k);
            p.withdraw(b);
            let ok = p.command(PeerCommand::Cancel(b));
            self.picker.release(k, b);
            if !ok {
                self.close(k, CloseReason::Lagging);
            }
        }
    }

    /// A block we did not ask this peer for: dropped, and counted against the peer. A peer
    /// that sends mostly junk is closed.
    pub(super) fn on_unrequested(&mut self, key: PeerKey, b: BlockRef) {
        self.stats.wasted += b.length as u64;
        self.stats.protocol_violations += 1;
        metrics().inc_protocol_violations();
        let p = self.peer_mut(key);
        p.violations += 1;
        if p.sends_mostly_junk() {
            tracing::debug!(peer = %p.addr, violations = p.violations, "closed: unrequested blocks");
            self.close(key, CloseReason::Junk);
        }
    }

    pub(super) fn update_rates_and_timeouts(&mut self, now: Instant, dt: Duration) {
        let (timeout, snub) = (self.opts.request_timeout, self.opts.snub_timeout);
        let mut expired: Vec<(PeerKey, BlockRef)> = Vec::new();
        for (k, p) in self.peers.iter_mut() {
            p.rate_down.update(p.accepted, dt);
            if p.am_interested || p.peer_interested {
                p.last_interested = Some(now);
            }
            p.rate_up.update(p.counters.uploaded(), dt);
            // A request expires when the peer sent us nothing for `timeout` since it was made:
            // a slow peer that keeps delivering keeps its queue (a full pipe to a peer serving
            // five others on 16 KiB/s holds more than 30 s of blocks), a stuck one gives it up.
            let quiet = |sent: Instant| now - sent.max(p.last_block_at) > timeout;
            expired.extend(p.outstanding.iter().filter(|(_, t)| quiet(**t)).map(|(b, _)| (*k, *b)));
            p.snubbed = p.am_interested && !p.peer_choking && now - p.last_block_at > snub;
        }
        // Given back to the picker for any peer to ask, and not cancelled: the peer's queue
        // keeps its place (cancelled and asked again, a block behind 30 s of queue would go
        // to the back of it), and a block that comes late is taken if still wanted.
        for (k, b) in expired {
            self.peer_mut(k).withdraw(b);
            self.picker.release(k, b);
        }
    }
}

/// A request is not asked of a second peer before it waited this long.
const OVERDUE_AFTER: Duration = Duration::from_secs(1);
/// ... and only of a peer that sends us this many times as fast as the peer first asked.
const OVERDUE_SPEEDUP: f64 = 4.0;

/// Whether a block asked of a peer is overdue there for the stealer `key`: asked
/// `OVERDUE_AFTER` ago or more of a peer that sends us less than a `OVERDUE_SPEEDUP`th of what
/// the stealer does (a stealer that sent nothing yet is given the chance). In
/// `scripts/swarm-sim` the seeder offered a piece a free rider alone held to peer after peer,
/// and none had it seconds later, likely because each had asked the free rider (14 KiB/s for
/// all it served) for its blocks and so could not ask the seeder; with this the bar was met in
/// 14 runs of 16, not 10 of 13.
///
/// `None` when no other peer is that slow with an ask that old: nothing is overdue, and the
/// partial pieces need no scan (scanning them on every top-up was a quarter of the CPU of a
/// download from one fast seeder).
fn overdue_at(
    peers: &HashMap<PeerKey, PeerSlot>,
    key: PeerKey,
    now: Instant,
) -> Option<impl Fn(PeerKey, BlockRef) -> bool + '_> {
    let stealer = peers.get(&key)?;
    let rate = if stealer.accepted == 0 { f64::INFINITY } else { stealer.rate_down.get() };
    let slow = move |q: &PeerSlot| q.rate_down.get() * OVERDUE_SPEEDUP < rate;
    let late = move |sent: &Instant| now - *sent >= OVERDUE_AFTER;
    let any = peers.iter().any(|(k, q)| *k != key && slow(q) && q.outstanding.values().any(late));
    any.then_some(move |asked, block| {
        peers.get(&asked).is_some_and(|q| slow(q) && q.outstanding.get(&block).is_some_and(late))
    })
}

/// How many blocks the peer's pipeline takes now, if it should be topped up: in batches, one
/// command (and one wake-up of the peer task) per several blocks while the pipe stays mostly
/// full.
fn wants_requests(p: &super::super::peers::PeerSlot, target: std::time::Duration, cap: usize) -> Option<usize> {
    let depth = p.depth(target, cap, BLOCK_SIZE);
    let need = depth.saturating_sub(p.outstanding.len());
    let batch = REFILL_BATCH.min(depth / 4).max(1);
    (need > 0 && (need >= batch || p.outstanding.is_empty())).then_some(need)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrent::peers::test_slot;

    #[test]
    fn only_an_old_ask_of_a_much_slower_peer_is_overdue() {
        let t0 = Instant::now();
        let tick = Duration::from_secs(1);
        let block = |begin| BlockRef { piece: 0, begin, length: BLOCK_SIZE };
        let mut fast = test_slot(t0);
        fast.accepted = 100;
        fast.rate_down.update(8 << 20, tick);
        let mut slow = test_slot(t0);
        slow.rate_down.update(1 << 20, tick);
        slow.outstanding.insert(block(0), t0);
        let mut peers = HashMap::from([(1, fast), (2, slow)]);
        let at = |peers: &HashMap<PeerKey, PeerSlot>, secs| {
            overdue_at(peers, 1, t0 + Duration::from_secs(secs)).map(|f| f(2, block(0)))
        };
        // Asked less than OVERDUE_AFTER ago: nothing to scan for.
        assert_eq!(at(&peers, 0), None);
        assert_eq!(at(&peers, 2), Some(true));
        {
            let over = overdue_at(&peers, 1, t0 + 2 * tick).unwrap();
            assert!(!over(2, block(BLOCK_SIZE)), "a block not asked of the slow peer");
        }
        // Half as fast is not slow enough.
        peers.get_mut(&2).unwrap().rate_down.update(5 << 20, tick);
        assert_eq!(at(&peers, 2), None);
        // Alone, a peer has no one to take blocks from.
        peers.remove(&2);
        assert_eq!(at(&peers, 2), None);
    }
}
