//! The DHT key under which a torrent's providers are announced.
//!
//! The key is `b"shoal:bt:v1:"` followed by the 20-byte v1 info-hash. It is not hashed here:
//! Kademlia already maps every record key into its keyspace with SHA-256 (`kbucket::Key::new`),
//! so pre-hashing would add nothing to the spread of keys. The prefix keeps torrent keys apart
//! from any other kind of key shoal may publish later (a BEP 52 v2 hash, metadata records),
//! and keeps a shoal key from ever equalling a bare 20-byte key another application uses.
//! Every shoal version must derive the same key, so this format is part of the wire contract.
use crate::metainfo::InfoHash;

const PREFIX: &[u8] = b"shoal:bt:v1:";

/// The provider-record key for the torrent with this info-hash.
pub fn torrent_key(info_hash: &InfoHash) -> Vec<u8> {
    let mut key = Vec::with_capacity(PREFIX.len() + info_hash.0.len());
    key.extend_from_slice(PREFIX);
    key.extend_from_slice(&info_hash.0);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_prefix_then_info_hash() {
        let ih = InfoHash([0xab; 20]);
        let key = torrent_key(&ih);
        assert_eq!(&key[..PREFIX.len()], b"shoal:bt:v1:");
        assert_eq!(&key[PREFIX.len()..], &[0xab; 20]);
    }

    #[test]
    fn distinct_torrents_get_distinct_keys() {
        assert_ne!(torrent_key(&InfoHash([1; 20])), torrent_key(&InfoHash([2; 20])));
        assert_eq!(torrent_key(&InfoHash([1; 20])), torrent_key(&InfoHash([1; 20])));
    }
}
