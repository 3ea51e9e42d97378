//! BitTorrent bytes for fake peers, encoded with the crate's own codecs: a handshake with any
//! reserved bits and peer id, a run of messages, and a bitfield claiming every piece. (Bytes
//! the codecs would never produce are built in `tests/hostile`'s `raw`.)
use bytes::{Bytes, BytesMut};
use shoal::metainfo::InfoHash;
use shoal::wire::{Handshake, HandshakeCodec, Message, MessageCodec, PeerId};
use tokio_util::codec::Encoder;

/// The 68 bytes of a handshake.
pub fn handshake_bytes(reserved: [u8; 8], info_hash: InfoHash, peer_id: PeerId) -> Vec<u8> {
    encode_handshake(Handshake { reserved, info_hash, peer_id })
}

pub fn encode_handshake(hs: Handshake) -> Vec<u8> {
    let mut out = BytesMut::new();
    HandshakeCodec.encode(hs, &mut out).expect("encoding into memory");
    out.to_vec()
}

/// A peer id from 20 bytes of text, such as `-ST0001-000000000042`.
pub fn peer_id(text: &str) -> PeerId {
    PeerId(text.as_bytes().try_into().unwrap_or_else(|_| panic!("a peer id is 20 bytes: {text:?}")))
}

/// `msgs` framed one after another, as they go on the wire.
pub fn encode(msgs: impl IntoIterator<Item = Message>) -> Vec<u8> {
    let mut out = BytesMut::new();
    for m in msgs {
        MessageCodec::default().encode(m, &mut out).expect("encoding into memory");
    }
    out.to_vec()
}

/// A bitfield message body claiming every one of `pieces` pieces (spare bits clear).
pub fn full_bitfield(pieces: u32) -> Bytes {
    let n = pieces as usize;
    let mut bits = vec![0xffu8; n.div_ceil(8)];
    if !n.is_multiple_of(8) {
        *bits.last_mut().expect("at least one byte") = 0xffu8 << (8 - n % 8);
    }
    bits.into()
}
