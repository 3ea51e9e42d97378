//! Inbound handshake bounds of a session, over real sockets on 127.0.0.1 (issue 8, fault 8):
//! one IP holding handshakes open cannot take more than `max_inbound_handshakes_per_ip`
//! slots, connections past that are closed unread, and other IPs are still served.
//! 127.0.0.2 is a second source IP: Linux routes all of 127/8 to the loopback device.
mod common;

use common::torrent::{make_file, make_torrent};
use common::wire::handshake_bytes;
use shoal::config::Options;
use shoal::metainfo::InfoHash;
use shoal::session::Session;
use shoal::wire::PeerId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Bound on every wait here: generous for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

fn handshake(info_hash: &[u8; 20], id: u8) -> Vec<u8> {
    handshake_bytes([0; 8], InfoHash(*info_hash), PeerId([id; 20]))
}

async fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    tokio::time::timeout(WAIT, socket.connect(to)).await.expect("connect timed out").unwrap()
}

/// Sends a handshake and asserts the torrent answers with its own for the same info-hash.
async fn handshake_is_answered(stream: &mut TcpStream, info_hash: &[u8; 20], id: u8, what: &str) {
    stream.write_all(&handshake(info_hash, id)).await.unwrap();
    let mut reply = [0u8; 68];
    let r = tokio::time::timeout(WAIT, stream.read_exact(&mut reply)).await;
    assert!(matches!(r, Ok(Ok(_))), "{what}: no handshake answer: {r:?}");
    assert_eq!(&reply[28..48], info_hash, "{what}: answer names another torrent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_cannot_hold_every_handshake_slot() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 256 * 1024, 7);
    let meta = make_torrent(&src, 64 * 1024);
    let options = Options {
        // Long enough that the held connections are certainly still waiting when we use them.
        handshake_timeout: Duration::from_secs(300),
        max_inbound_handshakes_per_ip: 8,
        max_connections_per_ip: 16,
        ..Options::default()
    };
    let session = Session::start(Arc::new(options), Some("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let listen = session.listen_addr().unwrap();
    let h = session.add_torrent(meta.clone(), dir.path().join("seed"));
    tokio::time::timeout(WAIT, h.wait_complete()).await.expect("seeder check timed out").unwrap();
    let info_hash = meta.info_hash.as_bytes();

    // 20 connections from 127.0.0.1 that send nothing. The accept loop takes them in order:
    // the first 8 hold the IP's handshake slots, the 12 after them are closed unread.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from([127, 0, 0, 1], listen).await);
    }
    let mut refused = held.split_off(8);
    for (i, stream) in refused.iter_mut().enumerate() {
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0))), "connection {} past the per-IP bound: expected EOF, got {r:?}", i + 8);
    }

    // Another IP is served at once, while 127.0.0.1 still holds its 8 slots.
    let mut other = connect_from([127, 0, 0, 2], listen).await;
    handshake_is_answered(&mut other, info_hash, 100, "127.0.0.2").await;

    // The first 8 were kept open, waiting for their handshake: each is answered now.
    for (i, stream) in held.iter_mut().enumerate() {
        handshake_is_answered(stream, info_hash, i as u8 + 1, &format!("held connection {i}")).await;
    }
    // Their slots are given back as their handshakes are routed: 127.0.0.1 is served again.
    // (A slot is freed just after the hand-over that leads to the answer, so a connection
    // may still meet the old count once; it is retried until the deadline.)
    let deadline = tokio::time::Instant::now() + WAIT;
    let again = loop {
        let mut s = connect_from([127, 0, 0, 1], listen).await;
        s.write_all(&handshake(info_hash, 50)).await.unwrap();
        let mut reply = [0u8; 68];
        if let Ok(Ok(_)) = tokio::time::timeout(WAIT, s.read_exact(&mut reply)).await {
            assert_eq!(&reply[28..48], info_hash);
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "127.0.0.1 never served again after its slots freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    drop((held, refused, other, again));
    session.shutdown().await;
}
