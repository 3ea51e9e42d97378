//! Loopback swarms through the library: many leechers, partial seeders, a seeder lost
//! mid-download, a lying peer, and resume. Every byte travels over real sockets on
//! 127.0.0.1 and every file is compared with its source.
mod common;

use common::session::{addr, options, session, session_with, wait_for, SlowConnector};
use common::torrent::{assert_same_bytes, make_file, make_torrent};
use common::wire::full_bitfield;
use shoal::torrent::{Phase, TorrentEvent};
use std::time::Duration;

const PIECE: u32 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seeder_three_leechers_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 3 * 1024 * 1024 + 12345, 1);
    let meta = make_torrent(&src, PIECE);
    let seeder = session().await;
    let sh = seeder.add_torrent(meta.clone(), dir.path().join("seed"));
    sh.wait_complete().await.unwrap();

    let mut leechers = Vec::new();
    let mut known = vec![addr(&seeder)];
    let mut first_events = None;
    for i in 0..3 {
        let s = session().await;
        let h = s.add_torrent(meta.clone(), dir.path().join(format!("l{i}")));
        if i == 0 {
            first_events = Some(h.subscribe());
        }
        h.add_peers(known.clone()).await;
        known.push(addr(&s));
        leechers.push((s, h));
    }
    for (i, (_, h)) in leechers.iter().enumerate() {
        tokio::time::timeout(Duration::from_secs(60), h.wait_complete()).await.expect("leecher timed out").unwrap();
        assert_same_bytes(&src, &dir.path().join(format!("l{i}")).join("data.bin"));
        let st = h.stats().borrow().clone();
        assert_eq!(st.pieces_have, meta.piece_count());
        assert_eq!(st.hash_failures, 0);
    }
    // The pool's events tell the same story: a connection, every byte once, every piece.
    let mut events = first_events.unwrap();
    let (mut connected, mut bytes, mut verified) = (false, 0u64, 0u32);
    while let Ok(ev) = events.try_recv() {
        match ev {
            TorrentEvent::PeerConnected { .. } => connected = true,
            TorrentEvent::BlockReceived { length, .. } => bytes += length as u64,
            TorrentEvent::PieceVerified(_) => verified += 1,
            _ => {}
        }
    }
    assert!(connected);
    assert_eq!(bytes, meta.total_length);
    assert_eq!(verified, meta.piece_count());
    for (s, _) in &leechers {
        s.shutdown().await;
    }
    seeder.shutdown().await;
}

