//! BEP 10 extension protocol: the extension handshake (`Message::Extended { id: 0 }`).
//!
//! We read `m` (their extension ids), `v` (client name), `p` (listen port), `reqq` (how many
//! outstanding requests they accept) and `metadata_size`; fields of the wrong type are
//! ignored rather than fatal, as other clients do.
use crate::bencode::{self, Limits, Value};
use bytes::Bytes;
use std::collections::BTreeMap;

/// The id we ask peers to send BEP 9 `ut_metadata` messages under (our `m` dict).
pub const UT_METADATA_ID: u8 = 1;
/// The id we receive BEP 11 `ut_pex` messages under (our `m` dict; public torrents only).
pub const UT_PEX_ID: u8 = 2;

/// The BEP 10 extensions shoal speaks, by the names peers offer them under.
pub const SPOKEN: [&str; 2] = ["ut_metadata", "ut_pex"];

/// The extension handshake, both ours and theirs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Extension name → the id the sender wants to receive it under (0 = disabled).
    pub m: BTreeMap<String, u8>,
    pub client: Option<String>,
    pub port: Option<u16>,
    pub reqq: Option<u32>,
    pub metadata_size: Option<u64>,
}

impl ExtHandshake {
    pub fn encode(&self) -> Bytes {
        let mut d = BTreeMap::new();
        let m = self.m.iter().map(|(k, v)| (k.as_bytes().to_vec(), Value::Int(*v as i64))).collect();
        d.insert(b"m".to_vec(), Value::Dict(m));
        if let Some(v) = &self.client {
            d.insert(b"v".to_vec(), Value::Bytes(v.as_bytes().to_vec()));
        }
        if let Some(p) = self.port {
            d.insert(b"p".to_vec(), Value::Int(p as i64));
        }
        if let Some(q) = self.reqq {
            d.insert(b"reqq".to_vec(), Value::Int(q as i64));
        }
        if let Some(s) = self.metadata_size {
            d.insert(b"metadata_size".to_vec(), Value::Int(s as i64));
        }
        Bytes::from(bencode::encode(&Value::Dict(d)))
    }

    /// Parses a peer's handshake payload; `None` when it is not a bencoded dict.
    pub fn decode(payload: &[u8]) -> Option<ExtHandshake> {
        let Ok(Value::Dict(d)) = bencode::decode_with_limits(payload, &Limits::MESSAGE) else { return None };
        let int = |k: &[u8]| match d.get(k) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        };
        let mut m = BTreeMap::new();
        if let Some(Value::Dict(md)) = d.get(&b"m"[..]) {
            for (k, v) in md {
                if let (Ok(name), Value::Int(id)) = (std::str::from_utf8(k), v) {
                    if let Ok(id) = u8::try_from(*id) {
                        m.insert(name.to_string(), id);
                    }
                }
            }
        }
        let client = match d.get(&b"v"[..]) {
            Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).chars().take(64).collect()),
            _ => None,
        };
        Some(ExtHandshake {
            m,
            client,
            port: int(b"p").and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0),
            reqq: int(b"reqq").and_then(|q| u32::try_from(q).ok()).filter(|q| *q > 0),
            metadata_size: int(b"metadata_size").and_then(|s| u64::try_from(s).ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut hs =
            ExtHandshake { client: Some("shoal 0.1".into()), port: Some(6881), reqq: Some(500), ..Default::default() };
        hs.m.insert("ut_metadata".into(), 3);
        assert_eq!(ExtHandshake::decode(&hs.encode()), Some(hs));
    }

    #[test]
    fn libtorrent_style_payload() {
        let p =
            b"d1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi250e1:v17:libtorrent 2.0.11e";
        let hs = ExtHandshake::decode(p).unwrap();
        assert_eq!(hs.reqq, Some(250));
        assert_eq!(hs.port, Some(6881));
        assert_eq!(hs.m.get("ut_pex"), Some(&1));
        assert_eq!(hs.metadata_size, Some(31235));
        assert_eq!(hs.client.as_deref(), Some("libtorrent 2.0.11"));
    }

    #[test]
    fn wrong_types_ignored() {
        let hs = ExtHandshake::decode(b"d1:pi-5e4:reqq3:abce").unwrap();
        assert_eq!(hs.reqq, None);
        assert_eq!(hs.port, None);
        assert!(ExtHandshake::decode(b"li1ee").is_none());
    }

    #[test]
    fn a_handshake_past_a_messages_bounds_is_refused() {
        // 70,000 values in 210 KB (a peer message may be larger), or lists 40 deep.
        let mut many = b"d1:xl".to_vec();
        many.extend(b"i0e".repeat(70_000));
        many.extend(b"ee");
        assert!(ExtHandshake::decode(&many).is_none());
        let deep = [b"d1:x".to_vec(), b"l".repeat(40), b"e".repeat(41)].concat();
        assert!(ExtHandshake::decode(&deep).is_none());
        let shallow = [b"d1:pi6881e1:x".to_vec(), b"l".repeat(20), b"e".repeat(21)].concat();
        assert_eq!(ExtHandshake::decode(&shallow).unwrap().port, Some(6881));
    }
}
