//! Inbound libp2p connections still in their handshake, at most [`ConnectionBounds::pending_per_ip`]
//! from one IP address.
//!
//! The swarm admits `pending_incoming` (32) such connections in all, each for up to its 10 s
//! connection timeout. Without a bound per address, one host opening 32 TCP connections that
//! never speak, again every 10 s, would take every slot and keep everyone else out. With it,
//! one address takes at most 8 (by default), and a new connection past that is refused as it
//! is accepted. Relayed connections are not counted here: the relay's own bounds (circuits
//! per peer and in all) apply to them, and their address is the relay's.
//!
//! [`ConnectionBounds::pending_per_ip`]: super::ConnectionBounds::pending_per_ip
use super::book::is_relayed;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent,
    ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

/// Counts the inbound connections in their handshake by remote address.
#[derive(Debug)]
pub struct PendingPerIp {
    max: u32,
    by_ip: HashMap<IpAddr, u32>,
    /// The address each counted connection is counted under.
    counted: HashMap<ConnectionId, IpAddr>,
}

#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {max} inbound connections in their handshake")]
struct TooMany {
    ip: IpAddr,
    max: u32,
}

impl PendingPerIp {
    pub fn new(max: u32) -> PendingPerIp {
        PendingPerIp { max, by_ip: HashMap::new(), counted: HashMap::new() }
    }

    /// The handshake of `id` is over (established, failed or denied).
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

fn remote_ip(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

impl NetworkBehaviour for PendingPerIp {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = remote_ip(remote).filter(|_| !is_relayed(remote)) else { return Ok(()) };
        let n = self.by_ip.entry(ip).or_default();
        if *n >= self.max {
            return Err(ConnectionDenied::new(TooMany { ip, max: self.max }));
        }
        *n += 1;
        self.counted.insert(id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.release(id);
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
        if let FromSwarm::ListenFailure(failure) = event {
            self.release(failure.connection_id);
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
        let (mut b, local) = (PendingPerIp::new(2), addr("/ip4/127.0.0.1/tcp/1"));
        let (a, other) = (addr("/ip4/10.0.0.1/tcp/5000"), addr("/ip4/10.0.0.2/tcp/5000"));
        let ids: Vec<ConnectionId> = (0..4).map(|_| ConnectionId::new_unchecked(rand::random())).collect();
        assert!(b.handle_pending_inbound_connection(ids[0], &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[1], &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &a).is_err(), "a third from one address");
        assert!(b.handle_pending_inbound_connection(ids[3], &local, &other).is_ok(), "another address");
        let _ = b.handle_established_inbound_connection(ids[0], PeerId::random(), &local, &a);
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &a).is_ok(), "a slot freed");
        b.release(ids[1]);
        b.release(ids[2]);
        b.release(ids[3]);
        assert!(b.by_ip.is_empty() && b.counted.is_empty());
    }
}
