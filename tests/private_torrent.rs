//! BEP 27 private torrents: a `private=1` torrent is never provided to (nor looked up in) the
//! DHT and never offers PEX, while a public torrent in the same session is provided and offers
//! PEX, so each check can fail.
//!
//! In process: one session with a libp2p node seeds both torrents; a second node (the one the
//! seeder bootstrapped from) is asked for providers, and a fake peer reads the extension
//! handshake the seeder sends for each torrent.
mod common;
mod hostile;

use common::session::{session, spawn_node, wait_for};
use common::torrent::make_file;
use hostile::{Dial, FakePeer, REACT};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use shoal::metainfo::create::{create_torrent, CreateOptions};
use shoal::metainfo::Metainfo;
use shoal::p2p::{self, DhtMode, NodeHandle};
use shoal::torrent::Phase;
use shoal::wire::extension::{ExtHandshake, UT_PEX_ID};
use shoal::wire::{Handshake, Message, PeerId as BtPeerId};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

fn torrent(data: &Path, private: bool) -> Arc<Metainfo> {
    let opts = CreateOptions { piece_length: Some(16 * 1024), private, ..Default::default() };
    Arc::new(Metainfo::from_bytes(&create_torrent(data, &opts).unwrap()).unwrap())
}

/// Whether `node` finds `provider` among the providers of `meta`'s torrent.
async fn provided_by(node: &NodeHandle, meta: &Metainfo, provider: PeerId) -> bool {
    let key = p2p::torrent_key(&meta.info_hash);
    node.get_providers(key).await.map(|found| found.iter().any(|(p, _)| *p == provider)).unwrap_or(false)
}

/// Dials the seeder for `meta` as a peer that speaks BEP 10 and returns the seeder's
/// extension handshake.
fn extension_handshake(seeder: SocketAddr, meta: &Metainfo) -> ExtHandshake {
    let mut peer = FakePeer::connect(seeder, &Dial::default()).expect("connect to the seeder");
    peer.send_handshake(Handshake::new(meta.info_hash, BtPeerId::generate())).unwrap();
    peer.expect_handshake(REACT);
    let m = peer.wait_msg(REACT, "the extension handshake", |m| matches!(m, Message::Extended { id: 0, .. }));
    let Message::Extended { payload, .. } = m else { unreachable!() };
    ExtHandshake::decode(&payload).expect("a bencoded extension handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_torrent_is_never_provided_and_never_offers_pex() {
    let dir = tempfile::tempdir().unwrap();
    let private = torrent(&make_file(dir.path(), "private.bin", 100_000, 1), true);
    let public = torrent(&make_file(dir.path(), "public.bin", 100_000, 2), false);
    assert!(private.private && !public.private);

    let boot = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &[], Duration::from_secs(10)).await;
    let boot_addrs = boot.listen_addrs().await.unwrap();
    let node = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &boot_addrs, Duration::from_secs(10)).await;
    let mut session = session().await;
    session.attach_node(node.clone());

    // The private torrent first, seeding before the public one is even added: had it been
    // provided, its record would be at the bootstrap node before the public one's.
    let hp = session.add_torrent(private.clone(), dir.path().to_path_buf());
    wait_for(&mut hp.stats(), 60, "the private torrent to seed", |s| s.phase == Phase::Seeding).await;
    let hq = session.add_torrent(public.clone(), dir.path().to_path_buf());
    wait_for(&mut hq.stats(), 60, "the public torrent to seed", |s| s.phase == Phase::Seeding).await;

    let start = Instant::now();
    while !provided_by(&boot, &public, node.peer_id()).await {
        assert!(start.elapsed() < DEADLINE, "the public torrent was not provided within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!provided_by(&boot, &private, node.peer_id()).await, "the private torrent was provided to the DHT");
    assert!(
        session.recent_lookups().iter().all(|l| l.info_hash != private.info_hash.to_hex()),
        "the private torrent was looked up in the DHT"
    );

    let listen = session.listen_addr().unwrap();
    let (pm, qm) = (private.clone(), public.clone());
    let (ext_private, ext_public) =
        tokio::task::spawn_blocking(move || (extension_handshake(listen, &pm), extension_handshake(listen, &qm)))
            .await
            .unwrap();
    assert_eq!(ext_public.m.get("ut_pex"), Some(&UT_PEX_ID), "the public torrent offers PEX: {ext_public:?}");
    assert_eq!(ext_private.m.get("ut_pex"), None, "the private torrent offered PEX: {ext_private:?}");

    session.shutdown().await;
    node.shutdown().await;
    boot.shutdown().await;
}
