//! BEP 6 fast extension: the allowed-fast set and the bounds on what a peer may send with it.
//!
//! The allowed-fast set is the handful of pieces a peer may request from us even while we
//! choke it, so a newcomer with nothing to trade can get its first pieces. It is derived from
//! the peer's IPv4 /24 and the info-hash with the BEP's canonical algorithm, so a peer cannot
//! obtain more sets by dialling from more addresses of one network, and both sides can
//! compute the same set. The messages themselves are in [`super::message`].
use crate::metainfo::InfoHash;
use sha1::{Digest, Sha1};
use std::net::Ipv4Addr;

/// Pieces in the allowed-fast set we grant each peer (the BEP's example size, as libtorrent).
pub const ALLOWED_FAST_SET: usize = 10;
/// Allowed-fast pieces we remember per peer; more are ignored (a stranger may send any
/// number, and each one would make us willing to request while choked).
pub const MAX_ALLOWED_FAST_KEPT: usize = 32;

/// The BEP 6 allowed-fast set of `k` pieces (fewer when the torrent has fewer) for a peer at
/// `ip` in a torrent of `pieces` pieces, in the order the algorithm yields them.
pub fn allowed_fast_set(ip: Ipv4Addr, info_hash: &InfoHash, pieces: u32, k: usize) -> Vec<u32> {
    let k = k.min(pieces as usize);
    let mut set = Vec::with_capacity(k);
    // Only the /24 counts: more addresses on one network do not earn more pieces.
    let net = u32::from(ip) & 0xffff_ff00;
    let mut x = Vec::with_capacity(24);
    x.extend_from_slice(&net.to_be_bytes());
    x.extend_from_slice(&info_hash.0);
    while set.len() < k {
        let digest = Sha1::digest(&x);
        x.clear();
        x.extend_from_slice(&digest);
        for word in digest.chunks_exact(4) {
            if set.len() >= k {
                break;
            }
            let index = u32::from_be_bytes(word.try_into().expect("chunks of four")) % pieces;
            if !set.contains(&index) {
                set.push(index);
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in BEP 6: 1313 pieces, info-hash 0xaa repeated, peer 80.4.4.200.
    #[test]
    fn matches_the_bep_example() {
        let ip = Ipv4Addr::new(80, 4, 4, 200);
        let hash = InfoHash([0xaa; 20]);
        assert_eq!(allowed_fast_set(ip, &hash, 1313, 7), [1059, 431, 808, 1217, 287, 376, 1188]);
        assert_eq!(allowed_fast_set(ip, &hash, 1313, 9), [1059, 431, 808, 1217, 287, 376, 1188, 353, 508]);
    }

    #[test]
    fn the_whole_slash_24_gets_one_set() {
        let hash = InfoHash([7; 20]);
        let a = allowed_fast_set(Ipv4Addr::new(10, 1, 2, 3), &hash, 5000, ALLOWED_FAST_SET);
        assert_eq!(a, allowed_fast_set(Ipv4Addr::new(10, 1, 2, 250), &hash, 5000, ALLOWED_FAST_SET));
        assert_ne!(a, allowed_fast_set(Ipv4Addr::new(10, 1, 3, 3), &hash, 5000, ALLOWED_FAST_SET));
        assert_eq!(a.len(), ALLOWED_FAST_SET);
    }

    #[test]
    fn a_small_torrent_gives_every_piece_once() {
        let mut set = allowed_fast_set(Ipv4Addr::LOCALHOST, &InfoHash([1; 20]), 3, ALLOWED_FAST_SET);
        set.sort_unstable();
        assert_eq!(set, [0, 1, 2]);
        assert!(allowed_fast_set(Ipv4Addr::LOCALHOST, &InfoHash([1; 20]), 0, ALLOWED_FAST_SET).is_empty());
    }
}
