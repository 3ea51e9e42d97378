//! The libp2p node over loopback: DHT provider discovery, peer lookup by PeerId, streams in
//! both directions (raw and through `P2pConnector`), megabytes each way with stock rust-libp2p
//! nodes, and a persistent identity. Every test is bounded by a timeout.
mod common;

use common::session::spawn_node as spawn_with;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use shoal::metainfo::InfoHash;
use shoal::p2p::{self, DhtMode, NodeConfig, NodeHandle, P2pConnector};
use shoal::torrent::Connector;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::compat::FuturesAsyncReadCompatExt;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f).await.expect("test timed out")
}

async fn spawn_node(keypair: Keypair, mode: DhtMode, bootstrap: &[Multiaddr]) -> NodeHandle {
    spawn_with(keypair, mode, bootstrap, Duration::from_secs(10)).await
}

/// A bootstrap server, a provider-capable server A and a client B, both bootstrapped from it.
async fn three_nodes() -> (NodeHandle, NodeHandle, NodeHandle) {
    let boot = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &[]).await;
    let boot_addrs = boot.listen_addrs().await.unwrap();
    assert!(!boot_addrs.is_empty());
    let a = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &boot_addrs).await;
    let b = spawn_node(Keypair::generate_ed25519(), DhtMode::Client, &boot_addrs).await;
    (boot, a, b)
}

