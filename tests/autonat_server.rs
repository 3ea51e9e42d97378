//! Our AutoNAT server (v1) against a stranger's probes.
//!
//! The prober is a stock rust-libp2p node on 127.0.0.1 that opens `/libp2p/autonat/1.0.0`
//! streams to our node and writes DIAL requests by hand, naming the addresses it wants dialled
//! back. What it checks: QUIC dial-backs in flight are bounded (each binds a fresh UDP socket
//! with 3 MB of buffers, `p2p::quic`), so past the bound no datagram reaches a port named in a
//! probe; TCP addresses are still dialled back; and one peer gets 3 probes a minute, not 3 a
//! second.
//!
//! The node runs with `only_global_ips` off, as on loopback everything is private; a real
//! prober's address is global. Every wait is for an answer or a datagram, bounded by a
//! timeout; the one margin is the four holding probes' dial-backs, which last at least 15 s
//! after their first datagram while the fifth prober is answered within a second.

mod common;

use common::stock::{listen_on_loopback, read_varint, varint};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use shoal::p2p::{DhtMode, NodeConfig, NodeHandle};
use std::net::UdpSocket;
use std::time::Duration;

const AUTONAT: StreamProtocol = StreamProtocol::new("/libp2p/autonat/1.0.0");
const TIMEOUT: Duration = Duration::from_secs(60);

/// The DialResponse statuses (libp2p-autonat's `structs.proto`).
const OK: u64 = 0;
const E_DIAL_ERROR: u64 = 100;
const E_DIAL_REFUSED: u64 = 101;

async fn our_node() -> (NodeHandle, Multiaddr) {
    let mut config = NodeConfig::new(libp2p::identity::Keypair::generate_ed25519(), Duration::from_secs(10));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.dht_mode = DhtMode::Server;
    config.nat.only_global_ips = false;
    let node = NodeHandle::spawn(config).await.expect("node starts");
    let addr = node.listen_addrs().await.unwrap().remove(0);
    (node, addr)
}

/// The prober: a stock node listening on TCP (so a dial-back can reach it), connected to ours.
struct Prober {
    id: PeerId,
    tcp: Multiaddr,
    control: libp2p_stream::Control,
    /// Dial-back connections ended so far: our node closes each once it has answered, and the
    /// prober sees it fail in its handshake or close.
    ended: tokio::sync::watch::Receiver<usize>,
    /// Probes answered OK, each after a dial-back.
    dial_backs: usize,
    _driver: tokio::task::JoinHandle<()>,
}

impl Prober {
    async fn connect(ours: &Multiaddr) -> Prober {
        let mut swarm: Swarm<libp2p_stream::Behaviour> = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(libp2p::tcp::Config::default(), libp2p::tls::Config::new, libp2p::yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let tcp = listen_on_loopback(&mut swarm).await;
        swarm.dial(ours.clone()).unwrap();
        let own = loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { connection_id, .. } => break connection_id,
                SwarmEvent::OutgoingConnectionError { error, .. } => panic!("cannot reach our node: {error}"),
                _ => {}
            }
        };
        let (id, control) = (*swarm.local_peer_id(), swarm.behaviour().new_control());
        let (count, ended) = tokio::sync::watch::channel(0);
        let driver = tokio::spawn(async move {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::IncomingConnectionError { .. } => count.send_modify(|n| *n += 1),
                    SwarmEvent::ConnectionClosed { connection_id, .. } if connection_id != own => {
                        count.send_modify(|n| *n += 1)
                    }
                    _ => {}
                }
            }
        });
        let tcp = tcp.with(Protocol::P2p(id));
        Prober { id, tcp, control, ended, dial_backs: 0, _driver: driver }
    }

    /// Sends one DIAL naming `addrs` and returns the response's status. It waits first until
    /// every earlier dial-back's connection has ended, so the stream goes over the prober's own
    /// connection rather than one our node is closing.
    async fn probe(&mut self, ours: PeerId, addrs: &[Multiaddr]) -> u64 {
        let dial_backs = self.dial_backs;
        self.ended.wait_for(|n| *n >= dial_backs).await.unwrap();
        let mut stream = self.control.open_stream(ours, AUTONAT).await.expect("an AutoNAT stream");
        stream.write_all(&dial_request(self.id, addrs)).await.unwrap();
        stream.flush().await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        let status = response_status(&reply);
        self.dial_backs += usize::from(status == OK);
        status
    }
}

