//! What stock Kademlia peers can leave in our node, over 127.0.0.1: provider records are kept
//! and served to others (that is how torrents are found), values are not (shoal uses none, so
//! they would be memory a stranger holds for nothing), and a peer announcing new addresses over
//! and over holds no more than 8 in our routing table. How many addresses a provider record
//! keeps is checked in `p2p::event_loop::store`'s unit test.
//!
//! The stock peers are rust-libp2p nodes with `libp2p-kad` speaking our Kademlia protocol
//! (TCP, libp2p-tls, libp2p-yamux), nothing of ours. Every wait is bounded by a timeout.
mod common;

use common::session::spawn_node;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore, GetProvidersOk, GetRecordOk, QueryResult, Quorum, Record, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId, Swarm};
use shoal::p2p::{DhtMode, KAD_PROTOCOL};
use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, f).await.expect("test timed out")
}

type Kad = kad::Behaviour<MemoryStore>;

/// A stock swarm (TCP, libp2p-tls, libp2p-yamux) with `behaviour`, listening on 127.0.0.1.
fn stock_swarm<B: NetworkBehaviour>(behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B) -> Swarm<B> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::tls::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| behaviour(key))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    swarm
}

/// Stock Kademlia speaking our protocol, its queries bounded to 10 s.
fn stock_kad(key: &libp2p::identity::Keypair) -> Kad {
    let id = key.public().to_peer_id();
    let mut config = kad::Config::new(KAD_PROTOCOL);
    config.set_query_timeout(Duration::from_secs(10));
    kad::Behaviour::with_config(id, MemoryStore::new(id), config)
}

/// A stock Kademlia node in client mode (so our node never hands it to others as a closer
/// peer) that knows only `ours`.
async fn stock_kad_node(ours: PeerId, at: &Multiaddr) -> Swarm<Kad> {
    let mut swarm = stock_swarm(stock_kad);
    swarm.behaviour_mut().set_mode(Some(kad::Mode::Client));
    swarm.behaviour_mut().add_address(&ours, at.clone());
    swarm
}

/// Drives `swarm` until its query `id` reports a step `take` accepts, or its last step.
async fn drive<T>(
    swarm: &mut Swarm<Kad>,
    id: kad::QueryId,
    mut take: impl FnMut(QueryResult) -> Option<T>,
) -> Option<T> {
    loop {
        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed { id: got, result, step, .. }) =
            swarm.select_next_some().await
        {
            if got != id {
                continue;
            }
            if let Some(taken) = take(result) {
                return Some(taken);
            }
            if step.last {
                return None;
            }
        }
    }
}

#[tokio::test]
async fn stock_peers_provider_records_are_kept_and_served_and_their_values_are_not() {
    bounded(async {
        let ours = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &[], Duration::from_secs(10)).await;
        let at = ours.listen_addrs().await.unwrap().remove(0);
        let (torrent, value_key) = (RecordKey::new(&b"a torrent's key"), RecordKey::new(&b"a value"));

        // B stores a value on us and provides a key, listing a hundred addresses. It stays up
        // and in client mode: our node never names it to C, so what C finds, it found on ours.
        let mut b = stock_kad_node(ours.peer_id(), &at).await;
        let b_id = *b.local_peer_id();
        for port in 1..=100u16 {
            b.add_external_address(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap());
        }
        let put = b.behaviour_mut().put_record(Record::new(value_key.clone(), vec![7; 8000]), Quorum::One).unwrap();
        let stored = drive(&mut b, put, |r| match r {
            QueryResult::PutRecord(r) => Some(r.is_ok()),
            _ => None,
        });
        // The acknowledgement comes after the value is stored, when it is.
        assert_eq!(stored.await, Some(true), "our node acknowledges a value, as Kademlia nodes do");
        let provide = b.behaviour_mut().start_providing(torrent.clone()).unwrap();
        let provided = drive(&mut b, provide, |r| match r {
            QueryResult::StartProviding(r) => Some(r.is_ok()),
            _ => None,
        });
        assert_eq!(provided.await, Some(true), "B sends its provider record");
        let b_up = tokio::spawn(async move {
            loop {
                b.select_next_some().await;
            }
        });

        // ADD_PROVIDER has no answer: C asks until our node serves B's record.
        let mut c = stock_kad_node(ours.peer_id(), &at).await;
        loop {
            let lookup = c.behaviour_mut().get_providers(torrent.clone());
            let mut found = HashSet::new();
            drive(&mut c, lookup, |r| {
                if let QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) = r {
                    found.extend(providers);
                }
                None::<()>
            })
            .await;
            if found.contains(&b_id) {
                break;
            }
            assert!(found.is_empty(), "providers other than B: {found:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let get = c.behaviour_mut().get_record(value_key);
        let record = drive(&mut c, get, |r| match r {
            QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => Some(found.peer),
            _ => None,
        });
        assert_eq!(record.await, None, "a value B stored on our node was kept");
        b_up.abort();
        ours.shutdown().await;
    })
    .await;
}

