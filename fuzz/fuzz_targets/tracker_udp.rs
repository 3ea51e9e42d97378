//! `tracker::udp::parse_reply` over arbitrary datagrams: no panic; a datagram is never taken
//! for a transaction id other than the one in its bytes 4..8; an accepted reply is exactly
//! what the BEP 15 layout says (connection id, interval, leechers, seeders, then peers of 6 or
//! 18 bytes each as the address family asks, whole entries only, at most
//! `MAX_PEERS_PER_ANNOUNCE`); an error message carries no unsafe character and grows at most
//! sixfold (`\u{1b}` for one byte).
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shoal::discovery::tracker::udp::{parse_reply, Reply};
use shoal::discovery::tracker::{MAX_PEERS_PER_ANNOUNCE, MAX_TRACKER_TEXT};
use shoal::metainfo::names::is_unsafe;

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

#[path = "shared/compact.rs"]
mod compact;
use compact::entry;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the address family and a nonzero change to the transaction id.
    let Some((&sel, buf)) = data.split_first() else {
        return;
    };
    let over_ipv6 = sel & 1 == 1;
    let other = u32::from((sel >> 1) | 1).rotate_left(u32::from(sel));

    if buf.len() < 8 {
        assert_eq!(parse_reply(buf, 0, over_ipv6), Ok(None));
        assert_eq!(parse_reply(buf, u32::MAX, over_ipv6), Ok(None));
        return;
    }
    let tid = be32(&buf[4..8]);
    assert_eq!(parse_reply(buf, tid ^ other, over_ipv6), Ok(None), "foreign transaction id");

    let action = be32(buf);
    let reply = match parse_reply(buf, tid, over_ipv6) {
        Ok(Some(reply)) => reply,
        Ok(None) => panic!("our own transaction id ignored"),
        Err(e) => {
            assert!(!e.is_empty());
            assert_ne!(action, 3, "an error reply is always accepted");
            return;
        }
    };
    match reply {
        Reply::Connect { connection_id } => {
            assert_eq!(action, 0);
            assert!(buf.len() >= 16);
            assert_eq!(connection_id, u64::from_be_bytes(buf[8..16].try_into().unwrap()));
        }
        Reply::Announce(a) => {
            assert_eq!(action, 1);
            assert!(buf.len() >= 20);
            assert_eq!(a.interval, Duration::from_secs(be32(&buf[8..12]).into()));
            assert_eq!(a.leechers, Some(be32(&buf[12..16])));
            assert_eq!(a.seeders, Some(be32(&buf[16..20])));
            assert_eq!((a.min_interval, a.warning), (None, None));
            let size = if over_ipv6 { 18 } else { 6 };
            let raw = &buf[20..];
            assert_eq!(raw.len() % size, 0, "a partial peer entry accepted");
            assert_eq!(a.peers.len(), (raw.len() / size).min(MAX_PEERS_PER_ANNOUNCE));
            for (peer, c) in a.peers.iter().zip(raw.chunks_exact(size)) {
                assert_eq!(*peer, entry(c));
            }
        }
        Reply::Error(message) => {
            assert_eq!(action, 3);
            assert!(!message.chars().any(is_unsafe), "{message:?}");
            // Each byte kept becomes at most 6 (an escape); at most MAX_TRACKER_TEXT are kept.
            assert!(message.len() <= 6 * (buf.len() - 8).min(MAX_TRACKER_TEXT));
        }
    }
});