/// A length-delimited protobuf field.
fn bytes_field(number: u8, data: &[u8], out: &mut Vec<u8>) {
    out.push(number << 3 | 2);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// `Message { type: DIAL, dial: Dial { peer: PeerInfo { id, addrs } } }`, length-prefixed.
fn dial_request(id: PeerId, addrs: &[Multiaddr]) -> Vec<u8> {
    let mut peer = Vec::new();
    bytes_field(1, &id.to_bytes(), &mut peer);
    for a in addrs {
        bytes_field(2, &a.to_vec(), &mut peer);
    }
    let mut dial = Vec::new();
    bytes_field(1, &peer, &mut dial);
    let mut message = vec![1 << 3, 0];
    bytes_field(2, &dial, &mut message);
    let mut framed = Vec::new();
    varint(message.len() as u64, &mut framed);
    framed.extend_from_slice(&message);
    framed
}

/// The `status` of `Message { dialResponse: DialResponse { status } }`.
fn response_status(reply: &[u8]) -> u64 {
    let mut rest = reply;
    let len = read_varint(&mut rest) as usize;
    assert_eq!(rest.len(), len, "one length-prefixed response");
    let mut response = None;
    while !rest.is_empty() {
        let key = read_varint(&mut rest);
        match key & 7 {
            0 => {
                read_varint(&mut rest);
            }
            2 => {
                let n = read_varint(&mut rest) as usize;
                let (body, tail) = rest.split_at(n);
                if key >> 3 == 3 {
                    response = Some(body);
                }
                rest = tail;
            }
            other => panic!("wire type {other} in a response"),
        }
    }
    let mut body = response.expect("a dialResponse");
    while !body.is_empty() {
        let key = read_varint(&mut body);
        if key == 1 << 3 {
            return read_varint(&mut body);
        }
        assert_eq!(key & 7, 2, "only status is a varint");
        let n = read_varint(&mut body) as usize;
        body = &body[n..];
    }
    panic!("a dialResponse without a status")
}

/// A UDP port that takes datagrams and never answers, as a stranger's would.
fn silent_udp() -> (UdpSocket, Multiaddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, format!("/ip4/127.0.0.1/udp/{port}/quic-v1").parse().unwrap())
}

fn datagram_arrived(socket: &UdpSocket) -> bool {
    let mut buf = [0u8; 2048];
    match socket.recv(&mut buf) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("udp: {e}"),
    }
}

/// Waits until one of `ports` has taken a datagram.
async fn until_dialled(ports: &[UdpSocket]) {
    while !ports.iter().any(datagram_arrived) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Four probers each name four QUIC addresses that never answer; our node dials each prober's
/// addresses one after another, for 5 s each, and so holds every fresh-port QUIC dial (each a
/// UDP socket with 3 MB of buffers, `p2p::quic`). A fifth prober's QUIC addresses are then not
/// dialled at all: it is answered with a dial error at once, and its TCP address beside them is
/// still dialled back. Before the bound, each QUIC address named was dialled from a socket of
/// its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_dial_backs_in_flight_are_bounded_and_tcp_ones_are_not() {
    tokio::time::timeout(TIMEOUT, async {
        let (node, ours) = our_node().await;
        let ours_id = node.peer_id();
        let mut holding = Vec::new();
        for _ in 0..4 {
            let mut prober = Prober::connect(&ours).await;
            let (ports, addrs): (Vec<_>, Vec<_>) = (0..4).map(|_| silent_udp()).unzip();
            holding.push(tokio::spawn(async move { prober.probe(ours_id, &addrs).await }));
            until_dialled(&ports).await;
        }
        let mut last = Prober::connect(&ours).await;
        let (ports, addrs): (Vec<_>, Vec<_>) = (0..2).map(|_| silent_udp()).unzip();
        assert_eq!(last.probe(ours_id, &addrs).await, E_DIAL_ERROR, "QUIC addresses past the bound fail");
        assert!(!ports.iter().any(datagram_arrived), "a QUIC address past the bound was dialled");
        let with_tcp = [addrs[0].clone(), last.tcp.clone()];
        assert_eq!(last.probe(ours_id, &with_tcp).await, OK, "the TCP address beside them was dialled back");
        assert!(holding.iter().all(|h| !h.is_finished()), "the four probes were still being dialled back");
    })
    .await
    .expect("test timed out");
}

/// One peer's fourth probe within a minute is refused, though the first three were answered
/// more than a second before (libp2p's default period is one second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_three_probes_a_minute() {
    tokio::time::timeout(TIMEOUT, async {
        let (node, ours) = our_node().await;
        let mut prober = Prober::connect(&ours).await;
        let tcp = prober.tcp.clone();
        for i in 0..3 {
            assert_eq!(prober.probe(node.peer_id(), std::slice::from_ref(&tcp)).await, OK, "probe {i}");
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(prober.probe(node.peer_id(), &[tcp]).await, E_DIAL_REFUSED, "the fourth probe");
    })
    .await
    .expect("test timed out");
}

/// The varints every message here is framed with (`common::stock`).
#[test]
fn varints_read_back_what_was_written() {
    for n in [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
        let mut out = Vec::new();
        varint(n, &mut out);
        let mut rest = &out[..];
        assert_eq!(read_varint(&mut rest), n);
        assert!(rest.is_empty(), "{n} left {} bytes", rest.len());
    }
    let mut out = Vec::new();
    varint(300, &mut out);
    assert_eq!(out, [0xac, 0x02], "the protobuf spec's own example");
}
