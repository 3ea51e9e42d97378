//! Fetching the info dict from one peer, after the BEP 3 handshake: our BEP 10 handshake
//! out, theirs in (`m.ut_metadata`, `metadata_size`), then `ut_metadata` requests a few at
//! a time until every piece is in, and the SHA-1 check.
//!
//! Every wait is bounded by `idle`: a peer that sends nothing useful (its extension
//! handshake, or a piece we asked for) for that long is given up. The outcome says whether
//! the peer may be asked again later ([`Outcome::Failed`]) or lied and must not be
//! ([`Outcome::Liar`]): wrong bytes, a size over 16 MiB, a size that changes, pieces nobody
//! asked for, or a malformed `ut_metadata` message.
use super::assembly::Assembly;
use crate::metainfo::InfoHash;
use crate::peer::handshake::MessageStream;
use crate::peer::BoxStream;
use crate::wire::extension::{ExtHandshake, UT_METADATA_ID};
use crate::wire::handshake::reserved;
use crate::wire::metadata::{size_ok, MetadataMsg, MAX_METADATA_SIZE};
use crate::wire::{Handshake, Message};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// How one peer's exchange ended.
#[derive(Debug)]
pub enum Outcome {
    /// The verified info dict.
    Got(Bytes),
    /// No metadata from this peer now (no extension, rejected, timed out, closed): it may be
    /// asked again later.
    Failed(String),
    /// It lied: never ask it again.
    Liar(String),
}

/// What one exchange needs besides the connection.
pub struct Exchange {
    pub info_hash: InfoHash,
    /// Longest wait for the next useful message.
    pub idle: Duration,
    /// Bytes of dicts being assembled across the whole fetch, in KiB permits.
    pub budget: Arc<Semaphore>,
    /// Pieces received and in all, from the peer furthest along (for progress).
    pub progress: watch::Sender<(u32, u32)>,
}

impl Exchange {
    pub async fn run(&self, mut conn: MessageStream<BoxStream>, theirs: Handshake) -> Outcome {
        if !theirs.has(reserved::EXTENSION) {
            return Outcome::Failed("no extension protocol (BEP 10)".into());
        }
        let ours = ExtHandshake {
            m: [("ut_metadata".to_string(), UT_METADATA_ID)].into(),
            client: Some(format!("shoal {}", env!("CARGO_PKG_VERSION"))),
            ..Default::default()
        };
        if let Err(e) = conn.send(Message::Extended { id: 0, payload: ours.encode() }).await {
            return Outcome::Failed(format!("sending the extension handshake: {e}"));
        }
        let (id, size) = match self.their_handshake(&mut conn).await {
            Ok(x) => x,
            Err(o) => return o,
        };
        // Paid for before the buffer exists: several liars announcing 16 MiB each wait
        // their turn instead of all allocating at once.
        let kib = size.div_ceil(1024) as u32;
        let Ok(_permit) = self.budget.acquire_many(kib).await else { return Outcome::Failed("shutting down".into()) };
        let mut assembly = Assembly::new(size);
        if let Err(o) = self.pieces(&mut conn, id, &mut assembly).await {
            return o;
        }
        match assembly.finish(self.info_hash) {
            Ok(info) => Outcome::Got(info),
            Err(e) => Outcome::Liar(e.to_string()),
        }
    }

    /// Reads until the peer's extension handshake: its `ut_metadata` id and the dict's size.
    async fn their_handshake(&self, conn: &mut MessageStream<BoxStream>) -> Result<(u8, u64), Outcome> {
        let deadline = Instant::now() + self.idle;
        loop {
            let Message::Extended { id: 0, payload } = next(conn, deadline, "its extension handshake").await? else {
                continue;
            };
            let Some(ext) = ExtHandshake::decode(&payload) else {
                return Err(Outcome::Failed("extension handshake is not a bencoded dict".into()));
            };
            let id = ext.m.get("ut_metadata").copied().filter(|i| *i != 0);
            return match (id, ext.metadata_size) {
                (None, _) => Err(Outcome::Failed("no ut_metadata support".into())),
                (Some(_), None | Some(0)) => Err(Outcome::Failed("no metadata_size (it lacks the metadata)".into())),
                (Some(_), Some(s)) if !size_ok(s) => {
                    Err(Outcome::Liar(format!("metadata_size {s} over the limit of {MAX_METADATA_SIZE}")))
                }
                (Some(id), Some(s)) => Ok((id, s)),
            };
        }
    }

    /// Requests pieces, a window at a time, until the assembly is complete.
    async fn pieces(&self, conn: &mut MessageStream<BoxStream>, id: u8, a: &mut Assembly) -> Result<(), Outcome> {
        let mut deadline = Instant::now() + self.idle;
        while !a.is_complete() {
            for piece in a.requests() {
                let payload = MetadataMsg::Request { piece }.encode();
                conn.feed(Message::Extended { id, payload }).await.map_err(|e| Outcome::Failed(e.to_string()))?;
            }
            conn.flush().await.map_err(|e| Outcome::Failed(e.to_string()))?;
            let Message::Extended { id: UT_METADATA_ID, payload } = next(conn, deadline, "metadata").await? else {
                continue;
            };
            match MetadataMsg::decode(&payload).map_err(|e| Outcome::Liar(e.to_string()))? {
                Some(MetadataMsg::Data { piece, total_size, data }) => {
                    a.on_data(piece, total_size, &data).map_err(|e| Outcome::Liar(e.to_string()))?;
                    deadline = Instant::now() + self.idle;
                    let now = a.progress();
                    self.progress.send_if_modified(|p| (now.0 > p.0).then(|| *p = now).is_some());
                }
                Some(MetadataMsg::Reject { piece }) => {
                    return Err(Outcome::Failed(format!("rejected the request for metadata piece {piece}")))
                }
                // Requests from a peer that has no more than we do, and unknown types.
                Some(MetadataMsg::Request { .. }) | None => {}
            }
        }
        Ok(())
    }
}

/// The next message, or why there is none by `deadline`.
async fn next(conn: &mut MessageStream<BoxStream>, deadline: Instant, what: &str) -> Result<Message, Outcome> {
    match tokio::time::timeout_at(deadline, conn.next()).await {
        Err(_) => Err(Outcome::Failed(format!("timed out waiting for {what}"))),
        Ok(None) => Err(Outcome::Failed("closed by the peer".into())),
        Ok(Some(Err(e))) => Err(Outcome::Failed(e.to_string())),
        Ok(Some(Ok(m))) => Ok(m),
    }
}