/// Writes a copy of `src` into `dir` holding only the pieces for which `keep` is true
/// (the others are left as holes), so a seeder has part of the torrent.
fn partial_copy(src: &std::path::Path, dir: &std::path::Path, pieces: u32, keep: impl Fn(u32) -> bool) {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dir).unwrap();
    let data = std::fs::read(src).unwrap();
    let f = std::fs::File::create(dir.join("data.bin")).unwrap();
    f.set_len(data.len() as u64).unwrap();
    for p in (0..pieces).filter(|p| keep(*p)) {
        let start = (p * PIECE) as usize;
        let end = (start + PIECE as usize).min(data.len());
        f.write_all_at(&data[start..end], start as u64).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_seeders_together_complete_one_leecher() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("src"), "data.bin", 4 * 1024 * 1024 + 999, 2);
    let meta = make_torrent(&src, PIECE);
    let n = meta.piece_count();
    // First half, second half, and the middle third: no one has everything.
    let parts: [Box<dyn Fn(u32) -> bool>; 3] =
        [Box::new(move |p| p < n / 2), Box::new(move |p| p >= n / 2), Box::new(move |p| p >= n / 3 && p < 2 * n / 3)];
    let mut seeders = Vec::new();
    for (i, keep) in parts.iter().enumerate() {
        let d = dir.path().join(format!("s{i}"));
        partial_copy(&src, &d, n, keep);
        let s = session().await;
        let h = s.add_torrent(meta.clone(), d);
        let mut st = h.stats();
        let ready = wait_for(&mut st, 30, "partial seeder check", |s| s.phase != Phase::Checking).await;
        assert!(ready.pieces_have > 0 && ready.pieces_have < n, "seeder {i} has {} of {n}", ready.pieces_have);
        seeders.push(s);
    }
    let leecher = session().await;
    let h = leecher.add_torrent(meta.clone(), dir.path().join("out"));
    h.add_peers(seeders.iter().map(addr).collect()).await;
    tokio::time::timeout(Duration::from_secs(60), h.wait_complete()).await.expect("timed out").unwrap();
    assert_same_bytes(&src, &dir.path().join("out/data.bin"));
    let st = h.stats().borrow().clone();
    assert!(st.peers_used >= 2, "pieces came from {} peers", st.peers_used);
    leecher.shutdown().await;
    for s in &seeders {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeder_lost_mid_download_the_other_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 4 * 1024 * 1024, 3);
    let meta = make_torrent(&src, PIECE);
    let a = session().await;
    let b = session().await;
    for s in [&a, &b] {
        s.add_torrent(meta.clone(), dir.path().join("seed")).wait_complete().await.unwrap();
    }
    // Both links slowed to 1 MiB/s so the download is still running when `a` goes away.
    let mut leecher = session().await;
    leecher.set_connector(SlowConnector::new([a.listen_addr().unwrap(), b.listen_addr().unwrap()], 1 << 20));
    let h = leecher.add_torrent(meta.clone(), dir.path().join("out"));
    h.add_peers(vec![addr(&a), addr(&b)]).await;
    let mut st = h.stats();
    let mid = wait_for(&mut st, 30, "a quarter of the pieces", |s| s.pieces_have >= meta.piece_count() / 4).await;
    assert!(mid.pieces_have < meta.piece_count(), "finished before the seeder could be stopped");
    assert_eq!(mid.pool.connected, 2);
    a.shutdown().await;
    tokio::time::timeout(Duration::from_secs(60), h.wait_complete()).await.expect("timed out").unwrap();
    assert_same_bytes(&src, &dir.path().join("out/data.bin"));
    leecher.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_fetches_only_the_missing_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 4 * 1024 * 1024, 4);
    let meta = make_torrent(&src, PIECE);
    let seeder = session().await;
    seeder.add_torrent(meta.clone(), dir.path().join("seed")).wait_complete().await.unwrap();

    let start_leecher = || async {
        let mut s = session().await;
        s.set_connector(SlowConnector::new([seeder.listen_addr().unwrap()], 2 << 20));
        let h = s.add_torrent(meta.clone(), dir.path().join("out"));
        h.add_peers(vec![addr(&seeder)]).await;
        (s, h)
    };
    let (s1, h1) = start_leecher().await;
    let mut st = h1.stats();
    wait_for(&mut st, 30, "half the pieces", |s| s.pieces_have >= meta.piece_count() / 2).await;
    s1.shutdown().await;
    let had = h1.stats().borrow().pieces_have;
    assert!(had < meta.piece_count(), "stopped too late");

    let (s2, h2) = start_leecher().await;
    let mut st = h2.stats();
    let resumed = wait_for(&mut st, 30, "resume check", |s| s.phase != Phase::Checking).await;
    assert!(resumed.pieces_have >= had, "resume kept {} of the {had} verified pieces", resumed.pieces_have);
    tokio::time::timeout(Duration::from_secs(60), h2.wait_complete()).await.expect("timed out").unwrap();
    assert_same_bytes(&src, &dir.path().join("out/data.bin"));
    let done = h2.stats().borrow().clone();
    let missing = (meta.piece_count() - resumed.pieces_have) as u64 * PIECE as u64;
    assert_eq!(done.pieces_received, meta.piece_count() - resumed.pieces_have, "only missing pieces are fetched");
    assert!(done.downloaded <= missing + PIECE as u64, "received {} bytes for {missing} missing", done.downloaded);
    assert!(done.downloaded >= missing - PIECE as u64);
    s2.shutdown().await;
    seeder.shutdown().await;
}

