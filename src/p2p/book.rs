//! The node's own address book: what we know of where each peer listens, and the
//! [`NetworkBehaviour`] that hands those addresses to the swarm whenever anything dials a peer
//! by PeerId alone (`libp2p_stream`'s `open_stream`, a ping, a provider dial).
//!
//! Why our own: Kademlia offers only its routing table (DHT servers) and the addresses that
//! live inside a running query; identify's cache holds only what identify itself learned. A
//! provider found through the DHT, a peer resolved with a closest-peers lookup or one given on
//! the command line would be undialable by PeerId once the query is over. This book outlives
//! queries, is bounded (peers and addresses per peer) and forgets addresses that fail to dial.
use crate::types::ip_key;
use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, DialError, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

/// Peers remembered; the least recently updated is forgotten first.
pub const MAX_PEERS: usize = 2048;
/// Addresses remembered per peer; the oldest is dropped first.
pub const MAX_ADDRS_PER_PEER: usize = 8;
/// Expired entries kept until the event loop takes them (more are dropped: one is enough
/// to say discovery should look again).
const MAX_EXPIRED: usize = 64;

#[derive(Debug, Default)]
pub struct AddressBook {
    addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Update order, oldest first. Invariant: holds exactly the keys of `addrs`.
    order: VecDeque<PeerId>,
    /// Peers whose last address failed and went, since the event loop last looked.
    expired: Vec<PeerId>,
}

impl AddressBook {
    /// Remembers `addr` (without its `/p2p/` suffix) for `peer` when it is dialable, as its
    /// newest; one already known becomes the newest again. Returns the oldest address, dropped
    /// to make room.
    pub fn add(&mut self, peer: PeerId, addr: &Multiaddr) -> Option<Multiaddr> {
        let addr = dialable(addr)?;
        self.touch(peer);
        let list = self.addrs.entry(peer).or_default();
        if let Some(at) = list.iter().position(|a| *a == addr) {
            list.remove(at);
            list.push(addr);
            return None;
        }
        let dropped = (list.len() == MAX_ADDRS_PER_PEER).then(|| list.remove(0));
        list.push(addr);
        dropped
    }

    pub fn get(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.addrs.get(peer).cloned().unwrap_or_default()
    }

    pub fn remove_addr(&mut self, peer: &PeerId, addr: &Multiaddr) {
        let Some(list) = self.addrs.get_mut(peer) else { return };
        let bare = strip_p2p(addr);
        list.retain(|a| *a != bare);
        if list.is_empty() {
            self.addrs.remove(peer);
            self.order.retain(|p| p != peer);
            if self.expired.len() < MAX_EXPIRED {
                self.expired.push(*peer);
            }
        }
    }

    /// The peers whose entry expired (every address failed) since the last call.
    pub fn take_expired(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.expired)
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    fn touch(&mut self, peer: PeerId) {
        if self.addrs.contains_key(&peer) {
            self.order.retain(|p| *p != peer);
        } else if self.addrs.len() == MAX_PEERS {
            if let Some(old) = self.order.pop_front() {
                self.addrs.remove(&old);
            }
        }
        self.order.push_back(peer);
    }
}

/// `addr` without a trailing `/p2p/<id>` (a relay circuit keeps its relay's `/p2p/<id>`).
pub fn strip_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if let Some(Protocol::P2p(_)) = addr.iter().last() {
        addr.pop();
    }
    addr
}

/// `addr` ready to be stored and dialled, or `None` when no one could dial it: it must start
/// with an IP or DNS host that is not the unspecified address and carry TCP or QUIC (`udp`
/// with `quic-v1`) on a real port. A relay circuit (`<relay address>/p2p/<relay>/p2p-circuit`)
/// is dialable when its relay part is, once. Loopback and private addresses are kept: they are
/// what local swarms use.
pub fn dialable(addr: &Multiaddr) -> Option<Multiaddr> {
    let addr = strip_p2p(addr);
    let parts: Vec<Protocol> = addr.iter().collect();
    let direct = match parts.iter().position(|p| matches!(p, Protocol::P2pCircuit)) {
        None => &parts[..],
        // The relay's own address, then its PeerId, then the circuit, and nothing after.
        Some(at) if at + 1 == parts.len() && at >= 1 && matches!(parts[at - 1], Protocol::P2p(_)) => &parts[..at - 1],
        Some(_) => return None,
    };
    let host_ok = match direct.first()? {
        Protocol::Ip4(ip) => !ip.is_unspecified(),
        Protocol::Ip6(ip) => !ip.is_unspecified(),
        Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) => true,
        _ => false,
    };
    let transport_ok = match direct.get(1..) {
        Some([Protocol::Tcp(port)]) => *port != 0,
        Some([Protocol::Udp(port), Protocol::QuicV1]) => *port != 0,
        _ => false,
    };
    (host_ok && transport_ok).then_some(addr)
}

/// Whether `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The host `addr` reaches, as shoal counts hosts ([`ip_key`]: an IPv6 address counts as its
/// /64); `None` for a relayed address or one that does not start with an IP address.
pub fn host(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        _ if is_relayed(addr) => None,
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(ip_key(IpAddr::V6(ip))),
        _ => None,
    }
}

