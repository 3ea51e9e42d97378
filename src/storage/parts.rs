//! The part file: where the bytes of unselected files go (BEP 53 file selection).
//!
//! A piece shared by a selected and an unselected file must be downloaded whole to be verified,
//! but the unselected file should not appear on disk. Its bytes of such pieces live in one
//! hidden file in the output directory, `.<info-hash>.parts`, one piece-sized slot per shared
//! piece, in piece order. Pieces holding only unselected data are never downloaded and have no
//! slot: reading them is "no data". The slots follow from the selection, so a run with another
//! selection finds no data there and downloads those pieces again.
//!
//! Blocking I/O, like `files`; called from the blocking pool only.
use super::layout::Layout;
use super::StorageError;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct PartFile {
    path: PathBuf,
    piece_length: u64,
    /// Start of each file in the torrent's stream.
    starts: Vec<u64>,
    selected: Vec<bool>,
    /// The shared pieces, ascending; a piece's slot is its position here.
    slots: Vec<u32>,
    handle: Mutex<Option<Arc<File>>>,
}

impl PartFile {
    /// The part file of a torrent with this selection; `path` is where it lives.
    pub fn new(layout: &Layout, selected: Vec<bool>, path: PathBuf) -> PartFile {
        let (_, slots) = layout.selected_pieces(&selected);
        let starts = (0..layout.file_count()).map(|f| layout.file_offset(f)).collect();
        let piece_length = u64::from(layout.piece_length());
        PartFile { path, piece_length, starts, selected, slots, handle: Mutex::new(None) }
    }

    /// The file name in the output directory for a torrent's info-hash (hex).
    pub fn file_name(info_hash_hex: &str) -> String {
        format!(".{info_hash_hex}.parts")
    }

    /// Whether the bytes of `file` live here rather than in the file itself.
    pub fn covers(&self, file: usize) -> bool {
        !self.selected[file]
    }

    /// Offset in the part file of `len` bytes at `offset` of `file`; `None` when their piece
    /// has no slot. A run never crosses a piece boundary (storage splits I/O by piece).
    fn locate(&self, file: usize, offset: u64) -> Option<u64> {
        let at = self.starts[file] + offset;
        let piece = at / self.piece_length;
        let slot = self.slots.binary_search(&u32::try_from(piece).ok()?).ok()? as u64;
        Some(slot * self.piece_length + at % self.piece_length)
    }

    pub fn write(&self, file: usize, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let write_error = |source| StorageError::Write { path: self.path.clone(), source };
        let Some(at) = self.locate(file, offset) else {
            // Only wanted pieces are written, and a wanted piece holding unselected data is
            // shared; anything else is a bug, refused rather than written somewhere wrong.
            let source = std::io::Error::other(format!("no slot for file {file} at {offset}"));
            return Err(write_error(source));
        };
        self.open(true)?.expect("writable open creates the file").write_all_at(data, at).map_err(write_error)
    }

    /// Fills `buf`; `Ok(false)` when the part file, or the piece's slot in it, holds no data.
    pub fn read(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<bool, StorageError> {
        let Some(at) = self.locate(file, offset) else { return Ok(false) };
        let Some(handle) = self.open(false)? else { return Ok(false) };
        match handle.read_exact_at(buf, at) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
            Err(source) => Err(StorageError::Io { path: self.path.clone(), source }),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Whether the part file exists (the resume check reads nothing of covered files when not).
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    fn open(&self, write: bool) -> Result<Option<Arc<File>>, StorageError> {
        let mut slot = self.handle.lock().expect("part file lock poisoned");
        if let Some(f) = &*slot {
            return Ok(Some(f.clone()));
        }
        let opened = match write {
            true => OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path),
            false => OpenOptions::new().read(true).write(true).open(&self.path),
        };
        match opened {
            Ok(f) => {
                let f = Arc::new(f);
                *slot = Some(f.clone());
                Ok(Some(f))
            }
            Err(e) if !write && e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Write { path: self.path.clone(), source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::layout::tests::meta;

    #[test]
    fn shared_pieces_get_slots_and_others_read_as_no_data() {
        let dir = tempfile::tempdir().unwrap();
        // Pieces of 16: a = 0..20, b = 20..40, c = 40..50; only c selected: piece 2 (32..48)
        // holds b's 32..40 and c's 40..48; piece 1 is all b and has no slot.
        let layout = Layout::new(&meta(16, &[("a", 20, false), ("b", 20, false), ("c", 10, false)]));
        let path = dir.path().join(".x.parts");
        let p = PartFile::new(&layout, vec![false, false, true], path.clone());
        assert!(p.covers(0) && p.covers(1) && !p.covers(2));
        let mut buf = [0u8; 8];
        assert!(!p.read(1, 12, &mut buf).unwrap(), "nothing written yet");
        assert!(!p.exists());
        p.write(1, 12, b"bbbbbbbb").unwrap();
        assert!(p.read(1, 12, &mut buf).unwrap());
        assert_eq!(&buf, b"bbbbbbbb");
        // Slot 0 starts at b's byte 12 (piece 2's first byte): 8 bytes, nothing before.
        assert_eq!(std::fs::read(&path).unwrap(), b"bbbbbbbb");
        assert!(!p.read(1, 0, &mut buf).unwrap(), "piece 1 has no slot");
        assert!(p.write(0, 0, b"a").is_err(), "an unwanted piece is never written");
    }
}
