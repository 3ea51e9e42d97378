//! The PeerManager's public face, in process on 127.0.0.1: a `TorrentHandle` adds a peer,
//! lists the peers that have a piece, removes a peer; the peers' stats say which are seeds
//! and when they were added; and two seeds close the connection between them.
//!
//! - A leecher on a slow link (64 KiB/s, so it is still downloading while the test looks) is
//!   given a seeder and a peer that has only the first half of the pieces. The first piece is
//!   had by both, the last by the seeder only; the stats mark the seeder alone as a seed. The
//!   seeder removed, its connection closes (the event names it) and the last piece has no
//!   holder left; a second removal finds nothing to remove.
//! - Two seeders, one given the other: they connect, and the connection closes as "both
//!   seeds" on whichever side looked first.
//! - An idle torrent (seeding, no peers) sends no stats over many ticks: each send wakes
//!   every listener, and a daemon's idle torrents did that every second. (Paused clock: the
//!   ticks run in virtual time.)
mod common;

use common::session::{addr, session, wait_for, SlowConnector};
use common::torrent::{make_file, make_torrent};
use shoal::peer::CloseReason;
use shoal::torrent::{TorrentEvent, TorrentHandle};
use shoal::types::PeerAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

const PIECE: u32 = 64 * 1024;
const SIZE: usize = 16 * PIECE as usize;
const DEADLINE: Duration = Duration::from_secs(60);

/// Waits for the first event `pick` accepts (panicking after [`DEADLINE`]).
async fn wait_event<T>(
    events: &mut broadcast::Receiver<TorrentEvent>,
    what: &str,
    pick: impl Fn(TorrentEvent) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await {
                Ok(ev) => {
                    if let Some(t) = pick(ev) {
                        return t;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("events ended before {what}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
}

/// Polls `peers_with_piece(piece)` until it names `want` (in any order).
async fn wait_holders(h: &TorrentHandle, piece: u32, want: &[PeerAddr]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut got = h.peers_with_piece(piece).await;
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "piece {piece}: holders {got:?}, expected {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_lists_holders_of_a_piece_and_removes_a_peer() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", SIZE, 41);
    let meta = make_torrent(&src, PIECE);
    let seeder = session().await;
    seeder.add_torrent(meta.clone(), dir.path().join("seed")).wait_complete().await.unwrap();
    // The half peer: the first eight pieces right, the rest zeros (which fail their hashes).
    let mut half = std::fs::read(&src).unwrap();
    half[SIZE / 2..].fill(0);
    std::fs::create_dir_all(dir.path().join("half")).unwrap();
    std::fs::write(dir.path().join("half/data.bin"), half).unwrap();
    let half_peer = session().await;
    let hh = half_peer.add_torrent(meta.clone(), dir.path().join("half"));
    wait_for(&mut hh.stats(), 30, "the half peer's check", |s| s.pieces_have == 8).await;

    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut leecher = session().await;
    let slow = [seeder.listen_addr().unwrap(), half_peer.listen_addr().unwrap()];
    leecher.set_connector(SlowConnector::new(slow, 64 * 1024));
    let h = leecher.add_torrent(meta.clone(), dir.path().join("out"));
    let mut events = h.subscribe();
    h.add_peer(addr(&seeder)).await;
    h.add_peer(addr(&half_peer)).await;
    wait_holders(&h, 0, &[addr(&seeder), addr(&half_peer)]).await;
    wait_holders(&h, 15, &[addr(&seeder)]).await;

    // The stats are published about once a second: the next one with both peers' pieces.
    let st = wait_for(&mut h.stats(), 30, "both peers with their pieces in the stats", |s| {
        s.peers.len() == 2 && s.peers.iter().all(|p| p.pieces > 0)
    })
    .await;
    assert!(st.pieces_have < meta.piece_count(), "finished before the test could look");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    for p in &st.peers {
        assert_eq!(p.is_seed, p.peer == addr(&seeder), "{p:?}");
        assert!((before..=now).contains(&p.added_time), "added_time {} not in {before}..={now}", p.added_time);
    }

    assert!(h.remove_peer(addr(&seeder)).await, "the seeder was connected");
    let reason = wait_event(&mut events, "the seeder's disconnection", |ev| match ev {
        TorrentEvent::PeerDisconnected { addr: a, reason } if a == addr(&seeder) => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, CloseReason::ByUs);
    wait_holders(&h, 15, &[]).await;
    assert!(!h.remove_peer(addr(&seeder)).await, "removed twice");
    for s in [leecher, half_peer, seeder] {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seeds_close_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("a"), "data.bin", SIZE, 42);
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    std::fs::copy(&src, dir.path().join("b/data.bin")).unwrap();
    let meta = make_torrent(&src, PIECE);
    let (a, b) = (session().await, session().await);
    let (ha, hb) =
        (a.add_torrent(meta.clone(), dir.path().join("a")), b.add_torrent(meta.clone(), dir.path().join("b")));
    ha.wait_complete().await.unwrap();
    hb.wait_complete().await.unwrap();
    let (mut ea, mut eb) = (ha.subscribe(), hb.subscribe());
    hb.add_peer(addr(&a)).await;
    let closed = |ev| match ev {
        TorrentEvent::PeerDisconnected { reason, .. } => Some(reason),
        _ => None,
    };
    let (ra, rb) = (
        wait_event(&mut ea, "a's disconnection", closed).await,
        wait_event(&mut eb, "b's disconnection", closed).await,
    );
    assert!(ra == CloseReason::BothSeeds || rb == CloseReason::BothSeeds, "closed as {ra} and {rb}");
    for s in [a, b] {
        s.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_torrent_sends_no_stats_until_something_changes() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", SIZE, 5);
    let meta = make_torrent(&src, PIECE);
    let s = session().await;
    let h = s.add_torrent(meta, dir.path().join("seed"));
    let mut stats = h.stats();
    wait_for(&mut stats, 60, "seeding", |st| st.is_complete()).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // whatever the start changed is sent
    stats.borrow_and_update();
    tokio::time::sleep(Duration::from_secs(30)).await; // thirty ticks of an idle torrent
    assert!(!stats.has_changed().unwrap(), "an idle torrent sent its unchanged stats: {:?}", *stats.borrow());
    // A change is still sent: a peer to dial shows in the pool's counts.
    h.add_peers(vec![PeerAddr::Tcp("127.0.0.1:9".parse().unwrap())]).await;
    tokio::time::timeout(DEADLINE, stats.changed()).await.expect("no stats after a change").unwrap();
    s.shutdown().await;
}
