//! The peer task in process over an in-memory pipe whose far end is the test.
//!
//! - Under the BEP 6 fast extension: when the torrent chokes a fast peer, the requests it had
//!   queued are rejected, one reject per block not sent, while its allowed-fast pieces are still
//!   served. The test reads nothing until after the choke, so at most the pipe's and the send
//!   buffer's worth of blocks can have gone out before it.
//! - A piece the torrent grants as allowed-fast after the start (a super-seeder's stranded
//!   piece offered again) is announced once and served while the peer is choked; grants stop
//!   at the cap a shoal peer keeps (the set sent at the start included).
//! - Reads under way for a peer we choke are given up at once, with a reject each, even those
//!   still waiting for the upload limit: they take nothing more from it and give their share of
//!   the send budget back (at 100 bytes/s each such read would wait minutes).
//! - A batch of requests that arrives at once is answered in a few large writes, not one write
//!   per block (the task takes in the requests behind the first, and queues the blocks it has
//!   read before it writes).
//! - A task the torrent closes while it waits to hand the torrent an event ends as closed by us,
//!   so the torrent reports its own reason (a ban, say), not "closed by the peer".
//! - A peer that floods requests without pause cannot hold back our output: the task takes at
//!   most 64 requests per turn from its read buffer before it writes, and the reader wins at
//!   most 8 turns in a row before the torrent's commands get one.
mod common;

use bitvec::prelude::*;
use common::torrent::{make_file, make_torrent};
use futures::{SinkExt, StreamExt};
use shoal::metainfo::Metainfo;
use shoal::peer::budget::SendBudget;
use shoal::peer::connection::{self, PeerContext, PeerLimits};
use shoal::peer::rate::Rates;
use shoal::peer::{CloseReason, PeerCommand, PeerCounters, PeerEvent, PeerEventKind};
use shoal::storage::Storage;
use shoal::wire::fast::MAX_ALLOWED_FAST_KEPT;
use shoal::wire::{Message, MessageCodec};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
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

/// A peer task's context: we have every piece of `meta`, stored in `dir`; `allowed_fast`
/// non-empty turns the fast extension on.
fn context(
    meta: &Arc<Metainfo>,
    dir: &std::path::Path,
    events: mpsc::Sender<PeerEvent>,
    commands: mpsc::Receiver<PeerCommand>,
    allowed_fast: Vec<u32>,
) -> PeerContext {
    PeerContext {
        key: 1,
        geometry: meta.geometry(),
        storage: Storage::new(meta.clone(), dir.to_path_buf()),
        have: bitvec![u8, Msb0; 1; meta.piece_count() as usize],
        counters: Arc::new(PeerCounters::default()),
        events,
        commands,
        extensions: None,
        metadata: meta.info_bytes.clone(),
        fast: !allowed_fast.is_empty(),
        allowed_fast,
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
    }
}

/// Runs the task on `ctx` (fast on, `allowed` its allowed-fast piece) over `ours` and unchokes
/// the peer: the test's end of the pipe, past the opening messages.
async fn start_unchoked<S: AsyncRead + AsyncWrite + Send + 'static>(
    ctx: PeerContext,
    (ours, theirs): (S, DuplexStream),
    commands: &mpsc::Sender<PeerCommand>,
    allowed: u32,
) -> Framed<DuplexStream, MessageCodec> {
    tokio::spawn(connection::run(Framed::new(ours, MessageCodec::default()), ctx));
    let mut peer = Framed::new(theirs, MessageCodec::default());
    assert_eq!(next(&mut peer).await, Message::HaveAll);
    assert_eq!(next(&mut peer).await, Message::AllowedFast { index: allowed });
    commands.send(PeerCommand::Unchoke).await.unwrap();
    assert_eq!(next(&mut peer).await, Message::Unchoke);
    peer
}

/// Requests every block of pieces `0..pieces` at once; returns them in order.
async fn request_all(peer: &mut Framed<DuplexStream, MessageCodec>, pieces: u32) -> Vec<(u32, u32)> {
    let asked: Vec<(u32, u32)> = (0..pieces).flat_map(|p| (0..PIECE / BLOCK).map(move |b| (p, b * BLOCK))).collect();
    for &(index, begin) in &asked {
        peer.feed(Message::Request { index, begin, length: BLOCK }).await.unwrap();
    }
    peer.flush().await.unwrap();
    asked
}

