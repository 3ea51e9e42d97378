//! The event loop's part behind NAT: AutoNAT's verdict (which Kademlia's mode follows in
//! `DhtMode::Auto`), listening through circuit relays while we are private, hole punches
//! (DCUtR), and which connections to each peer are relayed.
//!
//! - **Relays.** Peers whose identify lists the relay hop protocol are candidates (which are
//!   kept, and in what order they are tried: `super::relays`, bootstrap peers first). While
//!   AutoNAT says we are private we listen through up to [`MAX_RESERVATIONS`] of them; the
//!   relay client confirms each circuit address as external, so provider records carry it,
//!   and our provider records are published again so peers that look us up get it. A public
//!   verdict drops the reservations.
//! - **Direct before relayed.** libp2p-stream opens a stream on any connection to the peer, so
//!   a stream opened while the only connection is relayed would stay on the relay (whose
//!   circuit is small and short) even after a hole punch succeeds. So [`Command::AwaitDirect`]
//!   callers wait while a peer is reached only through relays, until a direct connection is
//!   up and the relayed ones are gone, or the hole punch failed (or they give up). Once a direct
//!   connection exists, relayed ones to the same peer are closed.
//! - **AutoNAT dial-backs.** Serving a peer's probe, AutoNAT dials it back on a connection of
//!   its own and leaves it open. Left to the idle timeout, those connections pile up until the
//!   per-peer connection limit denies the next dial-back, which the prober reads as "private".
//!   So a dial-back's connection is closed as soon as it has answered the probe (as go-libp2p's
//!   AutoNAT service does).
use super::super::book::{is_relayed, strip_p2p};
use super::super::node::{Reachability, KAD_PROTOCOL};
use super::super::pending::Reply;
use super::super::relay_server::Reservations;
use super::relays::RelayCandidates;
use super::EventLoop;
use libp2p::core::transport::ListenerId;
use libp2p::kad::store::RecordStore;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{autonat, dcutr, identify, kad, relay, Multiaddr, PeerId};
use std::collections::HashMap;

/// Relays we hold a slot on while private.
pub(super) const MAX_RESERVATIONS: usize = 2;
/// Callers waiting for one peer's direct connection.
const MAX_DIRECT_WAITERS: usize = 16;

/// The NAT state the event loop keeps (one owner: the event loop).
pub(super) struct Nat {
    /// AutoNAT's latest verdict.
    pub(super) reachability: Reachability,
    /// `DhtMode::Auto`: Kademlia's mode follows the verdict.
    pub(super) mode_follows_nat: bool,
    /// Relay-capable peers and an address we reach each at, best first.
    relays: RelayCandidates,
    /// Our listeners through relays.
    reservations: HashMap<ListenerId, PeerId>,
    /// Every connection, per peer, and whether it is relayed.
    links: HashMap<PeerId, HashMap<ConnectionId, bool>>,
    /// Each peer's newest connection we dialled, and the address: an AutoNAT dial-back's.
    newest_dial: HashMap<PeerId, (ConnectionId, Multiaddr)>,
    /// Callers waiting for a peer's direct connection.
    direct: super::Waiters<PeerId, Result<bool, super::NodeError>>,
    /// The reservations held on the relay we serve, if we serve one.
    pub(super) served: Reservations,
}

impl Nat {
    pub(super) fn new(mode_follows_nat: bool, served: Reservations) -> Nat {
        Nat {
            reachability: Reachability::Unknown,
            mode_follows_nat,
            relays: RelayCandidates::default(),
            reservations: HashMap::new(),
            links: HashMap::new(),
            newest_dial: HashMap::new(),
            direct: super::Waiters::new(MAX_DIRECT_WAITERS),
            served,
        }
    }

    /// Reached only through relays (connected, and not directly).
    fn relayed_only(&self, peer: &PeerId) -> bool {
        self.links.get(peer).is_some_and(|l| !l.is_empty() && l.values().all(|relayed| *relayed))
    }

    /// A bootstrap peer: if it offers to relay, it is tried first.
    pub(super) fn bootstrap_peer(&mut self, peer: PeerId) {
        self.relays.choose(peer);
    }

    pub(super) fn sweep(&mut self) {
        self.direct.sweep();
    }
}

