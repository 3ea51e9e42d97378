//! Blocks overdue at a slow peer, asked of a faster one too (before endgame): what a peer is
//! given when it has nothing new to be asked for. Which asks are overdue is the caller's to
//! say (`torrent/task/requests.rs` knows when each was made and each peer's rate).
use super::Picker;
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
        let pieces = self.partial_pieces(theirs, |_, _| true);
        self.ask_again(key, pieces, max, &mut out, |askers, block| askers.iter().all(|q| overdue(*q, block)));
        out
    }
}
