//! Storage: pieces and blocks onto files, positional I/O, hashing, the resume check.
//!
//! The engine holds a cloneable [`Storage`] handle and awaits its methods; all SHA-1 and file
//! I/O runs on tokio's blocking pool (or scoped threads inside one blocking task), never on the
//! async workers. A piece is reported [`PieceVerdict::Written`] only after its hash matched and
//! all its bytes were handed to the OS (no fsync per piece; [`Storage::finalize`] can sync).
//!
//! Parts, in reading order:
//! - [`layout`]: piece/block ranges → file segments, validation (pure arithmetic).
//! - `files`: on-disk paths and the lazily opened file table.
//! - `parts`: the part file holding unselected files' share of shared pieces (BEP 53).
//! - `pieces`: whole-piece read/write over segments, the hash check.
//! - `cache`: recently read pieces, so block requests rarely touch the disk (one cache per
//!   process, shared by the torrents' storages).
//! - `check`: the multi-threaded resume scan.
//! - [`resume`]: the fast-resume record, which spares the scan the pieces of unchanged files.
mod cache;
mod check;
mod files;
pub mod layout;
mod parts;
mod pieces;
pub mod resume;

use crate::metainfo::Metainfo;
use crate::metrics::metrics;
use bitvec::order::Msb0;
use bitvec::vec::BitVec;
use bytes::Bytes;
pub use cache::PieceCache;
use cache::TorrentCache;
use files::FileTable;
pub use files::DIRECT_ALIGN;
use layout::Layout;
use parts::PartFile;
use resume::ResumeData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Whole pieces kept for serving blocks, and the byte bound on them, per process.
pub const CACHE_PIECES: usize = 16;
pub const CACHE_BYTES: u64 = 32 << 20;
/// Pieces up to this size are read whole (and cached) when a peer asks for their first
/// block; bigger ones are read block by block.
const WHOLE_PIECE_MAX: u32 = 4 << 20;
/// Whole-piece reads at once, per process; past it a request reads just its block.
pub const PIECE_LOADS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Creating, extending or writing a file failed (a full disk, a read-only mount): fatal
    /// for the torrent, never blamed on a peer.
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("piece {0} out of range")]
    BadPiece(u32),
    #[error("block {index}:{begin}+{length} out of range")]
    BadBlock { index: u32, begin: u32, length: u32 },
    /// `read_block` for a piece whose data is not on disk.
    #[error("piece {index}: data missing on disk")]
    Missing { index: u32 },
    /// The runtime is shutting down and dropped a blocking storage task.
    #[error("storage task cancelled by runtime shutdown")]
    Cancelled,
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
    inner: Arc<Inner>,
}

struct Inner {
    meta: Arc<Metainfo>,
    layout: Layout,
    files: FileTable,
    cache: TorrentCache,
    /// Held while a verified piece is written: pieces are hashed in parallel, but one writer
    /// at a time, so blocking threads do not spin on the file's inode lock against each other.
    writer: std::sync::Mutex<()>,
    /// Verified pieces waiting for `writer`.
    queued: AtomicUsize,
}

/// Runs `f` on the blocking pool; a panic there resumes here.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StorageError::Cancelled),
    }
}

/// The name of a torrent's part file in its output directory (see [`Storage::with_selection`]).
pub fn part_file_name(info_hash: &crate::metainfo::InfoHash) -> String {
    PartFile::file_name(&info_hash.to_hex())
}

impl Storage {
    /// Opens the data of `meta` below the output directory `root` (files made lazily), with a
    /// piece cache of its own.
    pub fn new(meta: Arc<Metainfo>, root: PathBuf) -> Storage {
        Storage::with_selection(meta, root, None, &PieceCache::new(CACHE_PIECES, CACHE_BYTES, PIECE_LOADS))
    }

