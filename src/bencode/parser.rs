//! The strict recursive-descent decoder behind every `decode*` function.
use super::{Error, ErrorKind, Limits, Value};
use std::collections::BTreeMap;
use std::ops::Range;

pub(super) struct Parser<'a> {
    input: &'a [u8],
    pub(super) pos: usize,
    limits: &'a Limits,
    items: usize,
}

impl<'a> Parser<'a> {
    pub(super) fn new(input: &'a [u8], limits: &'a Limits) -> Result<Self, Error> {
        if input.len() > limits.max_input {
            return Err(Error { offset: 0, kind: ErrorKind::TooLarge { len: input.len(), max: limits.max_input } });
        }
        Ok(Parser { input, pos: 0, limits, items: 0 })
    }

    fn err(&self, kind: ErrorKind) -> Error {
        Error { offset: self.pos, kind }
    }

    pub(super) fn peek(&self) -> Result<u8, Error> {
        self.input.get(self.pos).copied().ok_or_else(|| self.err(ErrorKind::UnexpectedEof))
    }

    pub(super) fn finish(&self) -> Result<(), Error> {
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
    pub(super) fn value(&mut self, depth: usize) -> Result<Value, Error> {
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

    pub(super) fn dict(
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
