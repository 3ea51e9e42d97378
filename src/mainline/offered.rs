//! DHT nodes named by peers in BEP 5 `port` messages, and what is done with them.
//!
//! A peer that sets the DHT bit tells us its node's UDP port. The `mainline` crate takes no
//! node from outside while it runs, so shoal uses these nodes where they matter:
//! - a node whose routing table is still empty [`REJOIN_AFTER`] after it started (its
//!   bootstrap nodes are down, unreachable or unresolvable) restarts on the same address with
//!   the offered nodes added to its bootstrap list, and so joins the DHT through its peers
//!   ([`super::MainlineHandle`] does the restart);
//! - at shutdown they are saved with the routing table, so the next start bootstraps from
//!   them too.
//!
//! Bounds: the peer task passes on one `port` message per connection, at most
//! [`MAX_OFFERED`] distinct nodes are kept (the oldest dropped first), and the node restarts
//! at most once per [`REJOIN_AFTER`].
use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::Duration;

/// Most offered nodes kept.
pub const MAX_OFFERED: usize = 64;
/// How long a node may sit with an empty routing table before offered nodes restart it (and
/// the least time between two restarts).
pub const REJOIN_AFTER: Duration = Duration::from_secs(10);

/// The offered nodes, oldest first, distinct, at most [`MAX_OFFERED`].
#[derive(Debug, Default)]
pub struct Offered {
    nodes: VecDeque<SocketAddrV4>,
}

impl Offered {
    /// Keeps `addr`; false when it was already kept or cannot be a node's address.
    pub fn offer(&mut self, addr: SocketAddrV4) -> bool {
        if !is_node_address(addr) || self.nodes.contains(&addr) {
            return false;
        }
        if self.nodes.len() == MAX_OFFERED {
            self.nodes.pop_front();
        }
        self.nodes.push_back(addr);
        true
    }

    /// The kept nodes, oldest first.
    pub fn nodes(&self) -> Vec<SocketAddrV4> {
        self.nodes.iter().copied().collect()
    }
}

/// A unicast address with a port: what a node can be reached at.
fn is_node_address(addr: SocketAddrV4) -> bool {
    let ip = addr.ip();
    addr.port() != 0 && !ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_distinct_bounded_and_unicast() {
        let mut o = Offered::default();
        assert!(o.offer("10.0.0.1:6881".parse().unwrap()));
        assert!(!o.offer("10.0.0.1:6881".parse().unwrap()), "already kept");
        for bad in ["0.0.0.0:6881", "10.0.0.2:0", "224.0.0.1:6881", "255.255.255.255:6881"] {
            assert!(!o.offer(bad.parse().unwrap()), "{bad}");
        }
        for i in 0..200u32 {
            o.offer(SocketAddrV4::new(std::net::Ipv4Addr::from(0x0b00_0000 + i), 6881));
        }
        let kept = o.nodes();
        assert_eq!(kept.len(), MAX_OFFERED);
        assert_eq!(kept.last().copied(), Some(SocketAddrV4::new(std::net::Ipv4Addr::from(0x0b00_0000 + 199), 6881)));
        assert!(!kept.contains(&"10.0.0.1:6881".parse().unwrap()), "the oldest went first");
    }
}
