//! The relays a private node may listen through: which peers are kept as candidates, and in
//! what order they are tried.
//!
//! Any peer whose identify lists the hop protocol offers itself. The list used to keep the
//! first 16 to offer until a reservation on one failed, so strangers who got there first,
//! from one address, held every place for good, and relays met later were never tried. Now:
//! - **bootstrap peers come first**: the user chose them. One is always taken (pushing out
//!   the newest stranger when full) and tried before any other;
//! - **at most [`PER_IP`] strangers from one IP address** (an IPv6 address counts as its
//!   /64), so filling the list takes [`MAX_CANDIDATES`] / [`PER_IP`] addresses;
//! - **when the list is full, a newcomer takes the place of the oldest stranger we are not
//!   connected to** (a relay we hold a reservation on is connected), so relays met later
//!   are tried once earlier ones have gone, and strangers keep a place only by staying;
//! - a relay whose reservation failed or ended is forgotten, bootstrap peer or not.
use super::super::book::host;
use libp2p::{Multiaddr, PeerId};
use std::collections::HashSet;

/// Relay-capable peers remembered.
pub(super) const MAX_CANDIDATES: usize = 16;
/// Strangers (not bootstrap peers) remembered from one IP address or IPv6 /64.
pub(super) const PER_IP: usize = 2;

/// The candidates, bootstrap peers first, then strangers in the order they came.
#[derive(Default)]
pub(super) struct RelayCandidates {
    chosen: HashSet<PeerId>,
    list: Vec<(PeerId, Multiaddr)>,
}

impl RelayCandidates {
    /// The user's bootstrap peers: taken first whenever they offer.
    pub(super) fn choose(&mut self, peer: PeerId) {
        self.chosen.insert(peer);
    }

    pub(super) fn contains(&self, peer: &PeerId) -> bool {
        self.list.iter().any(|(p, _)| p == peer)
    }

    /// `peer`, reached at `addr`, speaks the hop protocol; `connected` tells which peers we
    /// are connected to now. True if it is now a candidate.
    pub(super) fn offer(&mut self, peer: PeerId, addr: Multiaddr, connected: impl Fn(&PeerId) -> bool) -> bool {
        if self.contains(&peer) {
            return false;
        }
        let stranger = |p: &PeerId| !self.chosen.contains(p);
        let gone = self.list.iter().position(|(p, _)| stranger(p) && !connected(p));
        if self.chosen.contains(&peer) {
            if self.list.len() >= MAX_CANDIDATES {
                let Some(out) = gone.or_else(|| self.list.iter().rposition(|(p, _)| stranger(p))) else {
                    return false;
                };
                self.list.remove(out);
            }
            let first_stranger = self.list.iter().position(|(p, _)| stranger(p)).unwrap_or(self.list.len());
            self.list.insert(first_stranger, (peer, addr));
            return true;
        }
        let key = host(&addr);
        let same_ip = self.list.iter().filter(|(p, a)| stranger(p) && host(a) == key).count();
        if key.is_some() && same_ip >= PER_IP {
            return false;
        }
        if self.list.len() >= MAX_CANDIDATES {
            let Some(out) = gone else { return false };
            self.list.remove(out);
        }
        self.list.push((peer, addr));
        true
    }

    /// Forgets `peer` (its reservation failed or ended).
    pub(super) fn forget(&mut self, peer: &PeerId) {
        self.list.retain(|(p, _)| p != peer);
    }

    /// Up to `n` candidates not in `held`, best first.
    pub(super) fn best(&self, n: usize, held: &[PeerId]) -> Vec<(PeerId, Multiaddr)> {
        self.list.iter().filter(|(p, _)| !held.contains(p)).take(n).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> Multiaddr {
        let proto = if ip.contains(':') { "ip6" } else { "ip4" };
        format!("/{proto}/{ip}/tcp/4001").parse().unwrap()
    }

    /// Every peer connected, as when the list fills.
    fn all(_: &PeerId) -> bool {
        true
    }

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn strangers_from_one_address_take_two_places() {
        let mut relays = RelayCandidates::default();
        let sybils = peers(20);
        let taken = sybils.iter().filter(|p| relays.offer(**p, at("203.0.113.7"), all)).count();
        assert_eq!(taken, PER_IP);
        let v6 = peers(3);
        assert!(relays.offer(v6[0], at("2001:db8:1:2::1"), all));
        assert!(relays.offer(v6[1], at("2001:db8:1:2:ffff::2"), all));
        assert!(!relays.offer(v6[2], at("2001:db8:1:2::3"), all), "one /64 is one address");
        let honest = PeerId::random();
        assert!(relays.offer(honest, at("198.51.100.1"), all));
        let best: Vec<PeerId> = relays.best(MAX_CANDIDATES, &[]).into_iter().map(|(p, _)| p).collect();
        assert_eq!(best, [sybils[0], sybils[1], v6[0], v6[1], honest], "strangers in the order they came");
    }

    #[test]
    fn a_bootstrap_peer_comes_first_and_pushes_out_the_newest_stranger_when_full() {
        let mut relays = RelayCandidates::default();
        let strangers = peers(MAX_CANDIDATES);
        for (i, p) in strangers.iter().enumerate() {
            assert!(relays.offer(*p, at(&format!("198.51.100.{i}")), all));
        }
        assert!(!relays.offer(PeerId::random(), at("192.0.2.1"), all), "full");
        let (first, second) = (PeerId::random(), PeerId::random());
        relays.choose(first);
        relays.choose(second);
        assert!(relays.offer(first, at("203.0.113.1"), all));
        assert!(relays.offer(second, at("203.0.113.1"), all), "bootstrap peers have no per-address bound");
        let best: Vec<PeerId> = relays.best(3, &[]).into_iter().map(|(p, _)| p).collect();
        assert_eq!(best, [first, second, strangers[0]]);
        assert!(!relays.contains(&strangers[MAX_CANDIDATES - 1]) && !relays.contains(&strangers[MAX_CANDIDATES - 2]));
        assert_eq!(relays.best(MAX_CANDIDATES + 1, &[]).len(), MAX_CANDIDATES);
        assert_eq!(relays.best(2, &[first]).into_iter().map(|(p, _)| p).collect::<Vec<_>>(), [second, strangers[0]]);
    }

    #[test]
    fn a_newcomer_takes_the_place_of_the_oldest_stranger_gone_and_a_bootstrap_peer_stays() {
        let mut relays = RelayCandidates::default();
        let chosen = PeerId::random();
        relays.choose(chosen);
        assert!(relays.offer(chosen, at("203.0.113.1"), all));
        let strangers = peers(MAX_CANDIDATES - 1);
        for (i, p) in strangers.iter().enumerate() {
            assert!(relays.offer(*p, at(&format!("198.51.100.{i}")), all));
        }
        let later = PeerId::random();
        assert!(!relays.offer(later, at("192.0.2.1"), all), "full, and every stranger still connected");
        let gone = |p: &PeerId| *p != strangers[3] && *p != strangers[5] && *p != chosen;
        assert!(relays.offer(later, at("192.0.2.1"), gone), "a relay met later takes a place");
        assert!(!relays.contains(&strangers[3]), "the oldest stranger we are not connected to left");
        assert!(relays.contains(&strangers[5]) && relays.contains(&chosen), "the bootstrap peer stays");
        relays.forget(&chosen);
        assert!(!relays.contains(&chosen), "but not once its reservation failed");
    }
}
