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
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

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

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    items: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a [u8], limits: &'a Limits) -> Result<Self, Error> {
        if input.len() > limits.max_input {
            return Err(Error { offset: 0, kind: ErrorKind::TooLarge { len: input.len(), max: limits.max_input } });
        }
        Ok(Parser { input, pos: 0, limits, items: 0 })
    }

    fn err(&self, kind: ErrorKind) -> Error {
        Error { offset: self.pos, kind }
    }

    fn peek(&self) -> Result<u8, Error> {
        self.input.get(self.pos).copied().ok_or_else(|| self.err(ErrorKind::UnexpectedEof))
    }

    fn finish(&self) -> Result<(), Error> {
        if self.pos == self.input.len() {
            Ok(())
        } else {
            Err(self.err(ErrorKind::TrailingBytes))
        }
    }

    fn count_item(&mut self) -> Result<(), Error> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(self.err(ErrorKind::TooManyItems(self.limits.max_items)));
        }
        Ok(())
    }

    /// `depth` is the number of containers already open around this value.
    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        match self.peek()? {
            b'i' => self.int().map(Value::Int),
            b'0'..=b'9' => self.bytes().map(Value::Bytes),
            b'l' => self.list(depth).map(Value::List),
            b'd' => self.dict(depth, None).map(Value::Dict),
            other => Err(self.err(ErrorKind::UnexpectedByte(other as char))),
        }
    }

    fn enter(&mut self, depth: usize) -> Result<(), Error> {
        if depth >= self.limits.max_depth {
            return Err(self.err(ErrorKind::TooDeep(self.limits.max_depth)));
        }
        self.count_item()?;
        self.pos += 1; // the `l` or `d`
        Ok(())
    }

    fn int(&mut self) -> Result<i64, Error> {
        self.count_item()?;
        let start = self.pos;
        self.pos += 1; // the `i`
        let negative = self.peek()? == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        // Accumulate towards the sign so that i64::MIN parses without overflow.
        let mut n: i64 = 0;
        loop {
            let b = self.peek()?;
            match b {
                b'0'..=b'9' => {
                    let d = i64::from(b - b'0');
                    n = n
                        .checked_mul(10)
                        .and_then(|n| if negative { n.checked_sub(d) } else { n.checked_add(d) })
                        .ok_or(Error { offset: start, kind: ErrorKind::IntOverflow })?;
                    self.pos += 1;
                }
                b'e' => break,
                other => return Err(self.err(ErrorKind::UnexpectedByte(other as char))),
            }
        }
        let digits = &self.input[digits_start..self.pos];
        let canonical = match digits {
            [] => false,
            [b'0'] => !negative,
            [b'0', ..] => false,
            _ => true,
        };
        if !canonical {
            return Err(Error { offset: start, kind: ErrorKind::NonCanonicalInt });
        }
        self.pos += 1; // the `e`
        Ok(n)
    }

    /// Parses `<len>:` and checks the length against the remaining input; returns the range.
    fn string_range(&mut self) -> Result<Range<usize>, Error> {
        let start = self.pos;
        let mut len: u64 = 0;
        loop {
            let b = self.peek()?;
            match b {
                b'0'..=b'9' => {
                    // Saturate: any length this large fails the remaining-input check below.
                    len = len.saturating_mul(10).saturating_add(u64::from(b - b'0'));
                    self.pos += 1;
                }
                b':' => break,
                other => return Err(self.err(ErrorKind::UnexpectedByte(other as char))),
            }
        }
        let digits = &self.input[start..self.pos];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return Err(Error { offset: start, kind: ErrorKind::NonCanonicalLength });
        }
        self.pos += 1; // the `:`
        let remaining = self.input.len() - self.pos;
        let len_usize = usize::try_from(len).ok().filter(|&l| l <= remaining);
        let Some(len_usize) = len_usize else {
            return Err(Error { offset: start, kind: ErrorKind::StringTooLong { len, remaining } });
        };
        let range = self.pos..self.pos + len_usize;
        self.pos = range.end;
        Ok(range)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, Error> {
        self.count_item()?;
        let range = self.string_range()?;
        Ok(self.input[range].to_vec())
    }

    fn list(&mut self, depth: usize) -> Result<Vec<Value>, Error> {
        self.enter(depth)?;
        let mut items = Vec::new();
        while self.peek()? != b'e' {
            items.push(self.value(depth + 1)?);
        }
        self.pos += 1;
        Ok(items)
    }

    fn dict(
        &mut self,
        depth: usize,
        mut spans: Option<&mut BTreeMap<Vec<u8>, Range<usize>>>,
    ) -> Result<BTreeMap<Vec<u8>, Value>, Error> {
        self.enter(depth)?;
        let mut map: BTreeMap<Vec<u8>, Value> = BTreeMap::new();
        while self.peek()? != b'e' {
            let key_start = self.pos;
            if !self.peek()?.is_ascii_digit() {
                return Err(self.err(ErrorKind::KeyNotString));
            }
            let key = self.bytes()?;
            if let Some((prev, _)) = map.last_key_value() {
                if key <= *prev {
                    let kind = key_order_error(prev, &key);
                    return Err(Error { offset: key_start, kind });
                }
            }
            let value_start = self.pos;
            let value = self.value(depth + 1)?;
            if let Some(spans) = spans.as_deref_mut() {
                spans.insert(key.clone(), value_start..self.pos);
            }
            map.insert(key, value);
        }
        self.pos += 1;
        Ok(map)
    }
}