/// Retries `f` every 200 ms until it yields `Some`.
async fn eventually<T, F: Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> T {
    loop {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A's side: answers one stream from `incoming` by reading "ping?" and writing "pong!".
fn serve_one(a: &NodeHandle) -> tokio::task::JoinHandle<PeerId> {
    let mut incoming = a.take_incoming().expect("first take");
    assert!(a.take_incoming().is_none(), "incoming is handed out once");
    tokio::spawn(async move {
        let (from, stream) = incoming.next().await.expect("an inbound stream");
        let mut stream = stream.compat();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping?");
        stream.write_all(b"pong!").await.unwrap();
        stream.flush().await.unwrap();
        from
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_found_through_bootstrap_node_and_stream_works_both_ways() {
    bounded(async {
        // B first, so B can learn of A only through the provider lookup.
        let boot = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &[]).await;
        let boot_addrs = boot.listen_addrs().await.unwrap();
        let b = spawn_node(Keypair::generate_ed25519(), DhtMode::Client, &boot_addrs).await;
        b.bootstrap().await.expect("bootstrap");
        let a = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &boot_addrs).await;
        let key = p2p::torrent_key(&InfoHash([7; 20]));
        a.start_providing(key.clone()).await.expect("provide");
        assert!(!b.is_connected(a.peer_id()).await.unwrap());
        let a_addrs: Vec<Multiaddr> = a.listen_addrs().await.unwrap().iter().map(p2p::book::strip_p2p).collect();

        let providers = eventually(|| async {
            let found = b.get_providers(key.clone()).await.ok()?;
            found.into_iter().find(|(p, addrs)| *p == a.peer_id() && !addrs.is_empty())
        })
        .await;
        assert!(
            providers.1.iter().any(|addr| a_addrs.contains(addr)),
            "found {:?}, A listens on {a_addrs:?}",
            providers.1
        );

        let served = serve_one(&a);
        let stream = b.open_stream(a.peer_id()).await.expect("stream to A");
        let mut stream = stream.compat();
        stream.write_all(b"ping?").await.unwrap();
        stream.flush().await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        assert_eq!(served.await.unwrap(), b.peer_id());
        assert!(b.ping(a.peer_id()).await.is_ok());
        let nobody = p2p::torrent_key(&InfoHash([8; 20]));
        assert!(b.get_providers(nobody).await.unwrap().is_empty());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_peer_resolves_addresses_knowing_only_the_bootstrap_node() {
    bounded(async {
        let boot = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &[]).await;
        let boot_addrs = boot.listen_addrs().await.unwrap();
        // B joins (and finishes bootstrapping) before A exists, so nothing but the lookup
        // can tell B where A is.
        let b = spawn_node(Keypair::generate_ed25519(), DhtMode::Client, &boot_addrs).await;
        b.bootstrap().await.expect("bootstrap");
        let a = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &boot_addrs).await;
        let a_addrs: Vec<Multiaddr> = a.listen_addrs().await.unwrap().iter().map(p2p::book::strip_p2p).collect();
        // The bootstrap node learns A's listen address from identify, fed into its table by hand.
        eventually(|| async { (boot.routing_table_size().await.ok()? >= 1).then_some(()) }).await;
        assert!(!b.is_connected(a.peer_id()).await.unwrap());
        let found = eventually(|| async { b.find_peer(a.peer_id()).await.ok() }).await;
        assert!(found.iter().any(|addr| a_addrs.contains(addr)), "found {found:?}, A listens on {a_addrs:?}");
        // A client-mode node is in no routing table, so a node that never met it cannot look
        // it up.
        let c = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &boot_addrs).await;
        let b_found = c.find_peer(b.peer_id()).await;
        assert!(b_found.is_err(), "{b_found:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_connector_gives_a_tokio_stream() {
    bounded(async {
        let (boot, a, b) = three_nodes().await;
        let a_addrs = a.listen_addrs().await.unwrap();
        b.add_address(a.peer_id(), a_addrs[0].clone()).await.unwrap();
        let served = serve_one(&a);
        let connector = P2pConnector::new(b.clone());
        let mut stream = connector.connect(p2p::peer_addr(&a.peer_id())).await.expect("connect via libp2p");
        stream.write_all(b"ping?").await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        assert_eq!(served.await.unwrap(), b.peer_id());
        boot.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_survives_a_restart() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoal/identity");
        let first = spawn_node(p2p::load_or_create(&path).unwrap(), DhtMode::Auto, &[]).await;
        let id = first.peer_id();
        assert!(first.listen_addrs().await.unwrap()[0].to_string().ends_with(&format!("/p2p/{id}")));
        first.shutdown().await;
        let stopped = eventually(|| async { first.listen_addrs().await.err() }).await;
        assert!(matches!(stopped, p2p::NodeError::Stopped), "{stopped}");
        let second = spawn_node(p2p::load_or_create(&path).unwrap(), DhtMode::Auto, &[]).await;
        assert_eq!(second.peer_id(), id);
    })
    .await
}

#[tokio::test]
async fn bootstrap_address_without_peer_id_is_refused() {
    let mut config = NodeConfig::new(Keypair::generate_ed25519(), shoal::config::Options::default().dht_query_timeout);
    config.bootstrap = vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()];
    let err = NodeHandle::spawn(config).await.err().expect("refused");
    assert!(err.to_string().contains("/ip4/127.0.0.1/tcp/1"), "{err}");
}

/// A DHT server's config on loopback, for the tests that set its bounds or AutoNAT.
fn server_config() -> NodeConfig {
    let mut config = NodeConfig::new(Keypair::generate_ed25519(), Duration::from_secs(10));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.dht_mode = DhtMode::Server;
    config
}

/// The node's connection bound: with room for two established connections, a third peer's
/// dial is denied while the first two stay connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_are_denied() {
    let mut config = server_config();
    config.limits.established = 2;
    the_third_peer_is_denied(config).await;
}

/// The bound per address: with room for two established inbound connections from one address
/// (of 256 in all), a third peer from 127.0.0.1 is denied while the first two stay connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_per_address_are_denied() {
    let mut config = server_config();
    config.limits.established_per_ip = 2;
    the_third_peer_is_denied(config).await;
}

/// Three peers dial a node started with `config`, one after the other: the first two connect,
/// the third is denied.
async fn the_third_peer_is_denied(config: NodeConfig) {
    bounded(async {
        let full = NodeHandle::spawn(config).await.unwrap();
        let addr = full.listen_addrs().await.unwrap()[0].clone();
        let mut dialers = Vec::new();
        for _ in 0..3 {
            let d = spawn_node(Keypair::generate_ed25519(), DhtMode::Client, &[]).await;
            d.add_address(full.peer_id(), addr.clone()).await.unwrap();
            dialers.push(d);
        }
        // A dial returns once the dialer's side is up; the node's side may still be in its
        // handshake, so each is waited for there before the next peer dials.
        for d in &dialers[..2] {
            d.dial(full.peer_id()).await.unwrap();
            let me = d.peer_id();
            eventually(|| async { full.connected_peers().await.unwrap().contains(&me).then_some(()) }).await;
        }
        // The third handshake may complete on its side before the node denies the
        // connection; then the node closes it, which the dialer sees. (Let in, it would stay
        // open past the test's deadline: idle connections live two minutes.)
        let _ = dialers[2].dial(full.peer_id()).await;
        let third = &dialers[2];
        eventually(|| async { (!third.is_connected(full.peer_id()).await.unwrap()).then_some(()) }).await;
        let mut connected = full.connected_peers().await.unwrap();
        connected.sort();
        let mut first_two = vec![dialers[0].peer_id(), dialers[1].peer_id()];
        first_two.sort();
        assert_eq!(connected, first_two);
    })
    .await;
}

/// Inbound handshakes per address: a host holding silent TCP connections open (they never
/// start the handshake) takes at most `pending_per_ip` of the `pending_incoming` slots, so a
/// peer from another address still gets in. Without the per-address bound the eight silent
/// connections would hold all eight slots for their 10 s timeout and the peer be denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_one_address_leave_handshake_slots_for_others() {
    bounded(async {
        let mut config = server_config();
        config.limits.pending_incoming = 8;
        config.limits.pending_per_ip = 4;
        let node = NodeHandle::spawn(config).await.unwrap();
        let addr = node.listen_addrs().await.unwrap()[0].clone();
        let Some(libp2p::multiaddr::Protocol::Tcp(port)) = addr.iter().nth(1) else { panic!("{addr}") };
        let mut silent = Vec::new();
        for _ in 0..8 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            silent.push(socket.connect(([127, 0, 0, 1], port).into()).await.unwrap());
        }
        // Accepted in order: the silent ones are counted (or refused) before the peer's.
        let peer = spawn_node(Keypair::generate_ed25519(), DhtMode::Client, &[]).await;
        peer.add_address(node.peer_id(), addr).await.unwrap();
        peer.dial(node.peer_id()).await.expect("a peer from 127.0.0.1 gets a handshake slot");
        let me = peer.peer_id();
        eventually(|| async { node.connected_peers().await.unwrap().contains(&me).then_some(()) }).await;
        drop(silent);
    })
    .await;
}

/// AutoNAT: a listening node that its peers can dial back is judged public at its listen
/// address (loopback counts: `only_global_ips` off, as for any test network).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autonat_judges_a_reachable_node_public() {
    bounded(async {
        let spawn = |bootstrap: Vec<Multiaddr>| async move {
            let mut config = server_config();
            config.bootstrap = bootstrap;
            config.nat = p2p::NatProbe { interval: Duration::from_secs(1), only_global_ips: false };
            NodeHandle::spawn(config).await.unwrap()
        };
        let first = spawn(Vec::new()).await;
        let second = spawn(first.listen_addrs().await.unwrap()).await;
        let mut boot = first.listen_addrs().await.unwrap();
        boot.extend(second.listen_addrs().await.unwrap());
        let node = spawn(boot).await;
        let public = eventually(|| async {
            match node.reachability().await.unwrap() {
                p2p::Reachability::Public(addr) => Some(addr),
                _ => None,
            }
        })
        .await;
        let listen = node.listen_addrs().await.unwrap();
        assert!(listen.iter().any(|l| l.to_string().starts_with(&public.to_string())), "{public} not in {listen:?}");
    })
    .await;
}

