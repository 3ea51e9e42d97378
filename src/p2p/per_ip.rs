//! Inbound libp2p connections from one IP address: at most
//! [`ConnectionBounds::pending_per_ip`] still in their handshake and
//! [`ConnectionBounds::established_per_ip`] established (the config keys
//! `kad_max_pending_per_ip` and `kad_max_established_per_ip`).
//!
//! The swarm admits `pending_incoming` (32) connections in their handshake in all, each for up
//! to its 10 s connection timeout, and `established` (256) established ones. Without a bound per
//! address, one host opening 32 TCP connections that never speak, again every 10 s, would take
//! every handshake slot and keep everyone else out; and one host with a few dozen cheap
//! PeerIds (4 connections each) could take every established slot. With it, one address takes
//! at most 8 and 32 (by default), and a connection past that is refused as it is accepted or
//! as its handshake ends. An IPv6 address counts as its /64, as on the BitTorrent side: one
//! host is handed a whole /64 and can connect from any address in it. Relayed connections are
//! not counted here: the relay's own bounds (circuits per peer and in all) apply to them, and
//! their address is the relay's. A loopback swarm (`shoal bench`) lifts both bounds: all its
//! nodes share one address.
//!
//! [`ConnectionBounds::pending_per_ip`]: super::ConnectionBounds::pending_per_ip
//! [`ConnectionBounds::established_per_ip`]: super::ConnectionBounds::established_per_ip
use super::book::host;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

/// Connections counted by remote address, at most `max` an address: each id under the
/// address it came from.
#[derive(Debug)]
struct Counter {
    max: u32,
    /// What the counted connections are, for the refusal's message.
    what: &'static str,
    by_ip: HashMap<IpAddr, u32>,
    counted: HashMap<ConnectionId, IpAddr>,
}

impl Counter {
    fn new(max: u32, what: &'static str) -> Counter {
        Counter { max, what, by_ip: HashMap::new(), counted: HashMap::new() }
    }

    /// Counts `id` under `ip` unless `ip` already has `max`.
    fn admit(&mut self, id: ConnectionId, ip: IpAddr) -> Result<(), ConnectionDenied> {
        let n = self.by_ip.entry(ip).or_default();
        if *n >= self.max {
            return Err(ConnectionDenied::new(TooMany { ip, max: self.max, what: self.what }));
        }
        *n += 1;
        self.counted.insert(id, ip);
        Ok(())
    }

    fn release(&mut self, id: ConnectionId) {
        let Some(ip) = self.counted.remove(&id) else { return };
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// The per-address bounds on inbound connections.
#[derive(Debug)]
pub struct PerIp {
    pending: Counter,
    established: Counter,
}

#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {max} inbound connections {what}")]
struct TooMany {
    ip: IpAddr,
    max: u32,
    what: &'static str,
}

impl PerIp {
    pub fn new(max_pending: u32, max_established: u32) -> PerIp {
        PerIp {
            pending: Counter::new(max_pending, "in their handshake"),
            established: Counter::new(max_established, "established"),
        }
    }
}

impl NetworkBehaviour for PerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = host(remote) else { return Ok(()) };
        self.pending.admit(id, ip)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending.release(id);
        if let Some(ip) = host(remote) {
            self.established.admit(id, ip)?;
        }
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

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ListenFailure(failure) => {
                self.pending.release(failure.connection_id);
                self.established.release(failure.connection_id);
            }
            FromSwarm::ConnectionClosed(closed) => self.established.release(closed.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_takes_at_most_max_and_a_finished_handshake_frees_its_slot() {
        let (mut b, local) = (PerIp::new(2, 1), addr("/ip4/127.0.0.1/tcp/1"));
        let (a, other) = (addr("/ip4/10.0.0.1/tcp/5000"), addr("/ip4/10.0.0.2/tcp/5000"));
        let ids: Vec<ConnectionId> = (0..4).map(|_| ConnectionId::new_unchecked(rand::random())).collect();
        assert!(b.handle_pending_inbound_connection(ids[0], &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[1], &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &a).is_err(), "a third from one address");
        assert!(b.handle_pending_inbound_connection(ids[3], &local, &other).is_ok(), "another address");
        // Established, the first frees its handshake slot and takes the one established slot.
        assert!(b.handle_established_inbound_connection(ids[0], PeerId::random(), &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &a).is_ok(), "a slot freed");
        assert!(b.handle_established_inbound_connection(ids[1], PeerId::random(), &local, &a).is_err());
        assert!(b.handle_established_inbound_connection(ids[3], PeerId::random(), &local, &other).is_ok());
        let circuit =
            addr("/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWHy3LDrjXjhvvfjMsp9A6LmGP8T4TMuW62i3w6ztqT4fr/p2p-circuit");
        assert!(b.handle_established_inbound_connection(ids[2], PeerId::random(), &local, &circuit).is_ok(), "relayed");
        for id in &ids {
            b.pending.release(*id);
            b.established.release(*id);
        }
        for c in [&b.pending, &b.established] {
            assert!(c.by_ip.is_empty() && c.counted.is_empty());
        }
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let (mut b, local) = (PerIp::new(2, 2), addr("/ip6/::1/tcp/1"));
        let host = |low: &str| addr(&format!("/ip6/2001:db8:1:2:{low}/tcp/5000"));
        let ids: Vec<ConnectionId> = (0..4).map(|_| ConnectionId::new_unchecked(rand::random())).collect();
        assert!(b.handle_pending_inbound_connection(ids[0], &local, &host("0:0:0:1")).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[1], &local, &host("ffff:0:0:2")).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &host("1234:5678:9abc:def0")).is_err(), "same /64");
        let next = addr("/ip6/2001:db8:1:3::1/tcp/5000");
        assert!(b.handle_pending_inbound_connection(ids[3], &local, &next).is_ok(), "the next /64");
    }
}
