//! The bound on inbound handshakes in flight, in all and per source (an IP, or a libp2p
//! peer), shared by the TCP and libp2p accept loops.
use crate::types::{ip_key, PeerAddr};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Who a handshake in flight counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Ip(IpAddr),
    P2p(libp2p::PeerId),
}

impl Source {
    fn of(addr: &PeerAddr) -> Source {
        match addr {
            PeerAddr::Tcp(a) => Source::Ip(ip_key(a.ip())),
            PeerAddr::P2p(id) => Source::P2p(*id),
        }
    }
}

/// Why an inbound connection found no handshake slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeBusy {
    #[error("max_inbound_handshakes in flight")]
    Total,
    #[error("max_inbound_handshakes_per_ip in flight from this source")]
    Source,
}

/// Inbound handshakes in flight, in all and per source. A permit is held while the
/// handshake is read and routed, and given back when dropped.
#[derive(Debug)]
pub struct HandshakeLimiter {
    max_total: usize,
    max_per_source: usize,
    /// Total in flight, and per source (sources with none are removed).
    state: Mutex<(usize, HashMap<Source, usize>)>,
}

impl HandshakeLimiter {
    pub fn new(max_total: usize, max_per_source: usize) -> HandshakeLimiter {
        HandshakeLimiter { max_total, max_per_source, state: Mutex::default() }
    }

    pub fn try_acquire(self: &Arc<Self>, addr: &PeerAddr) -> Result<HandshakePermit, HandshakeBusy> {
        let source = Source::of(addr);
        let mut guard = self.state.lock().expect("handshake limiter lock");
        let (total, per_source) = &mut *guard;
        if *total >= self.max_total {
            return Err(HandshakeBusy::Total);
        }
        let n = per_source.entry(source.clone()).or_default();
        if *n >= self.max_per_source {
            return Err(HandshakeBusy::Source);
        }
        *n += 1;
        *total += 1;
        Ok(HandshakePermit { limiter: self.clone(), source })
    }

    /// Handshakes in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("handshake limiter lock").0
    }
}

/// One inbound handshake slot; freed on drop.
pub struct HandshakePermit {
    limiter: Arc<HandshakeLimiter>,
    source: Source,
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        let mut guard = self.limiter.state.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_source) = &mut *guard;
        *total -= 1;
        if let Some(n) = per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                per_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn tcp(ip: [u8; 4], port: u16) -> PeerAddr {
        PeerAddr::Tcp(SocketAddr::from((ip, port)))
    }

    #[test]
    fn handshakes_are_bounded_per_source_and_in_all() {
        let l = Arc::new(HandshakeLimiter::new(5, 2));
        let a1 = l.try_acquire(&tcp([10, 0, 0, 1], 1)).unwrap();
        let _a2 = l.try_acquire(&tcp([10, 0, 0, 1], 2)).unwrap();
        assert_eq!(l.try_acquire(&tcp([10, 0, 0, 1], 3)).err(), Some(HandshakeBusy::Source), "any port counts");
        let _b = l.try_acquire(&tcp([10, 0, 0, 2], 1)).unwrap();
        let p2p = PeerAddr::P2p(libp2p::PeerId::random());
        let _c1 = l.try_acquire(&p2p).unwrap();
        let _c2 = l.try_acquire(&p2p).unwrap();
        assert_eq!(l.try_acquire(&p2p).err(), Some(HandshakeBusy::Total), "TCP and libp2p share one bound");
        drop(a1);
        assert_eq!(l.in_flight(), 4);
        let _a3 = l.try_acquire(&tcp([10, 0, 0, 1], 4)).unwrap();
        assert_eq!(l.in_flight(), 5);
    }
}
