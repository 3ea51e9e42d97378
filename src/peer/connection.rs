//! The per-peer task: owns one connection after its handshake.
//!
//! The stream is split: the reader decides, a writer future owns the write half and a
//! bounded queue of outgoing messages; both run concurrently inside this one task, so a peer
//! that stops reading can never stop us from reading it (no write/write deadlock), and
//! keep-alives go out after `keepalive_interval` of silence. Every message is checked against the torrent's geometry
//! before it is believed: a bad bitfield, an out-of-range `have` or `request`, or an
//! oversized block closes the connection. Requests are served only while the peer is
//! unchoked and only for pieces we have; blocks are read through `Storage` (blocking pool).
use super::{PeerCommand, PeerCounters, PeerError, PeerEvent, PeerEventKind};
use crate::picker::{BlockRef, PeerKey};
use crate::storage::Storage;
use crate::wire::extension::ExtHandshake;
use crate::wire::{Message, MessageCodec};
use bitvec::prelude::*;
use futures::stream::FuturesOrdered;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Largest block we serve; libtorrent and others refuse more than 16 KiB, we allow 128 KiB.
pub const MAX_SERVED_BLOCK: u32 = 128 * 1024;
/// Requests from one peer we queue before dropping more (advertised as our `reqq`).
pub const OUR_REQQ: usize = 500;
/// Block reads in flight per peer.
const READS_IN_FLIGHT: usize = 8;
/// Bytes the writer gathers before a write call.
const WRITE_BATCH: usize = 256 * 1024;
/// Outgoing messages queued for the writer; past this no new block is read for the peer.
const WRITE_QUEUE: usize = 256;

/// Settings and context for one peer task.
pub struct PeerContext {
    pub key: PeerKey,
    pub piece_count: u32,
    pub piece_length: u32,
    pub total_length: u64,
    pub storage: Storage,
    /// Our verified pieces at connection time; later changes arrive as `Have` commands.
    pub have: BitVec<u8, Msb0>,
    pub counters: Arc<PeerCounters>,
    pub events: mpsc::Sender<PeerEvent>,
    pub commands: mpsc::Receiver<PeerCommand>,
    /// Send our BEP 10 handshake (the peer set the extension bit).
    pub extensions: Option<ExtHandshake>,
    pub keepalive_interval: Duration,
    pub idle_timeout: Duration,
    pub cancel: CancellationToken,
}

struct Task {
    ctx: PeerContext,
    writer: mpsc::Sender<Message>,
    am_choking: bool,
    peer_interested: bool,
    serve_queue: VecDeque<BlockRef>,
    last_received: Instant,
}

/// Runs the connection until it closes; always reports `Closed` last.
pub async fn run<S>(framed: Framed<S, MessageCodec>, ctx: PeerContext)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let key = ctx.key;
    let events = ctx.events.clone();
    // `StreamExt::split` keeps the Framed whole, so bytes the peer sent behind its handshake
    // (already in the read buffer) are decoded before the socket is read again.
    let mut framed = framed;
    // Let the writer gather several blocks into one write call instead of one per block.
    framed.set_backpressure_boundary(WRITE_BATCH);
    let (sink, mut reader) = framed.split();

    let (writer_tx, writer_rx) = mpsc::channel(WRITE_QUEUE);
    // The writer runs in this same task, not a spawned one: yamux (libp2p) streams keep one
    // waker slot for both directions, and halves polled from two tasks lose wake-ups
    // (rust-yamux issue 232); within one task there is one waker and nothing is lost.
    let writer = write_loop(sink, writer_rx, ctx.counters.clone(), ctx.keepalive_interval);
    let mut task = Task {
        ctx,
        writer: writer_tx,
        am_choking: true,
        peer_interested: false,
        serve_queue: VecDeque::new(),
        last_received: Instant::now(),
    };
    let outcome = tokio::select! {
        r = task.drive(&mut reader) => r,
        r = writer => r.and(Err(PeerError::Eof)),
    };
    let reason = match outcome {
        Ok(()) => "closed".to_string(),
        Err(e) => e.to_string(),
    };
    drop(task);
    let _ = events.send(PeerEvent { key, kind: PeerEventKind::Closed(reason) }).await;
}

type Sink<S> = SplitSink<Framed<S, MessageCodec>, Message>;

