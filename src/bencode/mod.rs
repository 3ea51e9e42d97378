//! Bencode (BEP 3): a strict decoder and a canonical encoder.
//!
//! This module owns the byte format only; it knows nothing about torrents. Everything that
//! reads bencode from outside (.torrent files, tracker responses, BEP 10 extension messages)
//! goes through [`decode`] or one of its siblings:
//!
//! - [`decode`] / [`decode_with_limits`]: one whole value; trailing bytes are an error.
//! - [`decode_prefix`]: one value at the start of the input, returning how many bytes it used
//!   (BEP 9 `ut_metadata` data messages put raw piece bytes after the dict).
//! - [`decode_dict_with_spans`]: a top-level dict plus the raw byte range of each of its
//!   values, because the info-hash is SHA-1 over the `info` bytes exactly as they came.
//! - [`encode`]: canonical output (dict keys sorted by the `BTreeMap`).
//!
//! The decoder only accepts canonical input: no leading zeros, no `-0`, integers within `i64`,
//! dict keys strictly ascending and unique. It never trusts a length prefix: a string length is
//! checked against the remaining input before anything is allocated. Nesting depth, input size
//! and item count are bounded by [`Limits`]; recursion is depth-limited by the same bound, so a
//! hostile file cannot overflow the stack.
mod encode;
mod parser;
#[cfg(test)]
mod tests;
mod value;

pub use encode::{encode, encode_into};
use parser::Parser;
use std::collections::BTreeMap;
use std::ops::Range;
pub use value::DictBuilder;

/// A decoded bencode value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Bounds applied while decoding untrusted input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of nested lists/dicts (the top-level container counts as 1).
    pub max_depth: usize,
    /// Maximum input length in bytes.
    pub max_input: usize,
    /// Maximum number of values (every int, string, list and dict, keys included).
    pub max_items: usize,
}

impl Limits {
    /// Limits for `.torrent` files: 16 MiB, depth 64, 2 Mi items.
    pub const TORRENT: Limits = Limits { max_depth: 64, max_input: 16 << 20, max_items: 2 << 20 };
    /// Limits for small network messages (tracker responses, extension handshakes).
    pub const MESSAGE: Limits = Limits { max_depth: 32, max_input: 1 << 20, max_items: 1 << 16 };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::TORRENT
    }
}

/// Why decoding failed; [`Error`] adds where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("unexpected end of input")]
    UnexpectedEof,
    #[error("unexpected byte {0:?}")]
    UnexpectedByte(char),
    #[error("non-canonical integer (leading zero, -0 or no digits)")]
    NonCanonicalInt,
    #[error("integer does not fit in 64 bits")]
    IntOverflow,
    #[error("non-canonical string length (leading zero or no digits)")]
    NonCanonicalLength,
    #[error("string length {len} exceeds the {remaining} bytes left")]
    StringTooLong { len: u64, remaining: usize },
    #[error("dict key is not a byte string")]
    KeyNotString,
    #[error("dict keys not sorted: {key:?} comes after {prev:?}")]
    UnsortedKeys { prev: String, key: String },
    #[error("duplicate dict key {key:?}")]
    DuplicateKey { key: String },
    #[error("nesting deeper than {0}")]
    TooDeep(usize),
    #[error("input of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("more than {0} items")]
    TooManyItems(usize),
    #[error("trailing bytes after the value")]
    TrailingBytes,
    #[error("top-level value is not a dict")]
    NotADict,
}

/// A decoding failure at a byte offset of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {offset}: {kind}")]
pub struct Error {
    pub offset: usize,
    pub kind: ErrorKind,
}

/// A top-level dict together with the raw byte range (into the input) of each value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpannedDict {
    pub dict: BTreeMap<Vec<u8>, Value>,
    pub spans: BTreeMap<Vec<u8>, Range<usize>>,
}

/// Decodes exactly one value with [`Limits::TORRENT`]; trailing bytes are an error.
pub fn decode(input: &[u8]) -> Result<Value, Error> {
    decode_with_limits(input, &Limits::default())
}

/// Decodes exactly one value; trailing bytes are an error.
pub fn decode_with_limits(input: &[u8], limits: &Limits) -> Result<Value, Error> {
    let mut p = Parser::new(input, limits)?;
    let v = p.value(0)?;
    p.finish()?;
    Ok(v)
}

/// Decodes one value at the start of `input`; returns it and the number of bytes it used.
pub fn decode_prefix(input: &[u8], limits: &Limits) -> Result<(Value, usize), Error> {
    let mut p = Parser::new(input, limits)?;
    let v = p.value(0)?;
    Ok((v, p.pos))
}

/// Decodes a whole input that must be a dict, recording the raw span of each top-level value.
///
/// `&input[spans[b"info"].clone()]` is the info dict exactly as it came, ready for SHA-1.
pub fn decode_dict_with_spans(input: &[u8], limits: &Limits) -> Result<SpannedDict, Error> {
    let mut p = Parser::new(input, limits)?;
    if p.peek()? != b'd' {
        // Report what is wrong inside first (depth, truncation), then the shape.
        p.value(0)?;
        p.finish()?;
        return Err(Error { offset: 0, kind: ErrorKind::NotADict });
    }
    let mut spans = BTreeMap::new();
    let dict = p.dict(0, Some(&mut spans))?;
    p.finish()?;
    Ok(SpannedDict { dict, spans })
}