    /// Like [`Storage::new`], downloading only the files flagged in `selected` (one flag per
    /// file, from [`crate::metainfo::select::select_files`]): the others are never created,
    /// and their share of pieces they have in common with selected files goes to the part
    /// file `root/.<info-hash>.parts`. Served pieces are cached in `cache`, the process's.
    pub fn with_selection(
        meta: Arc<Metainfo>,
        root: PathBuf,
        selected: Option<Vec<bool>>,
        cache: &PieceCache,
    ) -> Storage {
        let layout = Layout::new(&meta);
        let mut files = FileTable::new(&meta, &root);
        if let Some(selected) = selected.filter(|s| s.iter().any(|f| !f)) {
            let path = root.join(PartFile::file_name(&meta.info_hash.to_hex()));
            files = files.with_parts(PartFile::new(&layout, selected, path));
        }
        let cache = cache.for_torrent();
        Storage {
            inner: Arc::new(Inner {
                meta,
                layout,
                files,
                cache,
                writer: std::sync::Mutex::new(()),
                queued: Default::default(),
            }),
        }
    }

    /// Writes verified pieces with direct I/O where possible (the default) or always through
    /// the page cache. Call before the first write.
    pub fn with_direct_io(self, on: bool) -> Storage {
        self.inner.files.set_direct_io(on);
        self
    }

    /// The torrent's piece/file geometry.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// Hashes whatever data already exists (resume); pieces whose files are missing or too
    /// short are not read and count as not had. Creates nothing. With a fast-resume record at
    /// `record` that fits the torrent, only the pieces touching files changed since it are
    /// read ([`resume`]). `on_piece` is called (from worker threads) with the count of pieces
    /// checked so far.
    pub async fn check_existing(
        &self,
        record: Option<PathBuf>,
        on_piece: Arc<dyn Fn(u32) + Send + Sync>,
    ) -> Result<BitVec<u8, Msb0>, StorageError> {
        let inner = self.inner.clone();
        let (have, hashed) = blocking(move || {
            let (layout, files) = (&inner.layout, &inner.files);
            let hex = inner.meta.info_hash.to_hex();
            let settled = match record.as_deref().and_then(|p| ResumeData::load(p, &hex, layout)) {
                Some(r) => Some(r.settle(layout, &files.stamps(layout)?)?),
                None => None,
            };
            let only = settled.as_ref().map(|(_, to_hash)| to_hash);
            let mut have = check::check_pieces(layout, files, &inner.meta.pieces, only, &*on_piece)?;
            let hashed = only.map_or(layout.piece_count() as usize, |o| o.count_ones());
            if let Some((had, _)) = &settled {
                have |= had.as_bitslice();
            }
            Ok((have, hashed))
        })
        .await?;
        tracing::info!(
            "resume check: {} of {} pieces on disk match their hashes; {hashed} hashed, the rest from the resume record",
            have.count_ones(),
            have.len()
        );
        // The exact set, for tests that compare it with the bytes on disk after a crash.
        tracing::debug!(have = %hex(have.as_raw_slice()), "resume check bitfield");
        Ok(have)
    }

