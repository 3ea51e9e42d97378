//! The per-peer task: owns one connection after its handshake.
//!
//! One loop selects over everything that can happen to the connection: cancellation (the
//! torrent's per-peer token), a message from the peer, a command from the torrent, a block
//! read from storage, the socket taking more of our output, and three deadlines (idle,
//! keep-alive, write stall). No arm ever waits on the peer: outgoing messages go into an
//! `Outbox` that the write arm drains as the socket allows, so a peer that stops reading
//! cannot stop us reading it, seeing cancellation, or noticing our deadlines.
//!
//! Bounds, so a peer that never reads costs a fixed amount:
//! - block data read for the peer and not yet handed to the socket is at most
//!   `peer_send_buffer` bytes for this peer and, through the shared [`SendBudget`], at most
//!   `max_send_buffer` bytes across every peer of the session; served blocks are copied out
//!   of the piece cache so a queued block never pins a whole cached piece;
//! - at most `max_queued` other messages wait in the outbox, then the peer is dropped;
//! - output that makes no progress for `write_stall_timeout` drops the peer.
//!
//! Every message is checked against the torrent's geometry before it is believed: a bad
//! bitfield, an out-of-range `have` or `request`, or an oversized block closes the
//! connection. Requests are served only while the peer is unchoked (or, with the fast
//! extension, for its allowed-fast pieces) and only for pieces we have; blocks are read
//! through `Storage` (blocking pool). Requests wait as descriptors in the [`ServeQueue`]
//! (thousands per peer) and their data is read only as the byte bounds above allow. A choke
//! gives up the queued requests, the reads under way (even those waiting for the upload limit,
//! see `reads`) and the blocks not yet handed to the socket. With the fast extension (`fast`)
//! every request we drop is answered with a reject.
use super::budget::SendBudget;
use super::metadata::MetadataServer;
use super::outbox::Outbox;
use super::serve_queue::{Queued, ServeQueue, MAX_SERVE_QUEUE};
use super::{CloseReason, PeerCommand, PeerCounters, PeerError, PeerEvent, PeerEventKind};
use crate::storage::{Storage, StorageError};
use crate::types::{BlockRef, Geometry, PeerKey};
use crate::wire::extension::{ExtHandshake, UT_METADATA_ID, UT_PEX_ID};
use crate::wire::metadata::MetadataMsg;
use crate::wire::pex::PexMessage;
use crate::wire::{Message, MessageCodec, WireError};
use bitvec::prelude::*;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{FutureExt, StreamExt};
use reads::Reads;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

mod fast;
mod reads;

/// Largest block we serve; libtorrent and others refuse more than 16 KiB, we allow 128 KiB.
pub const MAX_SERVED_BLOCK: u32 = 128 * 1024;
/// The request queue we advertise as our `reqq` (BEP 10). We queue more than this (up to
/// `MAX_SERVE_QUEUE`): peers without BEP 10, such as ctorrent, never see the figure.
pub const OUR_REQQ: usize = 500;
/// Block reads in flight per peer.
const READS_IN_FLIGHT: usize = 8;
/// Requests taken from the read buffer in one turn (64 blocks of 16 KiB: the send buffer).
const MESSAGES_PER_TURN: usize = 64;
/// Turns the reader may win in a row before the arms after it (commands, budget, timers) get
/// one: a peer whose messages never stop coming cannot hold back our choke or its stall timeout.
const ARRIVALS_IN_A_ROW: u32 = 8;
/// Bytes the sink gathers before it must write them out (one write call for several blocks).
const WRITE_BATCH: usize = 256 * 1024;
/// Output pending this long with nothing taken by the socket marks the peer stalled (the
/// choker then gives its slot to someone who reads); `write_stall_timeout` closes it later.
const STALL_FLAG: Duration = Duration::from_secs(5);
/// BEP 10 handshakes one connection may send (a peer may repeat it to update its settings;
/// thousands are an attack on whoever reads them).
const MAX_EXT_HANDSHAKES: u32 = 16;

