//! Layout: the arithmetic that maps pieces and blocks onto file segments.
//!
//! A torrent's data is the concatenation of its files in metainfo order; pieces cut that
//! stream into `piece_length` chunks, the last one possibly short. This module turns a byte
//! range of a piece into the `(file, file_offset, len)` segments it covers and validates piece
//! indices and block ranges. It is plain synchronous code: no I/O, no tokio.
//!
//! Invariants: file offsets are the running sum of file lengths (recomputed here, not trusted);
//! zero-length files cover no bytes and therefore never appear in a segment list; BEP 47 padding
//! files do appear, marked `padding`, because they occupy bytes of the stream, but storage never
//! touches them on disk (their bytes read as zeros).
use super::StorageError;
use crate::metainfo::Metainfo;
use crate::types::Geometry;
use bitvec::order::Msb0;
use bitvec::vec::BitVec;

/// One contiguous run of bytes inside a single file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Index into `Metainfo::files`.
    pub file: usize,
    /// Offset of the run's first byte within that file.
    pub file_offset: u64,
    pub len: u32,
    /// BEP 47 padding file: never written, reads as zeros.
    pub padding: bool,
}

#[derive(Debug, Clone, Copy)]
struct FileSpan {
    offset: u64,
    length: u64,
    padding: bool,
}

/// Piece and file geometry of one torrent.
#[derive(Debug, Clone)]
pub struct Layout {
    geometry: Geometry,
    files: Vec<FileSpan>,
}

impl Layout {
    pub fn new(meta: &Metainfo) -> Layout {
        let mut offset = 0u64;
        let files = meta
            .files
            .iter()
            .map(|f| {
                debug_assert_eq!(f.offset, offset, "metainfo file offsets are not contiguous");
                let span = FileSpan { offset, length: f.length, padding: f.padding };
                offset += f.length;
                span
            })
            .collect();
        debug_assert_eq!(offset, meta.total_length);
        Layout { geometry: meta.geometry(), files }
    }

    pub fn piece_count(&self) -> u32 {
        self.geometry.piece_count()
    }

