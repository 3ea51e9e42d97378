//! The circuit relay our node serves (`relay`), against strangers reserving from one address.
//!
//! Stock rust-libp2p relay clients on 127.0.0.1, each with a PeerId of its own, listen through
//! our node. One IP address holds at most 8 reservations (`p2p::relay_server`; libp2p-relay
//! bounds only how fast an address makes them, and 4 addresses could hold all 128): the
//! ninth client is refused, and once one of the eight goes, a new one is taken. Every wait is
//! for a listener's report, under a deadline.
mod common;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, relay, tcp, yamux, Multiaddr, Swarm};
use shoal::p2p::{NodeConfig, NodeHandle, RelayLimits};
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Our node, serving as a relay on 127.0.0.1; its address ends in `/p2p/<id>`.
async fn relay_node() -> (NodeHandle, Multiaddr) {
    let mut config = NodeConfig::new(libp2p::identity::Keypair::generate_ed25519(), Duration::from_secs(10));
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.relay = Some(RelayLimits::default());
    let node = NodeHandle::spawn(config).await.expect("node starts");
    let addr = node.listen_addrs().await.unwrap().remove(0);
    (node, addr)
}

/// A stock relay client's swarm, driven in the background until dropped.
struct Client(JoinHandle<()>);

impl Drop for Client {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stock relay client asking `relay` for a reservation: the client once it listens through
/// the relay, the reason if refused.
async fn reserve(relay: &Multiaddr) -> Result<Client, String> {
    let mut swarm: Swarm<relay::client::Behaviour> = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_, client| client)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    swarm.listen_on(relay.clone().with(Protocol::P2pCircuit)).unwrap();
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { .. } => break,
            SwarmEvent::ListenerClosed { reason, .. } => return Err(format!("{reason:?}")),
            _ => {}
        }
    }
    Ok(Client(tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    })))
}

#[tokio::test]
async fn one_address_holds_eight_reservations_and_a_place_frees_when_one_goes() {
    let (_node, relay) = relay_node().await;
    let mut held = Vec::new();
    for i in 0..8 {
        held.push(within("a reservation", reserve(&relay)).await.unwrap_or_else(|e| panic!("reservation {i}: {e}")));
    }
    let ninth = within("the ninth reservation", reserve(&relay)).await;
    let refusal = ninth.err().unwrap_or_else(|| panic!("a ninth reservation from 127.0.0.1 was taken"));
    assert!(refusal.contains("ResourceLimitExceeded"), "refused for another reason: {refusal}");

    drop(held.remove(0));
    // Our relay frees the place when it sees the connection close; until then it refuses.
    let again = within("a reservation after one went", async {
        loop {
            match reserve(&relay).await {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    held.push(again);
}
