//! Property tests for the peer wire codecs.
//!
//! The decoders must not care how TCP cuts the stream: a message list encoded into one byte
//! stream decodes to the same list whether it arrives whole, in two parts cut anywhere, or in
//! random-sized chunks. Hostile bytes never panic, and a pending frame never makes the
//! decoder reserve more than one bounded frame. Switching the same buffer from the
//! handshake codec to the message codec keeps the bytes that arrived behind the handshake.
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use proptest::prelude::*;
use shoal::metainfo::InfoHash;
use shoal::wire::message::DEFAULT_MAX_LEN;
use shoal::wire::{Handshake, HandshakeCodec, Message, MessageCodec, PeerId};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder, Framed};

/// Payloads are mostly small, sometimes a few KiB.
fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..32),
        1 => proptest::collection::vec(any::<u8>(), 0..4096),
    ]
    .prop_map(Bytes::from)
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        Just(Message::KeepAlive),
        Just(Message::Choke),
        Just(Message::Unchoke),
        Just(Message::Interested),
        Just(Message::NotInterested),
        any::<u32>().prop_map(|index| Message::Have { index }),
        payload().prop_map(Message::Bitfield),
        (any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(index, begin, length)| { Message::Request { index, begin, length } }),
        (any::<u32>(), any::<u32>(), payload()).prop_map(|(index, begin, data)| Message::Piece { index, begin, data }),
        (any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(index, begin, length)| { Message::Cancel { index, begin, length } }),
        any::<u16>().prop_map(Message::Port),
        (any::<u8>(), payload()).prop_map(|(id, payload)| Message::Extended { id, payload }),
        any::<u32>().prop_map(|index| Message::Suggest { index }),
        Just(Message::HaveAll),
        Just(Message::HaveNone),
        (any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(index, begin, length)| { Message::Reject { index, begin, length } }),
        any::<u32>().prop_map(|index| Message::AllowedFast { index }),
    ]
}

fn messages() -> impl Strategy<Value = Vec<Message>> {
    proptest::collection::vec(message(), 0..24)
}

fn encode(msgs: &[Message]) -> Vec<u8> {
    let mut codec = MessageCodec::default();
    let mut buf = BytesMut::new();
    for m in msgs {
        codec.encode(m.clone(), &mut buf).unwrap();
    }
    buf.to_vec()
}

