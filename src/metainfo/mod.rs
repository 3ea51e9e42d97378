//! Metainfo (BEP 3 v1 `.torrent` files): parsing, validation, the file layout.
//!
//! This module owns the step from untrusted `.torrent` bytes to a [`Metainfo`] that the rest
//! of shoal may trust: every length, count and path is checked here once ("parse, don't
//! validate"), so storage can join paths below an output directory without re-checking.
//! It does no I/O; [`create`] (making torrents from files), [`magnet`] (magnet URIs) and
//! [`select`] (BEP 53 file selection) are its submodules, path rules live in [`validate`].
//!
//! Supported: single- and multi-file v1, hybrid v1+v2 torrents read as v1 (v2 keys ignored),
//! BEP 12 tiers, BEP 27 private, BEP 19 `url-list`, BEP 47 padding files (and the legacy
//! `_____padding_file_` naming of old libtorrent), `name.utf-8`/`path.utf-8` preferred.
//!
//! `name` and every path component are sanitized here ([`names::sanitize`]: control, bidi and
//! invisible characters become `_`) before the path rules run, so what storage joins below the
//! output directory and what the CLI prints never carries raw terminal or bidi codes.
use crate::bencode::{self, Limits, Value};
use crate::types::Geometry;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub mod create;
mod info_hash;
pub mod magnet;
pub mod names;
pub mod select;
pub mod validate;

pub use info_hash::{InfoHash, InfoHashError};
pub use magnet::{Magnet, MagnetError};

/// Smallest piece length accepted (16 KiB, one request block).
pub const MIN_PIECE_LENGTH: u32 = 16 << 10;
/// Largest piece length accepted (64 MiB); larger pieces make one bad peer cost too much.
pub const MAX_PIECE_LENGTH: u32 = 64 << 20;

/// One file of a torrent, in piece order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path components below the torrent's directory (multi-file) or `[name]` (single file).
    pub path: Vec<String>,
    pub length: u64,
    /// Byte offset of the file's first byte in the torrent's concatenated data.
    pub offset: u64,
    /// BEP 47 padding file: counted in the layout, never written.
    pub padding: bool,
}

/// A validated v1 torrent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metainfo {
    pub info_hash: InfoHash,
    /// The raw bencoded info dictionary exactly as it came (served over ut_metadata later).
    pub info_bytes: Bytes,
    pub name: String,
    pub piece_length: u32,
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    /// true when the info dict has `files` (data lives under a directory named `name`).
    pub multi_file: bool,
    pub total_length: u64,
    /// Tracker tiers (BEP 12); `announce` alone becomes one tier.
    pub trackers: Vec<Vec<String>>,
    pub private: bool,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    pub url_list: Vec<String>,
}

