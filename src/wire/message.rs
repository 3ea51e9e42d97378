//! BEP 3 messages: `<u32 big-endian length><u8 id><payload>`, length 0 is a keep-alive.
//!
//! The decoder checks the length prefix against `max_len` before reserving any memory, so
//! one hostile prefix cannot allocate 4 GiB. A `piece` payload is split off the read buffer
//! as `Bytes` without copying. Unknown message ids are consumed and skipped (other clients
//! send extensions we did not negotiate); a known id with a malformed payload is an error.
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Default bound on one message: a 16 KiB block is 16 KiB + 13; bitfields of torrents with
/// up to 8 million pieces and ut_metadata pieces fit too.
pub const DEFAULT_MAX_LEN: u32 = 1 << 20;

/// Buffer room asked for when a frame is incomplete: one read can take in this much.
const READ_AHEAD: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a BitTorrent handshake")]
    BadProtocol,
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: u32, max: u32 },
    #[error("message id {id} has a payload of {len} bytes, expected {expected}")]
    BadLength { id: u8, len: u32, expected: &'static str },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have {
        index: u32,
    },
    Bitfield(Bytes),
    Request {
        index: u32,
        begin: u32,
        length: u32,
    },
    Piece {
        index: u32,
        begin: u32,
        data: Bytes,
    },
    Cancel {
        index: u32,
        begin: u32,
        length: u32,
    },
    /// BEP 5: the peer's DHT port.
    Port(u16),
    /// BEP 10: `id` 0 is the extension handshake, others as negotiated.
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// BEP 6: "you may want this piece" (a hint; may be ignored).
    Suggest {
        index: u32,
    },
    /// BEP 6: in place of a bitfield, "I have every piece".
    HaveAll,
    /// BEP 6: in place of a bitfield, "I have no piece".
    HaveNone,
    /// BEP 6: "I will not serve this request".
    Reject {
        index: u32,
        begin: u32,
        length: u32,
    },
    /// BEP 6: "you may request this piece even while I choke you".
    AllowedFast {
        index: u32,
    },
}

mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0d;
    pub const HAVE_ALL: u8 = 0x0e;
    pub const HAVE_NONE: u8 = 0x0f;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    pub const EXTENDED: u8 = 20;
}

impl Message {
    /// Whether this is one of the BEP 6 messages, which only a peer that negotiated the fast
    /// extension may send.
    pub fn is_fast(&self) -> bool {
        matches!(
            self,
            Message::Suggest { .. }
                | Message::HaveAll
                | Message::HaveNone
                | Message::Reject { .. }
                | Message::AllowedFast { .. }
        )
    }

    /// Bytes this message takes on the wire, prefix included.
    pub fn wire_len(&self) -> usize {
        4 + match self {
            Message::KeepAlive => 0,
            Message::Choke | Message::Unchoke | Message::Interested | Message::NotInterested => 1,
            Message::HaveAll | Message::HaveNone => 1,
            Message::Have { .. } | Message::Suggest { .. } | Message::AllowedFast { .. } => 5,
            Message::Bitfield(b) => 1 + b.len(),
            Message::Request { .. } | Message::Cancel { .. } | Message::Reject { .. } => 13,
            Message::Piece { data, .. } => 9 + data.len(),
            Message::Port(_) => 3,
            Message::Extended { payload, .. } => 2 + payload.len(),
        }
    }
}

/// The message codec; `max_len` bounds the length prefix.
#[derive(Debug, Clone)]
pub struct MessageCodec {
    max_len: u32,
}

impl Default for MessageCodec {
    fn default() -> Self {
        MessageCodec { max_len: DEFAULT_MAX_LEN }
    }
}

impl MessageCodec {
    pub fn new(max_len: u32) -> MessageCodec {
        MessageCodec { max_len }
    }
}

fn expect(id: u8, len: u32, want: u32, expected: &'static str) -> Result<(), WireError> {
    if len == want {
        Ok(())
    } else {
        Err(WireError::BadLength { id, len, expected })
    }
}

