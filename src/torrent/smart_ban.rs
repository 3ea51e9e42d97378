//! Smart ban: after a piece fails its hash, find the peer that lied, not every peer that
//! helped.
//!
//! A failed piece tells us one of its blocks was wrong, not which. So, as libtorrent's
//! smart-ban plugin does, we remember a digest of every block of the failed piece and who
//! sent it. When the piece later passes, each remembered block is compared with the good
//! one: a sender whose block differed lied and is banned; senders whose blocks matched are
//! left alone. When every block of a failed piece came from one peer, that peer is the liar
//! at once. Honest peers are never banned for sharing a piece with a liar.
//!
//! A plain struct, no I/O: the torrent task feeds it digests computed off the async threads.
//! Memory is bounded: at most [`MAX_PIECES`] failed pieces are remembered (the oldest is
//! forgotten first) and at most [`MAX_RECORDS_PER_PIECE`] block records per piece.
use crate::types::PeerAddr;
use std::collections::{HashMap, VecDeque};

/// A digest of one block's bytes (SHA-1: a liar cannot make a wrong block look right).
pub type Digest = [u8; 20];

/// Failed pieces remembered at once.
pub const MAX_PIECES: usize = 64;
/// Block records kept for one piece (several failures of the same piece add up).
pub const MAX_RECORDS_PER_PIECE: usize = 4096;

#[derive(Debug, Clone)]
struct Record {
    block: usize,
    from: PeerAddr,
    digest: Digest,
}

#[derive(Debug, Default)]
pub struct SmartBan {
    records: HashMap<u32, Vec<Record>>,
    /// Remembered pieces, oldest first.
    order: VecDeque<u32>,
}

impl SmartBan {
    pub fn new() -> SmartBan {
        SmartBan::default()
    }

    /// Whether the piece failed before and is waiting for a good copy to judge its senders.
    pub fn is_suspect(&self, piece: u32) -> bool {
        self.records.contains_key(&piece)
    }

    /// A piece failed. `blocks[i]` is who sent block `i` and the digest of what it sent.
    /// Returns the peers to ban now: the sender, when one peer sent every block.
    pub fn piece_failed(&mut self, piece: u32, blocks: &[(PeerAddr, Digest)]) -> Vec<PeerAddr> {
        let Some((first, _)) = blocks.first() else { return Vec::new() };
        if blocks.iter().all(|(from, _)| from == first) {
            return vec![*first];
        }
        if !self.records.contains_key(&piece) {
            if self.order.len() >= MAX_PIECES {
                if let Some(old) = self.order.pop_front() {
                    self.records.remove(&old);
                }
            }
            self.order.push_back(piece);
        }
        let records = self.records.entry(piece).or_default();
        for (block, (from, digest)) in blocks.iter().enumerate() {
            if records.len() >= MAX_RECORDS_PER_PIECE {
                break;
            }
            let known = records.iter().any(|r| r.block == block && r.from == *from && r.digest == *digest);
            if !known {
                records.push(Record { block, from: *from, digest: *digest });
            }
        }
        Vec::new()
    }

    /// A piece that failed before has now passed with blocks whose digests are `good`.
    /// Returns every peer that once sent a block different from the good one.
    pub fn piece_passed(&mut self, piece: u32, good: &[Digest]) -> Vec<PeerAddr> {
        let Some(records) = self.records.remove(&piece) else { return Vec::new() };
        self.order.retain(|p| *p != piece);
        let mut liars: Vec<PeerAddr> = Vec::new();
        for r in records {
            let lied = good.get(r.block).is_some_and(|g| *g != r.digest);
            if lied && !liars.contains(&r.from) {
                liars.push(r.from);
            }
        }
        liars
    }
}

/// The SHA-1 of each `block_size` slice of a piece (the last may be shorter).
pub fn block_digests(piece: &[u8], block_size: usize) -> Vec<Digest> {
    use sha1::{Digest as _, Sha1};
    piece.chunks(block_size.max(1)).map(|c| Sha1::digest(c).into()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerAddr {
        PeerAddr::Tcp(std::net::SocketAddr::from(([127, 0, 0, n], 6881)))
    }

    fn d(x: u8) -> Digest {
        [x; 20]
    }

    #[test]
    fn a_lone_sender_of_a_failed_piece_is_the_liar() {
        let mut s = SmartBan::new();
        let banned = s.piece_failed(3, &[(peer(1), d(1)), (peer(1), d(2))]);
        assert_eq!(banned, vec![peer(1)]);
        assert!(!s.is_suspect(3), "nothing left to judge");
    }

    #[test]
    fn only_the_sender_of_the_differing_block_is_banned() {
        let mut s = SmartBan::new();
        // Honest peer 1 sent block 0 (good digest 10), liar 2 sent block 1 (bad digest 99).
        assert!(s.piece_failed(7, &[(peer(1), d(10)), (peer(2), d(99))]).is_empty());
        assert!(s.is_suspect(7));
        // The piece passes later: block 0 is still 10, block 1 is really 11.
        let banned = s.piece_passed(7, &[d(10), d(11)]);
        assert_eq!(banned, vec![peer(2)]);
        assert!(!s.is_suspect(7));
    }

    #[test]
    fn repeated_failures_accumulate_and_every_liar_is_found() {
        let mut s = SmartBan::new();
        s.piece_failed(1, &[(peer(1), d(10)), (peer(2), d(98))]);
        s.piece_failed(1, &[(peer(3), d(97)), (peer(1), d(11))]);
        let mut banned = s.piece_passed(1, &[d(10), d(11)]);
        banned.sort();
        assert_eq!(banned, vec![peer(2), peer(3)]);
    }

    #[test]
    fn memory_is_bounded_oldest_piece_forgotten() {
        let mut s = SmartBan::new();
        for piece in 0..(MAX_PIECES as u32 + 10) {
            s.piece_failed(piece, &[(peer(1), d(1)), (peer(2), d(2))]);
        }
        assert_eq!(s.records.len(), MAX_PIECES);
        assert!(!s.is_suspect(0));
        assert!(s.is_suspect(MAX_PIECES as u32 + 9));
        let big: Vec<_> = (0..MAX_RECORDS_PER_PIECE + 100).map(|i| (peer((i % 2) as u8), d(i as u8))).collect();
        s.piece_failed(9999, &big);
        assert!(s.records[&9999].len() <= MAX_RECORDS_PER_PIECE);
    }

    #[test]
    fn digests_split_a_piece_into_blocks() {
        let piece = vec![7u8; 40_000];
        let ds = block_digests(&piece, 16_384);
        assert_eq!(ds.len(), 3);
        assert_eq!(ds[0], ds[1]);
        assert_ne!(ds[1], ds[2], "the last block is shorter");
    }
}
