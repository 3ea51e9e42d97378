//! Hole punching: libp2p's DCUtR behaviour, also told our *confirmed* external addresses.
//!
//! DCUtR offers the peer at the other end of a relayed connection the addresses it has heard
//! of as external-address candidates, and dials the peer's. The swarm passes a candidate on
//! only while it is unconfirmed, and we confirm our listen addresses (or the configured
//! external ones) at once, so a public node's real address never reached DCUtR: it offered
//! nothing, the node behind the NAT had nowhere to punch to, and every attempt failed. This
//! wrapper hands each confirmed address to DCUtR as a candidate too; everything else is
//! DCUtR's own.
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::dcutr;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NewExternalAddrCandidate, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::task::{Context, Poll};

pub struct HolePunch(dcutr::Behaviour);

impl HolePunch {
    pub fn new(me: PeerId) -> HolePunch {
        HolePunch(dcutr::Behaviour::new(me))
    }
}

impl NetworkBehaviour for HolePunch {
    type ConnectionHandler = <dcutr::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = dcutr::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.0.handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0.handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.0.handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0.handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ExternalAddrConfirmed(confirmed) = &event {
            let candidate = NewExternalAddrCandidate { addr: confirmed.addr };
            self.0.on_swarm_event(FromSwarm::NewExternalAddrCandidate(candidate));
        }
        self.0.on_swarm_event(event);
    }

    fn on_connection_handler_event(&mut self, peer: PeerId, id: ConnectionId, event: THandlerOutEvent<Self>) {
        self.0.on_connection_handler_event(peer, id, event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}
