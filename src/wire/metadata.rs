//! BEP 9 `ut_metadata` messages: the info dictionary sent in 16 KiB pieces over BEP 10.
//!
//! Each message is a bencoded dict `{msg_type, piece[, total_size]}`; a `data` message is
//! followed by the raw bytes of the piece, right after the dict (hence
//! [`bencode::decode_prefix`]). This module owns the byte format and the checks that need
//! nothing but the message itself: `total_size` at most [`MAX_METADATA_SIZE`] (16 MiB, as
//! libtorrent and others), the piece index inside it, and a data piece of exactly the right
//! length (16 KiB, the last one shorter). Whether the size matches the one a peer announced
//! is for the reader to check. Unknown `msg_type`s are ignored, as BEP 9 asks.
use crate::bencode::{self, Limits, Value};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;

/// Size of every metadata piece but the last (BEP 9).
pub const METADATA_PIECE: usize = 16 * 1024;
/// Largest info dictionary we fetch or believe a peer about (libtorrent's limit too).
pub const MAX_METADATA_SIZE: u64 = 16 * 1024 * 1024;

mod msg_type {
    pub const REQUEST: i64 = 0;
    pub const DATA: i64 = 1;
    pub const REJECT: i64 = 2;
}

/// One `ut_metadata` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMsg {
    Request {
        piece: u32,
    },
    /// `data` is exactly the piece's length within `total_size` (checked on decode).
    Data {
        piece: u32,
        total_size: u64,
        data: Bytes,
    },
    Reject {
        piece: u32,
    },
}

/// Why a `ut_metadata` message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataWireError {
    #[error("ut_metadata: not a bencoded dict: {0}")]
    Bencode(String),
    #[error("ut_metadata: {0} missing or not an integer")]
    Field(&'static str),
    #[error("ut_metadata: total_size {0} outside 1..={MAX_METADATA_SIZE}")]
    TotalSize(i64),
    #[error("ut_metadata: piece {piece} out of range for total_size {total_size}")]
    PieceOutOfRange { piece: i64, total_size: u64 },
    #[error("ut_metadata: piece {piece} carries {got} bytes, expected {expected}")]
    PieceLength { piece: u32, got: usize, expected: usize },
    #[error("ut_metadata: {0} trailing bytes after a message that carries none")]
    Trailing(usize),
}

/// Number of pieces of an info dict of `size` bytes.
pub fn piece_count(size: u64) -> u32 {
    // size <= MAX_METADATA_SIZE wherever this is used, so the count fits easily.
    size.div_ceil(METADATA_PIECE as u64) as u32
}

/// Byte range of piece `piece` within a dict of `size` bytes; `None` when out of range.
pub fn piece_range(size: u64, piece: u32) -> Option<std::ops::Range<usize>> {
    if piece >= piece_count(size) {
        return None;
    }
    let start = piece as usize * METADATA_PIECE;
    Some(start..(start + METADATA_PIECE).min(size as usize))
}

/// A size announced in an extension handshake that we may fetch.
pub fn size_ok(size: u64) -> bool {
    (1..=MAX_METADATA_SIZE).contains(&size)
}

impl MetadataMsg {
    pub fn encode(&self) -> Bytes {
        let (kind, piece, total, data) = match self {
            MetadataMsg::Request { piece } => (msg_type::REQUEST, *piece, None, None),
            MetadataMsg::Data { piece, total_size, data } => (msg_type::DATA, *piece, Some(*total_size), Some(data)),
            MetadataMsg::Reject { piece } => (msg_type::REJECT, *piece, None, None),
        };
        let mut d = BTreeMap::new();
        d.insert(b"msg_type".to_vec(), Value::Int(kind));
        d.insert(b"piece".to_vec(), Value::Int(i64::from(piece)));
        if let Some(t) = total {
            d.insert(b"total_size".to_vec(), Value::Int(t as i64));
        }
        let dict = bencode::encode(&Value::Dict(d));
        let mut out = BytesMut::with_capacity(dict.len() + data.map_or(0, |d| d.len()));
        out.put_slice(&dict);
        if let Some(data) = data {
            out.put_slice(data);
        }
        out.freeze()
    }

    /// Parses one message; `Ok(None)` for a `msg_type` we do not know.
    pub fn decode(payload: &Bytes) -> Result<Option<MetadataMsg>, MetadataWireError> {
        let (value, used) =
            bencode::decode_prefix(payload, &Limits::MESSAGE).map_err(|e| MetadataWireError::Bencode(e.to_string()))?;
        let Value::Dict(d) = value else { return Err(MetadataWireError::Bencode("not a dict".into())) };
        let int = |k: &'static str| d.get(k.as_bytes()).and_then(Value::as_int).ok_or(MetadataWireError::Field(k));
        let kind = int("msg_type")?;
        let raw_piece = int("piece")?;
        let trailing = payload.len() - used;
        if kind == msg_type::DATA {
            return decode_data(raw_piece, int("total_size")?, payload.slice(used..)).map(Some);
        }
        if !matches!(kind, msg_type::REQUEST | msg_type::REJECT) {
            return Ok(None);
        }
        if trailing != 0 {
            return Err(MetadataWireError::Trailing(trailing));
        }
        let piece = u32::try_from(raw_piece)
            .map_err(|_| MetadataWireError::PieceOutOfRange { piece: raw_piece, total_size: MAX_METADATA_SIZE })?;
        Ok(Some(if kind == msg_type::REQUEST { MetadataMsg::Request { piece } } else { MetadataMsg::Reject { piece } }))
    }
}

