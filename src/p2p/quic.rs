//! QUIC, the swarm's second transport, with a bound on dials from a fresh port.
//!
//! For a dial that asks for a fresh port (`PortUse::New`) libp2p-quic binds a new UDP socket
//! and a new quinn endpoint, whose receive buffers take about 3 MB (1,472-byte datagrams × 64
//! GRO segments × 32 per batch), and it binds them inside `dial` (called for a dial's addresses
//! one after another behind the DNS transport, all at once without it). The only dials that
//! ask for a fresh port are AutoNAT's dial-backs, to the addresses a prober names (on the
//! prober's IP address, at ports of its choice). A stranger's probes naming 16 QUIC addresses
//! on ports that never answer, 15 s of them at libp2p's AutoNAT throttle of 30 a second, had
//! the process at 5.4 GB (2,873 UDP sockets) 30 s after the first, and still growing: each
//! probe's addresses are dialled one after another, 5 s each.
//!
//! Here at most [`MAX_FRESH_PORT_DIALS`] such dials are in flight (a dial-back's connection
//! closes once it has answered, `event_loop::nat`); past that a fresh-port dial is refused as
//! not supported before any socket is bound, and the prober, told of a dial error, asks
//! other servers. Every other QUIC dial (from the listener's port or the shared dialer's, and
//! DCUtR's hole punch) goes through unchanged.
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p::core::Transport;
use libp2p::identity::Keypair;
use libp2p::{quic, Multiaddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

type Inner = quic::tokio::Transport;

/// Fresh-port dials in flight at most, 12 MB of buffers: four AutoNAT probes dialled back at
/// once (a probe's addresses are dialled one after another).
pub const MAX_FRESH_PORT_DIALS: usize = 4;

/// libp2p-quic's transport (its default settings) with the bound on fresh-port dials.
pub struct FreshPortsBounded {
    inner: Inner,
    /// One clone in each fresh-port dial in flight.
    in_flight: Arc<()>,
}

impl FreshPortsBounded {
    pub fn new(key: &Keypair) -> FreshPortsBounded {
        FreshPortsBounded { inner: Inner::new(quic::Config::new(key)), in_flight: Arc::new(()) }
    }

    fn fresh_port_dials(&self) -> usize {
        Arc::strong_count(&self.in_flight) - 1
    }
}

impl Transport for FreshPortsBounded {
    type Output = <Inner as Transport>::Output;
    type Error = <Inner as Transport>::Error;
    type ListenerUpgrade = <Inner as Transport>::ListenerUpgrade;
    type Dial = <Inner as Transport>::Dial;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        if opts.port_use != PortUse::New {
            return self.inner.dial(addr, opts);
        }
        if self.fresh_port_dials() >= MAX_FRESH_PORT_DIALS {
            tracing::debug!(%addr, "refusing a QUIC dial from a fresh port: {MAX_FRESH_PORT_DIALS} in flight");
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let (dial, counted) = (self.inner.dial(addr, opts)?, self.in_flight.clone());
        Ok(Box::pin(async move {
            let _counted = counted;
            dial.await
        }))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::core::Endpoint;

    fn opts(port_use: PortUse) -> DialOpts {
        DialOpts { role: Endpoint::Dialer, port_use }
    }

    /// Fresh-port dials past the bound are refused until one in flight ends; dials from the
    /// shared port are not counted. (Nothing listens on the port: the dials are made, not
    /// awaited.)
    #[tokio::test]
    async fn fresh_port_dials_past_the_bound_are_refused_until_one_ends() {
        let mut quic = FreshPortsBounded::new(&Keypair::generate_ed25519());
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/9/quic-v1".parse().unwrap();
        let mut dials: Vec<_> = (0..MAX_FRESH_PORT_DIALS)
            .map(|i| quic.dial(addr.clone(), opts(PortUse::New)).unwrap_or_else(|e| panic!("dial {i}: {e}")))
            .collect();
        match quic.dial(addr.clone(), opts(PortUse::New)) {
            Err(TransportError::MultiaddrNotSupported(refused)) => assert_eq!(refused, addr),
            Err(e) => panic!("refused with the wrong error: {e}"),
            Ok(_) => panic!("a fresh-port dial past the bound was made"),
        }
        let _shared = quic.dial(addr.clone(), opts(PortUse::Reuse)).expect("a shared-port dial is made");
        dials.pop();
        assert!(quic.dial(addr, opts(PortUse::New)).is_ok(), "a slot freed");
    }
}