fn key_order_error(prev: &[u8], key: &[u8]) -> ErrorKind {
    let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    if prev == key {
        ErrorKind::DuplicateKey { key: show(key) }
    } else {
        ErrorKind::UnsortedKeys { prev: show(prev), key: show(key) }
    }
}

/// Encodes canonically: dict keys come out sorted because the map is a `BTreeMap`.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends the canonical encoding of `value` to `out`.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Int(n) => {
            out.push(b'i');
            out.extend_from_slice(n.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => encode_bytes(b, out),
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                encode_into(item, out);
            }
            out.push(b'e');
        }
        Value::Dict(map) => {
            out.push(b'd');
            for (k, v) in map {
                encode_bytes(k, out);
                encode_into(v, out);
            }
            out.push(b'e');
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

impl Value {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The byte string as UTF-8, `None` if it is not a string or not valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks a key up when `self` is a dict; `None` for a missing key or a non-dict.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<&Value> {
        self.as_dict().and_then(|d| d.get(key.as_ref()))
    }

    /// A short name of the variant, for error messages ("expected a list, got int").
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "int",
            Value::Bytes(_) => "string",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
        }
    }

    /// Starts a dict builder: `Value::dict().with("port", 6881).with("v", "shoal").build()`.
    pub fn dict() -> DictBuilder {
        DictBuilder::default()
    }
}

impl fmt::Display for Value {
    /// Debug-friendly text: strings shown lossily, long strings elided.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(n) => write!(f, "{n}"),
            Value::Bytes(b) if b.len() > 64 => write!(f, "<{} bytes>", b.len()),
            Value::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::List(items) => f.debug_list().entries(items.iter().map(DisplayAsDebug)).finish(),
            Value::Dict(map) => {
                f.debug_map().entries(map.iter().map(|(k, v)| (String::from_utf8_lossy(k), DisplayAsDebug(v)))).finish()
            }
        }
    }
}

struct DisplayAsDebug<'a>(&'a Value);
impl fmt::Debug for DisplayAsDebug<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.0, f)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}
impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(i64::from(n))
    }
}
impl From<u16> for Value {
    fn from(n: u16) -> Self {
        Value::Int(i64::from(n))
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Bytes(s.as_bytes().to_vec())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Bytes(s.into_bytes())
    }
}
impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Bytes(b.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}
impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::List(items)
    }
}
impl From<BTreeMap<Vec<u8>, Value>> for Value {
    fn from(map: BTreeMap<Vec<u8>, Value>) -> Self {
        Value::Dict(map)
    }
}

/// Builds a dict value; later keys replace earlier equal keys.
#[derive(Debug, Clone, Default)]
pub struct DictBuilder(BTreeMap<Vec<u8>, Value>);

impl DictBuilder {
    pub fn with(mut self, key: impl AsRef<[u8]>, value: impl Into<Value>) -> Self {
        self.0.insert(key.as_ref().to_vec(), value.into());
        self
    }

    /// Inserts only when `value` is `Some`.
    pub fn with_opt<V: Into<Value>>(self, key: impl AsRef<[u8]>, value: Option<V>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    pub fn build(self) -> Value {
        Value::Dict(self.0)
    }

    pub fn into_map(self) -> BTreeMap<Vec<u8>, Value> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind(input: &[u8]) -> ErrorKind {
        decode(input).expect_err("should fail").kind
    }

    #[test]
    fn round_trips_simple_values() {
        let v = Value::dict()
            .with("a", 1i64)
            .with("b", "x")
            .with("c", vec![Value::Int(-5), Value::from("yz"), Value::List(vec![])])
            .with("d", Value::dict().build())
            .build();
        let bytes = encode(&v);
        assert_eq!(bytes, b"d1:ai1e1:b1:x1:cli-5e2:yzlee1:ddee");
        assert_eq!(decode(&bytes), Ok(v));
    }

    #[test]
    fn integer_extremes() {
        assert_eq!(decode(b"i0e"), Ok(Value::Int(0)));
        assert_eq!(decode(b"i9223372036854775807e"), Ok(Value::Int(i64::MAX)));
        assert_eq!(decode(b"i-9223372036854775808e"), Ok(Value::Int(i64::MIN)));
        assert_eq!(kind(b"i9223372036854775808e"), ErrorKind::IntOverflow);
        assert_eq!(kind(b"i-9223372036854775809e"), ErrorKind::IntOverflow);
    }

    #[test]
    fn rejects_non_canonical_integers() {
        for bad in [&b"i-0e"[..], b"i03e", b"i-e", b"ie", b"i-03e"] {
            assert_eq!(kind(bad), ErrorKind::NonCanonicalInt, "{bad:?}");
        }
        assert_eq!(kind(b"i1"), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"i1.5e"), ErrorKind::UnexpectedByte('.'));
        assert_eq!(kind(b"i+1e"), ErrorKind::UnexpectedByte('+'));
    }

