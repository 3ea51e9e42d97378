//! The BEP 3 handshake: `<19>"BitTorrent protocol"<8 reserved><20 info-hash><20 peer id>`.
//!
//! The reserved bytes are kept as they came so later layers can read the extension bits
//! (BEP 10 extension protocol, BEP 5 DHT, BEP 6 fast).
use super::message::WireError;
use crate::metainfo::InfoHash;
use bytes::{Buf, BufMut, BytesMut};
use std::fmt;
use tokio_util::codec::{Decoder, Encoder};

const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
/// Length of a complete handshake on the wire.
pub const HANDSHAKE_LEN: usize = 1 + 19 + 8 + 20 + 20;

/// A 20-byte peer id (BEP 20 style: `-SH0100-` followed by random bytes for ours).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

impl PeerId {
    /// A fresh random peer id in Azureus style, naming shoal and its version.
    pub fn generate() -> PeerId {
        let mut id = [0u8; 20];
        let prefix = b"-SH0100-";
        id[..8].copy_from_slice(prefix);
        for b in &mut id[8..] {
            *b = b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::random::<usize>() % 36];
        }
        PeerId(id)
    }

    /// The client name encoded in an Azureus-style id, for diagnostics.
    pub fn client_hint(&self) -> String {
        String::from_utf8_lossy(&self.0[..8]).into_owned()
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            if b.is_ascii_graphic() {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Reserved-bit flags we read and set.
pub mod reserved {
    /// BEP 10 extension protocol: byte 5, bit 0x10.
    pub const EXTENSION: (usize, u8) = (5, 0x10);
    /// BEP 5 DHT: byte 7, bit 0x01.
    pub const DHT: (usize, u8) = (7, 0x01);
    /// BEP 6 fast extension: byte 7, bit 0x04.
    pub const FAST: (usize, u8) = (7, 0x04);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
}

impl Handshake {
    /// Our handshake: the extension protocol (BEP 10) and fast extension (BEP 6) bits set.
    pub fn new(info_hash: InfoHash, peer_id: PeerId) -> Handshake {
        let mut reserved = [0u8; 8];
        reserved[reserved::EXTENSION.0] |= reserved::EXTENSION.1;
        reserved[reserved::FAST.0] |= reserved::FAST.1;
        Handshake { reserved, info_hash, peer_id }
    }

    /// With the BEP 5 DHT bit set: we run a mainline DHT node and send `port` to peers that
    /// set it too.
    pub fn with_dht(mut self) -> Handshake {
        self.reserved[reserved::DHT.0] |= reserved::DHT.1;
        self
    }

    pub fn has(&self, bit: (usize, u8)) -> bool {
        self.reserved[bit.0] & bit.1 != 0
    }
}

/// Frames exactly one handshake.
#[derive(Debug, Default)]
pub struct HandshakeCodec;

impl Decoder for HandshakeCodec {
    type Item = Handshake;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Handshake>, WireError> {
        // Check the protocol string as soon as it is there: a stranger speaking something
        // else is dropped without waiting for 68 bytes.
        if let Some(&len) = src.first() {
            if len as usize != PROTOCOL.len() {
                return Err(WireError::BadProtocol);
            }
        }
        let seen = src.len().min(20);
        if seen > 1 && src[1..seen] != PROTOCOL[..seen - 1] {
            return Err(WireError::BadProtocol);
        }
        if src.len() < HANDSHAKE_LEN {
            src.reserve(HANDSHAKE_LEN - src.len());
            return Ok(None);
        }
        src.advance(20);
        let mut reserved = [0u8; 8];
        src.copy_to_slice(&mut reserved);
        let mut info_hash = [0u8; 20];
        src.copy_to_slice(&mut info_hash);
        let mut peer_id = [0u8; 20];
        src.copy_to_slice(&mut peer_id);
        Ok(Some(Handshake { reserved, info_hash: InfoHash(info_hash), peer_id: PeerId(peer_id) }))
    }
}

impl Encoder<Handshake> for HandshakeCodec {
    type Error = WireError;

    fn encode(&mut self, hs: Handshake, dst: &mut BytesMut) -> Result<(), WireError> {
        dst.reserve(HANDSHAKE_LEN);
        dst.put_u8(PROTOCOL.len() as u8);
        dst.put_slice(PROTOCOL);
        dst.put_slice(&hs.reserved);
        dst.put_slice(&hs.info_hash.0);
        dst.put_slice(&hs.peer_id.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_reserved_bits() {
        let mut hs = Handshake::new(InfoHash([7; 20]), PeerId([9; 20]));
        hs.reserved[7] = 0x01;
        let mut buf = BytesMut::new();
        HandshakeCodec.encode(hs, &mut buf).unwrap();
        assert_eq!(buf.len(), HANDSHAKE_LEN);
        buf.extend_from_slice(b"\0\0\0\0"); // a keep-alive behind the handshake stays buffered
        let got = HandshakeCodec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(got, hs);
        assert!(got.has(reserved::EXTENSION) && got.has(reserved::DHT) && !got.has(reserved::FAST));
        assert_eq!(&buf[..], b"\0\0\0\0");
    }

    #[test]
    fn ours_offers_bep_10_and_bep_6() {
        let hs = Handshake::new(InfoHash([7; 20]), PeerId([9; 20]));
        assert_eq!(hs.reserved, [0, 0, 0, 0, 0, 0x10, 0, 0x04]);
        assert!(hs.has(reserved::EXTENSION) && hs.has(reserved::FAST) && !hs.has(reserved::DHT));
    }

    #[test]
    fn partial_then_complete() {
        let mut full = BytesMut::new();
        HandshakeCodec.encode(Handshake::new(InfoHash([1; 20]), PeerId([2; 20])), &mut full).unwrap();
        let mut buf = BytesMut::from(&full[..30]);
        assert!(HandshakeCodec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&full[30..]);
        assert!(HandshakeCodec.decode(&mut buf).unwrap().is_some());
    }

    #[test]
    fn wrong_protocol_rejected_early() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(HandshakeCodec.decode(&mut buf), Err(WireError::BadProtocol)));
        let mut buf = BytesMut::from(&b"\x13BitTorrent pro"[..]);
        assert!(HandshakeCodec.decode(&mut buf).unwrap().is_none());
        let mut buf = BytesMut::from(&b"\x13BitTorrent prX"[..]);
        assert!(matches!(HandshakeCodec.decode(&mut buf), Err(WireError::BadProtocol)));
    }
}