/// Settings and context for one peer task.
pub struct PeerContext {
    pub key: PeerKey,
    pub geometry: Geometry,
    pub storage: Storage,
    /// Our verified pieces at connection time; later changes arrive as `Have` commands.
    pub have: BitVec<u8, Msb0>,
    pub counters: Arc<PeerCounters>,
    pub events: mpsc::Sender<PeerEvent>,
    pub commands: mpsc::Receiver<PeerCommand>,
    /// Send our BEP 10 handshake (the peer set the extension bit).
    pub extensions: Option<ExtHandshake>,
    /// The raw info dict, served to peers that ask over `ut_metadata` (BEP 9); shared.
    pub metadata: Bytes,
    /// Both handshakes set the BEP 6 fast bit.
    pub fast: bool,
    /// The allowed-fast set we grant this peer (BEP 6; empty without fast).
    pub allowed_fast: Vec<u32>,
    /// Our mainline DHT port, sent in a BEP 5 `port` message after the piece state (both
    /// handshakes set the DHT bit).
    pub dht_port: Option<u16>,
    pub limits: PeerLimits,
    /// The torrent's token for this peer: cancelled to close it, whatever the socket does.
    pub cancel: CancellationToken,
}

/// The timing and size bounds of one peer task (from `Options`).
#[derive(Clone, Debug)]
pub struct PeerLimits {
    pub keepalive_interval: Duration,
    pub idle_timeout: Duration,
    /// Output pending this long without the socket taking any of it closes the connection.
    pub write_stall_timeout: Duration,
    /// Block bytes read for this peer and not yet written to its socket.
    pub send_buffer: usize,
    /// Messages other than blocks waiting for the socket.
    pub max_queued: usize,
    /// Shared by every peer of the session.
    pub budget: SendBudget,
    /// The session's and the torrent's rate limits.
    pub rates: super::rate::PeerRates,
}

type Sink<S> = SplitSink<Framed<S, MessageCodec>, Message>;

struct Task {
    ctx: PeerContext,
    out: Outbox,
    am_choking: bool,
    serve_queue: ServeQueue,
    fast_in: fast::FastState,
    reads: Reads,
    /// A budget share waited for, for the block at the head of `serve_queue`.
    waiting_budget: Option<u32>,
    /// A budget share that arrived while the task waited for one.
    granted: Option<OwnedSemaphorePermit>,
    last_received: Instant,
    ext_handshakes: u32,
    /// A BEP 5 `port` message was passed on (later ones are dropped).
    dht_port_seen: bool,
    metadata: MetadataServer,
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
    framed.set_backpressure_boundary(WRITE_BATCH);
    let (mut sink, mut reader) = framed.split();
    let now = Instant::now();
    let metadata = MetadataServer::new(ctx.metadata.clone());
    let mut task = Task {
        // With fast, room for a reject per queued request on top of the other messages.
        out: Outbox::new(ctx.counters.clone(), ctx.limits.max_queued + usize::from(ctx.fast) * MAX_SERVE_QUEUE, now),
        ctx,
        am_choking: true,
        serve_queue: ServeQueue::default(),
        fast_in: fast::FastState::default(),
        reads: Reads::default(),
        waiting_budget: None,
        granted: None,
        last_received: now,
        ext_handshakes: 0,
        dht_port_seen: false,
        metadata,
    };
    // The reader and the writer are polled from this one task: yamux (libp2p) streams keep
    // one waker slot for both directions, and halves polled from two tasks lose wake-ups
    // (rust-yamux issue 232).
    let outcome = task.drive(&mut reader, &mut sink).await;
    let reason = CloseReason::of(&outcome);
    drop(task);
    // Sent even when cancelled: the torrent forgets the peer only on `Closed`. This cannot
    // hang: a torrent that stopped has dropped its receiver, and the send fails at once.
    let _ = events.send(PeerEvent { key, kind: PeerEventKind::Closed(reason) }).await;
}

