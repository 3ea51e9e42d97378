//! QUIC, the swarm's second transport, refusing dials on a fresh port.
//!
//! For a dial that asks for a fresh port (`PortUse::New`) libp2p-quic binds a new UDP socket
//! and a new quinn endpoint, whose receive buffers take about 3 MB (1,472-byte datagrams × 64
//! GRO segments × 32 per batch), and it binds them inside `dial`, for every address of the
//! dial at once. The only dials that ask for a fresh port are AutoNAT's dial-backs, to the
//! addresses a prober names, on the prober's IP address but on ports of its choice. A
//! stranger's probes naming 16 QUIC addresses on ports that never answer, at the AutoNAT
//! server's throttle (then 30 a second), grew the process to 5.6 GB in 30 s; glibc kept 6 GB
//! after the probes stopped.
//!
//! Here such a dial is refused as not supported before any socket is bound, so our AutoNAT
//! server dials back over TCP only: a prober that lists only QUIC addresses is answered with a
//! dial error and asks other servers. Every other QUIC dial (on the listener's port or the
//! shared dialer's, and DCUtR's hole punch) goes through unchanged.
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p::core::Transport;
use libp2p::identity::Keypair;
use libp2p::{quic, Multiaddr};
use std::pin::Pin;
use std::task::{Context, Poll};

type Inner = quic::tokio::Transport;

/// libp2p-quic's transport (its default settings) without fresh-port dials.
pub struct NoFreshPorts(Inner);

impl NoFreshPorts {
    pub fn new(key: &Keypair) -> NoFreshPorts {
        NoFreshPorts(Inner::new(quic::Config::new(key)))
    }
}

impl Transport for NoFreshPorts {
    type Output = <Inner as Transport>::Output;
    type Error = <Inner as Transport>::Error;
    type ListenerUpgrade = <Inner as Transport>::ListenerUpgrade;
    type Dial = <Inner as Transport>::Dial;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.0.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.0.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        if opts.port_use == PortUse::New {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.0.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::Endpoint;

    fn opts(port_use: PortUse) -> DialOpts {
        DialOpts { role: Endpoint::Dialer, port_use }
    }

    /// A fresh-port dial is refused before a socket is bound; a dial on the shared port is
    /// made (its future fails later: nothing listens there).
    #[tokio::test]
    async fn a_dial_on_a_fresh_port_is_refused_and_one_on_the_shared_port_is_made() {
        let mut quic = NoFreshPorts::new(&Keypair::generate_ed25519());
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/9/quic-v1".parse().unwrap();
        match quic.dial(addr.clone(), opts(PortUse::New)) {
            Err(TransportError::MultiaddrNotSupported(refused)) => assert_eq!(refused, addr),
            Err(e) => panic!("refused with the wrong error: {e}"),
            Ok(_) => panic!("a fresh-port dial was made"),
        }
        assert!(quic.dial(addr, opts(PortUse::Reuse)).is_ok(), "a shared-port dial is made");
    }
}
