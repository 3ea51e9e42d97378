//! BEP 11 peer exchange (`ut_pex`): the message carried in `Message::Extended` under the id
//! the receiver chose in its extension handshake.
//!
//! A message is a bencoded dict of compact peer lists: `added` / `dropped` (6 bytes per IPv4
//! peer: address, then port, big-endian), `added6` / `dropped6` (18 bytes per IPv6 peer), and
//! `added.f` / `added6.f`, one flag byte per added peer ([`flags`]).
//!
//! Decoding distrusts the sender: the payload is at most [`MAX_PEX_PAYLOAD`] bytes of
//! canonical bencode, and at most [`MAX_PEX_PEERS`] added and as many dropped peers are read
//! from one message; the rest is ignored, not an error. A list whose length is not a multiple
//! of its entry size loses its trailing partial entry; a field of the wrong type is ignored.
//! Only a payload that is not a bencoded dict at all is an error ([`PexError`]); the peer task
//! ignores such a message and keeps the connection (BEP 11 gives no reason to do more).
use crate::bencode::{self, Limits, Value};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Added peers read from one message (IPv4 and IPv6 together), and as many dropped ones.
pub const MAX_PEX_PEERS: usize = 200;
/// Largest payload decoded: 200 IPv6 peers with flags take under 4 KiB, so this is generous.
pub const MAX_PEX_PAYLOAD: usize = 64 * 1024;
/// Bencode bounds for a PEX payload: a flat dict of byte strings.
const PEX_LIMITS: Limits = Limits { max_depth: 2, max_input: MAX_PEX_PAYLOAD, max_items: 64 };

/// The BEP 11 flag bits of an added peer.
pub mod flags {
    /// Prefers encrypted connections.
    pub const ENCRYPTION: u8 = 0x01;
    /// A seed or upload-only peer.
    pub const SEED: u8 = 0x02;
    pub const UTP: u8 = 0x04;
    pub const HOLEPUNCH: u8 = 0x08;
    /// Outgoing connections reached it (it accepts connections).
    pub const REACHABLE: u8 = 0x10;
}

/// A peer in an `added` list, with its flags (`None` when the sender gave none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PexPeer {
    pub addr: SocketAddr,
    pub flags: Option<u8>,
}

impl PexPeer {
    pub fn is_seed(&self) -> bool {
        self.flags.is_some_and(|f| f & flags::SEED != 0)
    }

    /// Known not to accept connections: flags given without the reachable bit.
    pub fn unreachable(&self) -> bool {
        self.flags.is_some_and(|f| f & flags::REACHABLE == 0)
    }
}

/// One PEX message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    pub added: Vec<PexPeer>,
    pub dropped: Vec<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PexError {
    #[error("pex payload is not a bencoded dict of at most {MAX_PEX_PAYLOAD} bytes")]
    NotADict,
}

impl PexMessage {
    /// Encodes every peer given; callers bound the lists (we send at most 50 of each).
    pub fn encode(&self) -> Bytes {
        let (mut added, mut added_f, mut added6, mut added6_f) = (vec![], vec![], vec![], vec![]);
        for p in &self.added {
            let (list, fl) = if p.addr.is_ipv4() { (&mut added, &mut added_f) } else { (&mut added6, &mut added6_f) };
            put(list, p.addr);
            fl.push(p.flags.unwrap_or(0));
        }
        let (mut dropped, mut dropped6) = (vec![], vec![]);
        for a in &self.dropped {
            put(if a.is_ipv4() { &mut dropped } else { &mut dropped6 }, *a);
        }
        let mut d = BTreeMap::new();
        for (k, v) in [
            ("added", added),
            ("added.f", added_f),
            ("added6", added6),
            ("added6.f", added6_f),
            ("dropped", dropped),
            ("dropped6", dropped6),
        ] {
            d.insert(k.as_bytes().to_vec(), Value::Bytes(v));
        }
        Bytes::from(bencode::encode(&Value::Dict(d)))
    }

    /// Reads a peer's message within the bounds in the module doc.
    pub fn decode(payload: &[u8]) -> Result<PexMessage, PexError> {
        let Ok(Value::Dict(d)) = bencode::decode_with_limits(payload, &PEX_LIMITS) else {
            return Err(PexError::NotADict);
        };
        let bytes = |k: &str| match d.get(k.as_bytes()) {
            Some(Value::Bytes(b)) => b.as_slice(),
            _ => &[],
        };
        let mut msg = PexMessage::default();
        for (list, fl, size) in [("added", "added.f", 6), ("added6", "added6.f", 18)] {
            let flag_bytes = bytes(fl);
            for (i, addr) in read_addrs(bytes(list), size).enumerate() {
                if msg.added.len() == MAX_PEX_PEERS {
                    break;
                }
                msg.added.push(PexPeer { addr, flags: flag_bytes.get(i).copied() });
            }
        }
        for (list, size) in [("dropped", 6), ("dropped6", 18)] {
            let room = MAX_PEX_PEERS - msg.dropped.len();
            msg.dropped.extend(read_addrs(bytes(list), size).take(room));
        }
        Ok(msg)
    }
}