async fn write_loop<S: AsyncRead + AsyncWrite>(
    mut sink: Sink<S>,
    mut rx: mpsc::Receiver<Message>,
    counters: Arc<PeerCounters>,
    keepalive: Duration,
) -> Result<(), PeerError> {
    loop {
        let msg = match tokio::time::timeout(keepalive, rx.recv()).await {
            Err(_) => Message::KeepAlive,
            Ok(None) => return Ok(()),
            Ok(Some(m)) => m,
        };
        feed(&mut sink, msg, &counters).await?;
        // Batch whatever else is queued into the same flush.
        while let Ok(m) = rx.try_recv() {
            feed(&mut sink, m, &counters).await?;
        }
        sink.flush().await?;
    }
}

async fn feed<S: AsyncRead + AsyncWrite>(
    sink: &mut Sink<S>,
    msg: Message,
    counters: &PeerCounters,
) -> Result<(), PeerError> {
    if let Message::Piece { data, .. } = &msg {
        counters.uploaded.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    Ok(sink.feed(msg).await?)
}

type BlockRead = std::pin::Pin<
    Box<dyn std::future::Future<Output = (BlockRef, Result<bytes::Bytes, crate::storage::StorageError>)> + Send>,
>;

impl Task {
    async fn drive<S: AsyncRead + AsyncWrite>(
        &mut self,
        reader: &mut SplitStream<Framed<S, MessageCodec>>,
    ) -> Result<(), PeerError> {
        self.send_greeting().await?;
        let mut reads: FuturesOrdered<BlockRead> = FuturesOrdered::new();
        let idle = self.ctx.idle_timeout;
        loop {
            self.start_reads(&mut reads);
            let deadline = self.last_received + idle;
            tokio::select! {
                _ = self.ctx.cancel.cancelled() => return Ok(()),
                msg = reader.next() => match msg {
                    None => return Err(PeerError::Eof),
                    Some(msg) => self.on_message(msg?).await?,
                },
                cmd = self.ctx.commands.recv() => match cmd {
                    None | Some(PeerCommand::Close) => return Ok(()),
                    Some(cmd) => self.on_command(cmd).await?,
                },
                Some((block, data)) = reads.next(), if !reads.is_empty() => self.on_block_read(block, data).await?,
                _ = tokio::time::sleep_until(deadline) => return Err(PeerError::Timeout("idle")),
            }
        }
    }

    async fn send(&self, msg: Message) -> Result<(), PeerError> {
        self.writer.send(msg).await.map_err(|_| PeerError::Eof)
    }

    async fn send_greeting(&mut self) -> Result<(), PeerError> {
        if let Some(ext) = self.ctx.extensions.take() {
            self.send(Message::Extended { id: 0, payload: ext.encode() }).await?;
        }
        if self.ctx.have.any() {
            let bits = bytes::Bytes::copy_from_slice(self.ctx.have.as_raw_slice());
            self.send(Message::Bitfield(bits)).await?;
        }
        Ok(())
    }

    async fn report(&self, kind: PeerEventKind) -> Result<(), PeerError> {
        self.ctx.events.send(PeerEvent { key: self.ctx.key, kind }).await.map_err(|_| PeerError::Eof)
    }

    fn check_piece(&self, index: u32) -> Result<(), PeerError> {
        if index < self.ctx.piece_count {
            Ok(())
        } else {
            Err(PeerError::Protocol(format!("piece index {index} out of range")))
        }
    }

    fn piece_size(&self, index: u32) -> u32 {
        let start = index as u64 * self.ctx.piece_length as u64;
        (self.ctx.total_length - start).min(self.ctx.piece_length as u64) as u32
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), PeerError> {
        self.last_received = Instant::now();
        tracing::trace!(key = self.ctx.key, ?msg, "received");
        match msg {
            Message::KeepAlive | Message::Port(_) => {}
            Message::Choke => self.report(PeerEventKind::Choked).await?,
            Message::Unchoke => self.report(PeerEventKind::Unchoked).await?,
            Message::Interested => {
                self.peer_interested = true;
                self.report(PeerEventKind::Interested).await?
            }
            Message::NotInterested => {
                self.peer_interested = false;
                self.report(PeerEventKind::NotInterested).await?
            }
            Message::Have { index } => {
                self.check_piece(index)?;
                self.report(PeerEventKind::Have(index)).await?
            }
            Message::Bitfield(raw) => {
                let bits = self.parse_bitfield(&raw)?;
                self.report(PeerEventKind::Bitfield(bits)).await?
            }
            Message::Request { index, begin, length } => self.on_request(BlockRef { piece: index, begin, length })?,
            Message::Cancel { index, begin, length } => {
                let b = BlockRef { piece: index, begin, length };
                self.serve_queue.retain(|q| *q != b);
            }
            Message::Piece { index, begin, data } => {
                self.check_piece(index)?;
                let length = data.len() as u32;
                if length == 0
                    || length > MAX_SERVED_BLOCK
                    || begin as u64 + length as u64 > self.piece_size(index) as u64
                {
                    return Err(PeerError::Protocol(format!("block {index}:{begin}+{length} out of range")));
                }
                self.ctx.counters.downloaded.fetch_add(length as u64, Ordering::Relaxed);
                self.report(PeerEventKind::Block(BlockRef { piece: index, begin, length }, data)).await?
            }
            Message::Extended { id: 0, payload } => {
                if let Some(ext) = ExtHandshake::decode(&payload) {
                    self.report(PeerEventKind::Extensions(ext)).await?
                }
            }
            Message::Extended { .. } => {}
        }
        Ok(())
    }

    /// BEP 3 sends the bitfield once, first; its spare bits must be zero. aria2 also sends one
    /// later in place of `have` messages (a peer that started empty announces its first pieces
    /// with a bitfield, then again with a fuller one), so a later bitfield is taken as a batch
    /// of `have`s rather than refused.
    fn parse_bitfield(&mut self, raw: &[u8]) -> Result<BitVec<u8, Msb0>, PeerError> {
        let n = self.ctx.piece_count as usize;
        if raw.len() != n.div_ceil(8) {
            return Err(PeerError::Protocol(format!("bitfield of {} bytes for {n} pieces", raw.len())));
        }
        let mut bits = BitVec::<u8, Msb0>::from_slice(raw);
        if bits[n..].any() {
            return Err(PeerError::Protocol("bitfield has spare bits set".into()));
        }
        bits.truncate(n);
        Ok(bits)
    }

    fn on_request(&mut self, b: BlockRef) -> Result<(), PeerError> {
        self.check_piece(b.piece)?;
        if b.length == 0
            || b.length > MAX_SERVED_BLOCK
            || b.begin as u64 + b.length as u64 > self.piece_size(b.piece) as u64
        {
            return Err(PeerError::Protocol(format!("request {}:{}+{} out of range", b.piece, b.begin, b.length)));
        }
        // Requests while choked, for pieces we lack, or past our advertised queue are
        // dropped silently, as BEP 3 peers expect.
        if !self.am_choking && self.ctx.have[b.piece as usize] && self.serve_queue.len() < OUR_REQQ {
            self.serve_queue.push_back(b);
        }
        Ok(())
    }

    /// Starts block reads while the writer has room.
    fn start_reads(&mut self, reads: &mut FuturesOrdered<BlockRead>) {
        while reads.len() < READS_IN_FLIGHT && self.writer.capacity() > READS_IN_FLIGHT {
            let Some(b) = self.serve_queue.pop_front() else { return };
            let storage = self.ctx.storage.clone();
            reads.push_back(Box::pin(async move { (b, storage.read_block(b.piece, b.begin, b.length).await) }));
        }
    }

    async fn on_block_read(
        &mut self,
        b: BlockRef,
        data: Result<bytes::Bytes, crate::storage::StorageError>,
    ) -> Result<(), PeerError> {
        let data = data.map_err(|e| PeerError::Io(std::io::Error::other(e.to_string())))?;
        if self.am_choking {
            return Ok(());
        }
        self.send(Message::Piece { index: b.piece, begin: b.begin, data }).await
    }

    async fn on_command(&mut self, cmd: PeerCommand) -> Result<(), PeerError> {
        tracing::trace!(key = self.ctx.key, ?cmd, "command");
        match cmd {
            PeerCommand::Request(blocks) => {
                for b in blocks {
                    self.send(Message::Request { index: b.piece, begin: b.begin, length: b.length }).await?;
                }
            }
            PeerCommand::Cancel(b) => {
                self.send(Message::Cancel { index: b.piece, begin: b.begin, length: b.length }).await?
            }
            PeerCommand::Choke => {
                if !self.am_choking {
                    self.am_choking = true;
                    self.serve_queue.clear();
                    self.send(Message::Choke).await?;
                }
            }
            PeerCommand::Unchoke => {
                if self.am_choking {
                    self.am_choking = false;
                    self.send(Message::Unchoke).await?;
                }
            }
            PeerCommand::Interested(true) => self.send(Message::Interested).await?,
            PeerCommand::Interested(false) => self.send(Message::NotInterested).await?,
            PeerCommand::Have(i) => {
                if (i as usize) < self.ctx.have.len() && !self.ctx.have[i as usize] {
                    self.ctx.have.set(i as usize, true);
                    self.send(Message::Have { index: i }).await?;
                }
            }
            PeerCommand::Close => {}
        }
        Ok(())
    }
}
