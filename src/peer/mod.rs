//! One peer connection: the handshake, then a task that owns the socket.
//!
//! Parts:
//! - [`handshake`]: both directions of the BEP 3 handshake, with the checks that refuse a
//!   wrong info-hash or a connection to ourselves;
//! - [`connection`]: the per-peer task. It reads messages, checks them against the torrent's
//!   geometry, and reports them to the torrent task as [`PeerEvent`]s; it carries out
//!   [`PeerCommand`]s (requests, choke, have...) and serves the peer's requests from storage.
//!   The torrent closes it by cancelling the peer's token, which works whatever the socket does;
//! - `outbox`: the peer's outgoing queue and the cancel-safe step that writes it;
//! - [`metadata`]: answers BEP 9 `ut_metadata` requests from the raw info dict, bounded;
//! - [`serve_queue`]: the requests a peer made of us, as descriptors, bounded;
//! - [`budget`]: the session-wide bound on block bytes waiting to be sent;
//! - [`rate`]: upload and download rate limits, per session and per torrent.
//!
//! The task is generic over `AsyncRead + AsyncWrite`: TCP and libp2p streams run the same code.
pub mod budget;
pub mod connection;
pub mod handshake;
pub mod metadata;
mod outbox;
pub mod rate;
pub mod serve_queue;

use crate::types::BlockRef;
use crate::types::PeerKey;
use crate::wire::extension::ExtHandshake;
use bitvec::prelude::*;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the torrent asks of a peer task.
#[derive(Debug, Clone)]
pub enum PeerCommand {
    Request(Vec<BlockRef>),
    Cancel(BlockRef),
    Choke,
    Unchoke,
    Interested(bool),
    /// We verified a piece: tell the peer.
    Have(u32),
    /// BEP 6: let the peer request this piece while we choke it (only a piece we showed it).
    AllowFast(u32),
    /// A BEP 10 extension message, under the id the peer chose for it in its handshake.
    Extended {
        id: u8,
        payload: Bytes,
    },
}

/// What a peer task reports.
#[derive(Debug)]
pub enum PeerEventKind {
    Extensions(ExtHandshake),
    Bitfield(BitVec<u8, Msb0>),
    Have(u32),
    Choked,
    Unchoked,
    Interested,
    NotInterested,
    Block(BlockRef, Bytes),
    /// BEP 6: the peer will not serve this request of ours.
    Rejected(BlockRef),
    /// BEP 6: the peer lets us request this piece while it chokes us.
    AllowedFast(u32),
    /// The UDP port of the peer's mainline DHT node (BEP 5 `port`; the first per connection).
    DhtPort(u16),
    /// A BEP 11 peer exchange message (already bounded by its decoder).
    Pex(crate::wire::pex::PexMessage),
    /// The connection is gone, and why.
    Closed(CloseReason),
}

#[derive(Debug)]
pub struct PeerEvent {
    pub key: PeerKey,
    pub kind: PeerEventKind,
}

/// Byte counters the peer task writes and the torrent reads for rates and totals.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// Payload bytes of `piece` messages received.
    pub downloaded: AtomicU64,
    /// Payload bytes of `piece` messages sent.
    pub uploaded: AtomicU64,
    /// The peer's socket has taken none of our queued output for `STALL_FLAG` (it is not
    /// reading); cleared when it takes some again. The choker skips stalled peers.
    pub stalled: std::sync::atomic::AtomicBool,
    /// Requests of the peer wait with us: queued, being read, or in the outbox. A slot holder
    /// that is owed blocks is not idle, however slowly our uplink serves it.
    pub owed: std::sync::atomic::AtomicBool,
}

impl PeerCounters {
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }
    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
    pub fn owed(&self) -> bool {
        self.owed.load(Ordering::Relaxed)
    }
}

