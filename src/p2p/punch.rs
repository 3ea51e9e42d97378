//! Hole punching: libp2p's DCUtR behaviour, also told our *confirmed* external addresses.
//!
//! DCUtR offers the peer at the other end of a relayed connection the addresses it has heard
//! of as external-address candidates, and dials the peer's. The swarm passes a candidate on
//! only while it is unconfirmed, and we confirm our listen addresses (or the configured
//! external ones) at once, so a public node's real address never reached DCUtR: it offered
//! nothing, the node behind the NAT had nowhere to punch to, and every attempt failed. This
//! wrapper hands each confirmed address to DCUtR as a candidate too.
//!
//! It also bounds what the peer at the other end can make us dial. DCUtR dials every address
//! a CONNECT message names (about 400 fit in its 4 KiB), and takes CONNECT after CONNECT on a
//! relayed connection: five CONNECTs from a stranger we reached through a relay (a provider
//! record can carry a circuit address) had us holding about 530 TCP connections to addresses
//! of its choice 10 s later, a reflector aimed wherever it likes. Here a hole punch naming more
//! than [`MAX_PUNCH_ADDRS`] addresses (what DCUtR itself offers at most) is not dialled, and a
//! relayed connection's DCUtR handler is heard [`MAX_PUNCH_EVENTS`] times at most: DCUtR's
//! three attempts, each negotiated or failed. Everything else is DCUtR's own.
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::dcutr;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NewExternalAddrCandidate, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet};
use std::task::{Context, Poll};

/// Addresses one hole punch may dial: DCUtR offers at most its 20 newest candidates.
pub const MAX_PUNCH_ADDRS: usize = 20;
/// Events heard from one relayed connection's DCUtR handler: DCUtR's 3 attempts, each
/// negotiated or failed (only one side of a relayed connection starts them, and each attempt
/// raises one event on either side).
pub const MAX_PUNCH_EVENTS: u8 = 3;

pub struct HolePunch {
    inner: dcutr::Behaviour,
    /// Dials DCUtR asked for that the swarm has not yet started.
    punch_dials: HashSet<ConnectionId>,
    /// Events heard from each relayed connection's handler, until it closes.
    heard: HashMap<ConnectionId, u8>,
}

impl HolePunch {
    pub fn new(me: PeerId) -> HolePunch {
        HolePunch { inner: dcutr::Behaviour::new(me), punch_dials: HashSet::new(), heard: HashMap::new() }
    }

    /// Counts one more event from `id`'s handler: `false` past [`MAX_PUNCH_EVENTS`].
    fn hear(&mut self, id: ConnectionId) -> bool {
        let heard = self.heard.entry(id).or_default();
        *heard = heard.saturating_add(1);
        *heard <= MAX_PUNCH_EVENTS
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a hole punch naming {0} addresses (at most {MAX_PUNCH_ADDRS} are dialled)")]
struct TooManyAddrs(usize);

impl NetworkBehaviour for HolePunch {
    type ConnectionHandler = <dcutr::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = dcutr::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner.handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if self.punch_dials.remove(&id) && addresses.len() > MAX_PUNCH_ADDRS {
            tracing::debug!(?peer, n = addresses.len(), "not dialling a hole punch: too many addresses");
            return Err(ConnectionDenied::new(TooManyAddrs(addresses.len())));
        }
        self.inner.handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::ExternalAddrConfirmed(confirmed) => {
                let candidate = NewExternalAddrCandidate { addr: confirmed.addr };
                self.inner.on_swarm_event(FromSwarm::NewExternalAddrCandidate(candidate));
            }
            FromSwarm::ConnectionClosed(closed) => {
                self.heard.remove(&closed.connection_id);
            }
            FromSwarm::DialFailure(failure) => {
                self.punch_dials.remove(&failure.connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, id: ConnectionId, event: THandlerOutEvent<Self>) {
        if self.hear(id) {
            self.inner.on_connection_handler_event(peer, id, event)
        } else {
            tracing::debug!(%peer, "ignoring a relayed connection's hole punch past {MAX_PUNCH_EVENTS} events");
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let polled = self.inner.poll(cx);
        if let Poll::Ready(ToSwarm::Dial { opts }) = &polled {
            self.punch_dials.insert(opts.connection_id());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn punch() -> HolePunch {
        HolePunch::new(PeerId::random())
    }

    fn addrs(n: usize) -> Vec<Multiaddr> {
        (0..n).map(|i| format!("/ip4/10.0.{}.{}/tcp/4001", i / 250, i % 250).parse().unwrap()).collect()
    }

    #[test]
    fn a_hole_punch_naming_too_many_addresses_is_not_dialled() {
        let mut b = punch();
        let (peer, ids) = (Some(PeerId::random()), [ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2)]);
        b.punch_dials.extend(ids);
        let past = b.handle_pending_outbound_connection(ids[0], peer, &addrs(MAX_PUNCH_ADDRS + 1), Endpoint::Dialer);
        assert!(past.is_err(), "a punch naming too many addresses was dialled");
        let within = b.handle_pending_outbound_connection(ids[1], peer, &addrs(MAX_PUNCH_ADDRS), Endpoint::Dialer);
        assert!(within.is_ok());
        assert!(b.punch_dials.is_empty(), "each punch dial is judged once");
        let other = ConnectionId::new_unchecked(3);
        assert!(
            b.handle_pending_outbound_connection(other, peer, &addrs(400), Endpoint::Dialer).is_ok(),
            "not a punch"
        );
    }

    #[test]
    fn a_relayed_connection_is_heard_a_bounded_number_of_times() {
        let (mut b, id, other) = (punch(), ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        for i in 0..MAX_PUNCH_EVENTS {
            assert!(b.hear(id), "event {i}");
        }
        assert!(!b.hear(id) && !b.hear(id), "past the bound");
        assert!(b.hear(other), "another connection has its own count");
    }
}
