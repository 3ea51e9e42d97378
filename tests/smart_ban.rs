//! Issue 8, fault 6: honest peers can no longer be framed. A liar that sprays unrequested
//! blocks has them dropped and counted, and is closed; a liar that corrupts one block of each
//! piece it serves, in pieces an honest seeder also serves, is the only one banned. The
//! honest seeder is never banned, and every download completes byte-identical.
mod common;

use common::session::{addr, session, SlowConnector};
use common::torrent::{assert_same_bytes, make_file, make_torrent};
use common::wire::full_bitfield;
use futures::{SinkExt, StreamExt};
use shoal::metainfo::Metainfo;
use shoal::peer::CloseReason;
use shoal::torrent::TorrentEvent;
use shoal::types::PeerAddr;
use shoal::wire::{Handshake, HandshakeCodec, Message, MessageCodec, PeerId};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::codec::Framed;

const PIECE: u32 = 256 * 1024;

#[derive(Clone, Copy)]
enum Lie {
    /// Claims no piece, and sends a junk block for every block of every piece, unasked.
    Spray,
    /// Has every piece and answers requests with the real data, except block 1 of each
    /// piece, which it corrupts.
    CorruptOneBlock,
}

/// A fake peer on 127.0.0.1 that lies as told. It serves the real data from `src`.
async fn liar(meta: Arc<Metainfo>, src: PathBuf, lie: Lie) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let data = Arc::new(std::fs::read(src).unwrap());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve_lies(sock, meta.clone(), data.clone(), lie));
        }
    });
    local
}

async fn serve_lies(sock: tokio::net::TcpStream, meta: Arc<Metainfo>, data: Arc<Vec<u8>>, lie: Lie) {
    let mut f = Framed::new(sock, HandshakeCodec);
    let Some(Ok(_)) = f.next().await else { return };
    if f.send(Handshake::new(meta.info_hash, PeerId::generate())).await.is_err() {
        return;
    }
    let mut f = f.map_codec(|_| MessageCodec::default());
    let n = meta.piece_count();
    match lie {
        Lie::Spray => {
            for piece in 0..n {
                for begin in (0..meta.piece_size(piece).unwrap()).step_by(16 * 1024) {
                    let junk = Message::Piece { index: piece, begin, data: vec![0x5A; 16 * 1024].into() };
                    if f.send(junk).await.is_err() {
                        return;
                    }
                }
            }
            // Stay until the victim closes the connection.
            while let Some(Ok(_)) = f.next().await {}
        }
        Lie::CorruptOneBlock => {
            let _ = f.send(Message::Bitfield(full_bitfield(n))).await;
            while let Some(Ok(msg)) = f.next().await {
                let reply = match msg {
                    Message::Interested => Message::Unchoke,
                    Message::Request { index, begin, length } => {
                        let at = index as usize * meta.piece_length as usize + begin as usize;
                        let mut block = data[at..at + length as usize].to_vec();
                        if begin == 16 * 1024 {
                            block[0] ^= 0xFF;
                        }
                        Message::Piece { index, begin, data: block.into() }
                    }
                    _ => continue,
                };
                if f.send(reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A leecher whose link to the honest seeder is slow (so the liar gets plenty to do),
/// given both peers; returns once it completed, with its final statistics.
async fn download_beside(
    liar: SocketAddr,
    honest: &shoal::session::Session,
    meta: Arc<Metainfo>,
    out: PathBuf,
) -> (shoal::session::Session, shoal::torrent::TorrentHandle, Vec<TorrentEvent>) {
    let mut leecher = session().await;
    leecher.set_connector(SlowConnector::new([honest.listen_addr().unwrap()], 2 << 20));
    let h = leecher.add_torrent(meta, out);
    let mut events = h.subscribe();
    h.add_peers(vec![PeerAddr::Tcp(liar), addr(honest)]).await;
    // The connection and disconnection events are kept as they come, while the download runs.
    let mut kept = Vec::new();
    let mut keep = |ev: TorrentEvent| {
        if matches!(ev, TorrentEvent::PeerConnected { .. } | TorrentEvent::PeerDisconnected { .. }) {
            kept.push(ev);
        }
    };
    let waiter = h.clone();
    let complete = waiter.wait_complete();
    tokio::pin!(complete);
    let deadline = tokio::time::sleep(Duration::from_secs(90));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = &mut complete => break r.unwrap(),
            ev = events.recv() => match ev {
                Ok(ev) => keep(ev),
                Err(e) => panic!("events: {e}"),
            },
            _ = &mut deadline => panic!("download timed out"),
        }
    }
    while let Ok(ev) = events.try_recv() {
        keep(ev);
    }
    (leecher, h, kept)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_blocks_are_dropped_counted_and_cannot_frame_the_seeder() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 4 * 1024 * 1024 + 777, 21);
    let meta = make_torrent(&src, PIECE);
    let honest = session().await;
    honest.add_torrent(meta.clone(), dir.path().join("seed")).wait_complete().await.unwrap();
    let liar = liar(meta.clone(), src.clone(), Lie::Spray).await;

    let (leecher, h, _) = download_beside(liar, &honest, meta.clone(), dir.path().join("out")).await;
    assert_same_bytes(&src, &dir.path().join("out/data.bin"));
    let st = h.stats().borrow().clone();
    assert_eq!(st.hash_failures, 0, "no junk block reached a piece");
    assert_eq!(st.banned, 0, "nobody is banned: the honest seeder was not framed");
    assert!(st.protocol_violations >= 1, "the junk blocks were counted: {}", st.protocol_violations);
    // The sprayer is closed once its junk outweighs its (zero) good blocks.
    let mut stats = h.stats();
    let gone = stats.wait_for(|s| s.peers.iter().all(|p| p.addr != liar.to_string()));
    tokio::time::timeout(Duration::from_secs(30), gone).await.expect("the sprayer is still connected").unwrap();
    leecher.shutdown().await;
    honest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_peer_whose_block_differed_is_banned() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 6 * 1024 * 1024 + 4321, 22);
    let meta = make_torrent(&src, PIECE);
    let honest = session().await;
    honest.add_torrent(meta.clone(), dir.path().join("seed")).wait_complete().await.unwrap();
    let liar = liar(meta.clone(), src.clone(), Lie::CorruptOneBlock).await;

    let (leecher, h, events) = download_beside(liar, &honest, meta.clone(), dir.path().join("out")).await;
    assert_same_bytes(&src, &dir.path().join("out/data.bin"));
    let st = h.stats().borrow().clone();
    assert!(st.hash_failures >= 1, "the liar's corrupt blocks failed pieces");
    assert_eq!(st.banned, 1, "exactly one peer is banned: the liar");
    // The liar was closed as banned, the honest seeder never was (once the download is
    // complete, the two seeds may close their connection as such).
    let closed = |who: PeerAddr| {
        events.iter().filter_map(move |ev| match ev {
            TorrentEvent::PeerDisconnected { addr, reason } if *addr == who => Some(reason.clone()),
            _ => None,
        })
    };
    assert!(closed(PeerAddr::Tcp(liar)).any(|r| r == CloseReason::Banned), "{events:?}");
    assert!(closed(addr(&honest)).all(|r| r == CloseReason::BothSeeds), "the honest seeder: {events:?}");
    assert!(events.contains(&TorrentEvent::PeerConnected { addr: addr(&honest), inbound: false }), "{events:?}");
    leecher.shutdown().await;
    honest.shutdown().await;
}