/// The memory bound: a node allowed 1 MiB of process memory (far below what it uses) denies
/// every new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_memory_bound_are_denied() {
    bounded(async {
        let mut config = server_config();
        config.limits.memory_bytes = Some(1 << 20);
        let full = NodeHandle::spawn(config).await.unwrap();
        let addr = full.listen_addrs().await.unwrap()[0].clone();
        // The limit reads the process's memory at most every 100 ms, starting from zero.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let dialer = spawn_node(Keypair::generate_ed25519(), DhtMode::Client, &[]).await;
        dialer.add_address(full.peer_id(), addr).await.unwrap();
        let _ = dialer.dial(full.peer_id()).await;
        eventually(|| async { (!dialer.is_connected(full.peer_id()).await.unwrap()).then_some(()) }).await;
        assert!(full.connected_peers().await.unwrap().is_empty(), "a connection was let in");
    })
    .await;
}

/// A stock rust-libp2p node: TCP, libp2p-tls, libp2p-yamux and libp2p-stream, nothing of ours.
async fn stock_node() -> (libp2p::Swarm<libp2p_stream::Behaviour>, Multiaddr) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::tls::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .build();
    let address = common::stock::listen_on_loopback(&mut swarm).await;
    (swarm, address)
}

/// Answers one stream by sending back what it reads, then closing.
async fn echo(stream: libp2p::Stream) {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let (mut read, mut write) = stream.split();
    futures::io::copy(&mut read, &mut write).await.unwrap();
    write.close().await.unwrap();
}

