//! The circuit relay we serve (`relay = true`, `shoal node --relay`): libp2p-relay's bounds,
//! and reservations held from one IP address.
//!
//! libp2p-relay allows 128 reservations, 4 a peer, and limits the *rate* of new ones per IP
//! address, not how many one address holds. A reservation lasts as long as its connection
//! (an hour, renewed), and one address may keep 32 connections (`per_ip`), so four addresses
//! could hold every slot for good and leave none for the nodes the relay is there for. Here
//! one IP address (an IPv6 /64) holds at most [`PER_IP`], as go-libp2p's relay allows
//! (`MaxReservationsPerIP`); a request past that is refused with RESOURCE_LIMIT_EXCEEDED,
//! and a renewal or another reservation of a peer that already holds one is not counted
//! again.
//!
//! libp2p-relay asks its rate limiters last, after its own bounds, so when ours is asked
//! and says yes, the reservation is accepted; its events (accepted, closed, timed out) keep
//! the count, which the event loop passes on ([`Reservations::on_event`]).
use super::book::host;
use super::node::RelayLimits;
use libp2p::relay::{self, RateLimiter};
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Reservations one IP address (or IPv6 /64) holds at most.
pub const PER_IP: usize = 8;

/// libp2p's defaults (128 reservations, 16 circuits, 4 of each per peer, per-peer and per-IP
/// rate limits), the circuit's length and size from the config, and [`PER_IP`].
pub(super) fn config(limits: RelayLimits, held: &Reservations) -> relay::Config {
    let mut config = relay::Config {
        max_circuit_duration: limits.max_circuit_duration,
        max_circuit_bytes: limits.max_circuit_bytes,
        ..relay::Config::default()
    };
    config.reservation_rate_limiters.push(Box::new(held.clone()));
    config
}

/// The reservations held, by peer, and the address each peer last asked from.
#[derive(Clone, Default)]
pub struct Reservations(Arc<Mutex<HashMap<PeerId, Held>>>);

/// A peer's reservations: the address it asked from and how many it holds (0 while its
/// first request is being answered).
struct Held {
    from: IpAddr,
    live: usize,
}

impl Reservations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerId, Held>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The relay's event: counts a new reservation, forgets an ended one.
    #[allow(deprecated)] // ReservationReqAcceptFailed: still raised by libp2p-relay 0.21
    pub fn on_event(&self, event: &relay::Event) {
        let mut peers = self.lock();
        match event {
            relay::Event::ReservationReqAccepted { src_peer_id, renewed: false } => {
                if let Some(held) = peers.get_mut(src_peer_id) {
                    held.live += 1;
                }
            }
            relay::Event::ReservationClosed { src_peer_id } | relay::Event::ReservationTimedOut { src_peer_id } => {
                match peers.get_mut(src_peer_id) {
                    Some(held) if held.live > 1 => held.live -= 1,
                    _ => _ = peers.remove(src_peer_id),
                }
            }
            relay::Event::ReservationReqDenied { src_peer_id, .. }
            | relay::Event::ReservationReqAcceptFailed { src_peer_id, .. }
                if peers.get(src_peer_id).is_some_and(|held| held.live == 0) =>
            {
                peers.remove(src_peer_id);
            }
            _ => {}
        }
    }
}

/// Reservations held from `ip`.
fn held_at(peers: &HashMap<PeerId, Held>, ip: IpAddr) -> usize {
    peers.values().filter(|held| held.from == ip).map(|held| held.live).sum()
}

impl RateLimiter for Reservations {
    fn try_next(&mut self, peer: PeerId, addr: &Multiaddr, _: Instant) -> bool {
        let Some(ip) = host(addr) else { return true };
        let mut peers = self.lock();
        let live = peers.get(&peer).map_or(0, |held| held.live);
        if live == 0 && held_at(&peers, ip) >= PER_IP {
            tracing::debug!(%peer, %ip, "relay reservation refused: {PER_IP} held from its address");
            return false;
        }
        peers.insert(peer, Held { from: ip, live });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(peer: PeerId) -> relay::Event {
        relay::Event::ReservationReqAccepted { src_peer_id: peer, renewed: false }
    }

    /// Asks as libp2p-relay does and, when allowed, accepts as it then does.
    fn reserve(held: &mut Reservations, peer: PeerId, from: &str) -> bool {
        let allowed = held.try_next(peer, &format!("/ip6/{from}/tcp/4001").parse().unwrap(), Instant::now());
        if allowed {
            held.on_event(&accepted(peer));
        }
        allowed
    }

    #[test]
    fn one_64_holds_eight_and_a_closed_one_frees_its_place() {
        let mut held = Reservations::default();
        let peers: Vec<PeerId> = (0..PER_IP).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            assert!(reserve(&mut held, *p, &format!("2001:db8:1:2::{i}")), "reservation {i}");
        }
        let late = PeerId::random();
        assert!(!reserve(&mut held, late, "2001:db8:1:2:ffff::1"), "a ninth from the /64");
        assert!(reserve(&mut held, PeerId::random(), "2001:db8:1:3::1"), "another /64");
        assert!(reserve(&mut held, peers[0], "2001:db8:1:2::0"), "a peer holding one asks again");
        held.on_event(&relay::Event::ReservationReqAccepted { src_peer_id: peers[1], renewed: true });
        held.on_event(&relay::Event::ReservationClosed { src_peer_id: peers[0] });
        assert!(!reserve(&mut held, late, "2001:db8:1:2::99"), "peers[0] still holds its second");
        held.on_event(&relay::Event::ReservationTimedOut { src_peer_id: peers[0] });
        assert!(reserve(&mut held, late, "2001:db8:1:2::99"), "a place came back");
        for p in peers.iter().skip(1).chain([&late]) {
            held.on_event(&relay::Event::ReservationClosed { src_peer_id: *p });
        }
        assert_eq!(
            held_at(&held.lock(), host(&"/ip6/2001:db8:1:2::1/tcp/1".parse().unwrap()).unwrap()),
            0,
            "every one ended"
        );
    }
}
