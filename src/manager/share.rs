//! Proportional share: how an upload limit is split among the peers we unchoke.
//!
//! The choker returns a *slot* for what a peer gives us, not bytes: with the upload split
//! evenly, a peer that sends us 7 MiB/s gets the same per-slot rate back as one that sends
//! 1 MiB/s, so uploading more buys little (`scripts/swarm-sim` measured a rank correlation
//! of about zero between contributors' upload caps and their download rates). So, while we
//! download under an upload limit, each unchoked peer's share of that limit follows what it
//! gives us, as PropShare does (Levin, LaCurts, Spring and Bhattacharjee, "BitTorrent is an
//! Auction", SIGCOMM 2008):
//!
//! - [`EVEN_FRACTION`] of the limit is split evenly among the unchoked peers, so the
//!   optimistic peer and newcomers, which have given us nothing yet, can start;
//! - the rest in proportion to the rate each sends us.
//!
//! Each peer's cap is its share times [`HEADROOM`], so the caps add up to more than the limit:
//! when a peer takes less than its share the others may take a quarter more than theirs, and
//! the session's and the torrent's limits still hold the total. With no limit, while seeding,
//! or when nobody sends us anything, there is nothing to weigh by and no peer gets a cap of its
//! own. `docs/swarm-behaviour.md` has what it changed in `scripts/swarm-sim`.
use crate::types::PeerKey;

/// Part of the limit split evenly among the unchoked peers.
pub const EVEN_FRACTION: f64 = 0.2;
/// A peer may take this much more than its share while the others leave it room.
pub const HEADROOM: f64 = 1.25;
/// The least cap: one 16 KiB block per second.
const MIN_CAP: u64 = 16 * 1024;

/// Each of `unchoked` (a peer and the rate it sends us, bytes per second) with its upload
/// cap in bytes per second; 0 means no cap of its own. `limit` is our upload limit (0: none).
pub fn split(limit: u64, unchoked: &[(PeerKey, f64)]) -> Vec<(PeerKey, u64)> {
    let given: f64 = unchoked.iter().map(|(_, r)| r.max(0.0)).sum();
    if limit == 0 || unchoked.is_empty() || given <= 0.0 {
        return unchoked.iter().map(|(k, _)| (*k, 0)).collect();
    }
    let limit = limit as f64;
    let even = limit * EVEN_FRACTION / unchoked.len() as f64;
    unchoked
        .iter()
        .map(|(k, r)| {
            let share = even + limit * (1.0 - EVEN_FRACTION) * r.max(0.0) / given;
            (*k, ((share * HEADROOM) as u64).max(MIN_CAP))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(caps: &[(PeerKey, u64)], k: PeerKey) -> u64 {
        caps.iter().find(|(p, _)| *p == k).unwrap().1
    }

    #[test]
    fn shares_follow_what_each_peer_gives() {
        // 3 MB/s to split; peer 0 gives 1.8 MB/s, peers 1 and 2 give 0.6 each, 3 nothing.
        let caps = split(3_000_000, &[(0, 1_800_000.0), (1, 600_000.0), (2, 600_000.0), (3, 0.0)]);
        // Even part 150 kB/s each; the proportional 2.4 MB/s as 60 / 20 / 20 / 0 %.
        assert_eq!(cap(&caps, 0), ((150_000.0 + 1_440_000.0) * HEADROOM) as u64);
        assert_eq!(cap(&caps, 1), ((150_000.0 + 480_000.0) * HEADROOM) as u64);
        assert_eq!(cap(&caps, 1), cap(&caps, 2));
        assert_eq!(cap(&caps, 3), (150_000.0 * HEADROOM) as u64, "the optimistic peer gets the even part");
        let shares: u64 = caps.iter().map(|(_, c)| c).sum();
        assert_eq!(shares, (3_000_000.0 * HEADROOM) as u64, "the shares add up to the limit, with headroom");
    }

    #[test]
    fn no_limit_no_senders_or_no_peers_means_no_caps() {
        assert_eq!(split(0, &[(0, 1e6), (1, 0.0)]), vec![(0, 0), (1, 0)]);
        assert_eq!(split(1_000_000, &[(0, 0.0), (1, 0.0)]), vec![(0, 0), (1, 0)], "seeding: nothing to weigh");
        assert!(split(1_000_000, &[]).is_empty());
    }

    #[test]
    fn a_tiny_share_is_still_a_block_a_second() {
        let caps = split(20_000, &[(0, 1e9), (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0)]);
        assert_eq!(cap(&caps, 4), MIN_CAP);
        assert!(cap(&caps, 0) > MIN_CAP);
    }
}