    /// Records `have` (pieces verified and written) with the files as they are now at
    /// `record`, atomically. Call only after every piece in `have` was written.
    pub async fn save_resume(&self, record: PathBuf, have: BitVec<u8, Msb0>) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        blocking(move || {
            let stamps = inner.files.stamps(&inner.layout)?;
            let data = ResumeData::new(&inner.meta.info_hash.to_hex(), &have, stamps);
            data.save(&record).map_err(|source| StorageError::Io { path: record.clone(), source })
        })
        .await
    }

    /// Verifies a complete piece from memory and, when it matches, writes it. `data` must be
    /// exactly the piece's size (`BadBlock` otherwise).
    pub async fn write_piece(&self, index: u32, data: Bytes) -> Result<PieceVerdict, StorageError> {
        let size = self.inner.layout.piece_size(index)?;
        if data.len() != size as usize {
            let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
            return Err(StorageError::BadBlock { index, begin: 0, length });
        }
        let inner = self.inner.clone();
        // Invalidation happens inside the blocking task, after the write, so a caller that
        // drops this future mid-way cannot leave a stale cached copy behind.
        blocking(move || {
            let t0 = std::time::Instant::now();
            let matches = pieces::hash_matches(&data, &inner.meta.pieces[index as usize]);
            metrics().observe_hash(t0.elapsed());
            if !matches {
                return Ok(PieceVerdict::HashFailed);
            }
            inner.queued.fetch_add(1, Ordering::Relaxed);
            let _writer = inner.writer.lock().unwrap_or_else(|e| e.into_inner());
            // With other pieces queued behind this one the disk is what holds the download
            // back (each waiting piece keeps its place among those in progress), so this one
            // goes through the page cache, which takes it at memory speed; a direct write
            // waits for the device.
            let behind = inner.queued.fetch_sub(1, Ordering::Relaxed) > 1;
            // Timed once the lock is held: the histogram is the write's cost, not the queue.
            let t1 = std::time::Instant::now();
            pieces::write(&inner.layout, &inner.files, index, &data, !behind)?;
            metrics().observe_disk_write(t1.elapsed());
            inner.cache.invalidate(index);
            Ok(PieceVerdict::Written)
        })
        .await
    }

    /// Reads one block of a piece we have; the block owns its bytes.
    ///
    /// A client reading a piece in order costs one disk read per piece: the request for its
    /// first block reads the whole piece into the cache, and the other blocks come from
    /// there. Anything else reads just its block, so a peer asking one block here and there
    /// cannot make us read and hold whole pieces; nor can a piece over `WHOLE_PIECE_MAX`
    /// (4 MiB), or more than `PIECE_LOADS` (4) whole-piece reads at once in the process. A
    /// copy, not a slice, of a cached piece is handed out: a slice would keep the whole piece
    /// alive for as long as the block waits in a peer's send queue.
    pub async fn read_block(&self, index: u32, begin: u32, length: u32) -> Result<Bytes, StorageError> {
        self.inner.layout.check_block(index, begin, length)?;
        let size = self.inner.layout.piece_size(index)?;
        let range = begin as usize..(begin + length) as usize;
        if let Some(piece) = self.inner.cache.loaded(index) {
            return Ok(Bytes::copy_from_slice(&piece[range]));
        }
        // A piece being loaded is waited for: its other blocks are asked for while it loads.
        // (`None`: joining that load, whose reader holds the permit.)
        let permit = if self.inner.cache.has(index) {
            None
        } else {
            let whole = begin == 0 && size <= WHOLE_PIECE_MAX;
            match whole.then(|| self.inner.cache.try_load()).flatten() {
                Some(permit) => Some(permit),
                None => return self.read_alone(index, begin, length).await,
            }
        };
        let inner = self.inner.clone();
        let piece = self
            .inner
            .cache
            .get(index, size, || {
                blocking(move || {
                    let _permit = permit;
                    let mut buf = inner.cache.buffer(size as usize);
                    if !pieces::read(&inner.layout, &inner.files, index, &mut buf)? {
                        return Err(StorageError::Missing { index });
                    }
                    Ok(buf.freeze())
                })
            })
            .await?;
        Ok(Bytes::copy_from_slice(&piece[range]))
    }

    /// Reads just one block from disk.
    async fn read_alone(&self, index: u32, begin: u32, length: u32) -> Result<Bytes, StorageError> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut buf = vec![0u8; length as usize];
            if !pieces::read_range(&inner.layout, &inner.files, index, begin, &mut buf)? {
                return Err(StorageError::Missing { index });
            }
            Ok(Bytes::from(buf))
        })
        .await
    }

    /// Creates every selected (non-padding) file at its full length (e.g. 0-byte files) and, when
    /// `sync`, waits until the data is on the disk. Call once the download is complete: files
    /// are extended sparsely, never truncated. Without `sync` the OS writes back in its own
    /// time, as other clients leave it; the start-up check re-verifies whatever a crash lost.
    pub async fn finalize(&self, sync: bool) -> Result<(), StorageError> {
        let inner = self.inner.clone();
        blocking(move || {
            for file in 0..inner.layout.file_count() {
                if !inner.layout.is_padding(file) && inner.files.is_selected(file) {
                    inner.files.ensure_length(file, inner.layout.file_length(file), sync)?;
                }
            }
            Ok(())
        })
        .await
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
