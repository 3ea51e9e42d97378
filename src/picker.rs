//! The piece picker: which block to ask of which peer.
//!
//! A plain synchronous struct owned by the torrent task. It counts availability from
//! bitfields and haves, picks rarest first with a random tie-break (the first few pieces at
//! random, so a new peer soon has something to trade), finishes partly downloaded pieces
//! before starting new ones (but asks a peer first for what only it has), and in endgame
//! hands out blocks already requested elsewhere so a download never hangs on one slow peer
//! at 99.9 % (before endgame, only blocks overdue at a much slower peer). A quarter of the
//! bound on pieces in progress is kept for pieces at most two connected peers have: with every
//! slot taken by pieces trickling in from slow peers, a leecher could not start what only the
//! seeder had (or the seeder and a free rider), and the swarm waited (`scripts/swarm-sim`).
//!
//! Invariants:
//! - a block is `Missing`, `Requested` by one or more peers, or `Received`;
//! - a piece is in `partial` from its first request until it is verified or failed;
//! - a block is only handed to a peer whose bitfield has its piece;
//! - `availability[i]` is the number of connected peers that have piece `i`.
use bitvec::prelude::*;
use rand::Rng;
use std::collections::HashMap;

use crate::types::Geometry;
use crate::types::{BlockRef, PeerKey};

#[derive(Clone, Debug, PartialEq, Eq)]
enum BlockState {
    Missing,
    /// Asked of these peers (more than one only in endgame).
    Requested(Vec<PeerKey>),
    Received,
}

#[derive(Debug)]
struct Partial {
    blocks: Vec<BlockState>,
    received: u32,
    /// Blocks in state `Missing`: pieces with none left are skipped without a scan.
    missing: u32,
}

/// Pieces picked at random before rarest first takes over.
const RANDOM_FIRST_PIECES: usize = 4;
/// Held by at most this many connected peers, a piece is unique to the peer that has it.
const UNIQUE: u32 = 1;
/// Held by at most this many, a piece may start in the quarter of the bound kept for such.
const RESERVE_HOLDERS: u32 = 2;
/// In endgame, how many peers may hold a request for the same block.
const ENDGAME_DUPLICATES: usize = 2;

/// What receiving a block did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Other peers that were asked for the same block (send them `cancel`).
    pub cancel: Vec<PeerKey>,
    /// The piece now has every block and is ready to be verified.
    pub piece_complete: bool,
}

pub struct Picker {
    geometry: Geometry,
    have: BitVec<u8, Msb0>,
    /// Pieces we do not want (BEP 53 selection); never picked.
    wanted: BitVec<u8, Msb0>,
    availability: Vec<u32>,
    partial: HashMap<u32, Partial>,
    /// Most pieces in progress at once (each needs an assembly buffer until verified).
    max_partial: usize,
}

impl Picker {
    pub fn new(geometry: Geometry, have: BitVec<u8, Msb0>) -> Picker {
        let n = have.len();
        Picker {
            geometry,
            have,
            wanted: bitvec![u8, Msb0; 1; n],
            availability: vec![0; n],
            partial: HashMap::new(),
            max_partial: usize::MAX,
        }
    }

    /// Bounds the pieces in progress (started and not yet verified or failed); at least one.
    pub fn set_max_partial(&mut self, max: usize) {
        self.max_partial = max.max(1);
    }

    /// Pieces in progress.
    pub fn partial_count(&self) -> usize {
        self.partial.len()
    }

    pub fn piece_count(&self) -> u32 {
        self.have.len() as u32
    }

    pub fn have(&self) -> &BitVec<u8, Msb0> {
        &self.have
    }

    /// How many connected peers have each piece.
    pub fn availability(&self) -> &[u32] {
        &self.availability
    }

    /// Whether some block of `piece` was picked and the piece is not verified yet.
    pub fn is_started(&self, piece: u32) -> bool {
        self.partial.contains_key(&piece)
    }

    pub fn has_piece(&self, piece: u32) -> bool {
        self.have.get(piece as usize).is_some_and(|b| *b)
    }

    pub fn is_complete(&self) -> bool {
        self.have.iter().zip(self.wanted.iter()).all(|(h, w)| *h || !*w)
    }

    /// Size of a piece in range (the caller's index comes from a bitfield of the torrent).
    pub fn piece_size(&self, piece: u32) -> u32 {
        self.geometry.piece_size(piece).unwrap_or(0)
    }

    fn block_count(&self, piece: u32) -> u32 {
        self.geometry.blocks_in(piece)
    }

    fn block_ref(&self, piece: u32, block: u32) -> BlockRef {
        self.geometry.block(piece, block)
    }

