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