/// Errors that end one peer connection (never the torrent).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("wire: {0}")]
    Wire(#[from] crate::wire::WireError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("closed by the peer")]
    Eof,
    /// The torrent cancelled the connection, or went away, while the task waited on it.
    #[error("closed by us")]
    Closed,
    #[error("peer is on another torrent")]
    WrongInfoHash,
    #[error("connected to ourselves")]
    SelfConnection,
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Reading a block we serve failed: our disk's fault, not the peer's.
    #[error("storage: {0}")]
    Storage(crate::storage::StorageError),
}

/// Why a peer connection ended: for the logs, the events and the torrent, which fails when
/// the reason is its own storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The torrent closed it (the slot records its own reason) or is stopping.
    ByUs,
    /// The peer closed the connection.
    ByPeer,
    /// A deadline passed: idle, the handshake, or a write the peer never took.
    TimedOut(&'static str),
    /// The socket failed.
    Io(std::io::ErrorKind),
    /// The peer broke the protocol; the detail is for the logs.
    Protocol(String),
    /// The torrent made room for a newcomer.
    Evicted,
    /// The peer sent data that failed the hash check.
    Banned,
    /// Mostly blocks nobody asked it for.
    Junk,
    /// Both sides have every piece: neither has anything for the other.
    BothSeeds,
    /// Its command queue was full: it fell too far behind.
    Lagging,
    /// Reading a block to serve it failed (our storage); the torrent fails with it.
    Storage(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::ByUs => f.write_str("closed by us"),
            CloseReason::ByPeer => f.write_str("closed by the peer"),
            CloseReason::TimedOut(what) => write!(f, "timed out during {what}"),
            CloseReason::Io(kind) => write!(f, "io: {kind}"),
            CloseReason::Protocol(why) => write!(f, "protocol violation: {why}"),
            CloseReason::Evicted => f.write_str("evicted to make room"),
            CloseReason::Banned => f.write_str("banned: sent data that failed the hash check"),
            CloseReason::Junk => f.write_str("sent mostly unrequested blocks"),
            CloseReason::BothSeeds => f.write_str("both seeds"),
            CloseReason::Lagging => f.write_str("command queue full"),
            CloseReason::Storage(e) => write!(f, "storage: {e}"),
        }
    }
}

impl CloseReason {
    /// The reason a peer task ends with: `Ok` when it was cancelled.
    pub fn of(outcome: &Result<(), PeerError>) -> CloseReason {
        match outcome {
            Ok(()) | Err(PeerError::Closed) => CloseReason::ByUs,
            Err(PeerError::Eof) => CloseReason::ByPeer,
            Err(PeerError::Timeout(what)) => CloseReason::TimedOut(what),
            Err(PeerError::Io(e)) => CloseReason::Io(e.kind()),
            // The runtime dropping a read on its way down is shutdown, not a failing disk.
            Err(PeerError::Storage(crate::storage::StorageError::Cancelled)) => CloseReason::ByUs,
            Err(PeerError::Storage(e)) => CloseReason::Storage(e.to_string()),
            Err(e @ (PeerError::Wire(_) | PeerError::WrongInfoHash | PeerError::SelfConnection)) => {
                CloseReason::Protocol(e.to_string())
            }
            Err(PeerError::Protocol(why)) => CloseReason::Protocol(why.clone()),
        }
    }
}

/// Any ordered byte stream a peer connection can run on (TCP, a libp2p stream, a test pipe).
pub trait PeerStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> PeerStream for T {}

/// A type-erased peer stream.
pub type BoxStream = Box<dyn PeerStream>;

/// BEP 3 sends the bitfield once, first; its spare bits must be zero. aria2 also sends one
/// later in place of `have` messages (a peer that started empty announces its first pieces
/// with a bitfield, then again with a fuller one), so a later bitfield is taken as a batch
/// of `have`s rather than refused. `n` is the torrent's piece count.
pub(crate) fn parse_bitfield(raw: &[u8], n: usize) -> Result<BitVec<u8, Msb0>, PeerError> {
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
