//! The outbox: messages waiting for one peer's socket, and the write step that drains them.
//!
//! Pushing never waits: the peer task puts a message in and goes on. The write step is
//! cancel-safe (it keeps no state of its own: an unsent message stays in the queue, a
//! partly written one stays in the sink's buffer), so the peer task can poll it in a
//! `select!` beside reading and drop it whenever another arm wins.
//!
//! Invariants: at most `max_queued` messages other than blocks are queued (past that the
//! peer is not reading and is dropped); `block_bytes` is the payload of the queued blocks,
//! and each queued block holds its share of the session's send budget until the sink takes
//! it. `stalled_since` is set while output is pending and the socket takes none of it.
use super::{PeerCounters, PeerError};
use crate::types::BlockRef;
use crate::wire::{Message, MessageCodec};
use futures::{Sink, SinkExt};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

struct Outgoing {
    msg: Message,
    /// Held until the sink has the block (a block's share of the send budget).
    _permit: Option<OwnedSemaphorePermit>,
}

pub struct Outbox {
    queue: VecDeque<Outgoing>,
    /// Queued messages that are not blocks.
    control: usize,
    /// Their bytes on the wire (ut_metadata answers are 16 KiB each).
    control_bytes: usize,
    max_queued: usize,
    block_bytes: usize,
    /// The sink holds bytes not yet flushed to the socket.
    dirty: bool,
    stalled_since: Option<Instant>,
    last_sent: Instant,
    counters: Arc<PeerCounters>,
}

impl Outbox {
    pub fn new(counters: Arc<PeerCounters>, max_queued: usize, now: Instant) -> Outbox {
        Outbox {
            queue: VecDeque::new(),
            control: 0,
            control_bytes: 0,
            max_queued,
            block_bytes: 0,
            dirty: false,
            stalled_since: None,
            last_sent: now,
            counters,
        }
    }

    /// Queues a message that is not a block; a peer that lets too many pile up is not reading.
    pub fn push(&mut self, msg: Message) -> Result<(), PeerError> {
        if self.control >= self.max_queued {
            return Err(PeerError::Protocol(format!("{} messages queued: the peer is not reading", self.control)));
        }
        self.control += 1;
        self.control_bytes += msg.wire_len();
        self.queue.push_back(Outgoing { msg, _permit: None });
        Ok(())
    }

    /// Queues a block read for the peer, with its share of the send budget.
    pub fn push_block(&mut self, msg: Message, permit: OwnedSemaphorePermit) {
        self.block_bytes += payload_len(&msg);
        self.queue.push_back(Outgoing { msg, _permit: Some(permit) });
    }

    /// Drops the blocks not yet handed to the sink, except those of pieces `keep` names (we
    /// choked the peer: BEP 3 lets its requests go unanswered, BEP 6 wants a reject for each,
    /// and allowed-fast pieces are still served), giving their share of the send budget
    /// back. Returns the dropped blocks.
    pub fn drop_blocks(&mut self, keep: impl Fn(u32) -> bool) -> Vec<BlockRef> {
        let mut dropped = Vec::new();
        self.queue.retain(|o| match &o.msg {
            Message::Piece { index, begin, data } if !keep(*index) => {
                dropped.push(BlockRef { piece: *index, begin: *begin, length: data.len() as u32 });
                false
            }
            _ => true,
        });
        self.block_bytes -= dropped.iter().map(|b| b.length as usize).sum::<usize>();
        dropped
    }

    pub fn block_bytes(&self) -> usize {
        self.block_bytes
    }

    /// Bytes of queued messages that are not blocks.
    pub fn control_bytes(&self) -> usize {
        self.control_bytes
    }

    pub fn wants_write(&self) -> bool {
        !self.queue.is_empty() || self.dirty
    }

    /// Nothing queued and nothing unflushed: a keep-alive may be due.
    pub fn is_idle(&self) -> bool {
        !self.wants_write()
    }

    pub fn stalled_since(&self) -> Option<Instant> {
        self.stalled_since
    }

    /// When the socket last took everything we had (or the connection started).
    pub fn last_sent(&self) -> Instant {
        self.last_sent
    }

    /// Hands queued messages to the sink and flushes it, as far as the socket allows.
    pub async fn write<S>(&mut self, sink: &mut S) -> Result<(), PeerError>
    where
        S: Sink<Message, Error = <MessageCodec as tokio_util::codec::Encoder<Message>>::Error> + Unpin,
    {
        poll_fn(|cx| self.poll_write(sink, cx)).await
    }

    fn poll_write<S>(&mut self, sink: &mut S, cx: &mut Context<'_>) -> Poll<Result<(), PeerError>>
    where
        S: Sink<Message, Error = <MessageCodec as tokio_util::codec::Encoder<Message>>::Error> + Unpin,
    {
        let r = self.poll_drain(sink, cx);
        match &r {
            Poll::Pending => {
                self.stalled_since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => {
                self.stalled_since = None;
                self.last_sent = Instant::now();
            }
        }
        r
    }

    fn poll_drain<S>(&mut self, sink: &mut S, cx: &mut Context<'_>) -> Poll<Result<(), PeerError>>
    where
        S: Sink<Message, Error = <MessageCodec as tokio_util::codec::Encoder<Message>>::Error> + Unpin,
    {
        while !self.queue.is_empty() {
            // Ready once the sink's buffer is under its boundary (it writes it out first).
            ready!(sink.poll_ready_unpin(cx))?;
            self.stalled_since = None;
            let out = self.queue.pop_front().expect("queue is not empty");
            match &out.msg {
                Message::Piece { data, .. } => {
                    self.block_bytes -= data.len();
                    self.counters.uploaded.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                msg => {
                    self.control -= 1;
                    self.control_bytes -= msg.wire_len();
                }
            }
            sink.start_send_unpin(out.msg)?;
            self.dirty = true;
        }
        ready!(sink.poll_flush_unpin(cx))?;
        self.dirty = false;
        Poll::Ready(Ok(()))
    }
}

fn payload_len(msg: &Message) -> usize {
    match msg {
        Message::Piece { data, .. } => data.len(),
        _ => 0,
    }
}