fn put(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Compact addresses of `size` bytes each (6: IPv4, 18: IPv6); a trailing partial one is
/// skipped.
fn read_addrs(raw: &[u8], size: usize) -> impl Iterator<Item = SocketAddr> + '_ {
    raw.chunks_exact(size).map(move |c| {
        let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
        let ip = if size == 6 {
            IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        } else {
            let mut o = [0u8; 16];
            o.copy_from_slice(&c[..16]);
            IpAddr::V6(Ipv6Addr::from(o))
        };
        SocketAddr::new(ip, port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(i: u32, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), port)
    }

    #[test]
    fn round_trip_both_families() {
        let msg = PexMessage {
            added: vec![
                PexPeer { addr: v4(1, 6881), flags: Some(flags::SEED | flags::REACHABLE) },
                PexPeer { addr: "[2001:db8::1]:51413".parse().unwrap(), flags: Some(0) },
            ],
            dropped: vec![v4(2, 1), "[2001:db8::2]:2".parse().unwrap()],
        };
        let back = PexMessage::decode(&msg.encode()).unwrap();
        assert_eq!(back, msg);
        assert!(back.added[0].is_seed() && !back.added[0].unreachable());
        assert!(!back.added[1].is_seed() && back.added[1].unreachable());
    }

    #[test]
    fn libtorrent_style_payload() {
        // 127.0.0.1:6881 added as a reachable seed, 10.0.0.1:80 dropped; the IPv6 lists empty.
        let mut p = b"d5:added6:\x7f\x00\x00\x01\x1a\xe17:added.f1:\x126:added60:8:added6.f0:".to_vec();
        p.extend_from_slice(b"7:dropped6:\x0a\x00\x00\x01\x00\x508:dropped60:e");
        let m = PexMessage::decode(&p).unwrap();
        assert_eq!(m.added, vec![PexPeer { addr: "127.0.0.1:6881".parse().unwrap(), flags: Some(0x12) }]);
        assert_eq!(m.dropped, vec!["10.0.0.1:80".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn missing_flags_and_partial_entries() {
        // Two and a half IPv4 peers, one flag byte: the half is skipped, the second has no flags.
        let mut raw = vec![];
        put(&mut raw, v4(1, 1));
        put(&mut raw, v4(2, 2));
        raw.extend_from_slice(&[1, 2, 3]);
        let d = Value::Dict(
            [(b"added".to_vec(), Value::Bytes(raw)), (b"added.f".to_vec(), Value::Bytes(vec![flags::SEED]))].into(),
        );
        let m = PexMessage::decode(&bencode::encode(&d)).unwrap();
        assert_eq!(m.added.len(), 2);
        assert_eq!(m.added[1].flags, None);
        assert!(!m.added[1].unreachable(), "no flags: nothing known");
    }

    #[test]
    fn wrong_types_are_ignored_and_non_dicts_refused() {
        let m = PexMessage::decode(b"d5:addedi5e7:droppedlee").unwrap();
        assert_eq!(m, PexMessage::default());
        assert_eq!(PexMessage::decode(b"li1ee"), Err(PexError::NotADict));
        assert_eq!(PexMessage::decode(b"d5:added"), Err(PexError::NotADict));
        assert_eq!(PexMessage::decode(b""), Err(PexError::NotADict));
    }

    #[test]
    fn at_most_200_added_and_200_dropped_are_read() {
        let added: Vec<PexPeer> = (0..300).map(|i| PexPeer { addr: v4(i, 1), flags: Some(0) }).collect();
        let mut six: Vec<PexPeer> = (0..50)
            .map(|i| PexPeer { addr: SocketAddr::new(Ipv6Addr::from(i as u128 + 1).into(), 1), flags: None })
            .collect();
        let mut all = added.clone();
        all.append(&mut six);
        let dropped: Vec<SocketAddr> = (0..1000).map(|i| v4(i, 2)).collect();
        let m = PexMessage::decode(&PexMessage { added: all, dropped }.encode()).unwrap();
        assert_eq!(m.added.len(), MAX_PEX_PEERS);
        assert_eq!(m.added, added[..MAX_PEX_PEERS], "IPv4 first, the excess dropped");
        assert_eq!(m.dropped.len(), MAX_PEX_PEERS);
    }

    #[test]
    fn oversized_payload_is_refused_before_decoding() {
        let big = PexMessage {
            added: (0..11_000).map(|i| PexPeer { addr: v4(i, 1), flags: None }).collect(),
            dropped: vec![],
        };
        let bytes = big.encode();
        assert!(bytes.len() > MAX_PEX_PAYLOAD);
        assert_eq!(PexMessage::decode(&bytes), Err(PexError::NotADict));
    }
}
