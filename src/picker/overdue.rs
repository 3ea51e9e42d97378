//! Blocks overdue at a slow peer, asked of a faster one too (before endgame): what a peer is
//! given when it has nothing new to be asked for. Which asks are overdue is the caller's to
//! say (`torrent/task/requests.rs` knows when each was made and each peer's rate).
use super::{BlockState, Picker, ENDGAME_DUPLICATES};
use crate::types::{BlockRef, PeerKey};
use bitvec::prelude::*;

impl Picker {
    /// Blocks of pieces the peer has that were asked of others and are overdue at every peer
    /// asked (`overdue(asked, block)`), at most ENDGAME_DUPLICATES askers each: a slow peer's
    /// queue does not keep a piece from a faster peer that has it too. What comes first is
    /// taken, the other ask is cancelled.
    pub fn pick_overdue(
        &mut self,
        key: PeerKey,
        theirs: &BitSlice<u8, Msb0>,
        max: usize,
        overdue: impl Fn(PeerKey, BlockRef) -> bool,
    ) -> Vec<BlockRef> {
        let mut out = Vec::new();
        for piece in self.partial_pieces(theirs, |_, _| true) {
            for b in 0..self.block_count(piece) {
                if out.len() >= max {
                    return out;
                }
                let block = self.block_ref(piece, b);
                let state = &mut self.partial.get_mut(&piece).expect("piece is partial").blocks[b as usize];
                if let BlockState::Requested(peers) = state {
                    if peers.len() < ENDGAME_DUPLICATES
                        && !peers.contains(&key)
                        && peers.iter().all(|q| overdue(*q, block))
                    {
                        peers.push(key);
                        out.push(block);
                    }
                }
            }
        }
        out
    }
}
