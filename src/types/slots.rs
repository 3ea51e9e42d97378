//! Slots for inbound connections, bounded in all and per source (an IP address, an IPv6 /64,
//! or a libp2p peer): the session's handshakes in flight (shared by its TCP and libp2p accept
//! loops) and the HTTP servers' open connections (`httpd`).
use super::{ip_key, PeerAddr};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Who a slot counts against.
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

/// Why an inbound connection found no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error("every slot taken")]
    Total,
    #[error("every slot for this source taken")]
    Source,
}

/// Slots in use, in all and per source. A permit is held for as long as the connection
/// needs its slot (a handshake read and routed, an HTTP connection open), and given back
/// when dropped.
#[derive(Debug)]
pub struct Slots {
    max_total: usize,
    max_per_source: usize,
    /// Total in use, and per source (sources with none are removed).
    state: Mutex<(usize, HashMap<Source, usize>)>,
}

impl Slots {
    pub fn new(max_total: usize, max_per_source: usize) -> Slots {
        Slots { max_total, max_per_source, state: Mutex::default() }
    }

    pub fn try_acquire(self: &Arc<Self>, addr: &PeerAddr) -> Result<SlotPermit, Busy> {
        let source = Source::of(addr);
        let mut guard = self.state.lock().expect("slots lock");
        let (total, per_source) = &mut *guard;
        if *total >= self.max_total {
            return Err(Busy::Total);
        }
        let n = per_source.entry(source.clone()).or_default();
        if *n >= self.max_per_source {
            return Err(Busy::Source);
        }
        *n += 1;
        *total += 1;
        Ok(SlotPermit { limiter: self.clone(), source })
    }

    /// Slots in use now.
    pub fn in_flight(&self) -> usize {
        self.state.lock().expect("slots lock").0
    }
}

/// One slot; freed on drop.
pub struct SlotPermit {
    limiter: Arc<Slots>,
    source: Source,
}

impl Drop for SlotPermit {
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
        let l = Arc::new(Slots::new(5, 2));
        let a1 = l.try_acquire(&tcp([10, 0, 0, 1], 1)).unwrap();
        let _a2 = l.try_acquire(&tcp([10, 0, 0, 1], 2)).unwrap();
        assert_eq!(l.try_acquire(&tcp([10, 0, 0, 1], 3)).err(), Some(Busy::Source), "any port counts");
        let _b = l.try_acquire(&tcp([10, 0, 0, 2], 1)).unwrap();
        let p2p = PeerAddr::P2p(libp2p::PeerId::random());
        let _c1 = l.try_acquire(&p2p).unwrap();
        let _c2 = l.try_acquire(&p2p).unwrap();
        assert_eq!(l.try_acquire(&p2p).err(), Some(Busy::Total), "TCP and libp2p share one bound");
        drop(a1);
        assert_eq!(l.in_flight(), 4);
        let _a3 = l.try_acquire(&tcp([10, 0, 0, 1], 4)).unwrap();
        assert_eq!(l.in_flight(), 5);
    }

    #[test]
    fn an_ipv6_64_shares_one_count_and_places_come_back() {
        let slots = Arc::new(Slots::new(3, 2));
        let at = |ip: &str| PeerAddr::Tcp(SocketAddr::new(ip.parse().unwrap(), 80));
        let (a, b) = (at("2001:db8:1:2::1"), at("2001:db8:1:2:ffff::9"));
        let (one, two) = (slots.try_acquire(&a).unwrap(), slots.try_acquire(&b).unwrap());
        assert!(slots.try_acquire(&a).is_err(), "two addresses of one /64 are one address");
        let other = slots.try_acquire(&at("2001:db8:1:3::1")).unwrap();
        assert!(slots.try_acquire(&at("192.0.2.1")).is_err(), "3 in all");
        drop((one, two, other));
        assert!(slots.state.lock().unwrap().1.is_empty(), "every place came back");
        assert_eq!(slots.in_flight(), 0);
        assert!(slots.try_acquire(&a).is_ok());
    }
}