/// A peer that claims every piece and answers every request at once with garbage.
async fn lying_peer(meta: std::sync::Arc<shoal::metainfo::Metainfo>) -> std::net::SocketAddr {
    use futures::{SinkExt, StreamExt};
    use shoal::wire::{Handshake, HandshakeCodec, Message, MessageCodec, PeerId};
    use tokio_util::codec::Framed;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let meta = meta.clone();
            tokio::spawn(async move {
                let mut f = Framed::new(sock, HandshakeCodec);
                let Some(Ok(_)) = f.next().await else { return };
                if f.send(Handshake::new(meta.info_hash, PeerId::generate())).await.is_err() {
                    return;
                }
                let mut f = f.map_codec(|_| MessageCodec::default());
                let _ = f.send(Message::Bitfield(full_bitfield(meta.piece_count()))).await;
                while let Some(Ok(msg)) = f.next().await {
                    let reply = match msg {
                        Message::Interested => Message::Unchoke,
                        Message::Request { index, begin, length } => {
                            Message::Piece { index, begin, data: vec![0xA5; length as usize].into() }
                        }
                        _ => continue,
                    };
                    if f.send(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    local
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_peer_is_banned_and_the_honest_one_completes() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 2 * 1024 * 1024, 5);
    let meta = make_torrent(&src, PIECE);
    let honest = session().await;
    honest.add_torrent(meta.clone(), dir.path().join("seed")).wait_complete().await.unwrap();
    let liar = lying_peer(meta.clone()).await;

    let mut leecher = session().await;
    // The honest link is slow, so the liar gets asked for plenty.
    leecher.set_connector(SlowConnector::new([honest.listen_addr().unwrap()], 1 << 20));
    let h = leecher.add_torrent(meta.clone(), dir.path().join("out"));
    h.add_peers(vec![shoal::types::PeerAddr::Tcp(liar), addr(&honest)]).await;
    tokio::time::timeout(Duration::from_secs(60), h.wait_complete()).await.expect("timed out").unwrap();
    assert_same_bytes(&src, &dir.path().join("out/data.bin"));
    let st = h.stats().borrow().clone();
    // Every block of a failed piece came from the liar: smart ban names it at the first one.
    assert!(st.hash_failures >= 1, "the liar's pieces failed: {}", st.hash_failures);
    assert_eq!(st.banned, 1, "the liar is banned");
    // Its connection closes asynchronously; the statistics show it gone within a few ticks.
    let mut stats = h.stats();
    let gone = stats.wait_for(|s| s.peers.iter().all(|p| p.addr != liar.to_string()));
    tokio::time::timeout(Duration::from_secs(20), gone).await.expect("the liar is still connected").unwrap();
    leecher.shutdown().await;
    honest.shutdown().await;
}

/// Three seeders behind equal 1 MiB/s links, and room for only eight pieces in progress: each
/// verified piece frees room for one more, and it must go to whichever seeder runs out of
/// requests first. Before, it went to the same seeder every time (the first in map order was
/// topped up as the `have` went out), which then sent most of the file while two links idled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_seeders_share_the_download() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 6 * 1024 * 1024, 6);
    let meta = make_torrent(&src, PIECE);
    let mut seeders = Vec::new();
    for _ in 0..3 {
        let s = session().await;
        s.add_torrent(meta.clone(), dir.path().join("seed")).wait_complete().await.unwrap();
        seeders.push(s);
    }
    let opts = shoal::config::Options { max_assembly_bytes: 8 * PIECE as usize, ..(*options()).clone() };
    let mut leecher = session_with(opts.into()).await;
    leecher.set_connector(SlowConnector::new(seeders.iter().map(|s| s.listen_addr().unwrap()), 1 << 20));
    let h = leecher.add_torrent(meta.clone(), dir.path().join("out"));
    let mut events = h.subscribe();
    // Counted as they come: the event backlog is smaller than the file's blocks.
    let pieces = meta.piece_count();
    let counter = tokio::spawn(async move {
        let (mut from, mut verified) = (std::collections::HashMap::<shoal::types::PeerAddr, u64>::new(), 0);
        while verified < pieces {
            match events.recv().await.expect("no event missed") {
                TorrentEvent::BlockReceived { from: a, length, .. } => *from.entry(a).or_default() += length as u64,
                TorrentEvent::PieceVerified(_) => verified += 1,
                _ => {}
            }
        }
        from
    });
    h.add_peers(seeders.iter().map(addr).collect()).await;
    tokio::time::timeout(Duration::from_secs(60), h.wait_complete()).await.expect("timed out").unwrap();
    assert_same_bytes(&src, &dir.path().join("out/data.bin"));
    let from = tokio::time::timeout(Duration::from_secs(10), counter).await.expect("a piece's events missing").unwrap();
    assert_eq!(from.values().sum::<u64>(), meta.total_length, "every byte once: {from:?}");
    for s in &seeders {
        let sent = from.get(&addr(s)).copied().unwrap_or(0);
        assert!(sent >= meta.total_length / 6, "a seeder sent {sent} of {} bytes: {from:?}", meta.total_length);
    }
    leecher.shutdown().await;
    for s in &seeders {
        s.shutdown().await;
    }
}
