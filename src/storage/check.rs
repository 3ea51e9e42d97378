//! Check: the resume scan that hashes whatever data is already on disk.
//!
//! Pieces touching a missing or too-short file are not read at all and count as not had (no
//! error, nothing created). The piece range is split into contiguous chunks, one per core, each
//! hashed by its own scoped thread so reads stay sequential within a chunk. Runs entirely on
//! the calling (blocking) thread and its scoped children.
use super::files::FileTable;
use super::layout::Layout;
use super::{pieces, StorageError};
use bitvec::order::Msb0;
use bitvec::vec::BitVec;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bitfield of the pieces whose data on disk matches `hashes`, among those flagged in `only`
/// (all when `None`; the others are not read and count as not had); `on_piece` gets the
/// running count of pieces checked or skipped (from any of the worker threads).
pub fn check_pieces(
    layout: &Layout,
    files: &FileTable,
    hashes: &[[u8; 20]],
    only: Option<&BitVec<u8, Msb0>>,
    on_piece: &(dyn Fn(u32) + Send + Sync),
) -> Result<BitVec<u8, Msb0>, StorageError> {
    let count = layout.piece_count();
    let mut have = BitVec::<u8, Msb0>::repeat(false, count as usize);
    if count == 0 {
        return Ok(have);
    }
    let disk_lengths = (0..layout.file_count())
        .map(|f| if layout.is_padding(f) { Ok(None) } else { files.disk_length(f) })
        .collect::<Result<Vec<_>, _>>()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(count as usize) as u32;
    let chunk = count.div_ceil(threads);
    let checked = AtomicU32::new(0);
    let scan = |from: u32, to: u32| -> Result<Vec<u32>, StorageError> {
        let mut buf = vec![0u8; layout.piece_length() as usize];
        let mut had = Vec::new();
        for index in from..to {
            if only.is_some_and(|o| !o[index as usize]) {
                on_piece(checked.fetch_add(1, Ordering::Relaxed) + 1);
                continue;
            }
            let size = layout.piece_size(index)? as usize;
            let present = layout
                .piece_segments(index)?
                .iter()
                .all(|s| s.padding || disk_lengths[s.file].is_some_and(|len| len >= s.file_offset + u64::from(s.len)));
            if present
                && pieces::read(layout, files, index, &mut buf[..size])?
                && pieces::hash_matches(&buf[..size], &hashes[index as usize])
            {
                had.push(index);
            }
            on_piece(checked.fetch_add(1, Ordering::Relaxed) + 1);
        }
        Ok(had)
    };
    let results: Vec<Result<Vec<u32>, StorageError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (from, to) = ((t * chunk).min(count), ((t + 1) * chunk).min(count));
                let scan = &scan;
                s.spawn(move || scan(from, to))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    for result in results {
        for index in result? {
            have.set(index as usize, true);
        }
    }
    Ok(have)
}