#[tokio::test]
async fn choking_a_fast_peer_rejects_its_queued_requests_but_serves_allowed_fast() {
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(dir.path(), "data.bin", 4 * PIECE as usize, 81);
    let meta = make_torrent(&data, PIECE);
    let bytes = std::fs::read(&data).unwrap();
    let (commands, commands_rx) = mpsc::channel(64);
    let (events_tx, _events) = mpsc::channel(1024);
    let allowed = 2u32;
    let ctx = context(&meta, dir.path(), events_tx, commands_rx, vec![allowed]);
    let mut peer = start_unchoked(ctx, tokio::io::duplex(64 * 1024), &commands, allowed).await;

    // Every block of the four pieces, then the choke, with nothing read meanwhile.
    let asked = request_all(&mut peer, 4).await;
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

#[tokio::test]
async fn a_piece_granted_allowed_fast_later_is_served_while_choked() {
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(dir.path(), "data.bin", 4 * PIECE as usize, 82);
    let meta = make_torrent(&data, PIECE);
    let bytes = std::fs::read(&data).unwrap();
    let (commands, commands_rx) = mpsc::channel(64);
    let (events_tx, _events) = mpsc::channel(1024);
    let ctx = context(&meta, dir.path(), events_tx, commands_rx, vec![2]);
    let mut peer = start_unchoked(ctx, tokio::io::duplex(64 * 1024), &commands, 2).await;

    // The torrent grants piece 1 (a stranded piece it offers again, say); a repeat and a
    // piece past the end are dropped, so the choke is the next message.
    for piece in [1, 1, 2, 99] {
        commands.send(PeerCommand::AllowFast(piece)).await.unwrap();
    }
    assert_eq!(next(&mut peer).await, Message::AllowedFast { index: 1 });
    commands.send(PeerCommand::Choke).await.unwrap();
    assert_eq!(next(&mut peer).await, Message::Choke);

    for index in [0, 1] {
        peer.send(Message::Request { index, begin: 0, length: BLOCK }).await.unwrap();
    }
    assert_eq!(next(&mut peer).await, Message::Reject { index: 0, begin: 0, length: BLOCK });
    let at = PIECE as usize;
    let served =
        Message::Piece { index: 1, begin: 0, data: bytes::Bytes::copy_from_slice(&bytes[at..at + BLOCK as usize]) };
    assert_eq!(next(&mut peer).await, served, "the granted piece is served to the choked peer");
}

#[tokio::test]
async fn grants_stop_at_the_allowed_fast_cap() {
    let dir = tempfile::tempdir().unwrap();
    let pieces = MAX_ALLOWED_FAST_KEPT as u32 + 8;
    let data = make_file(dir.path(), "data.bin", (pieces * BLOCK) as usize, 84);
    let meta = make_torrent(&data, BLOCK);
    let (commands, commands_rx) = mpsc::channel(64);
    let (events_tx, _events) = mpsc::channel(1024);
    let ctx = context(&meta, dir.path(), events_tx, commands_rx, vec![0]);
    let mut peer = start_unchoked(ctx, tokio::io::duplex(64 * 1024), &commands, 0).await;

    // Every other piece granted: the set sent at the start counts, so 31 more go out, then
    // the rest are dropped and the choke is the next message.
    for piece in 1..pieces {
        commands.send(PeerCommand::AllowFast(piece)).await.unwrap();
    }
    commands.send(PeerCommand::Choke).await.unwrap();
    for index in 1..MAX_ALLOWED_FAST_KEPT as u32 {
        assert_eq!(next(&mut peer).await, Message::AllowedFast { index });
    }
    assert_eq!(next(&mut peer).await, Message::Choke, "no grant past {MAX_ALLOWED_FAST_KEPT}");

    // A piece past the cap is not served to the choked peer; the last one granted is.
    let (past, last) = (MAX_ALLOWED_FAST_KEPT as u32, MAX_ALLOWED_FAST_KEPT as u32 - 1);
    for index in [past, last] {
        peer.send(Message::Request { index, begin: 0, length: BLOCK }).await.unwrap();
    }
    assert_eq!(next(&mut peer).await, Message::Reject { index: past, begin: 0, length: BLOCK });
    assert!(matches!(next(&mut peer).await, Message::Piece { index, .. } if index == last));
}

/// A fast peer task uploading under 100 bytes/s (the limit's burst, one block on the wire,
/// passes at once, each next block waits minutes), unchoked, asked for every block of two
/// pieces.
struct Limited {
    /// The test's end of the pipe.
    peer: Framed<DuplexStream, MessageCodec>,
    commands: mpsc::Sender<PeerCommand>,
    budget: SendBudget,
    asked: Vec<(u32, u32)>,
    /// Held so the task can report (big enough that nobody needs to read it).
    _events: mpsc::Receiver<PeerEvent>,
}

async fn start_limited(dir: &std::path::Path, seed: u64) -> Limited {
    let data = make_file(dir, "data.bin", 4 * PIECE as usize, seed);
    let meta = make_torrent(&data, PIECE);
    let (commands, commands_rx) = mpsc::channel(64);
    let (events_tx, _events) = mpsc::channel(1024);
    let mut ctx = context(&meta, dir, events_tx, commands_rx, vec![3]);
    ctx.limits.rates.session = Arc::new(Rates::new(0, 100));
    let budget = ctx.limits.budget.clone();
    let mut peer = start_unchoked(ctx, tokio::io::duplex(64 * 1024), &commands, 3).await;
    let asked = request_all(&mut peer, 2).await;
    Limited { peer, commands, budget, asked, _events }
}

#[tokio::test]
async fn choking_gives_up_the_reads_waiting_for_the_upload_limit() {
    let dir = tempfile::tempdir().unwrap();
    let Limited { mut peer, commands, budget, asked, _events } = start_limited(dir.path(), 83).await;
    let mut sent = 0;
    while sent < 1 {
        match next(&mut peer).await {
            Message::Piece { .. } => sent += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The next reads (as many as the 64 KiB send buffer allows) now wait for the limit.
    commands.send(PeerCommand::Choke).await.unwrap();
    assert_eq!(next(&mut peer).await, Message::Choke);
    let mut rejected = Vec::new();
    while rejected.len() < asked.len() - sent {
        match next(&mut peer).await {
            Message::Reject { index, begin, .. } => rejected.push((index, begin)),
            other => panic!("unexpected {other:?} after the choke"),
        }
    }
    rejected.sort();
    assert_eq!(rejected, asked[sent..], "every block not sent is rejected once");
    assert_eq!(budget.in_use(), 0, "the given-up reads hold no send budget");
}

#[tokio::test]
async fn a_task_closed_while_it_waits_on_the_torrent_ends_as_closed_by_us() {
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(dir.path(), "data.bin", 4 * PIECE as usize, 82);
    let meta = make_torrent(&data, PIECE);
    // A pipe that holds one `have` message (9 bytes): our third write completes only once the
    // task has read the second, and an event channel of one that nobody reads.
    let (ours, theirs) = tokio::io::duplex(9);
    let (_commands, commands_rx) = mpsc::channel(64);
    let (events_tx, mut events) = mpsc::channel(1);
    let ctx = context(&meta, dir.path(), events_tx, commands_rx, vec![]);
    let cancel = ctx.cancel.clone();
    let task = tokio::spawn(connection::run(Framed::new(ours, MessageCodec::default()), ctx));
    let mut peer = Framed::new(theirs, MessageCodec::default());
    for index in 0..3 {
        tokio::time::timeout(WAIT, peer.send(Message::Have { index })).await.expect("the task reads").unwrap();
    }
    // The first `have` filled the channel; the task read the second and waits to report it.
    assert_eq!(events.len(), 1);
    cancel.cancel();
    let mut last = None;
    while let Some(ev) = tokio::time::timeout(WAIT, events.recv()).await.expect("the task ends") {
        last = Some(ev.kind);
    }
    match last {
        Some(PeerEventKind::Closed(reason)) => assert_eq!(reason, CloseReason::ByUs),
        other => panic!("the last event is not Closed: {other:?}"),
    }
    task.await.unwrap();
}

#[tokio::test]
async fn a_cancel_gives_up_a_read_waiting_for_the_upload_limit() {
    let dir = tempfile::tempdir().unwrap();
    // The commands are held too: a task whose torrent dropped them ends.
    let Limited { mut peer, commands: _commands, budget, asked, _events } = start_limited(dir.path(), 84).await;
    match next(&mut peer).await {
        Message::Piece { index, begin, .. } => assert_eq!((index, begin), asked[0]),
        other => panic!("unexpected {other:?}"),
    }
    // The next blocks' reads wait for the limit; the rest are queued. Cancel them all: each is
    // answered by a reject at once (a read left to finish would take minutes to send it).
    for &(index, begin) in &asked[1..] {
        peer.feed(Message::Cancel { index, begin, length: BLOCK }).await.unwrap();
    }
    peer.flush().await.unwrap();
    let mut rejected = Vec::new();
    while rejected.len() < asked.len() - 1 {
        match next(&mut peer).await {
            Message::Reject { index, begin, .. } => rejected.push((index, begin)),
            other => panic!("unexpected {other:?} after the cancels"),
        }
    }
    rejected.sort();
    assert_eq!(rejected, asked[1..], "every cancelled block is rejected once, none sent");
    assert_eq!(budget.in_use(), 0, "the given-up reads hold no send budget");
}

/// The task's end of the pipe, noting the size of every write the task makes.
struct CountedWrites {
    io: DuplexStream,
    writes: Arc<Mutex<Vec<usize>>>,
}

impl AsyncRead for CountedWrites {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedWrites {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.writes.lock().unwrap().push(n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_batch_of_requests_is_answered_in_a_few_large_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(dir.path(), "data.bin", 4 * PIECE as usize, 83);
    let meta = make_torrent(&data, PIECE);
    let bytes = std::fs::read(&data).unwrap();
    let (commands, commands_rx) = mpsc::channel(64);
    let (events_tx, _events) = mpsc::channel(1024);
    let mut ctx = context(&meta, dir.path(), events_tx, commands_rx, vec![3]);
    ctx.limits.send_buffer = 1 << 20;
    let (ours, theirs) = tokio::io::duplex(4 << 20);
    let writes = Arc::new(Mutex::new(Vec::new()));
    let ours = CountedWrites { io: ours, writes: writes.clone() };
    let mut peer = start_unchoked(ctx, (ours, theirs), &commands, 3).await;

    // 32 requests (two pieces, 512 KiB) in one write, so the task reads them in one go.
    let asked = request_all(&mut peer, 2).await;
    for &(index, begin) in &asked {
        match next(&mut peer).await {
            Message::Piece { index: i, begin: b, data } if (i, b) == (index, begin) => {
                let at = (index * PIECE + begin) as usize;
                assert!(data[..] == bytes[at..at + BLOCK as usize], "wrong bytes for {index}:{begin}");
            }
            other => panic!("expected block {index}:{begin}, got {other:?}"),
        }
    }
    // Writes of a block or more carried the blocks (the others: the opening messages and the
    // unchoke). One write per block would be 32; a piece is read from disk at once, so the
    // blocks of each go out together, in writes of up to the sink's 256 KiB batch.
    let large: Vec<usize> = writes.lock().unwrap().iter().copied().filter(|&n| n >= BLOCK as usize).collect();
    assert!(large.iter().sum::<usize>() >= 32 * BLOCK as usize, "writes: {large:?}");
    assert!(large.len() <= 8, "{} writes carried 32 blocks: {large:?}", large.len());
}

/// The task's end of the pipe, noting at each write how many bytes the task had read by then.
struct ReadProgress {
    io: DuplexStream,
    read: usize,
    /// The bytes read before each write, in order.
    read_at_writes: Arc<Mutex<Vec<usize>>>,
}

impl AsyncRead for ReadProgress {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        self.read += buf.filled().len() - before;
        polled
    }
}

impl AsyncWrite for ReadProgress {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(_)) = polled {
            let read = self.read;
            self.read_at_writes.lock().unwrap().push(read);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A task with piece 0 (warm in the cache, so its block reads at once) and without piece 1,
/// unchoking its peer, whose peer then writes `first` and 200,000 requests for piece 1
/// (refused without an answer: no fast extension) in one write, all in the pipe before the
/// task reads any, so its read buffer never runs dry. Returns the peer's end, the task's
/// commands, the bytes the task had read at each of its writes, and the flood's length.
async fn flooded_task(first: Option<Message>) -> (Framed<DuplexStream, MessageCodec>, Flood) {
    const FLOOD: u32 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(dir.path(), "data.bin", 2 * PIECE as usize, 85);
    let meta = make_torrent(&data, PIECE);
    let (commands, commands_rx) = mpsc::channel(64);
    let (events_tx, events) = mpsc::channel(1024);
    let mut ctx = context(&meta, dir.path(), events_tx, commands_rx, vec![]);
    ctx.have.set(1, false);
    ctx.storage.read_block(0, 0, BLOCK).await.unwrap();
    let (ours, theirs) = tokio::io::duplex(4 << 20);
    let read_at_writes = Arc::new(Mutex::new(Vec::new()));
    let ours = ReadProgress { io: ours, read: 0, read_at_writes: read_at_writes.clone() };
    tokio::spawn(connection::run(Framed::new(ours, MessageCodec::default()), ctx));
    let mut peer = Framed::new(theirs, MessageCodec::default());
    assert!(matches!(next(&mut peer).await, Message::Bitfield(_)));
    commands.send(PeerCommand::Unchoke).await.unwrap();
    assert_eq!(next(&mut peer).await, Message::Unchoke);

    let (mut flood, mut codec) = (bytes::BytesMut::new(), MessageCodec::default());
    for i in 0..FLOOD {
        let refused = Message::Request { index: 1, begin: i % (PIECE / BLOCK) * BLOCK, length: BLOCK };
        let msg = if i == 0 { first.clone().unwrap_or(refused) } else { refused };
        tokio_util::codec::Encoder::encode(&mut codec, msg, &mut flood).unwrap();
    }
    // One write: the pipe holds it all.
    tokio::io::AsyncWriteExt::write_all(peer.get_mut(), &flood).await.unwrap();
    (peer, Flood { commands, read_at_writes, len: flood.len(), _kept: (dir, events) })
}

struct Flood {
    commands: mpsc::Sender<PeerCommand>,
    read_at_writes: Arc<Mutex<Vec<usize>>>,
    len: usize,
    _kept: (tempfile::TempDir, mpsc::Receiver<PeerEvent>),
}

impl Flood {
    /// The bytes the task had read when it first wrote after the flood came (the writes before,
    /// the bitfield and the unchoke, came with nothing read).
    fn read_at_first_write(&self) -> usize {
        *self.read_at_writes.lock().unwrap().iter().find(|&&read| read > 0).expect("a write during the flood")
    }
}

/// A peer that never stops asking cannot hold back our answers: the task takes at most 64
/// requests from its read buffer per turn, then writes what it has. The block asked for first
/// goes out once the task has read one buffer (8 KiB) of the 3.4 MB flood; a task that took
/// requests until its buffer ran dry sent it only after reading the whole flood.
#[tokio::test]
async fn a_flood_of_requests_does_not_hold_back_our_answers() {
    let served = Message::Request { index: 0, begin: 0, length: BLOCK };
    let (mut peer, flood) = flooded_task(Some(served)).await;
    assert!(matches!(next(&mut peer).await, Message::Piece { index: 0, begin: 0, .. }));
    let read = flood.read_at_first_write();
    assert!(read <= 64 * 1024, "the block went out after {read} of {} bytes of requests", flood.len);
}

/// Nor our commands: the reader wins at most 8 turns in a row before the torrent's commands
/// (and the budget and the timers, the write-stall timeout among them) get one. Here the
/// `have` went out once the task had read 270 KB (8 turns of 64 requests took it into the
/// codec's second read, of up to 256 KiB); without that bound, after the whole 3.4 MB.
#[tokio::test]
async fn a_flood_of_requests_does_not_hold_back_our_commands() {
    let (mut peer, flood) = flooded_task(None).await;
    flood.commands.send(PeerCommand::Have(1)).await.unwrap();
    assert_eq!(next(&mut peer).await, Message::Have { index: 1 });
    let read = flood.read_at_first_write();
    assert!(read <= flood.len / 8, "the have went out after {read} of {} bytes of requests", flood.len);
}
