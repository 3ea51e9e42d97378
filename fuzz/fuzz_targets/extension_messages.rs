//! The BEP 10 extension payloads over arbitrary bytes: `ExtHandshake::decode`,
//! `PexMessage::decode` and `MetadataMsg::decode` (each sees the whole input). Besides no
//! panic:
//! - whatever decodes re-encodes to bytes that decode to the same value (a PEX peer sent
//!   without flags comes back with flags 0, the value `encode` writes for it);
//! - a handshake keeps at most 64 characters of the client name, no zero port or `reqq`, and
//!   no more extension ids than the input has room for;
//! - a PEX message holds exactly the peers a plain reading of its compact lists gives, each
//!   from its own 6 or 18 bytes, in order, at most `MAX_PEX_PEERS` added and as many dropped;
//! - a `ut_metadata` data piece is the input's tail and exactly the piece's length within a
//!   `total_size` in 1..=16 MiB; a request or reject has nothing after its dict.
#![no_main]
use std::net::SocketAddr;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use shoal::bencode::{self, Value};
use shoal::wire::extension::ExtHandshake;
use shoal::wire::metadata::{piece_range, size_ok, MetadataMsg};
use shoal::wire::pex::{PexMessage, PexPeer, MAX_PEX_PEERS};

#[path = "shared/compact.rs"]
mod compact;
use compact::entry;

fn check_handshake(data: &[u8]) {
    let Some(hs) = ExtHandshake::decode(data) else {
        return;
    };
    assert!(hs.client.as_ref().is_none_or(|c| c.chars().count() <= 64));
    assert_ne!(hs.port, Some(0));
    assert_ne!(hs.reqq, Some(0));
    // The shortest `m` entry, `0:i0e`, is 5 bytes.
    assert!(hs.m.len() <= data.len() / 5);
    assert_eq!(ExtHandshake::decode(&hs.encode()), Some(hs));
}

fn check_pex(data: &[u8]) {
    let Ok(msg) = PexMessage::decode(data) else {
        return;
    };
    assert!(msg.added.len() <= MAX_PEX_PEERS);
    assert!(msg.dropped.len() <= MAX_PEX_PEERS);
    assert!(msg.added.len() + msg.dropped.len() <= data.len() / 6);

    let Ok(Value::Dict(d)) = bencode::decode(data) else {
        panic!("accepted a pex payload that is not a bencoded dict");
    };
    let raw = |k: &str| d.get(k.as_bytes()).and_then(Value::as_bytes).unwrap_or_default();
    let mut added = Vec::new();
    for (list, fl, size) in [("added", "added.f", 6), ("added6", "added6.f", 18)] {
        let flags = raw(fl);
        added.extend(
            raw(list)
                .chunks_exact(size)
                .enumerate()
                .map(|(i, c)| PexPeer { addr: entry(c), flags: flags.get(i).copied() }),
        );
    }
    added.truncate(MAX_PEX_PEERS);
    assert_eq!(msg.added, added);
    let mut dropped: Vec<SocketAddr> = raw("dropped").chunks_exact(6).map(entry).collect();
    dropped.extend(raw("dropped6").chunks_exact(18).map(entry));
    dropped.truncate(MAX_PEX_PEERS);
    assert_eq!(msg.dropped, dropped);

    let mut sent = msg.clone();
    for p in &mut sent.added {
        p.flags.get_or_insert(0);
    }
    assert_eq!(PexMessage::decode(&msg.encode()), Ok(sent));
}

fn check_metadata(data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    let Ok(Some(msg)) = MetadataMsg::decode(&payload) else {
        return;
    };
    match &msg {
        MetadataMsg::Data { piece, total_size, data: piece_data } => {
            assert!(size_ok(*total_size));
            let range = piece_range(*total_size, *piece).expect("piece inside total_size");
            assert_eq!(piece_data.len(), range.len());
            assert!(data.ends_with(piece_data));
        }
        MetadataMsg::Request { .. } | MetadataMsg::Reject { .. } => {
            assert!(matches!(bencode::decode(data), Ok(Value::Dict(_))), "bytes after the dict");
        }
    }
    assert_eq!(MetadataMsg::decode(&msg.encode()), Ok(Some(msg)));
}

fuzz_target!(|data: &[u8]| {
    check_handshake(data);
    check_pex(data);
    check_metadata(data);
});