#[derive(NetworkBehaviour)]
struct Announcer {
    kad: Kad,
    identify: identify::Behaviour,
}

/// A stock DHT server with identify, connected to our node and identified by it.
async fn announcer(ours: PeerId, at: &Multiaddr) -> (Swarm<Announcer>, Multiaddr) {
    let mut swarm = stock_swarm(|key| Announcer {
        kad: stock_kad(key),
        identify: identify::Behaviour::new(identify::Config::new("/shoal/1.0.0".into(), key.public())),
    });
    swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
    swarm.dial(at.clone().with(Protocol::P2p(ours))).unwrap();
    let mut listen = None;
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => listen = Some(address),
            SwarmEvent::Behaviour(AnnouncerEvent::Identify(identify::Event::Sent { peer_id, .. }))
                if peer_id == ours && listen.is_some() =>
            {
                return (swarm, listen.unwrap());
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_peer_announcing_new_addresses_over_and_over_holds_8_in_our_routing_table() {
    bounded(async {
        let ours = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &[], Duration::from_secs(10)).await;
        let at = ours.listen_addrs().await.unwrap().remove(0);
        let (mut m, m_listen) = announcer(ours.peer_id(), &at).await;
        let m_id = *m.local_peer_id();

        // Forty identify pushes, each with M's listen address and one address never sent before.
        let marker = |round: u16| -> Multiaddr { format!("/ip4/127.0.0.1/tcp/{}", 20_000 + round).parse().unwrap() };
        for round in 0..40 {
            if round > 0 {
                m.remove_external_address(&marker(round - 1));
            }
            m.add_external_address(marker(round));
            m.behaviour_mut().identify.push([ours.peer_id()]);
            loop {
                if let SwarmEvent::Behaviour(AnnouncerEvent::Identify(identify::Event::Pushed { peer_id, .. })) =
                    m.select_next_some().await
                {
                    if peer_id == ours.peer_id() {
                        break;
                    }
                }
            }
        }
        let m_up = tokio::spawn(async move {
            loop {
                m.select_next_some().await;
            }
        });

        // C asks our node for M until the last push shows (pushes have no answer).
        let mut c = stock_kad_node(ours.peer_id(), &at).await;
        let addrs = loop {
            let lookup = c.behaviour_mut().get_closest_peers(m_id);
            let found = drive(&mut c, lookup, |r| match r {
                QueryResult::GetClosestPeers(Ok(ok)) => ok.peers.into_iter().find(|p| p.peer_id == m_id),
                _ => None,
            });
            let last = marker(39).with(Protocol::P2p(m_id));
            if let Some(info) = found.await.filter(|info| info.addrs.contains(&last)) {
                break info.addrs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(addrs.len() <= 8, "our node handed out {} addresses of M: {addrs:?}", addrs.len());
        assert!(
            addrs.contains(&m_listen.with(Protocol::P2p(m_id))),
            "M's listen address, announced in every push, is kept: {addrs:?}"
        );
        m_up.abort();
        ours.shutdown().await;
    })
    .await;
}
