//! The `.torrent` file for an info dict fetched from peers: the dict's bytes exactly as
//! they were verified, and the magnet's trackers (`announce`, and `announce-list` with one
//! tier per tracker, as libtorrent makes of a magnet's `tr`s).
use crate::bencode::{self, Value};
use std::collections::BTreeMap;

/// A `.torrent` holding `info` unchanged (its SHA-1 stays the info-hash).
pub fn torrent_file(info: &[u8], trackers: &[String]) -> Vec<u8> {
    let text = |s: &str| Value::Bytes(s.as_bytes().to_vec());
    let mut top = BTreeMap::new();
    if let Some(first) = trackers.first() {
        top.insert(b"announce".to_vec(), text(first));
        let tiers = trackers.iter().map(|t| Value::List(vec![text(t)])).collect();
        top.insert(b"announce-list".to_vec(), Value::List(tiers));
    }
    top.insert(b"created by".to_vec(), text(&format!("shoal {}", env!("CARGO_PKG_VERSION"))));
    // Every key above sorts before `info`, so the raw dict goes last, before the closing `e`.
    let mut out = bencode::encode(&Value::Dict(top));
    out.pop();
    out.extend_from_slice(b"4:info");
    out.extend_from_slice(info);
    out.push(b'e');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::{InfoHash, Metainfo};

    #[test]
    fn keeps_the_info_bytes_and_the_trackers() {
        let info = b"d6:lengthi5e4:name3:abc12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let trackers = vec!["http://t.example/a".to_string(), "udp://u.example:1".to_string()];
        let meta = Metainfo::from_bytes(&torrent_file(info, &trackers)).unwrap();
        assert_eq!(meta.info_hash, InfoHash::of_info(info));
        assert_eq!(&meta.info_bytes[..], &info[..]);
        assert_eq!(meta.trackers, vec![vec![trackers[0].clone()], vec![trackers[1].clone()]]);
        let bare = Metainfo::from_bytes(&torrent_file(info, &[])).unwrap();
        assert!(bare.trackers.is_empty());
        assert_eq!(bare.name, "abc");
    }
}
