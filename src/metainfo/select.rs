//! File selection (BEP 53): which files of a torrent to download, from `--only 0,2-3` or a
//! magnet's `so=`.
//!
//! Indices are positions in the info dictionary's file list (padding files count), as
//! `shoal info` numbers them. A selection is checked against the torrent once, here: an index
//! past the last file, or a selection holding no data (only padding or empty files), is an
//! error naming it, so the engine below only ever sees one flag per file.
use super::FileEntry;
use std::ops::RangeInclusive;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("file {index} does not exist (the torrent has {count} files, numbered from 0)")]
    NoSuchFile { index: u32, count: usize },
    #[error("the selection holds no data (only empty or padding files)")]
    Empty,
}

/// One flag per file (a torrent's `files`, in order): true for the files the ranges name.
pub fn select_files(files: &[FileEntry], ranges: &[RangeInclusive<u32>]) -> Result<Vec<bool>, SelectError> {
    let count = files.len();
    if let Some(r) = ranges.iter().find(|r| *r.end() as usize >= count) {
        let index = if (*r.start() as usize) < count { count as u32 } else { *r.start() };
        return Err(SelectError::NoSuchFile { index, count });
    }
    let selected: Vec<bool> = (0..count as u32).map(|i| ranges.iter().any(|r| r.contains(&i))).collect();
    let has_data = files.iter().zip(&selected).any(|(f, s)| *s && !f.padding && f.length > 0);
    if has_data {
        Ok(selected)
    } else {
        Err(SelectError::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files of the given `(name, length, padding)`, in order.
    fn files(list: &[(&str, u64, bool)]) -> Vec<FileEntry> {
        let mut offset = 0;
        list.iter()
            .map(|&(name, length, padding)| {
                offset += length;
                FileEntry { path: vec![name.into()], length, offset: offset - length, padding }
            })
            .collect()
    }

    #[test]
    fn ranges_become_one_flag_per_file() {
        let m = files(&[("a", 10, false), ("pad", 6, true), ("b", 0, false), ("c", 5, false)]);
        assert_eq!(select_files(&m, &[0..=0, 3..=3]), Ok(vec![true, false, false, true]));
        assert_eq!(select_files(&m, &[0..=3]), Ok(vec![true; 4]));
    }

    #[test]
    fn an_index_past_the_end_is_named() {
        let m = files(&[("a", 10, false), ("b", 5, false)]);
        assert_eq!(select_files(&m, &[0..=0, 7..=9]), Err(SelectError::NoSuchFile { index: 7, count: 2 }));
        assert_eq!(select_files(&m, &[1..=4]), Err(SelectError::NoSuchFile { index: 2, count: 2 }));
        // A range far past the end is refused without walking it.
        assert_eq!(select_files(&m, &[0..=u32::MAX]), Err(SelectError::NoSuchFile { index: 2, count: 2 }));
    }

    #[test]
    fn a_selection_without_data_is_refused() {
        let m = files(&[("a", 10, false), ("pad", 6, true), ("empty", 0, false)]);
        assert_eq!(select_files(&m, &[1..=2]), Err(SelectError::Empty));
    }
}