impl EventLoop {
    /// AutoNAT's new verdict: kept for the handle and the gauge; in `DhtMode::Auto` a public
    /// node serves the DHT and a private one only asks it; a private node listens through
    /// relays, a public one stops.
    pub(super) fn on_nat_status(&mut self, status: autonat::NatStatus) {
        self.nat.reachability = match status {
            autonat::NatStatus::Public(addr) => Reachability::Public(addr),
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        };
        let verdict = &self.nat.reachability;
        tracing::info!(reachability = verdict.as_str(), address = ?verdict, "AutoNAT verdict");
        crate::metrics::metrics().nat.set_reachability(verdict.gauge());
        if self.nat.mode_follows_nat {
            match verdict {
                Reachability::Public(_) => self.swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server)),
                Reachability::Private => self.swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Client)),
                Reachability::Unknown => {}
            }
        }
        match verdict {
            Reachability::Private => self.reserve_relays(),
            Reachability::Public(_) => {
                for id in std::mem::take(&mut self.nat.reservations).into_keys() {
                    self.swarm.remove_listener(id);
                }
                crate::metrics::metrics().nat.set_relay_reservations(0);
            }
            Reachability::Unknown => {}
        }
    }

    /// Identify told us what `peer` speaks: a relay is remembered (at its oldest address in
    /// the book, which is the one we dialled when we did) and, while we are private, used.
    pub(super) fn on_identified(&mut self, peer: PeerId, info: &identify::Info) {
        let speaks_kad = info.protocols.contains(&KAD_PROTOCOL);
        self.learn(peer, &info.listen_addrs, speaks_kad);
        if !info.protocols.contains(&relay::HOP_PROTOCOL_NAME) || self.nat.relays.contains(&peer) {
            return;
        }
        let addr = self.swarm.behaviour().book.get(&peer).into_iter().find(|a| !is_relayed(a));
        let links = &self.nat.links;
        if let Some(addr) = addr.filter(|a| self.nat.relays.offer(peer, a.clone(), |p| links.contains_key(p))) {
            tracing::debug!(%peer, %addr, "relay candidate");
            if self.nat.reachability == Reachability::Private {
                self.reserve_relays();
            }
        }
    }

    /// Listens through relays until [`MAX_RESERVATIONS`] are held.
    fn reserve_relays(&mut self) {
        let held: Vec<PeerId> = self.nat.reservations.values().copied().collect();
        for (relay, addr) in self.nat.relays.best(MAX_RESERVATIONS.saturating_sub(held.len()), &held) {
            let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::info!(%circuit, "listening through a relay");
                    self.nat.reservations.insert(id, relay);
                }
                Err(e) => {
                    tracing::debug!(%circuit, "cannot listen through the relay: {e}");
                    self.nat.relays.forget(&relay);
                }
            }
        }
    }

    /// A relay listener closed (the relay went, or refused us): another relay may take its
    /// place.
    pub(super) fn on_listener_closed(&mut self, id: ListenerId) {
        if let Some(relay) = self.nat.reservations.remove(&id) {
            tracing::info!(%relay, "relay reservation ended");
            self.nat.relays.forget(&relay);
            crate::metrics::metrics().nat.set_relay_reservations(self.nat.reservations.len());
            if self.nat.reachability == Reachability::Private {
                self.reserve_relays();
            }
        }
    }

    /// A new reservation: the relay client has confirmed its circuit address as external, and
    /// our provider records are published again so they carry it.
    pub(super) fn on_relay_client_event(&mut self, event: relay::client::Event) {
        if let relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal: false, .. } = event {
            tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
            crate::metrics::metrics().nat.set_relay_reservations(self.nat.reservations.len());
            self.provide_again();
        }
    }

    fn provide_again(&mut self) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let keys: Vec<kad::RecordKey> = kad.store_mut().provided().map(|r| r.key.clone()).collect();
        for key in keys {
            if let Err(e) = kad.start_providing(key) {
                tracing::debug!("re-providing: {e}");
            }
        }
    }

    pub(super) fn on_dcutr_event(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        crate::metrics::metrics().nat.inc_hole_punches(event.result.is_ok());
        match event.result {
            Ok(_) => tracing::info!(%peer, "hole punch: a direct connection replaces the relayed one"),
            Err(e) => {
                tracing::info!(%peer, "hole punch failed: {e}");
                self.nat.direct.finish(&peer, || Ok(false));
            }
        }
    }

    /// A connection is up; `dialed` is the address when we dialled it.
    pub(super) fn on_connection_up(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        relayed: bool,
        dialed: Option<&Multiaddr>,
    ) {
        self.nat.links.entry(peer).or_default().insert(id, relayed);
        if let Some(addr) = dialed {
            self.nat.newest_dial.insert(peer, (id, addr.clone()));
        }
        if !relayed {
            self.close_relayed(peer);
        }
    }

    pub(super) fn on_connection_down(&mut self, peer: PeerId, id: ConnectionId) {
        if self.nat.newest_dial.get(&peer).is_some_and(|(newest, _)| *newest == id) {
            self.nat.newest_dial.remove(&peer);
        }
        let Some(links) = self.nat.links.get_mut(&peer) else { return };
        links.remove(&id);
        if links.is_empty() {
            self.nat.links.remove(&peer);
            self.nat.direct.finish(&peer, || Ok(false));
        } else if links.values().all(|relayed| !relayed) {
            self.nat.direct.finish(&peer, || Ok(true));
        }
    }

    /// A direct connection to `peer` is up: its relayed ones go (the relay's circuits are
    /// small and short, and streams would otherwise keep landing on them).
    fn close_relayed(&mut self, peer: PeerId) {
        let relayed: Vec<ConnectionId> =
            self.nat.links.get(&peer).into_iter().flatten().filter(|(_, r)| **r).map(|(id, _)| *id).collect();
        if relayed.is_empty() {
            self.nat.direct.finish(&peer, || Ok(true));
        }
        for id in relayed {
            self.swarm.close_connection(id);
        }
    }

    /// Our dial-back reached `peer` at `address` and AutoNAT has answered its probe: the
    /// connection (the newest we dialled to it, at that address) has done its job.
    pub(super) fn on_dial_back_done(&mut self, peer: PeerId, address: &Multiaddr) {
        match self.nat.newest_dial.get(&peer) {
            Some((id, dialed)) if strip_p2p(dialed) == strip_p2p(address) => {
                self.swarm.close_connection(*id);
            }
            _ => tracing::debug!(%peer, %address, "no dial-back connection to close"),
        }
    }

    /// Answers at once unless `peer` is reached only through relays; then when a direct
    /// connection has replaced them, or the hole punch failed (`false`).
    pub(super) fn on_await_direct(&mut self, peer: PeerId, reply: Reply<bool>) {
        if !self.nat.relayed_only(&peer) {
            let _ = reply.send(Ok(self.nat.links.contains_key(&peer)));
            return;
        }
        if let Err(reply) = self.nat.direct.push(peer, reply) {
            let _ = reply.send(Ok(false));
        }
    }
}