/// Why a `.torrent` was rejected. Messages name the field, as `info.piece length: ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    #[error("bencode {0}")]
    Bencode(#[from] bencode::Error),
    #[error("{0}: missing")]
    Missing(String),
    #[error("{field}: expected {expected}, got {got}")]
    WrongType { field: String, expected: &'static str, got: &'static str },
    #[error("{0}: not valid utf-8")]
    NotUtf8(String),
    #[error("info.piece length: {0} is not a power of two")]
    PieceLengthNotPowerOfTwo(i64),
    #[error("info.piece length: {0} is outside 16 KiB..=64 MiB")]
    PieceLengthOutOfRange(i64),
    #[error("info.pieces: length {0} is not a multiple of 20")]
    PiecesNotMultipleOf20(usize),
    #[error("info.pieces: {got} hashes, but {total} bytes in pieces of {piece_length} need {expected}")]
    PieceCountMismatch { got: usize, expected: u64, total: u64, piece_length: u32 },
    #[error("{field}: negative length {value}")]
    NegativeLength { field: String, value: i64 },
    #[error("info.files: total length overflows 64 bits")]
    TotalLengthOverflow,
    #[error("info.files: empty file list")]
    EmptyFileList,
    #[error("{0}: empty path")]
    EmptyPath(String),
    #[error("{field}: bad path component {component:?}: {reason}")]
    BadPathComponent { field: String, component: String, reason: &'static str },
    #[error("info.files: duplicate path {0:?}")]
    DuplicatePath(String),
    #[error("info.files: {file:?} is a file but also the directory of {other:?}")]
    FileIsDirectory { file: String, other: String },
    #[error("{field}: {depth} path components, more than the limit of {limit}")]
    PathTooDeep { field: String, depth: usize, limit: usize },
    #[error("{field}: a path component of {len} bytes, longer than the limit of {limit}")]
    ComponentTooLong { field: String, len: usize, limit: usize },
    #[error("{field}: path of {len} bytes, longer than the limit of {limit}")]
    PathTooLong { field: String, len: usize, limit: usize },
}

type Result<T, E = MetainfoError> = std::result::Result<T, E>;

impl Metainfo {
    /// Parses and validates a `.torrent` file.
    pub fn from_bytes(input: &[u8]) -> Result<Metainfo> {
        let top = bencode::decode_dict_with_spans(input, &Limits::TORRENT)?;
        let info = top.dict.get(&b"info"[..]).ok_or_else(|| MetainfoError::Missing("info".into()))?;
        let info = expect_dict(info, "info")?;
        // The span exists whenever the key does; the raw bytes are what peers hash.
        let span = top.spans.get(&b"info"[..]).cloned().unwrap_or(0..0);
        let info_bytes = Bytes::copy_from_slice(&input[span]);
        let parsed = parse_info(info)?;
        let top = &top.dict;
        Ok(Metainfo {
            info_hash: InfoHash::of_info(&info_bytes),
            info_bytes,
            name: parsed.name,
            piece_length: parsed.piece_length,
            pieces: parsed.pieces,
            files: parsed.files,
            multi_file: parsed.multi_file,
            total_length: parsed.total_length,
            trackers: parse_trackers(top),
            private: parsed.private,
            comment: opt_text(top, "comment"),
            created_by: opt_text(top, "created by"),
            creation_date: top.get(&b"creation date"[..]).and_then(Value::as_int),
            url_list: parse_url_list(top),
        })
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        // Validation bounds the count: pieces.len() * piece_length covers total_length (u64),
        // and piece_length >= 16 KiB, so the count is below 2^50; a torrent that large cannot
        // fit the 16 MiB input limit (20 bytes per piece), so it fits a u32.
        self.pieces.len() as u32
    }

    /// How the torrent's bytes are cut into pieces and blocks.
    pub fn geometry(&self) -> Geometry {
        Geometry::new(self.piece_length, self.total_length)
    }

    /// Length of piece `index` (the last piece may be short); `None` when out of range.
    pub fn piece_size(&self, index: u32) -> Option<u32> {
        self.geometry().piece_size(index)
    }

    /// The expected SHA-1 of piece `index`.
    pub fn piece_hash(&self, index: u32) -> Option<&[u8; 20]> {
        self.pieces.get(index as usize)
    }

    /// Where `file` lives below an output directory: `name` for a single-file torrent,
    /// `name/comp/...` for a multi-file one. Components were validated at parse time.
    pub fn relative_path(&self, file: &FileEntry) -> PathBuf {
        let mut p = PathBuf::new();
        if self.multi_file {
            p.push(&self.name);
        }
        for c in &file.path {
            p.push(c);
        }
        p
    }

    /// A magnet URI for this torrent (name and every tracker).
    pub fn magnet(&self) -> Magnet {
        Magnet {
            info_hash: self.info_hash,
            name: Some(self.name.clone()),
            trackers: self.trackers.iter().flatten().cloned().collect(),
            peers: Vec::new(),
            select_only: Vec::new(),
        }
    }
}

struct ParsedInfo {
    name: String,
    piece_length: u32,
    pieces: Vec<[u8; 20]>,
    files: Vec<FileEntry>,
    multi_file: bool,
    total_length: u64,
    private: bool,
}

fn parse_info(info: &BTreeMap<Vec<u8>, Value>) -> Result<ParsedInfo> {
    let name = component(utf8_preferred(info, "name", "info.name")?, "info.name")?;
    let piece_length = parse_piece_length(info)?;
    let pieces = parse_pieces(info)?;
    let (files, multi_file) = match info.get(&b"files"[..]) {
        Some(list) => (parse_files(list, &name)?, true),
        None => (vec![single_file(info, &name)?], false),
    };
    let total_length = files.iter().map(|f| f.length).sum::<u64>(); // checked in parse_files
    check_piece_count(pieces.len(), total_length, piece_length)?;
    Ok(ParsedInfo {
        name,
        piece_length,
        pieces,
        files,
        multi_file,
        total_length,
        // BEP 27: private is the integer 1; anything else is public.
        private: info.get(&b"private"[..]).and_then(Value::as_int) == Some(1),
    })
}

fn parse_piece_length(info: &BTreeMap<Vec<u8>, Value>) -> Result<u32> {
    let n = required_int(info, "piece length", "info.piece length")?;
    if n <= 0 || (n as u64) & (n as u64 - 1) != 0 {
        return Err(MetainfoError::PieceLengthNotPowerOfTwo(n));
    }
    if n < i64::from(MIN_PIECE_LENGTH) || n > i64::from(MAX_PIECE_LENGTH) {
        return Err(MetainfoError::PieceLengthOutOfRange(n));
    }
    Ok(n as u32)
}

fn parse_pieces(info: &BTreeMap<Vec<u8>, Value>) -> Result<Vec<[u8; 20]>> {
    let raw = info.get(&b"pieces"[..]).ok_or_else(|| MetainfoError::Missing("info.pieces".into()))?;
    let raw = raw.as_bytes().ok_or_else(|| wrong_type("info.pieces", "string", raw))?;
    if raw.len() % 20 != 0 {
        return Err(MetainfoError::PiecesNotMultipleOf20(raw.len()));
    }
    Ok(raw
        .chunks_exact(20)
        .map(|c| {
            let mut h = [0u8; 20];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

fn check_piece_count(got: usize, total: u64, piece_length: u32) -> Result<()> {
    let expected = total.div_ceil(u64::from(piece_length));
    if got as u64 != expected {
        return Err(MetainfoError::PieceCountMismatch { got, expected, total, piece_length });
    }
    Ok(())
}

fn single_file(info: &BTreeMap<Vec<u8>, Value>, name: &str) -> Result<FileEntry> {
    let length = parse_length(info, "info.length")?;
    Ok(FileEntry { path: vec![name.to_string()], length, offset: 0, padding: false })
}

fn parse_files(list: &Value, name: &str) -> Result<Vec<FileEntry>> {
    let list = list.as_list().ok_or_else(|| wrong_type("info.files", "list", list))?;
    if list.is_empty() {
        return Err(MetainfoError::EmptyFileList);
    }
    let mut files = Vec::with_capacity(list.len());
    let mut offset: u64 = 0;
    for (i, entry) in list.iter().enumerate() {
        let field = format!("info.files[{i}]");
        let dict = expect_dict(entry, &field)?;
        let length = parse_length(dict, &format!("{field}.length"))?;
        let path = parse_path(dict, &field)?;
        validate::check_path_length(&format!("{field}.path"), name, &path)?;
        let padding = is_padding(dict, &path);
        files.push(FileEntry { path, length, offset, padding });
        offset = offset.checked_add(length).ok_or(MetainfoError::TotalLengthOverflow)?;
    }
    validate::check_unique_paths(&files)?;
    Ok(files)
}

fn parse_path(dict: &BTreeMap<Vec<u8>, Value>, field: &str) -> Result<Vec<String>> {
    let (key, value) = match dict.get(&b"path.utf-8"[..]) {
        Some(v) => ("path.utf-8", v),
        None => ("path", dict.get(&b"path"[..]).ok_or_else(|| MetainfoError::Missing(format!("{field}.path")))?),
    };
    let field = format!("{field}.{key}");
    let parts = value.as_list().ok_or_else(|| wrong_type(&field, "list", value))?;
    if parts.is_empty() {
        return Err(MetainfoError::EmptyPath(field));
    }
    // Before anything is decoded: a hostile path costs one length check.
    validate::check_depth(&field, parts.len())?;
    parts
        .iter()
        .map(|p| {
            let raw = p.as_bytes().ok_or_else(|| wrong_type(&field, "list of strings", p))?;
            component(text(raw, key == "path.utf-8", &field)?, &field)
        })
        .collect()
}

/// A name or path component as shoal uses it: unsafe characters replaced, then the path rules.
fn component(raw: String, field: &str) -> Result<String> {
    let comp = match names::sanitize(&raw) {
        std::borrow::Cow::Borrowed(_) => raw,
        std::borrow::Cow::Owned(clean) => clean,
    };
    if comp.len() > validate::MAX_COMPONENT_BYTES {
        let (len, limit) = (comp.len(), validate::MAX_COMPONENT_BYTES);
        return Err(MetainfoError::ComponentTooLong { field: field.to_string(), len, limit });
    }
    validate::check_component(&comp).map_err(|reason| MetainfoError::BadPathComponent {
        field: field.to_string(),
        component: comp.clone(),
        reason,
    })?;
    Ok(comp)
}

/// BEP 47 `attr` containing `p`, or old libtorrent's `_____padding_file_` naming.
fn is_padding(dict: &BTreeMap<Vec<u8>, Value>, path: &[String]) -> bool {
    let attr = dict.get(&b"attr"[..]).and_then(Value::as_bytes).is_some_and(|a| a.contains(&b'p'));
    let legacy = path.last().is_some_and(|c| c.starts_with("_____padding_file_"));
    attr || legacy
}

/// The `length` key of a file dict (or of the info dict, single-file); `field` names it.
fn parse_length(dict: &BTreeMap<Vec<u8>, Value>, field: &str) -> Result<u64> {
    let n = required_int(dict, "length", field)?;
    u64::try_from(n).map_err(|_| MetainfoError::NegativeLength { field: field.to_string(), value: n })
}

fn parse_trackers(top: &BTreeMap<Vec<u8>, Value>) -> Vec<Vec<String>> {
    // BEP 12: announce-list takes precedence; malformed entries are dropped, not fatal,
    // because trackers are advisory and many real files carry junk here.
    let tiers: Vec<Vec<String>> = top
        .get(&b"announce-list"[..])
        .and_then(Value::as_list)
        .unwrap_or(&[])
        .iter()
        .filter_map(Value::as_list)
        .map(|tier| tier.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()).map(url_text).collect::<Vec<_>>())
        .filter(|tier| !tier.is_empty())
        .collect();
    if !tiers.is_empty() {
        return tiers;
    }
    match opt_text(top, "announce") {
        Some(a) if !a.is_empty() => vec![vec![url_text(&a)]],
        _ => Vec::new(),
    }
}

fn parse_url_list(top: &BTreeMap<Vec<u8>, Value>) -> Vec<String> {
    match top.get(&b"url-list"[..]) {
        Some(Value::Bytes(b)) if !b.is_empty() => vec![url_text(&String::from_utf8_lossy(b))],
        Some(Value::List(l)) => l.iter().filter_map(Value::as_str).map(url_text).collect(),
        _ => Vec::new(),
    }
}

/// A tracker or web seed URL as shoal keeps it: unsafe characters percent-encoded, which is
/// what a URL parser would send anyway, so logs and errors naming the URL stay one clean line.
fn url_text(s: &str) -> String {
    names::percent_encode_unsafe(s).into_owned()
}

fn opt_text(dict: &BTreeMap<Vec<u8>, Value>, key: &str) -> Option<String> {
    let utf8_key = format!("{key}.utf-8");
    dict.get(utf8_key.as_bytes())
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| dict.get(key.as_bytes()).and_then(Value::as_bytes).map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// `key.utf-8` when present (must be UTF-8), else `key` (decoded lossily: old torrents carry
/// legacy encodings and a lossy name still downloads; the duplicate check catches collisions).
fn utf8_preferred(dict: &BTreeMap<Vec<u8>, Value>, key: &str, field: &str) -> Result<String> {
    let utf8_key = format!("{key}.utf-8");
    if let Some(v) = dict.get(utf8_key.as_bytes()) {
        let f = format!("{field}.utf-8");
        let raw = v.as_bytes().ok_or_else(|| wrong_type(&f, "string", v))?;
        return text(raw, true, &f);
    }
    let v = dict.get(key.as_bytes()).ok_or_else(|| MetainfoError::Missing(field.to_string()))?;
    let raw = v.as_bytes().ok_or_else(|| wrong_type(field, "string", v))?;
    text(raw, false, field)
}

fn text(raw: &[u8], strict: bool, field: &str) -> Result<String> {
    match std::str::from_utf8(raw) {
        Ok(s) => Ok(s.to_string()),
        Err(_) if strict => Err(MetainfoError::NotUtf8(field.to_string())),
        Err(_) => Ok(String::from_utf8_lossy(raw).into_owned()),
    }
}

fn required_int(dict: &BTreeMap<Vec<u8>, Value>, key: &str, field: &str) -> Result<i64> {
    let v = dict.get(key.as_bytes()).ok_or_else(|| MetainfoError::Missing(field.to_string()))?;
    v.as_int().ok_or_else(|| wrong_type(field, "int", v))
}

fn expect_dict<'a>(v: &'a Value, field: &str) -> Result<&'a BTreeMap<Vec<u8>, Value>> {
    v.as_dict().ok_or_else(|| wrong_type(field, "dict", v))
}

fn wrong_type(field: &str, expected: &'static str, got: &Value) -> MetainfoError {
    MetainfoError::WrongType { field: field.to_string(), expected, got: got.kind_name() }
}

#[cfg(test)]
mod tests;