    pub fn piece_length(&self) -> u32 {
        self.geometry.piece_length()
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub fn file_length(&self, file: usize) -> u64 {
        self.files[file].length
    }

    pub fn is_padding(&self, file: usize) -> bool {
        self.files[file].padding
    }

    /// Offset of file `file`'s first byte in the torrent's stream.
    pub fn file_offset(&self, file: usize) -> u64 {
        self.files[file].offset
    }

    /// For a file selection (one flag per file): the pieces to download (those holding data
    /// of a selected file) and, of those, the pieces that also hold data of an unselected one
    /// (their bytes there go to the part file), in piece order.
    pub fn selected_pieces(&self, selected: &[bool]) -> (BitVec<u8, Msb0>, Vec<u32>) {
        let mut wanted = BitVec::repeat(false, self.piece_count() as usize);
        let mut straddling = Vec::new();
        for piece in 0..self.piece_count() {
            let segments = self.piece_segments(piece).expect("piece in range");
            let data = segments.iter().filter(|s| !s.padding);
            let (mut chosen, mut other) = (false, false);
            for s in data {
                if selected[s.file] {
                    chosen = true;
                } else {
                    other = true;
                }
            }
            wanted.set(piece as usize, chosen);
            if chosen && other {
                straddling.push(piece);
            }
        }
        (wanted, straddling)
    }

    /// Bytes of the pieces flagged in `pieces`.
    pub fn bytes_of(&self, pieces: &BitVec<u8, Msb0>) -> u64 {
        pieces.iter_ones().map(|i| u64::from(self.geometry.piece_size(i as u32).unwrap_or(0))).sum()
    }

    /// Size of piece `index`: `piece_length`, except a short last piece.
    pub fn piece_size(&self, index: u32) -> Result<u32, StorageError> {
        self.geometry.piece_size(index).ok_or(StorageError::BadPiece(index))
    }

    /// Checks that `begin..begin+length` is a non-empty range inside piece `index`.
    pub fn check_block(&self, index: u32, begin: u32, length: u32) -> Result<(), StorageError> {
        self.piece_size(index)?;
        match self.geometry.block_in(index, begin, length) {
            Some(_) => Ok(()),
            None => Err(StorageError::BadBlock { index, begin, length }),
        }
    }

    /// Segments covering the whole of piece `index`.
    pub fn piece_segments(&self, index: u32) -> Result<Vec<Segment>, StorageError> {
        let size = self.piece_size(index)?;
        self.segments(index, 0, size)
    }

    /// Segments covering `begin..begin+length` of piece `index`, in stream order; their lengths
    /// sum to `length`.
    pub fn segments(&self, index: u32, begin: u32, length: u32) -> Result<Vec<Segment>, StorageError> {
        self.check_block(index, begin, length)?;
        let start = self.geometry.piece_offset(index) + u64::from(begin);
        let end = start + u64::from(length);
        let first = self.files.partition_point(|f| f.offset + f.length <= start);
        let mut out = Vec::new();
        for (i, f) in self.files.iter().enumerate().skip(first) {
            if f.offset >= end {
                break;
            }
            if f.length == 0 {
                continue;
            }
            let from = start.max(f.offset);
            let to = end.min(f.offset + f.length);
            out.push(Segment {
                file: i,
                file_offset: from - f.offset,
                // Fits: bounded by `length`.
                len: (to - from) as u32,
                padding: f.padding,
            });
        }
        debug_assert_eq!(out.iter().map(|s| u64::from(s.len)).sum::<u64>(), u64::from(length));
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metainfo::{FileEntry, InfoHash};
    use bytes::Bytes;

    /// A metainfo over files of the given `(name, length, padding)`, with dummy hashes.
    pub(crate) fn meta(piece_length: u32, files: &[(&str, u64, bool)]) -> Metainfo {
        let mut offset = 0;
        let files: Vec<FileEntry> = files
            .iter()
            .map(|&(name, length, padding)| {
                let e = FileEntry { path: vec![name.to_string()], length, offset, padding };
                offset += length;
                e
            })
            .collect();
        let count = offset.div_ceil(u64::from(piece_length)) as usize;
        Metainfo {
            info_hash: InfoHash([0; 20]),
            info_bytes: Bytes::new(),
            name: "t".into(),
            piece_length,
            pieces: vec![[0; 20]; count],
            files,
            multi_file: true,
            total_length: offset,
            trackers: vec![],
            private: false,
            comment: None,
            created_by: None,
            creation_date: None,
            url_list: vec![],
        }
    }

    fn seg(file: usize, file_offset: u64, len: u32) -> Segment {
        Segment { file, file_offset, len, padding: false }
    }

    #[test]
    fn piece_count_and_short_last_piece() {
        let l = Layout::new(&meta(16, &[("a", 40, false)]));
        assert_eq!(l.piece_count(), 3);
        assert_eq!(l.piece_size(0).unwrap(), 16);
        assert_eq!(l.piece_size(1).unwrap(), 16);
        assert_eq!(l.piece_size(2).unwrap(), 8);
        assert!(matches!(l.piece_size(3), Err(StorageError::BadPiece(3))));
    }

    #[test]
    fn exact_multiple_has_full_last_piece() {
        let l = Layout::new(&meta(16, &[("a", 32, false)]));
        assert_eq!(l.piece_count(), 2);
        assert_eq!(l.piece_size(1).unwrap(), 16);
    }

    #[test]
    fn block_validation() {
        let l = Layout::new(&meta(16, &[("a", 40, false)]));
        assert!(l.check_block(0, 0, 16).is_ok());
        assert!(l.check_block(2, 4, 4).is_ok());
        assert!(matches!(l.check_block(2, 4, 5), Err(StorageError::BadBlock { index: 2, begin: 4, length: 5 })));
        assert!(matches!(l.check_block(0, 0, 0), Err(StorageError::BadBlock { .. })));
        assert!(matches!(l.check_block(0, u32::MAX, 2), Err(StorageError::BadBlock { .. })));
        assert!(matches!(l.check_block(9, 0, 1), Err(StorageError::BadPiece(9))));
        assert!(matches!(l.segments(0, 16, 1), Err(StorageError::BadBlock { .. })));
    }

    #[test]
    fn piece_spanning_three_files() {
        // a: 0..10, b: 10..14, c: 14..30; piece 0 = 0..16.
        let l = Layout::new(&meta(16, &[("a", 10, false), ("b", 4, false), ("c", 16, false)]));
        assert_eq!(l.piece_segments(0).unwrap(), vec![seg(0, 0, 10), seg(1, 0, 4), seg(2, 0, 2)]);
        assert_eq!(l.piece_segments(1).unwrap(), vec![seg(2, 2, 14)]);
        // A block starting inside a, ending inside c.
        assert_eq!(l.segments(0, 8, 7).unwrap(), vec![seg(0, 8, 2), seg(1, 0, 4), seg(2, 0, 1)]);
    }

    #[test]
    fn file_inside_one_piece() {
        // a: 0..5, b: 5..8 (inside piece 0), c: 8..40.
        let l = Layout::new(&meta(16, &[("a", 5, false), ("b", 3, false), ("c", 32, false)]));
        assert_eq!(l.piece_segments(0).unwrap(), vec![seg(0, 0, 5), seg(1, 0, 3), seg(2, 0, 8)]);
        assert_eq!(l.segments(0, 5, 3).unwrap(), vec![seg(1, 0, 3)]);
        assert_eq!(l.piece_segments(2).unwrap(), vec![seg(2, 24, 8)]);
    }

    #[test]
    fn blocks_ending_and_starting_exactly_at_boundaries() {
        let l = Layout::new(&meta(16, &[("a", 8, false), ("b", 8, false), ("c", 8, false)]));
        assert_eq!(l.segments(0, 0, 8).unwrap(), vec![seg(0, 0, 8)]);
        assert_eq!(l.segments(0, 8, 8).unwrap(), vec![seg(1, 0, 8)]);
        assert_eq!(l.segments(1, 0, 8).unwrap(), vec![seg(2, 0, 8)]);
        assert_eq!(l.segments(0, 7, 2).unwrap(), vec![seg(0, 7, 1), seg(1, 0, 1)]);
    }

    #[test]
    fn zero_length_files_are_never_segments() {
        let l = Layout::new(&meta(
            16,
            &[
                ("z0", 0, false),
                ("a", 10, false),
                ("z1", 0, false),
                ("z2", 0, false),
                ("b", 10, false),
                ("z3", 0, false),
            ],
        ));
        assert_eq!(l.piece_count(), 2);
        assert_eq!(l.piece_segments(0).unwrap(), vec![seg(1, 0, 10), seg(4, 0, 6)]);
        assert_eq!(l.piece_segments(1).unwrap(), vec![seg(4, 6, 4)]);
        // A block starting exactly where the zero-length files sit.
        assert_eq!(l.segments(0, 10, 2).unwrap(), vec![seg(4, 0, 2)]);
    }

    #[test]
    fn padding_segments_are_marked() {
        // a: 0..10, pad: 10..16, b: 16..26 — the BEP 47 shape (b aligned to a piece).
        let l = Layout::new(&meta(16, &[("a", 10, false), (".pad", 6, true), ("b", 10, false)]));
        let p0 = l.piece_segments(0).unwrap();
        assert_eq!(p0, vec![seg(0, 0, 10), Segment { file: 1, file_offset: 0, len: 6, padding: true }]);
        assert_eq!(l.piece_segments(1).unwrap(), vec![seg(2, 0, 10)]);
        assert!(l.is_padding(1));
        assert!(!l.is_padding(2));
    }

    #[test]
    fn empty_torrent_has_no_pieces() {
        let l = Layout::new(&meta(16, &[("z", 0, false)]));
        assert_eq!(l.piece_count(), 0);
        assert!(matches!(l.piece_size(0), Err(StorageError::BadPiece(0))));
    }

    #[test]
    fn selected_pieces_want_selected_data_and_mark_shared_pieces() {
        // Pieces of 16: a = 0..20, pad = 20..32, b = 32..40, c = 40..70 (pieces 0..=4).
        let l = Layout::new(&meta(16, &[("a", 20, false), ("pad", 12, true), ("b", 8, false), ("c", 30, false)]));
        let bits = |w: &BitVec<u8, Msb0>| w.iter().map(|b| *b as u8).collect::<Vec<_>>();
        // Only a: pieces 0 and 1 (piece 1 is a's tail and padding, so nothing is shared).
        let (w, s) = l.selected_pieces(&[true, false, false, false]);
        assert_eq!((bits(&w), s), (vec![1, 1, 0, 0, 0], vec![]));
        // Only b: piece 2 holds b and the start of c.
        let (w, s) = l.selected_pieces(&[false, false, true, false]);
        assert_eq!((bits(&w), s), (vec![0, 0, 1, 0, 0], vec![2]));
        // Only c: pieces 2..=4, piece 2 shared with b.
        let (w, s) = l.selected_pieces(&[false, false, false, true]);
        assert_eq!((bits(&w), s), (vec![0, 0, 1, 1, 1], vec![2]));
        let (w, s) = l.selected_pieces(&[true; 4]);
        assert_eq!((bits(&w), s), (vec![1; 5], vec![]));
    }
}
