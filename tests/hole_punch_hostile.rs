//! A peer we reached through a relay, sending DCUtR CONNECT messages to make us dial.
//!
//! Our node dials a stock rust-libp2p peer through a stock relay on 127.0.0.1, as it dials a
//! provider whose record carries a circuit address. The peer then opens `/libp2p/dcutr`
//! streams and writes CONNECT messages by hand, each naming addresses of listeners the test
//! holds (they accept and never speak), so a dial shows as an accepted connection. DCUtR
//! dialled every address named, CONNECT after CONNECT (`p2p::punch`); here a punch naming more
//! than 20 addresses is not dialled, and a relayed connection is heard 3 times at most.
//!
//! Each check waits for a connection that must come (a later punch, within the bounds) and
//! then asserts that the one that must not come has not; a dial past a bound is never started,
//! so no wait can make it appear.
mod common;

use common::stock::{listen_on_loopback, varint};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{relay, Multiaddr, PeerId, StreamProtocol};
use shoal::p2p::{NodeConfig, NodeHandle};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DCUTR: StreamProtocol = StreamProtocol::new("/libp2p/dcutr");
const TIMEOUT: Duration = Duration::from_secs(60);

/// TCP listeners that accept and hold connections and never speak; counts them.
struct Sink {
    addrs: Vec<Multiaddr>,
    accepted: Arc<AtomicUsize>,
}

impl Sink {
    fn start(listeners: usize) -> Sink {
        let accepted = Arc::new(AtomicUsize::new(0));
        let addrs = (0..listeners)
            .map(|_| {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let port = listener.local_addr().unwrap().port();
                let count = accepted.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for conn in listener.incoming().flatten() {
                        held.push(conn);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                });
                format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
            })
            .collect();
        Sink { addrs, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn until_accepted(&self, n: usize) {
        while self.accepted() < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A stock relay on 127.0.0.1 without rate limits; returns its address ending in `/p2p/<id>`.
async fn relay() -> Multiaddr {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| {
            let config = relay::Config {
                reservation_rate_limiters: Vec::new(),
                circuit_src_rate_limiters: Vec::new(),
                max_circuit_duration: Duration::from_secs(600),
                max_circuit_bytes: 0,
                ..relay::Config::default()
            };
            relay::Behaviour::new(key.public().to_peer_id(), config)
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    let addr = listen_on_loopback(&mut swarm).await;
    swarm.add_external_address(addr.clone());
    let addr = addr.with(Protocol::P2p(*swarm.local_peer_id()));
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    addr
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Relayed {
    relay_client: relay::client::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// The stranger: a stock peer listening only through `relay`, that our node has dialled.
struct Stranger {
    control: libp2p_stream::Control,
    ours: PeerId,
}

impl Stranger {
    async fn reached_by(node: &NodeHandle, relay: &Multiaddr) -> Stranger {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
            .unwrap()
            .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)
            .unwrap()
            .with_behaviour(|_, relay_client| Relayed { relay_client, stream: libp2p_stream::Behaviour::new() })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build();
        let circuit = relay.clone().with(Protocol::P2pCircuit);
        swarm.listen_on(circuit.clone()).unwrap();
        while !matches!(swarm.select_next_some().await, SwarmEvent::NewListenAddr { .. }) {}
        let (id, control, ours) = (*swarm.local_peer_id(), swarm.behaviour().stream.new_control(), node.peer_id());
        node.add_address(id, circuit).await.unwrap();
        let dial = tokio::spawn({
            let node = node.clone();
            async move { node.dial(id).await }
        });
        // Our side's dial returns once its side is up; the stranger's side must be too.
        loop {
            if let SwarmEvent::ConnectionEstablished { peer_id, .. } = swarm.select_next_some().await {
                if peer_id == ours {
                    break;
                }
            }
        }
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        dial.await.unwrap().expect("our node reaches the stranger through the relay");
        Stranger { control, ours }
    }

    /// One DCUtR exchange as its initiator: CONNECT naming `addrs`, our node's CONNECT, SYNC.
    async fn connect(&mut self, addrs: &[Multiaddr]) {
        let mut stream = self.control.open_stream(self.ours, DCUTR).await.expect("a DCUtR stream");
        let mut connect = vec![1 << 3, 100];
        for a in addrs {
            connect.push(2 << 3 | 2);
            varint(a.to_vec().len() as u64, &mut connect);
            connect.extend(a.to_vec());
        }
        let mut framed = Vec::new();
        varint(connect.len() as u64, &mut framed);
        framed.extend(connect);
        stream.write_all(&framed).await.unwrap();
        let mut len = [0u8; 1];
        stream.read_exact(&mut len).await.unwrap();
        assert!(len[0] < 0x80, "our CONNECT is short");
        let mut reply = vec![0u8; len[0] as usize];
        stream.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[..2], [1 << 3, 100], "our node answers CONNECT");
        stream.write_all(&[3, 1 << 3, 0xac, 0x02]).await.unwrap(); // SYNC (300)
        stream.close().await.ok();
    }
}

async fn our_node() -> NodeHandle {
    let mut config = NodeConfig::new(libp2p::identity::Keypair::generate_ed25519(), Duration::from_secs(10));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    NodeHandle::spawn(config).await.expect("node starts")
}

/// A punch naming 21 addresses is not dialled; the one after it, naming one, is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_punch_naming_more_than_20_addresses_is_not_dialled() {
    tokio::time::timeout(TIMEOUT, async {
        let (node, relay) = (our_node().await, relay().await);
        let mut stranger = Stranger::reached_by(&node, &relay).await;
        let (many, one) = (Sink::start(21), Sink::start(1));
        stranger.connect(&many.addrs).await;
        stranger.connect(&one.addrs).await;
        one.until_accepted(1).await;
        assert_eq!(many.accepted(), 0, "the punch naming 21 addresses was dialled");
    })
    .await
    .expect("test timed out");
}

/// A relayed connection's fourth CONNECT is not acted on; another relayed connection's first
/// is, after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_connection_gets_three_punches() {
    tokio::time::timeout(TIMEOUT, async {
        let (node, relay) = (our_node().await, relay().await);
        let mut stranger = Stranger::reached_by(&node, &relay).await;
        let three = Sink::start(1);
        for n in 1..=3 {
            stranger.connect(&three.addrs).await;
            three.until_accepted(n).await;
        }
        let fourth = Sink::start(1);
        stranger.connect(&fourth.addrs).await;
        let mut another = Stranger::reached_by(&node, &relay).await;
        let later = Sink::start(1);
        another.connect(&later.addrs).await;
        later.until_accepted(1).await;
        assert_eq!(fourth.accepted(), 0, "the fourth punch on one relayed connection was dialled");
    })
    .await
    .expect("test timed out");
}
