//! `HandshakeCodec` over arbitrary bytes: no panic; a decoded handshake consumes exactly
//! 68 bytes and re-encodes to them.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal::wire::handshake::HANDSHAKE_LEN;
use shoal::wire::HandshakeCodec;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    if let Ok(Some(hs)) = HandshakeCodec.decode(&mut buf) {
        assert_eq!(buf.len(), data.len() - HANDSHAKE_LEN);
        let mut out = BytesMut::new();
        HandshakeCodec.encode(hs, &mut out).unwrap();
        assert_eq!(&out[..], &data[..HANDSHAKE_LEN]);
    }
});
