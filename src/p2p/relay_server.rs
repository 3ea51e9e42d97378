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
//!
//! Its per-IP rate limits (of reservations and of circuits) are libp2p's, asked with the /64
//! of an IPv6 address ([`PerHost`]): keyed by the exact address, each of the 2^64 addresses
//! one subscriber holds would start with a full bucket of 60.
use super::book::host;
use super::node::RelayLimits;
use libp2p::relay::{self, RateLimiter};
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Reservations one IP address (or IPv6 /64) holds at most.
pub const PER_IP: usize = 8;

/// libp2p's defaults (128 reservations, 16 circuits, 4 of each per peer, per-peer and per-IP
/// rate limits, the per-IP ones keyed by /64: [`PerHost`]), the circuit's length and size from
/// the config, and [`PER_IP`].
pub(super) fn config(limits: RelayLimits, held: &Reservations) -> relay::Config {
    let minutes = |n: u64| Duration::from_secs(60 * n);
    let mut config = relay::Config {
        max_circuit_duration: limits.max_circuit_duration,
        max_circuit_bytes: limits.max_circuit_bytes,
        reservation_rate_limiters: Vec::new(),
        circuit_src_rate_limiters: Vec::new(),
        ..relay::Config::default()
    }
    // libp2p's default rates: a peer starts with 30 and gains one every 2 minutes, an address
    // starts with 60 and gains one a minute.
    .reservation_rate_per_peer(PEER_BURST, minutes(2))
    .circuit_src_per_peer(PEER_BURST, minutes(2))
    .reservation_rate_per_ip(HOST_BURST, minutes(1))
    .circuit_src_per_ip(HOST_BURST, minutes(1));
    for limiters in [&mut config.reservation_rate_limiters, &mut config.circuit_src_rate_limiters] {
        if let Some(per_ip) = limiters.pop() {
            limiters.push(Box::new(PerHost(per_ip)));
        }
    }
    config.reservation_rate_limiters.push(Box::new(held.clone()));
    config
}

/// Reservations, and circuits, a peer may ask for at once, and an address (libp2p's).
const PEER_BURST: NonZeroU32 = NonZeroU32::new(30).unwrap();
const HOST_BURST: NonZeroU32 = NonZeroU32::new(60).unwrap();

/// A libp2p-relay per-IP rate limiter asked with the host an address counts as ([`host`]).
struct PerHost(Box<dyn RateLimiter>);

impl RateLimiter for PerHost {
    fn try_next(&mut self, peer: PeerId, addr: &Multiaddr, now: Instant) -> bool {
        match host(addr) {
            Some(ip) => self.0.try_next(peer, &Multiaddr::from(ip), now),
            None => self.0.try_next(peer, addr, now),
        }
    }
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

    /// Whether every limiter of `limiters` lets `peer` at `from` through, asked as
    /// libp2p-relay asks them (all, in order, until one says no).
    fn allowed(limiters: &mut [Box<dyn RateLimiter>], peer: PeerId, from: &str, now: Instant) -> bool {
        let addr: Multiaddr = format!("/ip6/{from}/tcp/4001").parse().unwrap();
        limiters.iter_mut().all(|l| l.try_next(peer, &addr, now))
    }

    #[test]
    fn rates_per_address_count_a_64_as_one_and_rates_per_peer_stay() {
        let held = Reservations::default();
        let mut config = config(RelayLimits::default(), &held);
        let now = Instant::now();
        for limiters in [&mut config.reservation_rate_limiters, &mut config.circuit_src_rate_limiters] {
            for i in 0..HOST_BURST.get() {
                assert!(allowed(limiters, PeerId::random(), &format!("2001:db8:1:2::{i:x}"), now), "request {i}");
            }
            let other_address_same_64 = "2001:db8:1:2:ffff:ffff:ffff:1";
            assert!(!allowed(limiters, PeerId::random(), other_address_same_64, now), "one past the /64's burst");
            assert!(allowed(limiters, PeerId::random(), "2001:db8:1:3::1", now), "another /64");
            let peer = PeerId::random();
            for i in 0..PEER_BURST.get() {
                assert!(allowed(limiters, peer, &format!("2001:db8:2:{i:x}::1"), now), "peer request {i}");
            }
            assert!(!allowed(limiters, peer, "2001:db8:3::1", now), "one past the peer's burst, from a new /64");
            let later = now + Duration::from_secs(61);
            assert!(allowed(limiters, PeerId::random(), other_address_same_64, later), "a minute adds one");
        }
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
