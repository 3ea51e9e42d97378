//! Which connected peer to let go when a connection slot is needed: a pure decision.
//!
//! A peer is *useless* when it is snubbed (it owes us data and sent none for
//! `snub_timeout`), or when neither side has been interested in the other for
//! [`EvictPolicy::useless_after`] (counted from the later of connecting and the last moment
//! either side was interested). A peer that only sends keep-alives is useless after that
//! time, so it cannot hold a slot forever; two seeds that met are useless to each other.
//!
//! Use: when a slot is needed (an inbound connection finds every slot taken, see
//! [`super::pool::Refusal::Full`]; or a periodic sweep finds peers waiting to be dialled
//! and no slot free, see [`super::Pool::needs_slot`]), build one [`EvictFacts`] per
//! connected peer and call [`pick_victim`]. It returns the least valuable useless peer, or
//! `None` when every peer is useful (then the newcomer waits or is refused). Evict at most
//! one peer per slot needed: the caller closes it and frees its pool slot
//! ([`super::Pool::disconnected`]) before admitting the newcomer.
//!
//! Among useless peers the victim is the one with the lowest score, then the fewest bytes
//! exchanged, then the longest idle, then an inbound one before one we dialled (an attacker
//! holds slots by connecting to us; the peers we dialled came from discovery), then the
//! lowest key, so the choice is deterministic.
use std::cmp::Ordering;
use std::time::{Duration, Instant};

/// What the decision needs to know of one connected peer.
#[derive(Debug, Clone, Copy)]
pub struct EvictFacts<K> {
    pub key: K,
    pub inbound: bool,
    pub connected_since: Instant,
    /// Whether either side is interested in the other now.
    pub interested: bool,
    /// The last time either side was interested (`None`: never). Ignored while `interested`.
    pub last_interested: Option<Instant>,
    pub snubbed: bool,
    /// Bytes exchanged, both directions together.
    pub bytes: u64,
    /// The peer's score (`manager::scoring`).
    pub score: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictPolicy {
    /// Neither side interested for this long makes a peer useless (`useless_peer_timeout`).
    pub useless_after: Duration,
}

impl<K> EvictFacts<K> {
    /// Since when the peer has been idle (no interest either way), if it is.
    fn idle_since(&self) -> Option<Instant> {
        if self.interested {
            return None;
        }
        Some(self.last_interested.map_or(self.connected_since, |t| t.max(self.connected_since)))
    }
}

/// Whether a peer may be evicted to make room.
pub fn is_useless<K>(peer: &EvictFacts<K>, policy: &EvictPolicy, now: Instant) -> bool {
    peer.snubbed || peer.idle_since().is_some_and(|t| now.saturating_duration_since(t) >= policy.useless_after)
}

/// The peer to evict when a slot is needed, or `None` when no peer is useless.
pub fn pick_victim<K: Copy + Ord>(peers: &[EvictFacts<K>], policy: &EvictPolicy, now: Instant) -> Option<K> {
    peers.iter().filter(|p| is_useless(p, policy, now)).min_by(|a, b| less_valuable_first(a, b)).map(|p| p.key)
}

/// Orders `a` before `b` when `a` is the better victim.
fn less_valuable_first<K: Ord>(a: &EvictFacts<K>, b: &EvictFacts<K>) -> Ordering {
    a.score
        .total_cmp(&b.score)
        .then(a.bytes.cmp(&b.bytes))
        .then_with(|| idle_longest_first(a.idle_since(), b.idle_since()))
        .then(b.inbound.cmp(&a.inbound))
        .then(a.key.cmp(&b.key))
}

/// Idle since earlier comes first; a peer not idle at all (snubbed while interested) last.
fn idle_longest_first(a: Option<Instant>, b: Option<Instant>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: EvictPolicy = EvictPolicy { useless_after: Duration::from_secs(60) };

    fn peer(key: u32, t0: Instant) -> EvictFacts<u32> {
        EvictFacts {
            key,
            inbound: false,
            connected_since: t0,
            interested: false,
            last_interested: None,
            snubbed: false,
            bytes: 0,
            score: 0.0,
        }
    }

    #[test]
    fn a_keepalive_only_peer_becomes_useless_after_the_timeout() {
        let t0 = Instant::now();
        let p = peer(1, t0);
        assert!(!is_useless(&p, &POLICY, t0 + Duration::from_secs(59)), "a newcomer has time to get going");
        assert!(is_useless(&p, &POLICY, t0 + Duration::from_secs(60)));
        assert_eq!(pick_victim(&[p], &POLICY, t0 + Duration::from_secs(59)), None);
        assert_eq!(pick_victim(&[p], &POLICY, t0 + Duration::from_secs(60)), Some(1));
    }

    #[test]
    fn interest_either_way_keeps_a_peer() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(600);
        let p = EvictFacts { interested: true, ..peer(1, t0) };
        assert!(!is_useless(&p, &POLICY, later));
        // Interest that ended 30 s ago: idle counts from then, not from connecting.
        let q = EvictFacts { last_interested: Some(later - Duration::from_secs(30)), ..peer(2, t0) };
        assert!(!is_useless(&q, &POLICY, later));
        assert!(is_useless(&q, &POLICY, later + Duration::from_secs(30)));
    }

    #[test]
    fn a_snubbed_peer_is_useless_even_while_interested() {
        let t0 = Instant::now();
        let p = EvictFacts { interested: true, snubbed: true, ..peer(1, t0) };
        assert_eq!(pick_victim(&[p], &POLICY, t0), Some(1));
    }

    #[test]
    fn the_least_valuable_useless_peer_goes() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(300);
        let useful = EvictFacts { interested: true, score: -5.0, ..peer(1, t0) };
        let scored = EvictFacts { score: 0.5, ..peer(2, t0) };
        let busy = EvictFacts { bytes: 1 << 20, ..peer(3, t0) };
        let idle = peer(4, t0);
        let peers = [useful, scored, busy, idle];
        assert_eq!(pick_victim(&peers, &POLICY, now), Some(4), "lowest score, then fewest bytes");
        assert_eq!(pick_victim(&peers[..3], &POLICY, now), Some(3));
        assert_eq!(pick_victim(&peers[..2], &POLICY, now), Some(2));
        assert_eq!(pick_victim(&peers[..1], &POLICY, now), None);
    }

    #[test]
    fn ties_go_to_the_longest_idle_then_inbound_then_key() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(300);
        let recent = EvictFacts { last_interested: Some(t0 + Duration::from_secs(100)), ..peer(1, t0) };
        let old = EvictFacts { last_interested: Some(t0 + Duration::from_secs(10)), ..peer(2, t0) };
        assert_eq!(pick_victim(&[recent, old], &POLICY, now), Some(2));
        let inbound = EvictFacts { inbound: true, ..peer(3, t0) };
        let outbound = peer(4, t0);
        assert_eq!(pick_victim(&[outbound, inbound], &POLICY, now), Some(3));
        assert_eq!(pick_victim(&[peer(6, t0), peer(5, t0)], &POLICY, now), Some(5));
    }
}
