//! The piece cache is the process's, not each torrent's. A peer that asks every torrent a
//! session seeds for the first block of each piece makes it read and keep whole pieces, but
//! no more than one bound (`CACHE_PIECES` pieces, `CACHE_BYTES` bytes) over all torrents: with
//! a cache per torrent, three torrents of 16 one-MiB pieces held 48 MiB. The size is read from the process's metrics
//! (`shoal_piece_cache_bytes`), so this test has a binary of its own.
mod common;
mod hostile;

use common::session::session;
use common::torrent::{make_file, make_torrent};
use hostile::{Dial, FakePeer, REACT};
use shoal::metrics::metrics;
use shoal::storage::{CACHE_BYTES, CACHE_PIECES};
use shoal::wire::Message;
use std::time::Duration;

const PIECE: u32 = 1 << 20;
const BLOCK: u32 = 16 * 1024;
const PIECES: u32 = 16;

fn cached_bytes() -> u64 {
    let text = metrics().encode();
    let line = text.lines().find(|l| l.starts_with("shoal_piece_cache_bytes ")).expect("no shoal_piece_cache_bytes");
    line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torrents_of_one_session_share_one_cache_bound() {
    let dir = tempfile::tempdir().unwrap();
    let session = session().await;
    let mut torrents = Vec::new();
    for t in 0..3u64 {
        let seed = dir.path().join(format!("t{t}"));
        let src = make_file(&seed, "data.bin", (PIECES * PIECE) as usize, 40 + t);
        let meta = make_torrent(&src, PIECE);
        let handle = session.add_torrent(meta.clone(), seed);
        tokio::time::timeout(Duration::from_secs(60), handle.wait_complete()).await.expect("check").unwrap();
        torrents.push((meta, std::fs::read(src).unwrap()));
    }
    let at = session.listen_addr().unwrap();
    let peak = tokio::task::spawn_blocking(move || {
        let mut peak = 0;
        for (meta, data) in torrents {
            let mut p = FakePeer::connect(at, &Dial::default()).expect("connect to the session");
            p.handshake(meta.info_hash);
            p.send(Message::Interested).unwrap();
            p.wait_unchoke(REACT);
            for i in 0..PIECES {
                let block = p.fetch_block(i, 0, BLOCK, REACT);
                let at = (i * PIECE) as usize;
                assert!(block[..] == data[at..at + BLOCK as usize], "wrong bytes for block {i}:0");
                peak = peak.max(cached_bytes());
            }
        }
        peak
    })
    .await
    .unwrap();
    // Each first block read its whole piece: the cache filled up to its bound, and no further.
    let bound = CACHE_BYTES.min(CACHE_PIECES as u64 * u64::from(PIECE));
    assert!(peak <= bound, "{peak} bytes of pieces cached, over the {bound}-byte bound");
    assert!(peak >= bound - u64::from(PIECE), "only {peak} bytes cached: the whole pieces were not kept");
    session.shutdown().await;
}