/// Parses one complete frame body (`id` + payload); `None` for an id we skip.
fn parse_body(mut body: Bytes) -> Result<Option<Message>, WireError> {
    let len = body.len() as u32;
    let id = body.get_u8();
    let msg = match id {
        id::CHOKE | id::UNCHOKE | id::INTERESTED | id::NOT_INTERESTED => {
            expect(id, len, 1, "1")?;
            match id {
                id::CHOKE => Message::Choke,
                id::UNCHOKE => Message::Unchoke,
                id::INTERESTED => Message::Interested,
                _ => Message::NotInterested,
            }
        }
        id::HAVE => {
            expect(id, len, 5, "5")?;
            Message::Have { index: body.get_u32() }
        }
        id::BITFIELD => Message::Bitfield(body),
        id::REQUEST | id::CANCEL => {
            expect(id, len, 13, "13")?;
            let (index, begin, length) = (body.get_u32(), body.get_u32(), body.get_u32());
            if id == id::REQUEST {
                Message::Request { index, begin, length }
            } else {
                Message::Cancel { index, begin, length }
            }
        }
        id::PIECE => {
            if len < 9 {
                return Err(WireError::BadLength { id, len, expected: "at least 9" });
            }
            let (index, begin) = (body.get_u32(), body.get_u32());
            Message::Piece { index, begin, data: body }
        }
        id::PORT => {
            expect(id, len, 3, "3")?;
            Message::Port(body.get_u16())
        }
        id::HAVE_ALL | id::HAVE_NONE => {
            expect(id, len, 1, "1")?;
            if id == id::HAVE_ALL {
                Message::HaveAll
            } else {
                Message::HaveNone
            }
        }
        id::SUGGEST | id::ALLOWED_FAST => {
            expect(id, len, 5, "5")?;
            let index = body.get_u32();
            if id == id::SUGGEST {
                Message::Suggest { index }
            } else {
                Message::AllowedFast { index }
            }
        }
        id::REJECT => {
            expect(id, len, 13, "13")?;
            Message::Reject { index: body.get_u32(), begin: body.get_u32(), length: body.get_u32() }
        }
        id::EXTENDED => {
            if len < 2 {
                return Err(WireError::BadLength { id, len, expected: "at least 2" });
            }
            let ext = body.get_u8();
            Message::Extended { id: ext, payload: body }
        }
        _ => return Ok(None),
    };
    Ok(Some(msg))
}

impl Decoder for MessageCodec {
    type Item = Message;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, WireError> {
        loop {
            if src.len() < 4 {
                return Ok(None);
            }
            let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
            if len > self.max_len {
                return Err(WireError::TooLong { len, max: self.max_len });
            }
            let total = 4 + len as usize;
            if src.len() < total {
                // Reserve for the whole frame once, so a 16 KiB block arrives in one buffer
                // and can be split off without a copy; and room for the frames behind it, so
                // one read call takes in many blocks. Never more than one maximal frame.
                let ahead = READ_AHEAD.min(self.max_len as usize + 4);
                src.reserve((total - src.len()).max(ahead.saturating_sub(src.len())));
                return Ok(None);
            }
            src.advance(4);
            if len == 0 {
                return Ok(Some(Message::KeepAlive));
            }
            let body = src.split_to(len as usize).freeze();
            if let Some(msg) = parse_body(body)? {
                return Ok(Some(msg));
            }
            // Unknown id: skipped; look at the next frame.
        }
    }
}

fn put_block_ref(dst: &mut BytesMut, id: u8, index: u32, begin: u32, length: u32) {
    dst.put_u8(id);
    dst.put_u32(index);
    dst.put_u32(begin);
    dst.put_u32(length);
}

