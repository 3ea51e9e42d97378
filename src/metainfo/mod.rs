//! Metainfo (BEP 3 v1 `.torrent` files): parsing, validation, the file layout.
use bytes::Bytes;

/// SHA-1 of the raw bencoded `info` dictionary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

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
#[derive(Debug, Clone)]
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

impl std::fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
