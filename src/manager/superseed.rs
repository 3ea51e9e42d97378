//! BEP 16 super-seeding: which pieces a seeder tells each peer of.
//!
//! A plain seeder announces every piece, and its leechers ask it for whatever their pickers
//! choose: several of them fetch the same rare piece at once, and in `scripts/swarm-sim` a
//! seeder had sent two to three copies' worth before the last piece had its first copy. A
//! super-seeding seeder shows a peer nothing at first and then [`OFFERS_PER_PEER`] pieces at a
//! time, each the piece fewest connected peers hold or were offered. Each upload then goes to a
//! piece the swarm lacks.
//!
//! As BEP 16 and BitTornado, where it began, have it, a peer is told of a new piece only once
//! a piece it was given has been announced by another peer: it passed the piece on. Not by a
//! peer we offered the piece to as well, which may have fetched it from us: counting that
//! credits a free rider with our upload and gives it fresh first copies. So the
//! seeder's pieces go to the peers that spread them, and a peer that keeps what it gets
//! (a free rider, a slow uplink) gets little from the seeder. A piece nobody else connected
//! lacks cannot be passed on: that offer is settled as soon as the peer has it (the caller
//! asks, [`SuperSeed::settle_stranded`]), so a lone leecher is not held up; one not passed on
//! within [`PASS_WITHIN`] is settled too, so peers that cannot reach each other still get on.
//! libtorrent calls this strict super-seeding and by default settles an offer as soon as the
//! peer has it.
//!
//! A piece settled that way is stranded: one peer holds it and does not pass it on (a free
//! rider's uplink takes a quarter of a minute for one piece). It is offered again before any
//! piece nobody holds, to a peer we serve that kept nothing itself, so that when every piece is
//! out, and the seeder may leave, no piece is left only with a peer that keeps it: in
//! `scripts/swarm-sim` the swarm otherwise waited tens of seconds, after the seeder left, for
//! the one copy a free rider held. It costs the seeder a piece per stranded piece; once another
//! peer announces it, it is out like any other. The peer that kept it is not given a new piece
//! in its place: the kept piece holds one of its offers until it passes a piece on or no
//! connected peer lacks the kept one any more. Before, a free rider was given a fresh first
//! copy every few seconds, any of which could still be the only copy when the seeder left
//! (measured: no fewer stalls either way).
//!
//! Super-seeding lasts until every piece has been announced by some peer (one full copy is
//! out, as far as we saw): peers that connect after that see every piece. Peers that connected
//! under it are still offered pieces this way: a peer may not be told that we lack a piece we
//! announced, and telling it of every piece at once could take thousands of `have` messages.
//!
//! A peer that stays not interested while it holds offers (it downloads only some files) has
//! declined them: it is offered other pieces, never those again.
//!
//! A stranger can make it cost: one entry per connected peer with at most [`OFFERS_PER_PEER`]
//! offers and a bit per piece once it declines some, one scan over the pieces per offer
//! (stopping at the first piece nobody holds) and one over the peers per announced piece;
//! each piece is declined at most once per peer, so declining buys at most one offer per
//! piece, and a peer that announces pieces it was not given gets nothing for it.
use crate::types::PeerKey;
use bitvec::prelude::*;
use rand::Rng;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Pieces a peer may be offered at once: while it fetches one, it can already ask for the next.
pub const OFFERS_PER_PEER: usize = 2;
/// A peer not interested this long after its last offer has declined its open offers. Not at
/// once: a peer that had everything we announced says so, and may say it after we offered
/// more but before it heard of them (it turns interested again when it does).
pub const DECLINE_AFTER: Duration = Duration::from_secs(10);
/// A piece not passed on this long is settled anyway: the peers that lack it may not be
/// connected to the peer that has it (no tracker, no PEX), and waiting for ever would stall
/// them both.
pub const PASS_WITHIN: Duration = Duration::from_secs(5);
/// The time a piece is due to be passed on counts from our offer, not from the peer's `have`,
/// but leaves it at least this long after the `have`: a peer our choker got to late (a free
/// rider served last) no longer keeps its piece out of sight until the seeder has left.
pub const PASS_AFTER_HAVE: Duration = Duration::from_secs(1);

/// The super-seeding state of one complete torrent.
#[derive(Debug)]
pub struct SuperSeed {
    /// Pieces some peer announced, ever.
    seen: BitVec<u8, Msb0>,
    /// Pieces whose one holder did not pass them on within [`PASS_WITHIN`]: offered first.
    stranded: BitVec<u8, Msb0>,
    unseen: usize,
    /// Open offers of each piece (made, and not yet announced by the peer).
    offers: Vec<u32>,
    /// Each super-seeded peer's offers.
    offered: HashMap<PeerKey, Offers>,
}

