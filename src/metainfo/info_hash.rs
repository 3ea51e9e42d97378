//! The info-hash: SHA-1 of a torrent's `info` dictionary, and its hex and base32 forms.
use sha1::{Digest, Sha1};
use std::fmt;

/// SHA-1 of the raw bencoded `info` dictionary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// Why an info-hash string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoHashError {
    #[error("info-hash must be 40 hex or 32 base32 characters, got {0}")]
    BadLength(usize),
    #[error("info-hash has a non-hex character")]
    BadHex,
    #[error("info-hash has a non-base32 character")]
    BadBase32,
}

impl InfoHash {
    /// Parses 40 hex characters (either case).
    pub fn from_hex(s: &str) -> std::result::Result<Self, InfoHashError> {
        let s = s.as_bytes();
        if s.len() != 40 {
            return Err(InfoHashError::BadLength(s.len()));
        }
        let mut out = [0u8; 20];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0]).ok_or(InfoHashError::BadHex)?;
            let lo = hex_digit(pair[1]).ok_or(InfoHashError::BadHex)?;
            out[i] = hi << 4 | lo;
        }
        Ok(InfoHash(out))
    }

    /// Parses 32 base32 characters (RFC 4648 alphabet, either case), as old magnet links use.
    pub fn from_base32(s: &str) -> std::result::Result<Self, InfoHashError> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return Err(InfoHashError::BadLength(s.len()));
        }
        let mut out = [0u8; 20];
        // 32 symbols x 5 bits = 160 bits exactly: no padding to worry about.
        let mut acc: u64 = 0;
        let mut bits = 0;
        let mut n = 0;
        for &c in s {
            let v = base32_digit(c).ok_or(InfoHashError::BadBase32)?;
            acc = acc << 5 | u64::from(v);
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                out[n] = (acc >> bits) as u8;
                n += 1;
            }
        }
        Ok(InfoHash(out))
    }

    /// Parses either form, chosen by length (40 hex, 32 base32).
    pub fn parse(s: &str) -> std::result::Result<Self, InfoHashError> {
        match s.len() {
            32 => Self::from_base32(s),
            _ => Self::from_hex(s),
        }
    }

    /// 40 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// 32 uppercase base32 characters.
    pub fn to_base32(&self) -> String {
        const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let mut out = String::with_capacity(32);
        let mut acc: u64 = 0;
        let mut bits = 0;
        for &b in &self.0 {
            acc = acc << 8 | u64::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
            }
        }
        out
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// SHA-1 of `info_bytes`.
    pub fn of_info(info_bytes: &[u8]) -> Self {
        InfoHash(Sha1::digest(info_bytes).into())
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn base32_digit(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a'),
        b'2'..=b'7' => Some(c - b'2' + 26),
        _ => None,
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for InfoHash {
    type Err = InfoHashError;
    fn from_str(s: &str) -> std::result::Result<Self, InfoHashError> {
        InfoHash::parse(s)
    }
}