    #[test]
    fn rejects_bad_string_lengths() {
        assert_eq!(kind(b"03:abc"), ErrorKind::NonCanonicalLength);
        assert_eq!(kind(b"999999999999:x"), ErrorKind::StringTooLong { len: 999_999_999_999, remaining: 1 });
        assert!(matches!(kind(b"99999999999999999999999999:"), ErrorKind::StringTooLong { .. }));
        assert!(matches!(kind(b"5:abc"), ErrorKind::StringTooLong { len: 5, remaining: 3 }));
        assert_eq!(kind(b"3"), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn rejects_unsorted_and_duplicate_keys() {
        let e = decode(b"d1:bi1e1:ai2ee").unwrap_err();
        assert_eq!(e.offset, 7);
        assert_eq!(e.kind, ErrorKind::UnsortedKeys { prev: "b".into(), key: "a".into() });
        assert!(e.to_string().contains("not sorted"));
        assert_eq!(kind(b"d1:ai1e1:ai2ee"), ErrorKind::DuplicateKey { key: "a".into() });
        assert_eq!(kind(b"di1ei2ee"), ErrorKind::KeyNotString);
    }

    #[test]
    fn rejects_trailing_bytes_and_eof() {
        assert_eq!(kind(b"i1ei2e"), ErrorKind::TrailingBytes);
        assert_eq!(kind(b""), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"l"), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"d1:a"), ErrorKind::UnexpectedEof);
        assert_eq!(kind(b"x"), ErrorKind::UnexpectedByte('x'));
    }

    #[test]
    fn limits_depth_size_and_items() {
        let deep = vec![b'l'; 100_000];
        assert_eq!(kind(&deep), ErrorKind::TooDeep(64));
        let mut ok = vec![b'l'; 64];
        ok.extend(vec![b'e'; 64]);
        assert!(decode(&ok).is_ok());
        let small = Limits { max_depth: 4, max_input: 8, max_items: 2 };
        assert!(matches!(
            decode_with_limits(b"123456789", &small).unwrap_err().kind,
            ErrorKind::TooLarge { len: 9, max: 8 }
        ));
        assert_eq!(decode_with_limits(b"li1ei2ee", &small).unwrap_err().kind, ErrorKind::TooManyItems(2));
    }

    #[test]
    fn spans_point_at_raw_values() {
        let input = b"d4:infod1:xi1ee3:zzz3:abce";
        let sd = decode_dict_with_spans(input, &Limits::default()).unwrap();
        assert_eq!(&input[sd.spans[&b"info"[..]].clone()], b"d1:xi1ee");
        assert_eq!(&input[sd.spans[&b"zzz"[..]].clone()], b"3:abc");
        assert_eq!(decode_dict_with_spans(b"li1ee", &Limits::default()).unwrap_err().kind, ErrorKind::NotADict);
        assert_eq!(decode_dict_with_spans(&[b'l'; 1000], &Limits::default()).unwrap_err().kind, ErrorKind::TooDeep(64));
    }

    #[test]
    fn prefix_decoding_reports_length() {
        let (v, used) = decode_prefix(b"d1:ai1eeRAW", &Limits::MESSAGE).unwrap();
        assert_eq!(v.get("a").and_then(Value::as_int), Some(1));
        assert_eq!(used, 8);
    }

    #[test]
    fn helpers() {
        let v = Value::dict().with("peers", &b"\x01\x02"[..]).with_opt("none", None::<i64>).build();
        assert_eq!(v.get("peers").and_then(Value::as_bytes), Some(&b"\x01\x02"[..]));
        assert!(v.get("none").is_none());
        assert_eq!(v.kind_name(), "dict");
        assert_eq!(Value::Int(3).get("x"), None);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 0..8), inner, 0..8)
                    .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn prop_round_trip(v in arb_value()) {
            let bytes = encode(&v);
            prop_assert_eq!(decode(&bytes), Ok(v));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
            let _ = decode_dict_with_spans(&bytes, &Limits::default());
        }

        #[test]
        fn prop_bencode_like_bytes_never_panic(
            parts in proptest::collection::vec(
                prop_oneof![Just(&b"l"[..]), Just(&b"d"[..]), Just(&b"e"[..]), Just(&b"i"[..]),
                            Just(&b"1:"[..]), Just(&b"0"[..]), Just(&b"-"[..]), Just(&b"3:abc"[..])],
                0..64)
        ) {
            let bytes: Vec<u8> = parts.concat();
            if let Ok(v) = decode(&bytes) {
                // Whatever the strict decoder accepts is canonical: it re-encodes to itself.
                prop_assert_eq!(encode(&v), bytes);
            }
        }
    }
}
