//! Our own disk failing while we serve: the torrent stops with a read error (its storage is
//! gone), rather than blaming and dropping the peer that asked and carrying on.
mod common;

use common::session::{addr, session};
use common::torrent::{make_file, make_torrent};
use shoal::peer::CloseReason;
use shoal::torrent::{Phase, TorrentError, TorrentEvent};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_vanishing_under_a_seeder_fails_its_torrent_with_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 4 * 1024 * 1024, 7);
    let meta = make_torrent(&src, 64 * 1024);
    let seeder = session().await;
    let sh = seeder.add_torrent(meta.clone(), dir.path().join("seed"));
    sh.wait_complete().await.unwrap();
    let mut seeder_events = sh.subscribe();
    // The check read every piece; the data is now taken away (as by another program, or a
    // disk that went away), so the first block a peer asks for cannot be read.
    std::fs::OpenOptions::new().write(true).open(&src).unwrap().set_len(0).unwrap();

    let leecher = session().await;
    let lh = leecher.add_torrent(meta.clone(), dir.path().join("leech"));
    lh.add_peers(vec![addr(&seeder)]).await;

    let mut stats = sh.stats();
    let failed = tokio::time::timeout(Duration::from_secs(60), stats.wait_for(|s| s.phase == Phase::Failed))
        .await
        .expect("the seeder never noticed its data was gone")
        .unwrap()
        .clone();
    match failed.error {
        Some(TorrentError::Read(why)) => assert!(why.contains("missing"), "{why}"),
        other => panic!("expected a read error, got {other:?}"),
    }
    // The peer that asked is not blamed: its connection ended for our storage's reason.
    let mut reasons = Vec::new();
    while let Ok(ev) = seeder_events.try_recv() {
        if let TorrentEvent::PeerDisconnected { reason, .. } = ev {
            reasons.push(reason);
        }
    }
    assert!(reasons.iter().any(|r| matches!(r, CloseReason::Storage(_))), "{reasons:?}");
    assert_eq!(lh.stats().borrow().pieces_have, 0, "nothing unverifiable reached the leecher");
    leecher.shutdown().await;
    seeder.shutdown().await;
}
