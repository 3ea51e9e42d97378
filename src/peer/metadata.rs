//! Serving BEP 9 metadata: answers a peer's `ut_metadata` requests from the torrent's raw
//! info dictionary, in 16 KiB pieces.
//!
//! Pure decision logic (no I/O); the peer task feeds it requests and sends what it returns.
//! Bounds, so a peer cannot turn 13-byte requests into unlimited 16 KiB answers:
//! - per connection, at most [`served_cap`] pieces in all (the whole dict twice, plus slack
//!   for a client that re-asks after a timeout); later requests are rejected;
//! - a request is rejected while the connection's outbox already holds
//!   [`MAX_QUEUED_BYTES`] of unsent messages: a peer that asks and does not read costs at
//!   most that much, and is dropped by the outbox bound if it keeps asking.
//!
//! A peer that never told us its own `ut_metadata` id cannot be answered at all (the reply
//! goes under the id *it* chose), so its requests are ignored.
use crate::wire::message::Message;
use crate::wire::metadata::{self, MetadataMsg};
use bytes::Bytes;

/// Unsent outbox bytes above which metadata requests are rejected instead of answered.
pub const MAX_QUEUED_BYTES: usize = 128 * 1024;

/// Pieces one connection may be sent in all, for a dict of `size` bytes.
pub fn served_cap(size: usize) -> u32 {
    2 * metadata::piece_count(size as u64) + 8
}

/// One connection's metadata server.
#[derive(Debug)]
pub struct MetadataServer {
    info: Bytes,
    /// The id the peer wants `ut_metadata` messages under; `None` until it says (or if 0).
    their_id: Option<u8>,
    served: u32,
}

impl MetadataServer {
    pub fn new(info: Bytes) -> MetadataServer {
        MetadataServer { info, their_id: None, served: 0 }
    }

    /// The peer's extension handshake named (or disabled, with 0) its `ut_metadata` id.
    pub fn set_their_id(&mut self, id: Option<u8>) {
        self.their_id = id.filter(|i| *i != 0);
    }

    /// Pieces answered with data so far.
    pub fn served(&self) -> u32 {
        self.served
    }

    /// What to send for a message the peer sent us; `queued` is what our outbox holds unsent.
    /// Data and rejects are ignored: we never ask a peer of a torrent we already have.
    pub fn answer(&mut self, msg: MetadataMsg, queued: usize) -> Option<Message> {
        let MetadataMsg::Request { piece } = msg else { return None };
        let id = self.their_id?;
        let size = self.info.len();
        let reply = match metadata::piece_range(size as u64, piece) {
            Some(range) if self.served < served_cap(size) && queued < MAX_QUEUED_BYTES => {
                self.served += 1;
                MetadataMsg::Data { piece, total_size: size as u64, data: self.info.slice(range) }
            }
            _ => MetadataMsg::Reject { piece },
        };
        Some(Message::Extended { id, payload: reply.encode() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::metadata::METADATA_PIECE;

    fn server(size: usize) -> MetadataServer {
        let mut s = MetadataServer::new(Bytes::from((0..size).map(|i| i as u8).collect::<Vec<u8>>()));
        s.set_their_id(Some(3));
        s
    }

    fn reply(m: Option<Message>) -> MetadataMsg {
        match m {
            Some(Message::Extended { id: 3, payload }) => MetadataMsg::decode(&payload).unwrap().unwrap(),
            other => panic!("expected a ut_metadata reply under id 3, got {other:?}"),
        }
    }

    #[test]
    fn answers_every_piece_with_its_bytes() {
        let size = 2 * METADATA_PIECE + 100;
        let mut s = server(size);
        let mut got = Vec::new();
        for piece in 0..3 {
            match reply(s.answer(MetadataMsg::Request { piece }, 0)) {
                MetadataMsg::Data { piece: p, total_size, data } => {
                    assert_eq!((p, total_size), (piece, size as u64));
                    got.extend_from_slice(&data);
                }
                other => panic!("expected data, got {other:?}"),
            }
        }
        assert_eq!(got, s.info.to_vec());
    }

    #[test]
    fn out_of_range_is_rejected() {
        let mut s = server(100);
        assert_eq!(reply(s.answer(MetadataMsg::Request { piece: 1 }, 0)), MetadataMsg::Reject { piece: 1 });
        assert_eq!(s.served(), 0);
    }

    #[test]
    fn requests_per_connection_are_capped() {
        let mut s = server(100);
        let cap = served_cap(100);
        assert_eq!(cap, 10);
        for _ in 0..cap {
            assert!(matches!(reply(s.answer(MetadataMsg::Request { piece: 0 }, 0)), MetadataMsg::Data { .. }));
        }
        assert_eq!(reply(s.answer(MetadataMsg::Request { piece: 0 }, 0)), MetadataMsg::Reject { piece: 0 });
    }

    #[test]
    fn a_full_outbox_gets_rejects() {
        let mut s = server(100);
        let r = reply(s.answer(MetadataMsg::Request { piece: 0 }, MAX_QUEUED_BYTES));
        assert_eq!(r, MetadataMsg::Reject { piece: 0 });
    }

    #[test]
    fn unknown_reply_id_and_non_requests_are_ignored() {
        let mut s = MetadataServer::new(Bytes::from_static(b"d4:name1:xe"));
        assert!(s.answer(MetadataMsg::Request { piece: 0 }, 0).is_none());
        s.set_their_id(Some(0));
        assert!(s.answer(MetadataMsg::Request { piece: 0 }, 0).is_none());
        let mut s = server(100);
        assert!(s.answer(MetadataMsg::Reject { piece: 0 }, 0).is_none());
    }
}
