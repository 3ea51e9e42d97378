//! A plain reading of compact peer entries (BEP 23, BEP 7, BEP 11), written apart from shoal's
//! own so the targets compare two readings.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address in one compact entry: 4 or 16 address bytes, then the port, big-endian.
pub fn entry(c: &[u8]) -> SocketAddr {
    let (ip, port) = c.split_at(c.len() - 2);
    let ip = match ip.len() {
        4 => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).unwrap())),
    };
    SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]]))
}
