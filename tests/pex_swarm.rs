//! BEP 11 peer exchange between shoal sessions, in process on 127.0.0.1: a leecher told of
//! one peer only reaches a second one that only PEX names, dials it with source `pex`, and
//! completes byte-identical.
//!
//! The hub has the first half of the data and is connected to a seeder it downloads the rest
//! from at 8 KiB/s (so it stays a leecher: two seeds would close their connection, and the
//! hub's PEX would have nobody to name); the leecher's link to the hub is slowed
//! to 8 KiB/s (with four requests in flight at most), so the 2 MiB cannot come from the hub within the deadline and the leecher is
//! still downloading when the hub's first PEX message arrives (one tick after the extension
//! handshake). The leecher does not listen, so nobody can dial it: the second seeder is
//! reached only by the leecher dialling what PEX told it.
mod common;

use common::session::{addr, options, session, wait_for, SlowConnector};
use common::torrent::{assert_same_bytes, make_file, make_torrent};
use shoal::config::Options;
use shoal::session::Session;
use shoal::torrent::Phase;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leecher_reaches_a_seeder_only_pex_names() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 2 * 1024 * 1024 + 999, 3);
    let meta = make_torrent(&src, 64 * 1024);
    let mut half = std::fs::read(&src).unwrap();
    let len = half.len();
    half[len / 2..].fill(0);
    std::fs::create_dir_all(dir.path().join("hub")).unwrap();
    std::fs::write(dir.path().join("hub/data.bin"), half).unwrap();
    let slow_hub = Arc::new(Options { download_rate_limit: 8 * 1024, ..(*options()).clone() });
    let hub = Session::start(slow_hub, Some("127.0.0.1:0".parse().unwrap())).await.unwrap();
    let second = session().await;
    let hh = hub.add_torrent(meta.clone(), dir.path().join("hub"));
    let hs = second.add_torrent(meta.clone(), dir.path().join("seed"));
    wait_for(&mut hs.stats(), 30, "the second seeder to seed", |s| s.phase == Phase::Seeding).await;
    wait_for(&mut hh.stats(), 30, "the hub's check", |s| s.phase == Phase::Downloading).await;
    hh.add_peers(vec![addr(&second)]).await;
    wait_for(&mut hh.stats(), 30, "the hub to reach the second seeder", |s| s.peers.len() == 1).await;

    // Four requests in flight: the hub's queue to the slow link holds 64 KiB of blocks at most,
    // so its PEX message is not stuck behind megabytes of them.
    let opts = Arc::new(Options { max_requests_per_peer: 4, ..(*options()).clone() });
    let mut leecher = Session::start(opts, None).await.unwrap();
    leecher.set_connector(SlowConnector::new([hub.listen_addr().unwrap()], 8 * 1024));
    let h = leecher.add_torrent(meta.clone(), dir.path().join("out"));
    h.add_peers(vec![addr(&hub)]).await;
    let seen = wait_for(&mut h.stats(), 60, "the second seeder connected through PEX", |s| {
        s.peers.iter().any(|p| p.peer == addr(&second) && p.source == "pex")
    })
    .await;
    assert!(seen.peers.iter().any(|p| p.peer == addr(&hub) && p.source == "explicit"), "{:?}", seen.peers);
    tokio::time::timeout(Duration::from_secs(60), h.wait_complete()).await.expect("timed out").unwrap();
    assert_same_bytes(&src, &dir.path().join("out/data.bin"));
    leecher.shutdown().await;
    hub.shutdown().await;
    second.shutdown().await;
}
