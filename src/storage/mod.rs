//! Storage: pieces and blocks onto files. PENDING (helper task): bodies to be written.
mod layout;

use crate::metainfo::Metainfo;
use bitvec::vec::BitVec;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("piece {0} out of range")]
    BadPiece(u32),
    #[error("block {index}:{begin}+{length} out of range")]
    BadBlock { index: u32, begin: u32, length: u32 },
}

/// Outcome of handing a complete piece to storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceVerdict {
    /// Hash matched and the bytes are written.
    Written,
    /// Hash did not match; nothing was written.
    HashFailed,
}

/// Cloneable handle to one torrent's data on disk.
#[derive(Clone)]
pub struct Storage {
    #[allow(dead_code)]
    meta: Arc<Metainfo>,
    #[allow(dead_code)]
    root: PathBuf,
}

impl Storage {
    /// Opens the data of `meta` below the output directory `root` (files made lazily).
    pub fn new(meta: Arc<Metainfo>, root: PathBuf) -> Storage {
        Storage { meta, root }
    }

    /// Hashes whatever data already exists (resume); pieces whose files are missing are
    /// not read. `on_piece` is called with the count of pieces checked so far.
    pub async fn check_existing(&self, _on_piece: Arc<dyn Fn(u32) + Send + Sync>) -> Result<BitVec, StorageError> {
        todo!()
    }

    /// Verifies a complete piece from memory and, when it matches, writes it.
    pub async fn write_piece(&self, _index: u32, _data: Bytes) -> Result<PieceVerdict, StorageError> {
        todo!()
    }

    /// Reads one block of a piece we have.
    pub async fn read_block(&self, _index: u32, _begin: u32, _length: u32) -> Result<Bytes, StorageError> {
        todo!()
    }

    /// Creates every (non-padding) file at its full length, e.g. 0-byte files, once the
    /// download is complete.
    pub async fn finalize(&self) -> Result<(), StorageError> {
        todo!()
    }
}