    /// Pieces we still want that exactly one connected peer has.
    pub fn sole_sourced(&self) -> Vec<u32> {
        (0..self.availability.len())
            .filter(|&i| self.availability[i] == 1 && !self.have[i] && self.wanted[i])
            .map(|i| i as u32)
            .collect()
    }

    /// Whether a peer with this bitfield has anything we still want.
    pub fn is_interesting(&self, theirs: &BitSlice<u8, Msb0>) -> bool {
        theirs.iter_ones().any(|i| i < self.have.len() && !self.have[i] && self.wanted[i])
    }

    /// Restricts the download to these pieces (BEP 53 `so`).
    pub fn set_wanted(&mut self, wanted: BitVec<u8, Msb0>) {
        assert_eq!(wanted.len(), self.have.len());
        self.wanted = wanted;
    }

    pub fn peer_has(&mut self, piece: u32) {
        if let Some(a) = self.availability.get_mut(piece as usize) {
            *a += 1;
        }
    }

    pub fn peer_bitfield(&mut self, bits: &BitSlice<u8, Msb0>) {
        for i in bits.iter_ones() {
            self.peer_has(i as u32);
        }
    }

    /// A peer left: forget its pieces and give its requests back.
    pub fn peer_gone(&mut self, key: PeerKey, bits: &BitSlice<u8, Msb0>) {
        for i in bits.iter_ones() {
            if let Some(a) = self.availability.get_mut(i) {
                *a = a.saturating_sub(1);
            }
        }
        self.release_all(key);
    }

    /// Gives back every request of a peer (it choked us, timed out or left).
    pub fn release_all(&mut self, key: PeerKey) {
        for p in self.partial.values_mut() {
            for b in &mut p.blocks {
                if let BlockState::Requested(peers) = b {
                    peers.retain(|k| *k != key);
                    if peers.is_empty() {
                        *b = BlockState::Missing;
                        p.missing += 1;
                    }
                }
            }
        }
    }

    /// Gives back one request of a peer (timeout, reject).
    pub fn release(&mut self, key: PeerKey, block: BlockRef) {
        let bs = self.geometry.block_size();
        if let Some(BlockState::Requested(peers)) =
            self.partial.get_mut(&block.piece).and_then(|p| p.blocks.get_mut((block.begin / bs) as usize))
        {
            peers.retain(|k| *k != key);
            if peers.is_empty() {
                let p = self.partial.get_mut(&block.piece).expect("piece is partial");
                p.blocks[(block.begin / bs) as usize] = BlockState::Missing;
                p.missing += 1;
            }
        }
    }

    /// Picks up to `max` blocks for a peer with bitfield `theirs`, marks them requested by
    /// `key` and returns them. `rng` breaks ties.
    pub fn pick(&mut self, key: PeerKey, theirs: &BitSlice<u8, Msb0>, max: usize, rng: &mut impl Rng) -> Vec<BlockRef> {
        self.pick_deferring(key, theirs, max, rng, &[])
    }

    /// [`Picker::pick`], but in endgame a block is left to `better` peers (better-scored ones
    /// that could take requests now, with their bitfields) while one of them that has its
    /// piece is not yet asked for it: the scarce last blocks go to the best-scored sources.
    pub fn pick_deferring(
        &mut self,
        key: PeerKey,
        theirs: &BitSlice<u8, Msb0>,
        max: usize,
        rng: &mut impl Rng,
        better: &[(PeerKey, &BitSlice<u8, Msb0>)],
    ) -> Vec<BlockRef> {
        let mut out = Vec::new();
        if max == 0 {
            return out;
        }
        // What only this peer has comes first, started or not: nobody else can give it, and a
        // seeder's unique pieces are what a young swarm waits for. Continuing the partial pieces
        // first, a leecher unchoked by the seeder spent the seeder's upload on pieces other peers
        // had (scripts/swarm-sim: three copies out before the last piece had one).
        self.pick_from_partial(key, theirs, max, UNIQUE, &mut out);
        self.start_new_pieces(key, theirs, max, UNIQUE, rng, &mut out);
        self.pick_from_partial(key, theirs, max, u32::MAX, &mut out);
        self.start_new_pieces(key, theirs, max, u32::MAX, rng, &mut out);
        if out.len() < max {
            self.pick_endgame(key, theirs, max, better, &mut out);
        }
        out
    }

    /// Partial pieces the peer has and at most `holders` connected peers have, the most
    /// advanced first.
    fn pick_from_partial(
        &mut self,
        key: PeerKey,
        theirs: &BitSlice<u8, Msb0>,
        max: usize,
        holders: u32,
        out: &mut Vec<BlockRef>,
    ) {
        if out.len() >= max {
            return;
        }
        let pieces = self.partial_pieces(theirs, |i, p| p.missing > 0 && self.availability[i as usize] <= holders);
        for piece in pieces {
            if out.len() >= max {
                break;
            }
            self.pick_from_piece(key, piece, max, out);
        }
    }