/// Sends `bytes` on `stream` and closes it for writing while reading what comes back.
async fn round_trip(stream: libp2p::Stream, bytes: &[u8]) -> Vec<u8> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    let (mut read, mut write) = stream.split();
    let send = async {
        write.write_all(bytes).await.unwrap();
        write.close().await.unwrap();
    };
    let mut got = Vec::new();
    let (_, received) = tokio::join!(send, read.read_to_end(&mut got));
    received.unwrap();
    got
}

/// Our libp2p node and stock rust-libp2p ones over 127.0.0.1, each dialling the other: 4 MiB go
/// through a `/shoal/bt/1.0.0` stream and come back echoed, byte-identical. Our TLS record
/// layer (`p2p::tls`) and Yamux upgrade (`p2p::muxer`) against the stock ones on real sockets,
/// as client and as server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_libp2p_nodes_and_ours_move_megabytes_each_way() {
    bounded(async {
        let ours = spawn_node(Keypair::generate_ed25519(), DhtMode::Client, &[]).await;
        let sent: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();

        // A stock node dials ours: we are the TLS server.
        let (mut dialler, _) = stock_node().await;
        let ours_addr = ours.listen_addrs().await.unwrap()[0].clone();
        dialler.dial(ours_addr.with(libp2p::multiaddr::Protocol::P2p(ours.peer_id()))).unwrap();
        let mut control = dialler.behaviour().new_control();
        tokio::spawn(async move { dialler.for_each(|_| async {}).await });
        let mut incoming = ours.take_incoming().unwrap();
        tokio::spawn(async move { echo(incoming.next().await.unwrap().1).await });
        let stream = control.open_stream(ours.peer_id(), p2p::BT_PROTOCOL).await.unwrap();
        assert!(round_trip(stream, &sent).await == sent, "a stock dialler's bytes, echoed by us");

        // Ours dials another stock node: we are the TLS client.
        let (listener, listener_addr) = stock_node().await;
        let listener_id = *listener.local_peer_id();
        let mut accepted = listener.behaviour().new_control().accept(p2p::BT_PROTOCOL).unwrap();
        tokio::spawn(async move { listener.for_each(|_| async {}).await });
        tokio::spawn(async move { echo(accepted.next().await.unwrap().1).await });
        ours.add_address(listener_id, listener_addr).await.unwrap();
        let stream = ours.open_stream(listener_id).await.unwrap();
        assert!(round_trip(stream, &sent).await == sent, "our bytes, echoed by a stock listener");
        ours.shutdown().await;
    })
    .await
}
