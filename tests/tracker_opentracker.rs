//! Interop: our tracker client against a real opentracker (Debian package `opentracker`) on
//! 127.0.0.1, over HTTP and UDP, plus the announcer task end to end.
//!
//! Each test starts its own opentracker (`common::clients`) on a free port with a whitelist of
//! the info-hashes it uses, and kills it by PID when done. A missing binary fails the test, unless
//! `SHOAL_SKIP_INTEROP=1` says to skip on purpose.
mod common;

use common::clients::{skip_on_purpose, Opentracker};
use common::ports::free_port;
use std::net::SocketAddr;
use std::time::Duration;

use shoal::discovery::tracker::announcer::{self, AnnouncerConfig, AnnouncerLinks, TrackerStatus};
use shoal::discovery::tracker::{announce, Announce, AnnounceParams, Event, TransferTotals};
use shoal::metainfo::InfoHash;
use shoal::wire::PeerId;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(5);

/// An opentracker on a free port serving `hashes`, with a directory for its log; `None` when
/// interop tests are skipped on purpose. Killed by PID when dropped.
fn start_tracker(hashes: &[InfoHash]) -> Option<(Opentracker, tempfile::TempDir)> {
    if skip_on_purpose() {
        return None;
    }
    let logs = tempfile::tempdir().expect("create tempdir");
    let hex: Vec<String> = hashes.iter().map(InfoHash::to_hex).collect();
    Some((Opentracker::start(free_port(), &hex, logs.path()), logs))
}

fn peer_id(tag: u8) -> PeerId {
    let mut id = *b"-SH0100-000000000000";
    id[19] = tag;
    PeerId(id)
}

fn params(info_hash: InfoHash, tag: u8, port: u16, event: Option<Event>) -> AnnounceParams {
    AnnounceParams {
        info_hash,
        peer_id: peer_id(tag),
        port,
        uploaded: 0,
        downloaded: 0,
        left: 1000,
        event,
        numwant: 50,
        key: u32::from(tag),
    }
}

fn has_port(a: &Announce, port: u16) -> bool {
    a.peers.iter().any(|p| p.port() == port && p.ip().is_loopback())
}

/// Announce A, then B sees A; A stops, then C no longer sees A.
async fn two_peers_and_a_stop(url: &str, info_hash: InfoHash) {
    let a = announce(url, &params(info_hash, b'a', 7001, Some(Event::Started)), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("first announce: {e}"));
    assert!(a.interval > Duration::ZERO);

    let b = announce(url, &params(info_hash, b'b', 7002, Some(Event::Started)), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("second announce: {e}"));
    assert!(has_port(&b, 7001), "second peer should see the first: {:?}", b.peers);
    assert!(b.leechers.unwrap_or(0) >= 2, "{b:?}");

    announce(url, &params(info_hash, b'a', 7001, Some(Event::Stopped)), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("stopped announce: {e}"));
    let c = announce(url, &params(info_hash, b'c', 7003, None), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("third announce: {e}"));
    assert!(!has_port(&c, 7001), "stopped peer still listed: {:?}", c.peers);
    assert!(has_port(&c, 7002), "{:?}", c.peers);
}

#[tokio::test]
async fn http_announce_against_opentracker() {
    let hash = InfoHash([0x11; 20]);
    let Some((tracker, _logs)) = start_tracker(&[hash]) else {
        return;
    };
    two_peers_and_a_stop(&tracker.http(), hash).await;
}

#[tokio::test]
async fn udp_announce_against_opentracker() {
    let hash = InfoHash([0x22; 20]);
    let Some((tracker, _logs)) = start_tracker(&[hash]) else {
        return;
    };
    two_peers_and_a_stop(&tracker.udp(), hash).await;
}

#[tokio::test]
async fn unlisted_info_hash_is_a_failure_naming_the_tracker() {
    let Some((tracker, _logs)) = start_tracker(&[InfoHash([0x33; 20])]) else {
        return;
    };
    let url = tracker.http();
    let err = announce(&url, &params(InfoHash([0x44; 20]), b'x', 7009, None), TIMEOUT)
        .await
        .expect_err("opentracker refuses hashes not on its whitelist");
    assert!(err.to_string().contains(&url), "{err}");
    let url = tracker.udp();
    let err = announce(&url, &params(InfoHash([0x44; 20]), b'x', 7009, None), TIMEOUT)
        .await
        .expect_err("refused over udp too");
    assert!(err.to_string().contains(&url), "{err}");
}

#[tokio::test]
async fn announcer_delivers_peers_reports_status_and_stops() {
    let hash = InfoHash([0x55; 20]);
    let Some((tracker, _logs)) = start_tracker(&[hash]) else {
        return;
    };
    let url = tracker.http();
    announce(&url, &params(hash, b'o', 7101, Some(Event::Started)), TIMEOUT).await.unwrap();

    let (_stats_tx, stats) = watch::channel(TransferTotals { left: 1000, ..Default::default() });
    let (peers_tx, mut peers_rx) = mpsc::channel(4);
    let (status_tx, mut status_rx) = watch::channel(Vec::<TrackerStatus>::new());
    let cancel = CancellationToken::new();
    let cfg = AnnouncerConfig {
        peer_id: peer_id(b'n'),
        info_hash: hash,
        port: 7102,
        numwant: 50,
        timeout: TIMEOUT,
        min_interval: Duration::from_secs(30),
    };
    // The first tier's dead tracker fails fast (nothing listens there) and the second answers.
    let dead = format!("http://127.0.0.1:{}/announce", free_port());
    let links = AnnouncerLinks { need_peers: None, status: Some(status_tx) };
    let task =
        announcer::spawn(vec![vec![dead.clone()], vec![url.clone()]], cfg, stats, peers_tx, links, cancel.clone());

    let peers: Vec<SocketAddr> = tokio::time::timeout(Duration::from_secs(20), peers_rx.recv())
        .await
        .expect("announcer delivers peers in time")
        .expect("peer channel open");
    assert!(peers.iter().any(|p| p.port() == 7101), "{peers:?}");

    let status = status_rx.wait_for(|s| s.iter().any(|t| t.url == url && t.peers > 0)).await.unwrap().clone();
    let dead_status = status.iter().find(|t| t.url == dead).expect("dead tracker listed");
    assert!(dead_status.last_error.as_deref().is_some_and(|e| e.contains(&dead)), "{dead_status:?}");

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("announcer exits").unwrap();
    let after = announce(&url, &params(hash, b'p', 7103, None), TIMEOUT).await.unwrap();
    assert!(!after.peers.iter().any(|p| p.port() == 7102), "stopped sent on cancel: {:?}", after.peers);
}
