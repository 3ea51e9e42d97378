//! Pieces: blocking whole-piece I/O over the layout's segments, and the SHA-1 check.
//!
//! Padding segments (BEP 47) are never touched on disk: writes skip them, reads fill zeros.
//! Everything here blocks; callers run it on the blocking pool or a dedicated thread.
use super::files::FileTable;
use super::layout::Layout;
use super::StorageError;
use sha1::{Digest, Sha1};

/// Whether `data` hashes to `expected`.
pub fn hash_matches(data: &[u8], expected: &[u8; 20]) -> bool {
    Sha1::digest(data).as_slice() == expected
}

/// Writes the whole piece `index` from `data` (exactly the piece's size); `direct`: with direct
/// I/O where [`FileTable::write`] can.
pub fn write(layout: &Layout, files: &FileTable, index: u32, data: &[u8], direct: bool) -> Result<(), StorageError> {
    let mut at = 0usize;
    for seg in layout.piece_segments(index)? {
        let len = seg.len as usize;
        if !seg.padding {
            files.write(seg.file, seg.file_offset, &data[at..at + len], direct)?;
        }
        at += len;
    }
    debug_assert_eq!(at, data.len());
    Ok(())
}

/// Fills `buf` (exactly the piece's size) with piece `index`. `Ok(false)` when some file it
/// touches is missing or too short: the piece is not on disk.
pub fn read(layout: &Layout, files: &FileTable, index: u32, buf: &mut [u8]) -> Result<bool, StorageError> {
    read_range(layout, files, index, 0, buf)
}

/// Fills `buf` with the bytes of piece `index` from offset `begin` on; `Ok(false)` as
/// [`read`].
pub fn read_range(
    layout: &Layout,
    files: &FileTable,
    index: u32,
    begin: u32,
    buf: &mut [u8],
) -> Result<bool, StorageError> {
    let mut at = 0usize;
    for seg in layout.segments(index, begin, buf.len() as u32)? {
        let part = &mut buf[at..at + seg.len as usize];
        if seg.padding {
            part.fill(0);
        } else if !files.read(seg.file, seg.file_offset, part)? {
            return Ok(false);
        }
        at += seg.len as usize;
    }
    debug_assert_eq!(at, buf.len());
    Ok(true)
}