impl Task {
    async fn drive<S: AsyncRead + AsyncWrite>(
        &mut self,
        reader: &mut SplitStream<Framed<S, MessageCodec>>,
        sink: &mut Sink<S>,
    ) -> Result<(), PeerError> {
        self.send_greeting();
        let limits = self.ctx.limits.clone();
        let mut arrivals = 0;
        loop {
            self.start_reads();
            let reader_turn = arrivals < ARRIVALS_IN_A_ROW;
            arrivals = if reader_turn { arrivals } else { 0 };
            let owed = !self.serve_queue.is_empty() || !self.reads.is_empty() || self.out.block_bytes() > 0;
            self.ctx.counters.owed.store(owed, Ordering::Relaxed);
            let idle_at = self.last_received + limits.idle_timeout;
            let keepalive_at = self.out.last_sent() + limits.keepalive_interval;
            let stalled_since = self.out.stalled_since();
            let stall_at = stalled_since.map(|t| t + limits.write_stall_timeout);
            let flagged = self.ctx.counters.stalled();
            if flagged && stalled_since.is_none() {
                self.ctx.counters.stalled.store(false, Ordering::Relaxed);
            }
            let flag_at = stalled_since.filter(|_| !flagged).map(|t| t + STALL_FLAG);
            let budget_wanted = self.waiting_budget;
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return Ok(()),
                // Blocks read are queued before anything is written (reads from the piece cache
                // complete at once), so they go out in large writes, not one per block. None
                // when every read left was cancelled: the loop then starts the next ones (a
                // pattern of `Some` would leave this select waiting on the other arms).
                done = self.reads.next(), if !self.reads.is_empty() => {
                    if let Some((block, data, permit)) = done {
                        self.on_block_read(block, data, permit)?
                    }
                }
                r = self.out.write(sink), if self.out.wants_write() => r?,
                msg = reader.next(), if reader_turn => {
                    arrivals += 1;
                    self.on_arrival(msg, reader).await?
                }
                cmd = self.ctx.commands.recv() => match cmd {
                    // The torrent dropped its sender: it is gone.
                    None => return Ok(()),
                    Some(cmd) => self.on_command(cmd)?,
                },
                permit = limits.budget.take(budget_wanted.unwrap_or(0)), if budget_wanted.is_some() => {
                    self.waiting_budget = None;
                    self.granted = Some(permit);
                }
                _ = tokio::time::sleep_until(idle_at) => return Err(PeerError::Timeout("idle")),
                _ = tokio::time::sleep_until(keepalive_at), if self.out.is_idle() => {
                    self.out.push(Message::KeepAlive)?
                }
                _ = tokio::time::sleep_until(flag_at.unwrap_or(idle_at)), if flag_at.is_some() => {
                    self.ctx.counters.stalled.store(true, Ordering::Relaxed);
                }
                _ = tokio::time::sleep_until(stall_at.unwrap_or(idle_at)), if stall_at.is_some() => {
                    return Err(PeerError::Timeout("write (the peer stopped reading)"))
                }
                // The reader sat out and nothing else was ready: its turn again.
                () = std::future::ready(()), if !reader_turn => {}
            }
        }
    }

    fn send_greeting(&mut self) {
        if let Some(ext) = self.ctx.extensions.take() {
            let _ = self.out.push(Message::Extended { id: 0, payload: ext.encode() });
        }
        self.send_piece_state();
        if let Some(port) = self.ctx.dht_port {
            let _ = self.out.push(Message::Port(port));
        }
    }

    /// Hands an event to the torrent. Waiting here is the torrent's backpressure on a fast
    /// peer, never the peer's on us; cancellation still ends the wait, as closed by us (the
    /// torrent then reports the reason it closed us for, say a ban, not "closed by the peer").
    async fn report(&mut self, kind: PeerEventKind) -> Result<(), PeerError> {
        let ev = PeerEvent { key: self.ctx.key, kind };
        tokio::select! {
            _ = self.ctx.cancel.cancelled() => Err(PeerError::Closed),
            r = self.ctx.events.send(ev) => r.map_err(|_| PeerError::Closed),
        }
    }

    fn check_piece(&self, index: u32) -> Result<(), PeerError> {
        if index < self.ctx.geometry.piece_count() {
            Ok(())
        } else {
            Err(PeerError::Protocol(format!("piece index {index} out of range")))
        }
    }

    /// A block (sent or requested) that fits inside its piece and our size limit.
    fn check_block(&self, what: &str, b: BlockRef) -> Result<(), PeerError> {
        self.check_piece(b.piece)?;
        match self.ctx.geometry.block_in(b.piece, b.begin, b.length) {
            Some(_) if b.length <= MAX_SERVED_BLOCK => Ok(()),
            _ => Err(PeerError::Protocol(format!("{what} {}:{}+{} out of range", b.piece, b.begin, b.length))),
        }
    }

    /// Handles a message that arrived; after a request, also those already behind it in the
    /// read buffer (at most [`MESSAGES_PER_TURN`]) before anything is written, so a batch of
    /// requests is answered in a few large writes. Blocks we receive are taken one per turn,
    /// not to hold our requests back, and the bound keeps a peer that never stops asking from
    /// holding back the rest of our output.
    async fn on_arrival<S: AsyncRead + AsyncWrite>(
        &mut self,
        first: Option<Result<Message, WireError>>,
        reader: &mut SplitStream<Framed<S, MessageCodec>>,
    ) -> Result<(), PeerError> {
        let mut next = first;
        for turn in 1.. {
            let msg = next.ok_or(PeerError::Eof)??;
            let request = matches!(msg, Message::Request { .. });
            self.on_message(msg).await?;
            if !request || turn == MESSAGES_PER_TURN {
                break;
            }
            // `now_or_never` polls with a waker that does nothing; the select polls the reader
            // again with ours before the task sleeps.
            match reader.next().now_or_never() {
                Some(msg) => next = msg,
                None => break,
            }
        }
        Ok(())
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), PeerError> {
        self.last_received = Instant::now();
        tracing::trace!(key = self.ctx.key, ?msg, "received");
        let kind = match msg {
            m if m.is_fast() => match self.on_fast_message(m)? {
                Some(kind) => kind,
                None => return Ok(()),
            },
            Message::Port(port) if !self.dht_port_seen => {
                self.dht_port_seen = true;
                PeerEventKind::DhtPort(port)
            }
            Message::KeepAlive | Message::Port(_) => return Ok(()),
            Message::Choke => PeerEventKind::Choked,
            Message::Unchoke => PeerEventKind::Unchoked,
            Message::Interested => PeerEventKind::Interested,
            Message::NotInterested => PeerEventKind::NotInterested,
            Message::Have { index } => {
                self.check_piece(index)?;
                self.saw_piece_state();
                PeerEventKind::Have(index)
            }
            Message::Bitfield(raw) => {
                self.saw_piece_state();
                PeerEventKind::Bitfield(super::parse_bitfield(&raw, self.ctx.geometry.piece_count() as usize)?)
            }
            Message::Request { index, begin, length } => {
                return self.on_request(BlockRef { piece: index, begin, length })
            }
            Message::Cancel { index, begin, length } => {
                // BEP 6: a cancelled request still gets its one answer; the block is gone
                // from the queue or its read is given up, so that answer is a reject. A block
                // already read goes out: it may be in the sink's buffer.
                let b = BlockRef { piece: index, begin, length };
                if self.serve_queue.cancel(&b) || self.reads.cancel(b) {
                    self.reject(b)?;
                }
                return Ok(());
            }
            Message::Piece { index, begin, data } => {
                let b = BlockRef { piece: index, begin, length: data.len() as u32 };
                self.check_block("block", b)?;
                self.ctx.counters.downloaded.fetch_add(b.length as u64, Ordering::Relaxed);
                // The next message waits for the bytes this one took: a limited peer backs up.
                tokio::select! {
                    _ = self.ctx.cancel.cancelled() => return Ok(()),
                    () = self.ctx.limits.rates.download(b.length) => {}
                }
                PeerEventKind::Block(b, data)
            }
            // Extended message 0 is the BEP 10 handshake; the others by the id we gave them.
            Message::Extended { id: 0, payload } => {
                self.ext_handshakes += 1;
                if self.ext_handshakes > MAX_EXT_HANDSHAKES {
                    return Err(PeerError::Protocol(format!("more than {MAX_EXT_HANDSHAKES} extension handshakes")));
                }
                match ExtHandshake::decode(&payload) {
                    Some(ext) => {
                        self.metadata.set_their_id(ext.m.get("ut_metadata").copied());
                        PeerEventKind::Extensions(ext)
                    }
                    None => return Ok(()),
                }
            }
            Message::Extended { id: UT_METADATA_ID, payload } => return self.on_metadata(&payload),
            // Malformed PEX is ignored, not fatal: it costs us nothing past its decoding.
            Message::Extended { id: UT_PEX_ID, payload } => match PexMessage::decode(&payload) {
                Ok(pex) => PeerEventKind::Pex(pex),
                Err(e) => {
                    tracing::debug!(key = self.ctx.key, error = %e, "ignored a PEX message");
                    return Ok(());
                }
            },
            Message::Extended { .. } => return Ok(()),
            // Fast messages were taken by the first arm.
            _ => return Ok(()),
        };
        self.report(kind).await
    }

    /// BEP 9: a request is answered from the info dict or rejected (see `peer::metadata` for
    /// the bounds); a malformed message is a protocol violation.
    fn on_metadata(&mut self, payload: &Bytes) -> Result<(), PeerError> {
        let msg = MetadataMsg::decode(payload).map_err(|e| PeerError::Protocol(e.to_string()))?;
        if let Some(reply) = msg.and_then(|m| self.metadata.answer(m, self.out.control_bytes())) {
            self.out.push(reply)?;
        }
        Ok(())
    }

    fn on_request(&mut self, b: BlockRef) -> Result<(), PeerError> {
        self.check_block("request", b)?;
        // Requests while choked (outside the allowed-fast set), for pieces we lack, or past
        // the queue's bound are refused: silently, as BEP 3 peers expect, or with a reject.
        // A repeat of a queued request is served once; with fast the repeat gets its own
        // answer, a reject, since every request is answered exactly once.
        if self.may_serve(b.piece) && self.ctx.have[b.piece as usize] && self.serve_queue.push(b) == Queued::Added {
            return Ok(());
        }
        self.reject(b)
    }

    /// Starts block reads while this peer's send buffer and the session's budget have room.
    fn start_reads(&mut self) {
        while self.reads.len() < READS_IN_FLIGHT && self.waiting_budget.is_none() {
            let Some(b) = self.serve_queue.front() else { return };
            if self.reads.bytes() + self.out.block_bytes() + b.length as usize > self.ctx.limits.send_buffer {
                return;
            }
            let share = self.ctx.limits.budget.share(b.length);
            let permit = match self.granted.take().filter(|p| p.num_permits() >= share) {
                Some(p) => p,
                None => match self.ctx.limits.budget.try_take(b.length) {
                    Some(p) => p,
                    None => {
                        self.waiting_budget = Some(b.length);
                        return;
                    }
                },
            };
            self.serve_queue.pop();
            let storage = self.ctx.storage.clone();
            let rates = self.ctx.limits.rates.clone();
            self.reads.push(b, async move {
                rates.upload(b.length).await;
                // The block owns its bytes (`read_block` copies it out of a cached piece).
                (b, storage.read_block(b.piece, b.begin, b.length).await, permit)
            });
        }
    }

    fn on_block_read(
        &mut self,
        b: BlockRef,
        data: Result<Bytes, StorageError>,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), PeerError> {
        let data = data.map_err(PeerError::Storage)?;
        if !self.may_serve(b.piece) {
            return self.reject(b);
        }
        self.out.push_block(Message::Piece { index: b.piece, begin: b.begin, data }, permit);
        Ok(())
    }

    fn on_command(&mut self, cmd: PeerCommand) -> Result<(), PeerError> {
        tracing::trace!(key = self.ctx.key, ?cmd, "command");
        match cmd {
            PeerCommand::Request(blocks) => {
                for b in blocks {
                    self.out.push(Message::Request { index: b.piece, begin: b.begin, length: b.length })?;
                }
            }
            PeerCommand::Cancel(b) => {
                self.out.push(Message::Cancel { index: b.piece, begin: b.begin, length: b.length })?
            }
            PeerCommand::Choke => {
                if !self.am_choking {
                    self.am_choking = true;
                    self.out.push(Message::Choke)?;
                    self.give_up_requests()?;
                }
            }
            PeerCommand::Unchoke => {
                if self.am_choking {
                    self.am_choking = false;
                    self.out.push(Message::Unchoke)?;
                }
            }
            PeerCommand::Interested(true) => self.out.push(Message::Interested)?,
            PeerCommand::Interested(false) => self.out.push(Message::NotInterested)?,
            PeerCommand::Have(i) => {
                if (i as usize) < self.ctx.have.len() && !self.ctx.have[i as usize] {
                    self.ctx.have.set(i as usize, true);
                    self.out.push(Message::Have { index: i })?;
                }
            }
            PeerCommand::AllowFast(i) => self.grant_allowed_fast(i)?,
            PeerCommand::Extended { id, payload } => self.out.push(Message::Extended { id, payload })?,
        }
        Ok(())
    }
}