    /// The partial pieces the peer has that `keep` takes, the most advanced first (they are
    /// verified and announced soonest), then by index. Missing blocks, endgame duplicates and
    /// overdue blocks are all picked in this order.
    fn partial_pieces(&self, theirs: &BitSlice<u8, Msb0>, keep: impl Fn(u32, &Partial) -> bool) -> Vec<u32> {
        let mut pieces: Vec<(u32, u32)> = self
            .partial
            .iter()
            .filter(|(i, p)| theirs.get(**i as usize).is_some_and(|b| *b) && keep(**i, p))
            .map(|(i, p)| (*i, p.received))
            .collect();
        pieces.sort_by_key(|(i, received)| (std::cmp::Reverse(*received), *i));
        pieces.into_iter().map(|(i, _)| i).collect()
    }

    /// Starts new pieces (held by at most `holders` connected peers) until `out` has `max`
    /// blocks or the bound on pieces in progress is reached (three quarters of it for a piece
    /// more than `RESERVE_HOLDERS` connected peers hold).
    fn start_new_pieces(
        &mut self,
        key: PeerKey,
        theirs: &BitSlice<u8, Msb0>,
        max: usize,
        holders: u32,
        rng: &mut impl Rng,
        out: &mut Vec<BlockRef>,
    ) {
        let shared_bound = self.max_partial - self.max_partial / 4;
        while out.len() < max && self.partial.len() < self.max_partial {
            let holders = if self.partial.len() >= shared_bound { holders.min(RESERVE_HOLDERS) } else { holders };
            let Some(piece) = self.choose_new_piece(theirs, holders, rng) else { break };
            let count = self.block_count(piece);
            let blocks = vec![BlockState::Missing; count as usize];
            self.partial.insert(piece, Partial { blocks, received: 0, missing: count });
            self.pick_from_piece(key, piece, max, out);
        }
    }

    fn pick_from_piece(&mut self, key: PeerKey, piece: u32, max: usize, out: &mut Vec<BlockRef>) {
        let count = self.block_count(piece);
        for b in 0..count {
            if out.len() >= max {
                return;
            }
            let p = self.partial.get_mut(&piece).expect("piece is partial");
            if p.missing == 0 {
                return;
            }
            let state = &mut p.blocks[b as usize];
            if *state == BlockState::Missing {
                *state = BlockState::Requested(vec![key]);
                p.missing -= 1;
                out.push(self.block_ref(piece, b));
            }
        }
    }

    /// A piece nobody has started, held by at most `holders` connected peers: random among
    /// the first few, else rarest first, ties broken by starting the scan at a random position.
    fn choose_new_piece(&self, theirs: &BitSlice<u8, Msb0>, holders: u32, rng: &mut impl Rng) -> Option<u32> {
        let n = self.have.len();
        // Every piece held by more peers than `holders` (several seeders): nothing to scan for.
        // Run on every top-up, the scan below cost more than this one pass, which vectorises.
        if n == 0 || self.availability.iter().fold(u32::MAX, |m, &a| m.min(a)) > holders {
            return None;
        }
        // The map lookup last: hashing each index first cost more than the rest of the scan.
        let eligible = |i: usize| {
            self.availability[i] <= holders
                && theirs.get(i).is_some_and(|b| *b)
                && !self.have[i]
                && self.wanted[i]
                && !self.partial.contains_key(&(i as u32))
        };
        let start = rng.gen_range(0..n);
        let random_phase = self.have.count_ones() + self.partial.len() < RANDOM_FIRST_PIECES;
        let mut best: Option<(u32, usize)> = None;
        for i in (start..n).chain(0..start) {
            if !eligible(i) {
                continue;
            }
            if random_phase {
                return Some(i as u32);
            }
            let a = self.availability[i];
            if best.is_none_or(|(ba, _)| a < ba) {
                best = Some((a, i));
                if a <= 1 {
                    break;
                }
            }
        }
        best.map(|(_, i)| i as u32)
    }