/// Feeds `chunks` one after another into one read buffer, decoding after each as `Framed`
/// does, and checks nothing is left over at the end.
fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Message> {
    let mut codec = MessageCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(m) = codec.decode(&mut buf).unwrap() {
            out.push(m);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    out
}

/// Every split point of short streams; for longer ones the frame edges (where bugs live)
/// and an even sample in between.
fn split_points(msgs: &[Message], len: usize) -> Vec<usize> {
    if len <= 2048 {
        return (0..=len).collect();
    }
    let mut points: Vec<usize> = (0..=len).step_by(len / 256 + 1).collect();
    let mut edge = 0;
    for m in msgs {
        for p in [edge, edge + 1, edge + 3, edge + 4, edge + 5] {
            points.push(p.min(len));
        }
        edge += m.wire_len();
    }
    points.push(len);
    points.sort_unstable();
    points.dedup();
    points
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn whole_stream_round_trips(msgs in messages()) {
        let stream = encode(&msgs);
        prop_assert_eq!(stream.len(), msgs.iter().map(Message::wire_len).sum::<usize>());
        prop_assert_eq!(decode_chunks([&stream[..]]), msgs);
    }

    #[test]
    fn any_split_point_round_trips(msgs in messages()) {
        let stream = encode(&msgs);
        for at in split_points(&msgs, stream.len()) {
            let (a, b) = stream.split_at(at);
            prop_assert_eq!(&decode_chunks([a, b]), &msgs, "split at {}", at);
        }
    }

    #[test]
    fn random_chunks_round_trip(
        msgs in messages(),
        sizes in proptest::collection::vec(1usize..600, 1..32),
    ) {
        let stream = encode(&msgs);
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        prop_assert_eq!(decode_chunks(chunks), msgs);
    }
}

/// Bytes that look like frames (plausible length prefixes, any id, any body) mixed with
/// plain garbage, so the fuzzing reaches past the length check.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    let frame = (0u32..64, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(extra, id, body)| {
        // The prefix is sometimes right, sometimes off by a little.
        let len = (body.len() as u32 + 1).wrapping_add(extra).wrapping_sub(32);
        let mut f = len.to_be_bytes().to_vec();
        f.push(id);
        f.extend_from_slice(&body);
        f
    });
    let part = prop_oneof![frame, proptest::collection::vec(any::<u8>(), 0..16)];
    proptest::collection::vec(part, 0..12).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn message_decoder_survives_hostile_bytes(
        bytes in hostile_bytes(),
        max_len in prop_oneof![Just(DEFAULT_MAX_LEN), 0u32..200],
    ) {
        let mut codec = MessageCodec::new(max_len);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.capacity();
            match codec.decode(&mut buf) {
                Ok(Some(m)) => prop_assert!(m.wire_len() <= max_len as usize + 4),
                Ok(None) => {
                    // Growth is bounded by one frame of at most max_len (+ the prefix),
                    // allowing for `BytesMut`'s own doubling of the original allocation;
                    // a decoder that trusted the prefix would reserve up to 4 GiB here.
                    let bound = (max_len as usize + 4).max(2 * bytes.len());
                    prop_assert!(
                        buf.capacity() <= bound,
                        "capacity {} > {} (was {})", buf.capacity(), bound, before
                    );
                    if buf.len() >= 4 {
                        // ... and the frame the prefix announces fits without another grow.
                        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                        prop_assert!(buf.capacity() >= 4 + len as usize);
                    }
                    break;
                }
                Err(_) => break,
            }
        }
    }

    #[test]
    fn handshake_decoder_survives_hostile_bytes(
        valid_prefix in 0usize..=20,
        bytes in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        let mut buf = BytesMut::from(&b"\x13BitTorrent protocol"[..valid_prefix]);
        buf.extend_from_slice(&bytes);
        let len = buf.len();
        match HandshakeCodec.decode(&mut buf) {
            Ok(Some(_)) => prop_assert_eq!(buf.len(), len - 68),
            Ok(None) => prop_assert_eq!(buf.len(), len),
            Err(_) => {}
        }
    }

    #[test]
    fn handshake_then_messages_in_one_buffer(msgs in messages(), reserved in any::<[u8; 8]>()) {
        let hs = Handshake { reserved, info_hash: InfoHash([0x11; 20]), peer_id: PeerId(*b"-SH0100-abcdefghijkl") };
        let mut buf = BytesMut::new();
        HandshakeCodec.encode(hs, &mut buf).unwrap();
        buf.extend_from_slice(&encode(&msgs));

        prop_assert_eq!(HandshakeCodec.decode(&mut buf).unwrap(), Some(hs));
        // The same buffer goes on to the message codec, as `Framed::map_codec` does.
        let mut codec = MessageCodec::default();
        let mut got = Vec::new();
        while let Some(m) = codec.decode(&mut buf).unwrap() {
            got.push(m);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, msgs);
    }
}

/// Over a real stream: the peer writes handshake, bitfield and a block in one write, so they
/// all land in the handshake `Framed`'s read buffer; `map_codec` must hand them on.
#[tokio::test]
async fn framed_map_codec_keeps_buffered_bytes() {
    let (mut peer, ours) = tokio::io::duplex(64 * 1024);
    let hs = Handshake::new(InfoHash([0x22; 20]), PeerId(*b"-XX0001-000000000000"));
    let sent = vec![
        Message::Bitfield(Bytes::from_static(&[0xff, 0xfe])),
        Message::Piece { index: 1, begin: 16384, data: Bytes::from(vec![0x5a; 16384]) },
    ];
    let mut wire = BytesMut::new();
    HandshakeCodec.encode(hs, &mut wire).unwrap();
    wire.extend_from_slice(&encode(&sent));
    peer.write_all(&wire).await.unwrap();
    drop(peer);

    let mut framed = Framed::new(ours, HandshakeCodec);
    let got = framed.next().await.unwrap().unwrap();
    assert_eq!(got, hs);
    assert!(!framed.read_buffer().is_empty(), "the messages should already be buffered");

    let mut framed = framed.map_codec(|_| MessageCodec::default());
    let mut got = Vec::new();
    while let Some(m) = framed.next().await {
        got.push(m.unwrap());
    }
    assert_eq!(got, sent);
}
