//! Bencode (BEP 3): a strict decoder and a canonical encoder.
//!
//! IMPLEMENTATION PENDING (helper task): see the issue. Public API:
//! - `Value` owned tree; dict keys are byte strings kept sorted (BTreeMap).
//! - `decode(&[u8]) -> Result<Value, Error>` whole-input, trailing bytes are an error.
//! - `decode_with_span(&[u8], key_path)`: raw span of a dict value (for the info-hash).
//! - `encode(&Value) -> Vec<u8>`.
use std::collections::BTreeMap;

/// A decoded bencode value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

// TEMPORARY minimal codec so the engine compiles; replaced by the strict one on merge.
#[derive(Debug)]
pub struct Error;
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad bencode")
    }
}
impl std::error::Error for Error {}

pub fn decode(input: &[u8]) -> Result<Value, Error> {
    let (v, rest) = dec(input, 0)?;
    if rest.is_empty() { Ok(v) } else { Err(Error) }
}

fn dec(i: &[u8], depth: usize) -> Result<(Value, &[u8]), Error> {
    if depth > 64 { return Err(Error); }
    match i.first().ok_or(Error)? {
        b'i' => {
            let end = i.iter().position(|&c| c == b'e').ok_or(Error)?;
            let n = std::str::from_utf8(&i[1..end]).map_err(|_| Error)?.parse().map_err(|_| Error)?;
            Ok((Value::Int(n), &i[end + 1..]))
        }
        b'l' => {
            let mut rest = &i[1..];
            let mut v = Vec::new();
            while rest.first() != Some(&b'e') {
                let (x, r) = dec(rest, depth + 1)?;
                v.push(x);
                rest = r;
            }
            Ok((Value::List(v), &rest[1..]))
        }
        b'd' => {
            let mut rest = &i[1..];
            let mut m = BTreeMap::new();
            while rest.first() != Some(&b'e') {
                let (Value::Bytes(k), r) = dec(rest, depth + 1)? else { return Err(Error) };
                let (x, r) = dec(r, depth + 1)?;
                m.insert(k, x);
                rest = r;
            }
            Ok((Value::Dict(m), &rest[1..]))
        }
        b'0'..=b'9' => {
            let colon = i.iter().position(|&c| c == b':').ok_or(Error)?;
            let n: usize = std::str::from_utf8(&i[..colon]).map_err(|_| Error)?.parse().map_err(|_| Error)?;
            let body = i.get(colon + 1..colon + 1 + n).ok_or(Error)?;
            Ok((Value::Bytes(body.to_vec()), &i[colon + 1 + n..]))
        }
        _ => Err(Error),
    }
}

pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    enc(v, &mut out);
    out
}

fn enc(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
        Value::Bytes(b) => {
            out.extend_from_slice(format!("{}:", b.len()).as_bytes());
            out.extend_from_slice(b);
        }
        Value::List(l) => {
            out.push(b'l');
            l.iter().for_each(|x| enc(x, out));
            out.push(b'e');
        }
        Value::Dict(d) => {
            out.push(b'd');
            for (k, x) in d {
                enc(&Value::Bytes(k.clone()), out);
                enc(x, out);
            }
            out.push(b'e');
        }
    }
}
