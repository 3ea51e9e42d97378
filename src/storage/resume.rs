//! Fast resume: which pieces were verified and written, and what every file looked like (size
//! and modification time) when that was recorded, so a restart trusts them without reading.
//!
//! The promise: a piece counts as had at start only if it was verified, written, and then
//! recorded here, and no file holding any of its bytes changed since. A file whose stamp
//! differs from the recorded one (written to after the record, as by a download killed between
//! two records, or changed behind our back) has every piece touching it hashed again. Pieces
//! that touch only unchanged files take the recorded answer, whether had or not: no write
//! reached those files after the record, so nothing new can be there.
//!
//! The record is a small JSON file written whole through a temp file, `fsync` and a rename, so
//! a crash leaves the old record or the new one. A record that does not parse or does not fit
//! the torrent is ignored (every piece is hashed, as without one). Blocking I/O: callers run
//! it on the blocking pool.
use super::layout::Layout;
use super::{hex, StorageError};
use bitvec::order::Msb0;
use bitvec::vec::BitVec;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::UNIX_EPOCH;

/// Largest record read back: a bit per piece and a stamp per file, for any torrent we accept.
const MAX_RECORD_BYTES: u64 = 64 << 20;

/// What a file looked like: its length and modification time (nanoseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub length: u64,
    pub mtime_ns: i64,
}

impl FileStamp {
    /// The stamp of the file at `path`; `None` when it does not exist.
    pub fn of(path: &Path) -> std::io::Result<Option<FileStamp>> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mtime = meta.modified()?;
        let mtime_ns = match mtime.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        };
        Ok(Some(FileStamp { length: meta.len(), mtime_ns }))
    }
}

/// One flag per piece.
type Pieces = BitVec<u8, Msb0>;

/// One torrent's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeData {
    /// The torrent it belongs to (hex), so a record is never applied to another.
    pub info_hash: String,
    /// Pieces verified and written, as the wire's bitfield in hex.
    pub have: String,
    /// One stamp per file of the torrent, taken after the recorded pieces were written; the
    /// part file's for files it holds, `None` for padding and missing files.
    pub files: Vec<Option<FileStamp>>,
}

impl ResumeData {
    /// A record of `have` with `stamps`, the files as they are now (taken after the pieces in
    /// `have` were written).
    pub fn new(info_hash: &str, have: &BitVec<u8, Msb0>, stamps: Vec<Option<FileStamp>>) -> ResumeData {
        ResumeData { info_hash: info_hash.to_string(), have: hex(have.as_raw_slice()), files: stamps }
    }

    /// Reads the record at `path`: `None` when there is none or it does not fit the torrent
    /// (named in the log), so the caller hashes everything.
    pub fn load(path: &Path, info_hash: &str, layout: &Layout) -> Option<ResumeData> {
        let data = match read_bounded(path) {
            Ok(Some(bytes)) => serde_json::from_slice::<ResumeData>(&bytes).map_err(|e| e.to_string()),
            Ok(None) => return None,
            Err(e) => Err(e.to_string()),
        };
        let fits = |d: &ResumeData| {
            d.info_hash == info_hash
                && d.files.len() == layout.file_count()
                && d.have.len() == (layout.piece_count() as usize).div_ceil(8) * 2
        };
        match data {
            Ok(d) if fits(&d) && unhex(&d.have).is_some() => Some(d),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "resume record is for another torrent or shape: ignored");
                None
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "resume record unreadable, ignored: {e}");
                None
            }
        }
    }

    /// Writes the record at `path` atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// Splits the pieces given the files' stamps now: `(had, to_hash)`. `had` holds the
    /// recorded pieces whose files are all unchanged; `to_hash` every piece touching a changed
    /// file.
    pub fn settle(&self, layout: &Layout, now: &[Option<FileStamp>]) -> Result<(Pieces, Pieces), StorageError> {
        let count = layout.piece_count() as usize;
        let mut recorded = BitVec::<u8, Msb0>::from_vec(unhex(&self.have).unwrap_or_default());
        recorded.resize(count, false);
        let changed: Vec<bool> = self.files.iter().zip(now).map(|(then, now)| then != now).collect();
        let mut had = BitVec::<u8, Msb0>::repeat(false, count);
        let mut to_hash = BitVec::<u8, Msb0>::repeat(false, count);
        for index in 0..count as u32 {
            let segments = layout.piece_segments(index)?;
            if segments.iter().any(|s| !s.padding && changed[s.file]) {
                to_hash.set(index as usize, true);
            } else {
                had.set(index as usize, recorded[index as usize]);
            }
        }
        Ok((had, to_hash))
    }
}

/// The file's bytes, `None` when it is missing; an error past [`MAX_RECORD_BYTES`].
fn read_bounded(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        return Err(std::io::Error::other(format!("longer than {MAX_RECORD_BYTES} bytes")));
    }
    Ok(Some(bytes))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}
