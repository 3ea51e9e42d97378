//! Magnet URIs (BEP 9, BEP 53): parsing and formatting.
//!
//! `magnet:?xt=urn:btih:<40 hex | 32 base32>&dn=<name>&tr=<tracker>...&x.pe=<host:port>&so=0,2,4-6`.
//! Unknown parameters are ignored (clients add many); a v2-only magnet (`btmh` without `btih`)
//! is rejected because shoal speaks v1. Formatting always writes the hash as hex and
//! percent-encodes values, so `Magnet::parse(&m.to_string()) == Ok(m)`.
use super::{InfoHash, InfoHashError};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::fmt;
use std::ops::RangeInclusive;

/// A parsed magnet link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    /// `dn`: display name, a hint until the metadata arrives; control, bidi and invisible
    /// characters replaced by `_` ([`super::names::sanitize`]).
    pub name: Option<String>,
    /// Every `tr`, in order (unsafe characters percent-encoded).
    pub trackers: Vec<String>,
    /// Every `x.pe` peer address (`host:port`; unsafe characters replaced by `_`).
    pub peers: Vec<String>,
    /// BEP 53 `so`: the file indices to download, as inclusive ranges; empty means all.
    pub select_only: Vec<RangeInclusive<u32>>,
}

/// Why a magnet URI was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet uri (must start with \"magnet:?\")")]
    NotMagnet,
    #[error("magnet: no xt=urn:btih: parameter (v2-only magnets are not supported)")]
    MissingInfoHash,
    #[error("magnet: xt: {0}")]
    BadInfoHash(#[from] InfoHashError),
    #[error("magnet: so: bad file selection {0:?}")]
    BadSelectOnly(String),
    #[error("magnet: {0}: value is not valid utf-8 after percent-decoding")]
    NotUtf8(String),
}

/// Everything but RFC 3986 unreserved characters is escaped.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

impl Magnet {
    /// A magnet with only the info-hash.
    pub fn new(info_hash: InfoHash) -> Self {
        Magnet { info_hash, name: None, trackers: Vec::new(), peers: Vec::new(), select_only: Vec::new() }
    }

    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        let query =
            uri.strip_prefix("magnet:?").or_else(|| uri.strip_prefix("MAGNET:?")).ok_or(MagnetError::NotMagnet)?;
        let mut info_hash = None;
        let mut m = Magnet::new(InfoHash([0; 20]));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "xt" => {
                    let v = decode(key, raw, false)?;
                    if let Some(h) = btih(&v) {
                        info_hash.get_or_insert(InfoHash::parse(h)?);
                    }
                }
                // `+` means space in a display name as most clients write it. The name may
                // become a directory name, so it is sanitized like a torrent's.
                "dn" => m.name = Some(super::names::sanitize(&decode(key, raw, true)?).into_owned()),
                "tr" => m.trackers.push(super::names::percent_encode_unsafe(&decode(key, raw, false)?).into_owned()),
                "x.pe" => m.peers.push(super::names::sanitize(&decode(key, raw, false)?).into_owned()),
                "so" => m.select_only = parse_select_only(&decode(key, raw, false)?)?,
                _ => {}
            }
        }
        m.info_hash = info_hash.ok_or(MagnetError::MissingInfoHash)?;
        Ok(m)
    }

    /// Whether file `index` is selected by `so` (everything is when `so` is absent).
    pub fn selects(&self, index: u32) -> bool {
        self.select_only.is_empty() || self.select_only.iter().any(|r| r.contains(&index))
    }
}

fn btih(xt: &str) -> Option<&str> {
    let (scheme, rest) = xt.split_at_checked(9)?;
    scheme.eq_ignore_ascii_case("urn:btih:").then_some(rest)
}

fn decode(key: &str, raw: &str, plus_is_space: bool) -> Result<String, MagnetError> {
    let raw = if plus_is_space { raw.replace('+', " ") } else { raw.to_string() };
    percent_decode_str(&raw).decode_utf8().map(|s| s.into_owned()).map_err(|_| MagnetError::NotUtf8(key.to_string()))
}

/// Parses BEP 53 `0,2,4-6`.
pub fn parse_select_only(s: &str) -> Result<Vec<RangeInclusive<u32>>, MagnetError> {
    let bad = || MagnetError::BadSelectOnly(s.to_string());
    s.split(',')
        .map(|part| {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let lo: u32 = lo.trim().parse().map_err(|_| bad())?;
            let hi: u32 = hi.trim().parse().map_err(|_| bad())?;
            if lo > hi {
                return Err(bad());
            }
            Ok(lo..=hi)
        })
        .collect()
}