fn decode_data(raw_piece: i64, raw_total: i64, data: Bytes) -> Result<MetadataMsg, MetadataWireError> {
    let total_size =
        u64::try_from(raw_total).ok().filter(|t| size_ok(*t)).ok_or(MetadataWireError::TotalSize(raw_total))?;
    let out_of_range = MetadataWireError::PieceOutOfRange { piece: raw_piece, total_size };
    let piece = u32::try_from(raw_piece).map_err(|_| out_of_range.clone())?;
    let range = piece_range(total_size, piece).ok_or(out_of_range)?;
    if data.len() != range.len() {
        return Err(MetadataWireError::PieceLength { piece, got: data.len(), expected: range.len() });
    }
    Ok(MetadataMsg::Data { piece, total_size, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(piece: u32, total_size: u64, len: usize) -> MetadataMsg {
        MetadataMsg::Data { piece, total_size, data: Bytes::from(vec![7u8; len]) }
    }

    #[test]
    fn every_kind_round_trips() {
        for m in [
            MetadataMsg::Request { piece: 3 },
            MetadataMsg::Reject { piece: 0 },
            data(0, 20_000, METADATA_PIECE),
            data(1, 20_000, 20_000 - METADATA_PIECE),
            data(0, 1, 1),
        ] {
            assert_eq!(MetadataMsg::decode(&m.encode()), Ok(Some(m)));
        }
    }

    #[test]
    fn known_bytes_as_in_bep_9() {
        assert_eq!(&MetadataMsg::Request { piece: 0 }.encode()[..], b"d8:msg_typei0e5:piecei0ee");
        let d = MetadataMsg::decode(&Bytes::from_static(b"d8:msg_typei1e5:piecei0e10:total_sizei3eeabc")).unwrap();
        assert_eq!(d, Some(MetadataMsg::Data { piece: 0, total_size: 3, data: Bytes::from_static(b"abc") }));
    }

    #[test]
    fn sizes_over_16_mib_or_empty_are_refused() {
        let over = MAX_METADATA_SIZE + 1;
        let m = MetadataMsg::Data { piece: 0, total_size: over, data: Bytes::from(vec![0u8; METADATA_PIECE]) };
        assert_eq!(MetadataMsg::decode(&m.encode()), Err(MetadataWireError::TotalSize(over as i64)));
        assert_eq!(MetadataMsg::decode(&data(0, 0, 0).encode()), Err(MetadataWireError::TotalSize(0)));
        let neg = Bytes::from_static(b"d8:msg_typei1e5:piecei0e10:total_sizei-5ee");
        assert_eq!(MetadataMsg::decode(&neg), Err(MetadataWireError::TotalSize(-5)));
        assert!(size_ok(MAX_METADATA_SIZE) && !size_ok(MAX_METADATA_SIZE + 1) && !size_ok(0));
    }

    #[test]
    fn piece_index_must_lie_inside_the_size() {
        let m = data(2, 2 * METADATA_PIECE as u64, METADATA_PIECE);
        assert!(matches!(MetadataMsg::decode(&m.encode()), Err(MetadataWireError::PieceOutOfRange { piece: 2, .. })));
        let neg = Bytes::from_static(b"d8:msg_typei0e5:piecei-1ee");
        assert!(matches!(MetadataMsg::decode(&neg), Err(MetadataWireError::PieceOutOfRange { piece: -1, .. })));
        assert_eq!(piece_range(20_000, 1), Some(METADATA_PIECE..20_000));
        assert_eq!(piece_range(20_000, 2), None);
        assert_eq!(piece_count(METADATA_PIECE as u64), 1);
    }

    #[test]
    fn data_piece_length_must_be_exact() {
        let short = data(0, 20_000, METADATA_PIECE - 1);
        assert_eq!(
            MetadataMsg::decode(&short.encode()),
            Err(MetadataWireError::PieceLength { piece: 0, got: METADATA_PIECE - 1, expected: METADATA_PIECE })
        );
        let long_last = data(1, 20_000, 5000);
        assert!(matches!(MetadataMsg::decode(&long_last.encode()), Err(MetadataWireError::PieceLength { .. })));
    }

    #[test]
    fn malformed_and_unknown() {
        assert!(matches!(MetadataMsg::decode(&Bytes::from_static(b"li1ee")), Err(MetadataWireError::Bencode(_))));
        assert!(matches!(MetadataMsg::decode(&Bytes::from_static(b"junk")), Err(MetadataWireError::Bencode(_))));
        let no_piece = Bytes::from_static(b"d8:msg_typei0ee");
        assert_eq!(MetadataMsg::decode(&no_piece), Err(MetadataWireError::Field("piece")));
        let unknown = Bytes::from_static(b"d8:msg_typei7e5:piecei0ee");
        assert_eq!(MetadataMsg::decode(&unknown), Ok(None));
        let trailing = Bytes::from_static(b"d8:msg_typei2e5:piecei0eexyz");
        assert_eq!(MetadataMsg::decode(&trailing), Err(MetadataWireError::Trailing(3)));
    }

    proptest::proptest! {
        #[test]
        fn prop_decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = MetadataMsg::decode(&Bytes::from(bytes));
        }

        #[test]
        fn prop_decode_never_panics_on_dict_like_input(
            kind in 0i64..4, piece in -2i64..1100, total in -2i64..(MAX_METADATA_SIZE as i64 + 2), tail in 0usize..40_000,
        ) {
            let head = format!("d8:msg_typei{kind}e5:piecei{piece}e10:total_sizei{total}ee");
            let mut raw = head.into_bytes();
            raw.resize(raw.len() + tail, 9);
            if let Ok(Some(MetadataMsg::Data { piece, total_size, data })) = MetadataMsg::decode(&Bytes::from(raw)) {
                proptest::prop_assert_eq!(Some(data.len()), piece_range(total_size, piece).map(|r| r.len()));
            }
        }
    }
}
