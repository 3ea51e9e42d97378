//! Peer addresses and keys.
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Identifies a connected peer within its torrent (the torrent's connection key).
pub type PeerKey = u64;

/// The address that stands for one host in per-IP bounds and bans: an IPv6 host is its /64
/// (one customer's prefix, which a single host can spread over freely), an IPv4-mapped IPv6
/// address is its IPv4 address.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// How a peer is reached. One peer is one address, whatever told us about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerAddr {
    Tcp(SocketAddr),
    /// A libp2p peer, reached through the node by its PeerId.
    P2p(PeerId),
}

impl PeerAddr {
    /// The host this address counts against in per-IP bounds (none for libp2p peers).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            PeerAddr::Tcp(a) => Some(ip_key(a.ip())),
            PeerAddr::P2p(_) => None,
        }
    }

    /// Whether dialling it could reach anyone: not port 0, not an unspecified (0.0.0.0, ::)
    /// or multicast IP. Trackers and peers send such addresses; they are dropped unheard.
    pub fn is_dialable(&self) -> bool {
        match self {
            PeerAddr::Tcp(a) => a.port() != 0 && !a.ip().is_unspecified() && !a.ip().is_multicast(),
            PeerAddr::P2p(_) => true,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::P2p(id) => write!(f, "/p2p/{id}"),
        }
    }
}

/// Where the pool first heard of a peer, for diagnostics and for how hard it is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerSource {
    /// Named by the user (`--peer`, a magnet's `x.pe`): retried quickly, never forgotten.
    #[default]
    Explicit,
    Tracker,
    /// The mainline DHT (BEP 5).
    Dht,
    /// shoal's own Kademlia DHT (libp2p).
    Kad,
    /// Told by a connected peer (BEP 11).
    Pex,
    /// It connected to us.
    Inbound,
    /// The listen port an inbound peer told us (BEP 10 `p`).
    Listen,
    /// A configured key peer reached again by the keep-alive layer.
    KeyPeer,
}

impl PeerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerSource::Explicit => "explicit",
            PeerSource::Tracker => "tracker",
            PeerSource::Dht => "dht",
            PeerSource::Kad => "kad",
            PeerSource::Pex => "pex",
            PeerSource::Inbound => "inbound",
            PeerSource::Listen => "listen",
            PeerSource::KeyPeer => "key_peer",
        }
    }
}

/// A `key_peers` entry: a bare PeerId, or a multiaddr ending in `/p2p/<PeerId>` whose
/// address is remembered for dialling.
pub fn parse_key_peer(s: &str) -> Result<(PeerId, Option<Multiaddr>), String> {
    if let Ok(id) = s.parse::<PeerId>() {
        return Ok((id, None));
    }
    let addr: Multiaddr = s.parse().map_err(|e| format!("`{s}` is neither a PeerId nor a multiaddr ({e})"))?;
    match addr.iter().last() {
        Some(Protocol::P2p(id)) => Ok((id, Some(addr))),
        _ => Err(format!("`{s}` does not end in /p2p/<PeerId>")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_peer_entries_parse() {
        let id = PeerId::random();
        assert_eq!(parse_key_peer(&id.to_base58()).unwrap(), (id, None));
        let s = format!("/ip4/127.0.0.1/tcp/4001/p2p/{id}");
        assert_eq!(parse_key_peer(&s).unwrap(), (id, Some(s.parse().unwrap())));
        assert!(parse_key_peer("/ip4/127.0.0.1/tcp/4001").unwrap_err().contains("/p2p/"));
        assert!(parse_key_peer("bogus").is_err());
    }

    #[test]
    fn ipv6_hosts_are_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(ip_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(ip_key(v4), v4);
    }
}
