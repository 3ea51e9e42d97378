//! BEP 16 super-seeding in the torrent task; the policy (which piece to offer whom) is
//! [`crate::manager::superseed`]. A torrent complete when it starts, added with `super_seed`,
//! shows a new peer no pieces and then offers it pieces through `have` commands (the peer
//! task serves only pieces it has announced); the offers are topped up whenever another peer
//! announces a piece the peer was given (or nobody else lacks it), replaced when it declines
//! them (stays not interested), and freed when it leaves. A peer's first offers, and a
//! stranded piece offered again, are also granted allowed-fast (BEP 6) to a fast peer: our
//! choker serves a few peers at a time, and a peer it reaches late fetches its first pieces
//! late (a free rider's 8–9 s in, the piece then due within a second of the seeder leaving in
//! `scripts/swarm-sim`), or, choked before it fetched a piece, cannot fetch it from us at all.
use super::Torrent;
use crate::manager::superseed::SuperSeed;
use crate::peer::{CloseReason, PeerCommand};
use crate::types::PeerKey;
use bitvec::prelude::*;
use tokio::time::Instant;

impl Torrent {
    /// Super-seeding for this torrent if asked and the data is complete at start.
    pub(super) fn start_super_seeding(&mut self) {
        if self.super_seed_wanted && self.picker.is_complete() && self.picker.have().all() {
            tracing::info!(name = %self.meta.name, "super-seeding (BEP 16) until every piece has reached a peer");
            self.super_seed = Some(SuperSeed::new(self.meta.piece_count() as usize));
            self.stats.super_seeding = true;
        }
    }

    /// The pieces a newly connected peer is told of: none while super-seeding is on, then the
    /// offers follow ([`Torrent::super_seed_connected`]); else every verified piece.
    pub(super) fn pieces_to_show(&self) -> BitVec<u8, Msb0> {
        match &self.super_seed {
            Some(ss) if ss.is_on() => bitvec![u8, Msb0; 0; self.meta.piece_count() as usize],
            _ => self.picker.have().clone(),
        }
    }

    /// A peer connected and was shown [`Torrent::pieces_to_show`]: under super-seeding it
    /// gets its first offers, granted allowed-fast.
    pub(super) fn super_seed_connected(&mut self, key: PeerKey) {
        match &mut self.super_seed {
            Some(ss) if ss.is_on() => ss.add_peer(key),
            _ => return,
        }
        self.offer(key, true);
    }

    /// Peer `key` announced `pieces`: they are out; the peers that were to pass them on have
    /// (whoever `key` got them from) and are offered more, and so is `key` if no other peer
    /// lacks what it was given.
    pub(super) fn super_seed_announced(&mut self, key: PeerKey, pieces: &[u32]) {
        let Some(ss) = &mut self.super_seed else { return };
        let was_on = ss.is_on();
        let now = Instant::now().into_std();
        let mut passed: Vec<PeerKey> = pieces.iter().flat_map(|&p| ss.peer_has(key, p, now)).collect();
        if was_on && !ss.is_on() {
            tracing::info!(name = %self.meta.name, "super-seeding: every piece has reached a peer; new peers see every piece");
            self.stats.super_seeding = false;
        }
        passed.sort_unstable();
        passed.dedup();
        if !passed.is_empty() && tracing::enabled!(tracing::Level::DEBUG) {
            let by = self.peers.get(&key).map(|p| p.addr.to_string());
            let from: Vec<String> =
                passed.iter().filter_map(|k| self.peers.get(k)).map(|p| p.addr.to_string()).collect();
            tracing::debug!(?by, ?pieces, ?from, "super-seed: passed on");
        }
        for k in passed {
            self.offer(k, false);
        }
        self.settle_stranded(key, now);
        self.offer(key, false);
    }

    /// The pieces `key` is to pass on that no other connected peer lacks, or that it kept too
    /// long, are settled.
    fn settle_stranded(&mut self, key: PeerKey, now: std::time::Instant) -> bool {
        let (Some(ss), peers) = (&mut self.super_seed, &self.peers) else { return false };
        let wanted = |p: u32| peers.iter().any(|(k, q)| *k != key && !q.bitfield[p as usize]);
        ss.settle_stranded(key, now, wanted)
    }

    /// On the tick: peers that stayed not interested in what they were offered (they download
    /// some files only) are offered other pieces, and so are peers whose pieces to pass on
    /// nobody connected lacks any more (the last who did left) or were kept too long.
    pub(super) fn super_seed_tick(&mut self, now: Instant) {
        let Some(ss) = &mut self.super_seed else { return };
        let idle: Vec<PeerKey> = self.peers.iter().filter(|(_, p)| !p.peer_interested).map(|(k, _)| *k).collect();
        let mut more: Vec<PeerKey> = idle.into_iter().filter(|k| ss.declined(*k, now.into_std())).collect();
        for key in ss.peers() {
            if self.settle_stranded(key, now.into_std()) {
                more.push(key);
            }
        }
        for key in more {
            self.offer(key, false);
        }
    }

    /// The peer left: its offers go back.
    pub(super) fn super_seed_gone(&mut self, key: PeerKey) {
        if let Some(ss) = &mut self.super_seed {
            ss.forget(key);
        }
    }

    /// Tops up `key`'s offers; granted allowed-fast if `first` (its first offers) or stranded.
    fn offer(&mut self, key: PeerKey, first: bool) {
        let (Some(ss), Some(p)) = (&mut self.super_seed, self.peers.get(&key)) else { return };
        let now = Instant::now().into_std();
        let offers = ss.top_up(key, &p.bitfield, self.picker.availability(), !p.am_choking, now, &mut self.rng);
        if !offers.is_empty() {
            tracing::debug!(peer = %p.addr, ?offers, "super-seed offers");
        }
        for piece in offers {
            // Granted allowed-fast (BEP 6): our choker may reach the peer late, or turn away
            // from it before it fetched the piece.
            let grant = first || ss.is_stranded(piece);
            let sent = p.command(PeerCommand::Have(piece)) && (!grant || p.command(PeerCommand::AllowFast(piece)));
            if !sent {
                self.close(key, CloseReason::Lagging);
                return;
            }
        }
    }
}
