//! What our node keeps for other nodes once it serves the DHT: the peers they announce.
//!
//! The `mainline` crate starts a node as a client and makes it a server (answering other
//! nodes' queries, storing what they announce) once it has run a while without a firewall
//! between it and the DHT. Its store is an LRU of info hashes, each an LRU of peers. With the
//! crate's bounds (2,000 info hashes of 500 peers) the first announce on an info hash
//! allocates that info hash's whole table, about 17 KB. One `get_peers` gives a token good for
//! every info hash from that address, and node ids are free, so a stranger could make us hold:
//! - with 2,001 announces (about 300 KB of datagrams), 34 MB, of which the test below saw
//!   17 MB resident;
//! - with a million, every table full, about 100 MB.
//!
//! Here a node keeps [`MAX_INFO_HASHES`] info hashes of [`MAX_PEERS_PER_INFO_HASH`] peers:
//! tables of about 2 KB, 64,000 peers in all, some 6 MB at the most (the same 2,001 announces:
//! 3 MB resident). Peers announce to the 8 nodes closest to an info hash, so a node holds only
//! the info hashes near its id, and the crate answers `get_peers` with at most 10 peers picked
//! at random, so 64 still gives every asker a varied answer. (libtorrent 2.0.8 allows 2,000 ×
//! 500 too, but grows each list as peers arrive.) BEP 44 values, which shoal never reads, keep
//! the crate's bounds: 1,000 of each kind, of at most 1,000 bytes.
//!
//! The test shows the bound on info hashes reaches the node; the bound on peers is the same
//! settings and the crate's own LRU.
use mainline::ServerSettings;

/// Info hashes whose peers the node keeps; past it the one least recently announced or asked
/// for is dropped.
pub const MAX_INFO_HASHES: usize = 1000;
/// Peers kept for one info hash; past it the one that announced least recently is dropped.
pub const MAX_PEERS_PER_INFO_HASH: usize = 64;

/// The server's settings with our bounds.
pub fn server_settings() -> ServerSettings {
    ServerSettings {
        max_info_hashes: MAX_INFO_HASHES,
        max_peers_per_info_hash: MAX_PEERS_PER_INFO_HASH,
        ..ServerSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::{decode, encode, Value};
    use std::net::{SocketAddrV4, UdpSocket};
    use std::time::Duration;

    /// A node that announces to ours from a plain UDP socket, as any stranger can.
    struct Stranger {
        socket: UdpSocket,
        to: SocketAddrV4,
        token: Vec<u8>,
    }

    const ID: [u8; 20] = [0x55; 20];

    impl Stranger {
        fn new(to: SocketAddrV4) -> Stranger {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let mut s = Stranger { socket, to, token: Vec::new() };
            let reply = s.get_peers([0; 20]);
            s.token = reply.get("token").and_then(Value::as_bytes).expect("a token").to_vec();
            s
        }

        /// Sends one query and returns the reply's `r` dictionary.
        fn ask(&self, q: &str, args: Value) -> Value {
            let query = Value::dict()
                .with("t", Value::Bytes(b"aaaa".to_vec()))
                .with("y", Value::Bytes(b"q".to_vec()))
                .with("q", Value::Bytes(q.as_bytes().to_vec()))
                .with("a", args);
            self.socket.send_to(&encode(&query.build()), self.to).unwrap();
            let mut buf = [0u8; 1500];
            let (n, _) = self.socket.recv_from(&mut buf).expect("an answer");
            let reply = decode(&buf[..n]).unwrap();
            reply.get("r").cloned().unwrap_or_else(|| panic!("`{q}` was refused: {reply:?}"))
        }

        fn get_peers(&self, info_hash: [u8; 20]) -> Value {
            let args =
                Value::dict().with("id", Value::Bytes(ID.to_vec())).with("info_hash", Value::Bytes(info_hash.to_vec()));
            self.ask("get_peers", args.build())
        }

        fn announce(&self, info_hash: [u8; 20], port: u16) {
            let args = Value::dict()
                .with("id", Value::Bytes(ID.to_vec()))
                .with("info_hash", Value::Bytes(info_hash.to_vec()))
                .with("port", Value::Int(port.into()))
                .with("token", Value::Bytes(self.token.clone()));
            self.ask("announce_peer", args.build());
        }

        /// The peers our node gives for `info_hash`, if it keeps any.
        fn peers(&self, info_hash: [u8; 20]) -> Option<usize> {
            self.get_peers(info_hash).get("values").and_then(Value::as_list).map(|v| v.len())
        }
    }

    fn info_hash(i: usize) -> [u8; 20] {
        let mut hash = [0xAA; 20];
        hash[..8].copy_from_slice(&(i as u64).to_be_bytes());
        hash
    }

    /// A stranger announcing one peer on each of more info hashes than the node keeps: the
    /// node drops the first (the stock 2,000 kept it) and keeps the last.
    #[tokio::test]
    async fn a_stranger_announcing_on_many_info_hashes_pushes_out_the_oldest() {
        let node = tokio::task::spawn_blocking(|| {
            let mut builder = super::super::builder(&[], Some("127.0.0.1:0".parse().unwrap()));
            // A node serves once it has run a while reachable; this one from the start.
            builder.server_mode().build().unwrap().as_async()
        })
        .await
        .unwrap();
        let to = node.info().await.local_addr();
        let report = tokio::task::spawn_blocking(move || {
            let stranger = Stranger::new(to);
            for i in 0..=MAX_INFO_HASHES {
                stranger.announce(info_hash(i), 6881);
            }
            let first = stranger.peers(info_hash(0));
            let last = stranger.peers(info_hash(MAX_INFO_HASHES));
            (first, last)
        })
        .await
        .unwrap();
        assert_eq!(report.1, Some(1), "the last info hash keeps its peer");
        assert_eq!(report.0, None, "the first info hash was dropped");
        drop(node);
    }
}