impl fmt::Display for Magnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "magnet:?xt=urn:btih:{}", self.info_hash)?;
        if let Some(name) = &self.name {
            write!(f, "&dn={}", utf8_percent_encode(name, VALUE))?;
        }
        for tr in &self.trackers {
            write!(f, "&tr={}", utf8_percent_encode(tr, VALUE))?;
        }
        for pe in &self.peers {
            write!(f, "&x.pe={}", utf8_percent_encode(pe, VALUE))?;
        }
        if !self.select_only.is_empty() {
            f.write_str("&so=")?;
            for (i, r) in self.select_only.iter().enumerate() {
                let sep = if i == 0 { "" } else { "," };
                if r.start() == r.end() {
                    write!(f, "{sep}{}", r.start())?;
                } else {
                    write!(f, "{sep}{}-{}", r.start(), r.end())?;
                }
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Magnet {
    type Err = MagnetError;
    fn from_str(s: &str) -> Result<Self, MagnetError> {
        Magnet::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    #[test]
    fn parses_a_typical_link() {
        let uri = format!(
            "magnet:?xt=urn:btih:{}&dn=Some+Name%20%C3%A9&tr=http%3A%2F%2Ft.example%2Fa&tr=udp://u.example:80&x.pe=10.0.0.1:6881&so=0,2,4-6&foo=bar",
            HEX.to_uppercase()
        );
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(m.info_hash.to_hex(), HEX);
        assert_eq!(m.name.as_deref(), Some("Some Name é"));
        assert_eq!(m.trackers, ["http://t.example/a", "udp://u.example:80"]);
        assert_eq!(m.peers, ["10.0.0.1:6881"]);
        assert_eq!(m.select_only, vec![0..=0, 2..=2, 4..=6]);
        assert!(m.selects(5) && !m.selects(3));
    }

    #[test]
    fn base32_hash_matches_hex() {
        let h = InfoHash::from_hex(HEX).unwrap();
        let b32 = h.to_base32();
        assert_eq!(b32.len(), 32);
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{b32}")).unwrap();
        assert_eq!(m.info_hash, h);
        let lower = Magnet::parse(&format!("magnet:?xt=urn:btih:{}", b32.to_lowercase())).unwrap();
        assert_eq!(lower.info_hash, h);
    }

    #[test]
    fn formats_and_round_trips() {
        let m = Magnet {
            info_hash: InfoHash::from_hex(HEX).unwrap(),
            name: Some("a b&c=d+é".into()),
            trackers: vec!["http://t/a?x=1&y=2".into(), "udp://u:1".into()],
            peers: vec!["[::1]:6881".into()],
            select_only: vec![1..=1, 3..=9],
        };
        let s = m.to_string();
        assert!(s.starts_with(&format!("magnet:?xt=urn:btih:{HEX}&dn=a%20b%26c%3Dd%2B%C3%A9")));
        assert!(s.ends_with("&so=1,3-9"));
        assert_eq!(Magnet::parse(&s), Ok(m));
    }

    #[test]
    fn errors() {
        assert_eq!(Magnet::parse("http://x"), Err(MagnetError::NotMagnet));
        assert_eq!(Magnet::parse("magnet:?dn=x"), Err(MagnetError::MissingInfoHash));
        assert_eq!(Magnet::parse("magnet:?xt=urn:btmh:1220abcd"), Err(MagnetError::MissingInfoHash));
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btih:abc"),
            Err(MagnetError::BadInfoHash(InfoHashError::BadLength(3)))
        );
        assert_eq!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", "g".repeat(40))),
            Err(MagnetError::BadInfoHash(InfoHashError::BadHex))
        );
        assert_eq!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", "1".repeat(32))),
            Err(MagnetError::BadInfoHash(InfoHashError::BadBase32))
        );
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&so=3-1")),
            Err(MagnetError::BadSelectOnly(_))
        ));
        assert!(matches!(Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%FF")), Err(MagnetError::NotUtf8(_))));
    }

    proptest::proptest! {
        #[test]
        fn prop_format_parse_round_trip(
            hash in proptest::array::uniform20(proptest::prelude::any::<u8>()),
            name in proptest::option::of("[^\\p{Cc}\\p{Cf}\u{2028}\u{2029}]{0,20}"),
            trackers in proptest::collection::vec("[^\\p{Cc}\\p{Cf}\u{2028}\u{2029}]{1,20}", 0..3),
            peers in proptest::collection::vec("[0-9a-z.:]{1,20}", 0..3),
            so in proptest::collection::vec((0u32..100, 0u32..5), 0..4),
        ) {
            let m = Magnet {
                info_hash: InfoHash(hash),
                name,
                trackers,
                peers,
                select_only: so.into_iter().map(|(a, n)| a..=a + n).collect(),
            };
            proptest::prop_assert_eq!(Magnet::parse(&m.to_string()), Ok(m));
        }

        #[test]
        fn prop_dn_is_always_sanitized(name in ".{0,20}") {
            let m = Magnet { name: Some(name.clone()), ..Magnet::new(InfoHash([1; 20])) };
            let parsed = Magnet::parse(&m.to_string()).unwrap();
            proptest::prop_assert_eq!(parsed.name.unwrap(), super::super::names::sanitize(&name));
        }

        #[test]
        fn prop_parse_never_panics(s in "magnet:\\?.{0,80}") {
            let _ = Magnet::parse(&s);
        }
    }
}