impl Encoder<Message> for MessageCodec {
    type Error = WireError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), WireError> {
        dst.reserve(msg.wire_len());
        let body_len = (msg.wire_len() - 4) as u32;
        dst.put_u32(body_len);
        match msg {
            Message::KeepAlive => {}
            Message::Choke => dst.put_u8(id::CHOKE),
            Message::Unchoke => dst.put_u8(id::UNCHOKE),
            Message::Interested => dst.put_u8(id::INTERESTED),
            Message::NotInterested => dst.put_u8(id::NOT_INTERESTED),
            Message::Have { index } => {
                dst.put_u8(id::HAVE);
                dst.put_u32(index);
            }
            Message::Bitfield(bits) => {
                dst.put_u8(id::BITFIELD);
                dst.put_slice(&bits);
            }
            Message::Request { index, begin, length } => put_block_ref(dst, id::REQUEST, index, begin, length),
            Message::Cancel { index, begin, length } => put_block_ref(dst, id::CANCEL, index, begin, length),
            Message::Piece { index, begin, data } => {
                dst.put_u8(id::PIECE);
                dst.put_u32(index);
                dst.put_u32(begin);
                dst.put_slice(&data);
            }
            Message::Port(port) => {
                dst.put_u8(id::PORT);
                dst.put_u16(port);
            }
            Message::Extended { id: ext, payload } => {
                dst.put_u8(id::EXTENDED);
                dst.put_u8(ext);
                dst.put_slice(&payload);
            }
            Message::HaveAll => dst.put_u8(id::HAVE_ALL),
            Message::HaveNone => dst.put_u8(id::HAVE_NONE),
            Message::Suggest { index } => {
                dst.put_u8(id::SUGGEST);
                dst.put_u32(index);
            }
            Message::AllowedFast { index } => {
                dst.put_u8(id::ALLOWED_FAST);
                dst.put_u32(index);
            }
            Message::Reject { index, begin, length } => put_block_ref(dst, id::REJECT, index, begin, length),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<Message> {
        vec![
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have { index: 42 },
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Request { index: 1, begin: 16384, length: 16384 },
            Message::Piece { index: 3, begin: 0, data: Bytes::from(vec![5u8; 100]) },
            Message::Cancel { index: 1, begin: 16384, length: 16384 },
            Message::Port(6881),
            Message::Extended { id: 0, payload: Bytes::from_static(b"d1:md6:ut_pexi1eee") },
            Message::Suggest { index: 7 },
            Message::HaveAll,
            Message::HaveNone,
            Message::Reject { index: 1, begin: 16384, length: 16384 },
            Message::AllowedFast { index: 9 },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let mut codec = MessageCodec::default();
        let mut buf = BytesMut::new();
        for m in all_kinds() {
            let before = buf.len();
            codec.encode(m.clone(), &mut buf).unwrap();
            assert_eq!(buf.len() - before, m.wire_len());
        }
        for m in all_kinds() {
            assert_eq!(codec.decode(&mut buf).unwrap(), Some(m));
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn known_bytes() {
        let mut buf = BytesMut::new();
        MessageCodec::default().encode(Message::Request { index: 1, begin: 2, length: 3 }, &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
    }

    #[test]
    fn fast_messages_have_their_bep_6_bytes() {
        let bytes = |m: Message| {
            let mut buf = BytesMut::new();
            MessageCodec::default().encode(m, &mut buf).unwrap();
            buf.to_vec()
        };
        assert_eq!(bytes(Message::HaveAll), [0, 0, 0, 1, 0x0e]);
        assert_eq!(bytes(Message::HaveNone), [0, 0, 0, 1, 0x0f]);
        assert_eq!(bytes(Message::Suggest { index: 258 }), [0, 0, 0, 5, 0x0d, 0, 0, 1, 2]);
        assert_eq!(bytes(Message::AllowedFast { index: 3 }), [0, 0, 0, 5, 0x11, 0, 0, 0, 3]);
        assert_eq!(
            bytes(Message::Reject { index: 1, begin: 2, length: 3 }),
            [0, 0, 0, 13, 0x10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        assert!(Message::HaveAll.is_fast() && !Message::Have { index: 0 }.is_fast());
    }

    #[test]
    fn fast_messages_of_the_wrong_length_are_errors() {
        for frame in
            [&[0, 0, 0, 2, 0x0e, 0][..], &[0, 0, 0, 4, 0x11, 0, 0, 0], &[0, 0, 0, 9, 0x10, 0, 0, 0, 1, 0, 0, 0, 2]]
        {
            let mut buf = BytesMut::from(frame);
            assert!(matches!(MessageCodec::default().decode(&mut buf), Err(WireError::BadLength { .. })), "{frame:?}");
        }
    }

    #[test]
    fn oversized_prefix_rejected_before_allocating() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 7][..]);
        let cap = buf.capacity();
        assert!(matches!(MessageCodec::default().decode(&mut buf), Err(WireError::TooLong { .. })));
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn unknown_ids_are_skipped() {
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 99, 1, 2, 0, 0, 0, 1, 1][..]);
        assert_eq!(MessageCodec::default().decode(&mut buf).unwrap(), Some(Message::Unchoke));
    }

    #[test]
    fn malformed_known_id_is_an_error() {
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 4, 1][..]);
        assert!(matches!(MessageCodec::default().decode(&mut buf), Err(WireError::BadLength { id: 4, .. })));
    }

    #[test]
    fn piece_payload_shares_the_read_buffer() {
        let mut buf = BytesMut::new();
        let data = Bytes::from(vec![7u8; 16384]);
        MessageCodec::default().encode(Message::Piece { index: 0, begin: 0, data }, &mut buf).unwrap();
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        let Some(Message::Piece { data, .. }) = MessageCodec::default().decode(&mut buf).unwrap() else {
            panic!("expected a piece")
        };
        let p = data.as_ptr() as usize;
        assert!(p >= start && p < end, "payload was copied out of the read buffer");
    }
}