/// What one super-seeded peer was offered.
#[derive(Debug, Default)]
struct Offers {
    /// Not yet announced by the peer.
    open: Vec<u32>,
    /// Announced by the peer, and by no other peer since: to be passed on, within
    /// [`PASS_WITHIN`] of the instant given (see [`PASS_AFTER_HAVE`]).
    passing: Vec<(u32, Instant)>,
    /// Pieces it held [`PASS_WITHIN`] without passing them on while others lacked them: each
    /// holds one of its offers until it passes a piece on or nobody connected lacks it.
    kept: Vec<u32>,
    /// When it was last offered a piece.
    since: Option<Instant>,
    /// Pieces it said it does not want (it went not interested while offered them, say a
    /// download of some files only): never offered to it again. Allocated on first use.
    declined: Option<BitVec<u8, Msb0>>,
}

impl SuperSeed {
    pub fn new(pieces: usize) -> SuperSeed {
        SuperSeed {
            seen: bitvec![u8, Msb0; 0; pieces],
            stranded: bitvec![u8, Msb0; 0; pieces],
            unseen: pieces,
            offers: vec![0; pieces],
            offered: HashMap::new(),
        }
    }

    /// Whether it still applies to peers that connect now: some piece was never announced.
    pub fn is_on(&self) -> bool {
        self.unseen > 0
    }

    /// A peer connected while it is on: it will be offered pieces (it saw none of ours).
    pub fn add_peer(&mut self, key: PeerKey) {
        self.offered.entry(key).or_default();
    }

    /// Whether the peer connected under super-seeding (for the tests: the torrent asks
    /// nothing of it).
    #[cfg(test)]
    fn is_super_seeded(&self, key: PeerKey) -> bool {
        self.offered.contains_key(&key)
    }

    /// A peer announced `piece` (a `have` or a bitfield's bit): the piece is out; if the peer
    /// was offered it, it is now to pass it on; else every other peer that was to pass it on
    /// has. Returns those peers: they may be offered more. A peer we offered the piece to may
    /// have fetched it from us, so its `have` is no proof that anyone passed it on.
    pub fn peer_has(&mut self, key: PeerKey, piece: u32, now: Instant) -> Vec<PeerKey> {
        let i = piece as usize;
        if i >= self.seen.len() {
            return Vec::new();
        }
        if !self.seen[i] {
            self.seen.set(i, true);
            self.unseen -= 1;
        }
        // Announced after its holder kept it: by another peer, it has a second copy now.
        self.stranded.set(i, false);
        let offered_it = self.offered.get(&key).is_some_and(|m| m.open.contains(&piece));
        let mut passed = Vec::new();
        for (k, mine) in self.offered.iter_mut() {
            if *k == key {
                if let Some(at) = mine.open.iter().position(|&p| p == piece) {
                    mine.open.swap_remove(at);
                    // `since` is our last offer to it, this one or a later one.
                    let offered = mine.since.unwrap_or(now);
                    let from = now.checked_sub(PASS_WITHIN - PASS_AFTER_HAVE).map_or(offered, |t| t.max(offered));
                    mine.passing.push((piece, from));
                    self.offers[i] -= 1;
                }
            } else if offered_it {
                // It may have fetched the piece from us: nobody passed it on.
            } else if let Some(at) = mine.passing.iter().position(|&(p, _)| p == piece) {
                mine.passing.swap_remove(at);
                // It passes pieces on after all: what it kept no longer holds its offers.
                mine.kept.clear();
                passed.push(*k);
            }
        }
        passed
    }

    /// Settles the peer's pieces to pass on that nobody could take from it (`wanted` says
    /// whether some other connected peer lacks a piece), and what it kept that nobody lacks
    /// any more. A piece it held [`PASS_WITHIN`] without passing it on is stranded, to be
    /// offered again, and kept: it still holds one of the peer's offers. Returns whether any
    /// offer of the peer was freed.
    pub fn settle_stranded(&mut self, key: PeerKey, now: Instant, wanted: impl Fn(u32) -> bool) -> bool {
        let Some(mine) = self.offered.get_mut(&key) else { return false };
        let before = mine.passing.len() + mine.kept.len();
        mine.kept.retain(|&p| wanted(p));
        let (stranded, kept) = (&mut self.stranded, &mut mine.kept);
        mine.passing.retain(|&(p, since)| {
            let needed = wanted(p);
            let held_too_long = now.saturating_duration_since(since) >= PASS_WITHIN;
            if needed && held_too_long {
                stranded.set(p as usize, true);
                kept.push(p);
            }
            needed && !held_too_long
        });
        mine.passing.len() + mine.kept.len() < before
    }