    /// Endgame: nothing is missing that this peer could give, so ask it for blocks already
    /// requested from others (never twice from the same peer, at most ENDGAME_DUPLICATES),
    /// the most advanced pieces first.
    fn pick_endgame(
        &mut self,
        key: PeerKey,
        theirs: &BitSlice<u8, Msb0>,
        max: usize,
        better: &[(PeerKey, &BitSlice<u8, Msb0>)],
        out: &mut Vec<BlockRef>,
    ) {
        let any_unstarted =
            (0..self.have.len()).any(|i| !self.have[i] && self.wanted[i] && !self.partial.contains_key(&(i as u32)));
        if any_unstarted {
            return;
        }
        let pieces = self.partial_pieces(theirs, |_, _| true);
        self.ask_again(key, pieces, max, out, |askers, block| {
            // Left to a better peer that has the piece and was not asked yet.
            !better.iter().any(|(r, has)| has.get(block.piece as usize).is_some_and(|b| *b) && !askers.contains(r))
        });
    }

    /// Asks `key` for blocks of `pieces`, in that order, that were already asked of others
    /// and that `again(askers, block)` allows: never twice of the same peer, at most
    /// ENDGAME_DUPLICATES askers a block, until `out` has `max`. Endgame and overdue blocks.
    fn ask_again(
        &mut self,
        key: PeerKey,
        pieces: Vec<u32>,
        max: usize,
        out: &mut Vec<BlockRef>,
        again: impl Fn(&[PeerKey], BlockRef) -> bool,
    ) {
        for piece in pieces {
            let partial = self.partial.get_mut(&piece).expect("piece is partial");
            for (b, state) in partial.blocks.iter_mut().enumerate() {
                if out.len() >= max {
                    return;
                }
                let block = self.geometry.block(piece, b as u32);
                if let BlockState::Requested(askers) = state {
                    if askers.len() < ENDGAME_DUPLICATES && !askers.contains(&key) && again(askers, block) {
                        askers.push(key);
                        out.push(block);
                    }
                }
            }
        }
    }

    /// Records a block from `key`. `None` when the block was not wanted (not requested from
    /// `key`, already received, out of range): the caller drops the data.
    pub fn block_received(&mut self, key: PeerKey, block: BlockRef) -> Option<Received> {
        self.take_block(key, block, false)
    }

    /// Records a block whose request to `key` we withdrew (it timed out, a choke voided it,
    /// or endgame cancelled it) and that came after all: taken while the block is still
    /// missing or asked of others (they get `cancel`), so bytes a slow peer delivered late
    /// are not thrown away. `None` when it is no longer wanted.
    pub fn late_block_received(&mut self, key: PeerKey, block: BlockRef) -> Option<Received> {
        self.take_block(key, block, true)
    }

    fn take_block(&mut self, key: PeerKey, block: BlockRef, late: bool) -> Option<Received> {
        if !block.begin.is_multiple_of(self.geometry.block_size()) || block.piece >= self.piece_count() {
            return None;
        }
        let idx = (block.begin / self.geometry.block_size()) as usize;
        let expected = self.block_ref(block.piece, idx as u32);
        if expected != block {
            return None;
        }
        let partial = self.partial.get_mut(&block.piece)?;
        let state = partial.blocks.get_mut(idx)?;
        let cancel = match state {
            BlockState::Requested(peers) if late || peers.contains(&key) => {
                peers.iter().copied().filter(|k| *k != key).collect()
            }
            BlockState::Missing if late => {
                partial.missing -= 1;
                Vec::new()
            }
            // Unrequested (or its request was given back): whoever sends it, it is not taken.
            _ => return None,
        };
        *state = BlockState::Received;
        partial.received += 1;
        let piece_complete = partial.received as usize == partial.blocks.len();
        Some(Received { cancel, piece_complete })
    }

    /// The piece's hash matched and it is on disk.
    pub fn piece_verified(&mut self, piece: u32) {
        self.partial.remove(&piece);
        self.have.set(piece as usize, true);
    }

    /// The piece's hash failed: every block is wanted again.
    pub fn piece_failed(&mut self, piece: u32) {
        self.partial.remove(&piece);
    }

    /// Pieces we still want, for the "left" figure.
    pub fn bytes_left(&self) -> u64 {
        (0..self.piece_count())
            .filter(|i| !self.have[*i as usize] && self.wanted[*i as usize])
            .map(|i| self.piece_size(i) as u64)
            .sum()
    }

    /// Rarity of the pieces a peer has that we still need: sum of 1/availability.
    pub fn rarity_value(&self, theirs: &BitSlice<u8, Msb0>) -> f64 {
        theirs
            .iter_ones()
            .filter(|i| *i < self.have.len() && !self.have[*i] && self.wanted[*i])
            .map(|i| 1.0 / self.availability[i].max(1) as f64)
            .sum()
    }

    /// Number of blocks of `piece` still to be received (for diagnostics and tests).
    pub fn blocks_outstanding(&self) -> usize {
        self.partial.values().map(|p| p.blocks.len() - p.received as usize).sum()
    }
}

mod overdue;
#[cfg(test)]
mod tests;
