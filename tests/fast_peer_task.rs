//! The peer task under the BEP 6 fast extension, in process over an in-memory pipe: when the
//! torrent chokes a fast peer, the requests it had queued are rejected, one reject per block
//! not sent, while its allowed-fast pieces are still served.
//!
//! The far end of the pipe is the test; it reads nothing until after the choke, so at most
//! the pipe's and the send buffer's worth of blocks can have gone out before it.
mod common;

use bitvec::prelude::*;
use common::torrent::{make_file, make_torrent};
use futures::{SinkExt, StreamExt};
use shoal::peer::budget::SendBudget;
use shoal::peer::connection::{self, PeerContext, PeerLimits};
use shoal::peer::{PeerCommand, PeerCounters};
use shoal::storage::Storage;
use shoal::wire::{Message, MessageCodec};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const PIECE: u32 = 256 * 1024;
const BLOCK: u32 = 16 * 1024;
/// Generous: a hang detector, not a timing assertion.
const WAIT: Duration = Duration::from_secs(30);

async fn next(peer: &mut Framed<tokio::io::DuplexStream, MessageCodec>) -> Message {
    tokio::time::timeout(WAIT, peer.next()).await.expect("a message within the wait").unwrap().unwrap()
}

#[tokio::test]
async fn choking_a_fast_peer_rejects_its_queued_requests_but_serves_allowed_fast() {
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(dir.path(), "data.bin", 4 * PIECE as usize, 81);
    let meta = make_torrent(&data, PIECE);
    let bytes = std::fs::read(&data).unwrap();
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (commands, commands_rx) = mpsc::channel(64);
    let (events_tx, _events) = mpsc::channel(1024);
    let allowed = 2u32;
    let ctx = PeerContext {
        key: 1,
        geometry: meta.geometry(),
        storage: Storage::new(meta.clone(), dir.path().to_path_buf()),
        have: bitvec![u8, Msb0; 1; 4],
        counters: Arc::new(PeerCounters::default()),
        events: events_tx,
        commands: commands_rx,
        extensions: None,
        metadata: meta.info_bytes.clone(),
        fast: true,
        allowed_fast: vec![allowed],
        dht_port: None,
        limits: PeerLimits {
            keepalive_interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            write_stall_timeout: Duration::from_secs(300),
            send_buffer: 64 * 1024,
            max_queued: 64,
            budget: SendBudget::new(1 << 20),
            rates: Default::default(),
        },
        cancel: CancellationToken::new(),
    };
    tokio::spawn(connection::run(Framed::new(ours, MessageCodec::default()), ctx));
    let mut peer = Framed::new(theirs, MessageCodec::default());
    assert_eq!(next(&mut peer).await, Message::HaveAll);
    assert_eq!(next(&mut peer).await, Message::AllowedFast { index: allowed });
    commands.send(PeerCommand::Unchoke).await.unwrap();
    assert_eq!(next(&mut peer).await, Message::Unchoke);

    // Every block of the four pieces, then the choke, with nothing read meanwhile.
    let asked: Vec<(u32, u32)> = (0..4).flat_map(|p| (0..PIECE / BLOCK).map(move |b| (p, b * BLOCK))).collect();
    for &(index, begin) in &asked {
        peer.feed(Message::Request { index, begin, length: BLOCK }).await.unwrap();
    }
    peer.flush().await.unwrap();
    commands.send(PeerCommand::Choke).await.unwrap();

    let mut answers: HashMap<(u32, u32), Vec<&str>> = HashMap::new();
    let mut choked = false;
    while answers.len() < asked.len() {
        match next(&mut peer).await {
            Message::Choke => choked = true,
            Message::Piece { index, begin, data } => {
                assert!(!choked || index == allowed, "block {index}:{begin} sent after the choke");
                let at = (index * PIECE + begin) as usize;
                assert!(data[..] == bytes[at..at + BLOCK as usize], "wrong bytes for {index}:{begin}");
                answers.entry((index, begin)).or_default().push("piece");
            }
            Message::Reject { index, begin, length } => {
                assert_eq!(length, BLOCK);
                assert_ne!(index, allowed, "an allowed-fast request was rejected");
                answers.entry((index, begin)).or_default().push("reject");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(choked, "no choke on the wire");
    for b in &asked {
        assert_eq!(answers[b].len(), 1, "block {b:?} answered {:?}", answers[b]);
    }
    let rejects = answers.values().filter(|a| a[0] == "reject").count();
    // At most the pipe (64 KiB) and the send buffer (64 KiB) went out unread: 8 blocks.
    assert!(rejects >= 3 * 16 - 8, "only {rejects} rejects");
}