    /// Whether `piece` is stranded (its one holder kept it) and not announced again since.
    pub fn is_stranded(&self, piece: u32) -> bool {
        self.stranded.get(piece as usize).is_some_and(|b| *b)
    }

    /// How many pieces are stranded now.
    pub fn stranded_count(&self) -> u32 {
        self.stranded.count_ones() as u32
    }

    /// The super-seeded peers, for [`SuperSeed::settle_stranded`] on each now and then.
    pub fn peers(&self) -> Vec<PeerKey> {
        self.offered.keys().copied().collect()
    }

    /// The peer is not interested (at `now`) in what it was offered: if its last offer is
    /// [`DECLINE_AFTER`] old, those pieces are not offered to it again, and it may be offered
    /// others. Returns whether it declined any.
    pub fn declined(&mut self, key: PeerKey, now: Instant) -> bool {
        let n = self.offers.len();
        let Some(mine) = self.offered.get_mut(&key) else { return false };
        let old = mine.since.is_some_and(|t| now.saturating_duration_since(t) >= DECLINE_AFTER);
        if mine.open.is_empty() || !old {
            return false;
        }
        let declined = mine.declined.get_or_insert_with(|| bitvec![u8, Msb0; 0; n]);
        for p in mine.open.drain(..) {
            declined.set(p as usize, true);
            self.offers[p as usize] -= 1;
        }
        true
    }

    /// The peer left: its offers are free for others.
    pub fn forget(&mut self, key: PeerKey) {
        for p in self.offered.remove(&key).unwrap_or_default().open {
            self.offers[p as usize] -= 1;
        }
    }

    /// New offers for a super-seeded peer, up to [`OFFERS_PER_PEER`] unsettled (open, to pass
    /// on or kept): pieces it lacks (`theirs`), fewest holders plus open offers first
    /// (`availability` counts connected peers), ties broken at random. Stranded pieces come
    /// first only for a peer we are `serving` (not choking): one we choke cannot fetch them
    /// from us, and would hold the second copy back until our choker turns to it. Empty for
    /// other peers or when it lacks nothing more.
    pub fn top_up(
        &mut self,
        key: PeerKey,
        theirs: &BitSlice<u8, Msb0>,
        availability: &[u32],
        serving: bool,
        now: Instant,
        rng: &mut impl Rng,
    ) -> Vec<u32> {
        let Some(mut mine) = self.offered.remove(&key) else { return Vec::new() };
        let mut new = Vec::new();
        while mine.open.len() + mine.passing.len() + mine.kept.len() < OFFERS_PER_PEER {
            let Some(piece) = self.rarest(theirs, &mine, availability, serving, rng) else { break };
            self.offers[piece as usize] += 1;
            mine.open.push(piece);
            mine.since = Some(now);
            new.push(piece);
        }
        self.offered.insert(key, mine);
        new
    }

    /// The piece with the lowest holders plus offers that the peer lacks, was not offered and
    /// did not decline, scanning from a random start (the tie-break) and stopping at the first
    /// of the best kind: a stranded piece not offered again yet (its one holder not counted;
    /// only when `serving`), else one nobody holds.
    fn rarest(
        &self,
        theirs: &BitSlice<u8, Msb0>,
        mine: &Offers,
        availability: &[u32],
        serving: bool,
        rng: &mut impl Rng,
    ) -> Option<u32> {
        let n = self.offers.len();
        if n == 0 {
            return None;
        }
        let start = rng.gen_range(0..n);
        // (holders plus offers, not stranded): a stranded piece wins a tie.
        let mut best: Option<((u32, bool), usize)> = None;
        for i in (start..n).chain(0..start) {
            let declined = mine.declined.as_ref().is_some_and(|d| d[i]);
            if declined || theirs.get(i).is_some_and(|b| *b) || mine.open.contains(&(i as u32)) {
                continue;
            }
            // Not to a peer that kept a piece itself: it would keep this one too.
            let stranded = serving && mine.kept.is_empty() && self.stranded[i];
            let held = if stranded { 0 } else { availability.get(i).copied().unwrap_or(0) };
            let weight = (held.saturating_add(self.offers[i]), !stranded);
            if best.is_none_or(|(w, _)| weight < w) {
                best = Some((weight, i));
                if weight == (0, false) {
                    break;
                }
            }
        }
        best.map(|(_, i)| i as u32)
    }
}

#[cfg(test)]
mod tests;
