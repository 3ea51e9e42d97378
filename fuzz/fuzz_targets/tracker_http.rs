//! `tracker::http::parse_response` over arbitrary bytes: no panic; an error names the tracker;
//! an accepted reply holds at most `MAX_PEERS_PER_ANNOUNCE` peers, exactly the ones a plain
//! reading of the dict gives (every compact one from its own 6 (`peers`) or 18 (`peers6`)
//! bytes, in order), its interval is the dict's, and its text fields carry no unsafe
//! character. `compact_v4` / `compact_v6` are driven directly too: `Some` exactly when the
//! length is whole entries, and never more entries than the cap or the input holds.
//!
//! The HTTP exchange itself (status line, headers, chunked bodies, redirects) is reqwest's;
//! shoal has no parser of its own there.
#![no_main]
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use shoal::bencode::{self, Value};
use shoal::discovery::tracker::http::{compact_v4, compact_v6, parse_response};
use shoal::discovery::tracker::{TrackerError, MAX_PEERS_PER_ANNOUNCE, MAX_TRACKER_TEXT};
use shoal::metainfo::names::is_unsafe;

const URL: &str = "http://tracker.example/announce";

#[path = "shared/compact.rs"]
mod compact;
use compact::entry;

/// A BEP 3 dictionary peer: an address literal and a port in 1..=65535, or nothing.
fn dict_peer(v: &Value) -> Option<SocketAddr> {
    let ip = std::str::from_utf8(v.get("ip")?.as_bytes()?).ok()?.parse().ok()?;
    let port = u16::try_from(v.get("port")?.as_int()?).ok().filter(|p| *p != 0)?;
    Some(SocketAddr::new(ip, port))
}

/// `compact(data, cap)` against the entry layout: whole entries only, `cap` at most, in order.
fn check_compact(data: &[u8], cap: usize, size: usize, compact: fn(&[u8], usize) -> Option<Vec<SocketAddr>>) {
    match compact(data, cap) {
        None => assert!(data.len() % size != 0),
        Some(peers) => {
            assert_eq!(data.len() % size, 0);
            assert_eq!(peers.len(), cap.min(data.len() / size));
            for (peer, c) in peers.iter().zip(data.chunks_exact(size)) {
                assert_eq!(*peer, entry(c));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let cap = data.first().map_or(0, |&b| b as usize);
    check_compact(data, cap, 6, compact_v4);
    check_compact(data, cap, 18, compact_v6);

    let announce = match parse_response(URL, data) {
        Ok(a) => a,
        Err(e) => {
            assert!(e.to_string().contains(URL), "{e}");
            if let TrackerError::Failure { reason, .. } = e {
                assert!(!reason.chars().any(is_unsafe), "{reason:?}");
                assert!(reason.len() <= 6 * MAX_TRACKER_TEXT, "{} bytes of reason", reason.len());
            }
            return;
        }
    };
    assert!(announce.peers.len() <= MAX_PEERS_PER_ANNOUNCE);
    // The smallest peer entry, compact IPv4, is 6 bytes of the body.
    assert!(announce.peers.len() <= data.len() / 6);
    if let Some(w) = &announce.warning {
        assert!(!w.chars().any(is_unsafe), "{w:?}");
        assert!(w.len() <= 6 * MAX_TRACKER_TEXT, "{} bytes of warning", w.len());
    }

    // An accepted body is a bencoded dict, and a plain reading of it gives the same peers.
    let Ok(Value::Dict(dict)) = bencode::decode(data) else {
        panic!("accepted a body that is not a bencoded dict");
    };
    let Some(Value::Int(interval)) = dict.get(b"interval".as_slice()) else {
        panic!("accepted a reply without an integer interval");
    };
    assert_eq!(announce.interval.as_secs(), (*interval).max(0).unsigned_abs());
    let mut expected: Vec<SocketAddr> = match dict.get(b"peers".as_slice()) {
        None => Vec::new(),
        Some(Value::Bytes(raw)) => {
            assert_eq!(raw.len() % 6, 0);
            raw.chunks_exact(6).map(entry).collect()
        }
        Some(Value::List(list)) => list.iter().filter_map(dict_peer).collect(),
        Some(other) => panic!("accepted peers of kind {}", other.kind_name()),
    };
    expected.truncate(MAX_PEERS_PER_ANNOUNCE);
    if let Some(Value::Bytes(raw)) = dict.get(b"peers6".as_slice()) {
        assert_eq!(raw.len() % 18, 0);
        expected.extend(raw.chunks_exact(18).map(entry));
    }
    expected.truncate(MAX_PEERS_PER_ANNOUNCE);
    assert_eq!(announce.peers, expected);
});