impl NetworkBehaviour for AddressBook {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        maybe_peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(maybe_peer.map(|p| self.get(&p)).unwrap_or_default())
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // An address we dialled and reached is one the peer listens on.
            FromSwarm::ConnectionEstablished(e) => {
                if let ConnectedPoint::Dialer { address, .. } = e.endpoint {
                    self.add(e.peer_id, address);
                }
                for failed in e.failed_addresses {
                    self.remove_addr(&e.peer_id, failed);
                }
            }
            FromSwarm::DialFailure(e) => {
                if let (Some(peer), DialError::Transport(errors)) = (e.peer_id, e.error) {
                    for (addr, _) in errors {
                        self.remove_addr(&peer, addr);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_dialable_addresses_are_kept() {
        assert!(dialable(&ma("/ip4/0.0.0.0/tcp/4001")).is_none());
        assert!(dialable(&ma("/ip4/127.0.0.1/tcp/0")).is_none());
        assert!(dialable(&ma("/ip4/127.0.0.1/udp/4001")).is_none(), "UDP without QUIC");
        assert!(dialable(&ma("/ip4/127.0.0.1/udp/0/quic-v1")).is_none());
        assert!(dialable(&ma("/ip4/127.0.0.1/tcp/4001/ws")).is_none());
        assert!(dialable(&ma("/ip4/127.0.0.1/udp/4001/quic-v1")).is_some());
        assert_eq!(dialable(&ma("/ip4/127.0.0.1/tcp/4001")), Some(ma("/ip4/127.0.0.1/tcp/4001")));
        assert!(dialable(&ma("/dns4/example.org/tcp/4001")).is_some());
        let id = PeerId::random();
        let with_id = ma("/ip4/10.0.0.1/tcp/4001").with(Protocol::P2p(id));
        assert_eq!(dialable(&with_id), Some(ma("/ip4/10.0.0.1/tcp/4001")));
    }

    #[test]
    fn a_relay_circuit_is_dialable_through_a_dialable_relay() {
        let (relay, me) = (PeerId::random(), PeerId::random());
        let circuit = ma("/ip4/10.0.0.1/tcp/4001").with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        assert_eq!(dialable(&circuit.clone().with(Protocol::P2p(me))), Some(circuit.clone()), "keeps the relay's id");
        assert!(is_relayed(&circuit));
        assert!(dialable(&ma("/ip4/10.0.0.1/tcp/4001/p2p-circuit")).is_none(), "no relay id");
        let via_nowhere = ma("/ip4/0.0.0.0/tcp/4001").with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        assert!(dialable(&via_nowhere).is_none());
        let twice = circuit.clone().with(Protocol::P2p(me)).with(Protocol::P2pCircuit);
        assert!(dialable(&twice).is_none(), "one hop only");
    }

    #[test]
    fn bounded_per_peer_and_in_peers() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        for port in 1..=(MAX_ADDRS_PER_PEER as u16 + 3) {
            book.add(peer, &ma(&format!("/ip4/10.0.0.1/tcp/{port}")));
        }
        let got = book.get(&peer);
        assert_eq!(got.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(got.last(), Some(&ma(&format!("/ip4/10.0.0.1/tcp/{}", MAX_ADDRS_PER_PEER + 3))));
        // Announced again, the oldest becomes the newest; the next new one drops the one after.
        assert_eq!(book.add(peer, &got[0]), None);
        assert_eq!(book.add(peer, &ma("/ip4/10.0.0.1/tcp/99")), Some(got[1].clone()));
        assert_eq!(book.get(&peer)[MAX_ADDRS_PER_PEER - 2..], [got[0].clone(), ma("/ip4/10.0.0.1/tcp/99")]);
        let first = PeerId::random();
        book.add(first, &ma("/ip4/10.0.0.2/tcp/1"));
        for _ in 0..MAX_PEERS {
            book.add(PeerId::random(), &ma("/ip4/10.0.0.3/tcp/1"));
        }
        assert_eq!(book.len(), MAX_PEERS);
        assert!(book.get(&peer).is_empty() && book.get(&first).is_empty());
        assert_eq!(book.order.len(), book.addrs.len());
    }

    #[test]
    fn failed_addresses_are_forgotten() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        book.add(peer, &ma("/ip4/10.0.0.1/tcp/1"));
        book.remove_addr(&peer, &ma("/ip4/10.0.0.1/tcp/1").with(Protocol::P2p(peer)));
        assert!(book.is_empty());
        assert!(book.order.is_empty());
    }

    #[test]
    fn an_entry_expires_when_its_last_address_fails() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        book.add(peer, &ma("/ip4/10.0.0.1/tcp/1"));
        book.add(peer, &ma("/ip4/10.0.0.1/tcp/2"));
        book.remove_addr(&peer, &ma("/ip4/10.0.0.1/tcp/1"));
        assert!(book.take_expired().is_empty(), "one address left");
        book.remove_addr(&peer, &ma("/ip4/10.0.0.1/tcp/2"));
        assert_eq!(book.take_expired(), vec![peer]);
        assert!(book.take_expired().is_empty(), "taken once");
        for _ in 0..(2 * MAX_EXPIRED) {
            let p = PeerId::random();
            book.add(p, &ma("/ip4/10.0.0.1/tcp/3"));
            book.remove_addr(&p, &ma("/ip4/10.0.0.1/tcp/3"));
        }
        assert_eq!(book.take_expired().len(), MAX_EXPIRED, "bounded until taken");
    }
}
