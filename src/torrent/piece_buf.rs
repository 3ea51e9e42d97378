//! Piece buffers: memory of their own, 4 KiB-aligned for direct writes, and for pieces of
//! half a huge page or more, mapped in whole 2 MiB units that the kernel is asked to back
//! with transparent huge pages (`MADV_HUGEPAGE`).
//!
//! Why huge pages: a direct write pins and describes every page of its buffer, and a 1 MiB
//! piece is 256 pages of 4 KiB but one huge page. In the harness (1 GiB from one libtorrent
//! seeder) the leecher's system time fell from 0.7–1.7 s to 0.5–0.7 s with them
//! (`docs/performance-log.md`). Smaller pieces would leave more than half of their mapping
//! unused, so they stay on the heap.
//!
//! A [`PieceBuf`] is writable and has one owner. [`PieceBuf::freeze`] turns it into
//! [`Bytes`] views for storage and a [`Frozen`] handle, which becomes a `PieceBuf` again once
//! every view is dropped.
use crate::storage::DIRECT_ALIGN;
use bytes::Bytes;
use memmap2::{Advice, MmapMut, MmapOptions};
use std::sync::Arc;

/// The size of a transparent huge page on x86-64 and most arm64 kernels.
pub const HUGE_PAGE: usize = 2 << 20;

enum Mem {
    /// An anonymous mapping, a whole number of huge pages long.
    Map(MmapMut),
    /// Heap memory; the buffer starts at `start`, the first 4 KiB boundary in it.
    Heap { buf: Box<[u8]>, start: usize },
}

impl Mem {
    fn as_slice(&self) -> &[u8] {
        match self {
            Mem::Map(m) => m,
            Mem::Heap { buf, start } => &buf[*start..*start + buf.len() - DIRECT_ALIGN],
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            Mem::Map(m) => m,
            Mem::Heap { buf, start } => {
                let end = *start + buf.len() - DIRECT_ALIGN;
                &mut buf[*start..end]
            }
        }
    }
}

/// A writable piece buffer (zeroed when new; a reused one holds its last piece's bytes).
pub struct PieceBuf(Mem);

/// A frozen piece buffer: read through [`Bytes`] views, reusable once they are all dropped.
pub struct Frozen(Arc<Mem>);

/// What a [`Bytes`] view owns: the buffer, and how much of it is the piece.
struct View(Arc<Mem>, usize);

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        &self.0.as_slice()[..self.1]
    }
}

impl PieceBuf {
    /// Bytes of memory a buffer for a piece of `size` bytes takes: whole huge pages from half
    /// a huge page up, else the piece rounded up to 4 KiB.
    pub fn footprint(size: usize) -> usize {
        match size >= HUGE_PAGE / 2 {
            true => size.next_multiple_of(HUGE_PAGE),
            false => size.next_multiple_of(DIRECT_ALIGN),
        }
    }

    /// A zeroed buffer of at least `size` bytes ([`PieceBuf::footprint`] of them). If the
    /// kernel refuses the mapping, the heap serves.
    pub fn new(size: usize) -> PieceBuf {
        let len = PieceBuf::footprint(size);
        if len.is_multiple_of(HUGE_PAGE) {
            match MmapOptions::new().len(len).map_anon() {
                Ok(map) => {
                    // Advice only: without huge pages the buffer works the same.
                    if let Err(e) = map.advise(Advice::HugePage) {
                        tracing::debug!(error = %e, "piece buffer: no huge pages");
                    }
                    return PieceBuf(Mem::Map(map));
                }
                Err(e) => tracing::debug!(error = %e, len, "piece buffer: mapping refused, using the heap"),
            }
        }
        let buf = vec![0u8; len + DIRECT_ALIGN].into_boxed_slice();
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        PieceBuf(Mem::Heap { buf, start })
    }

    /// Usable bytes.
    pub fn capacity(&self) -> usize {
        self.0.as_slice().len()
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }

    /// Its first `len` bytes as [`Bytes`], and the handle to take the buffer back later.
    pub fn freeze(self, len: usize) -> (Bytes, Frozen) {
        let mem = Arc::new(self.0);
        let len = len.min(mem.as_slice().len());
        (Bytes::from_owner(View(mem.clone(), len)), Frozen(mem))
    }
}

impl Frozen {
    /// Usable bytes.
    pub fn capacity(&self) -> usize {
        self.0.as_slice().len()
    }

    /// Whether no [`Bytes`] view of it is left.
    pub fn is_free(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    /// The writable buffer, if no view of it is left.
    pub fn reclaim(self) -> Result<PieceBuf, Frozen> {
        Arc::try_unwrap(self.0).map(PieceBuf).map_err(Frozen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_pieces_take_whole_huge_pages_and_small_ones_4_kib_units() {
        assert_eq!(PieceBuf::footprint(1 << 20), HUGE_PAGE);
        assert_eq!(PieceBuf::footprint((2 << 20) + 1), 2 * HUGE_PAGE);
        assert_eq!(PieceBuf::footprint(4 << 20), 4 << 20);
        assert_eq!(PieceBuf::footprint((512 << 10) + 1), (512 << 10) + DIRECT_ALIGN);
        assert_eq!(PieceBuf::footprint(16 << 10), 16 << 10);
    }

    #[test]
    fn buffers_are_aligned_zeroed_and_come_back_once_every_view_is_gone() {
        for size in [10_000, 1 << 20] {
            let mut b = PieceBuf::new(size);
            assert_eq!(b.capacity(), PieceBuf::footprint(size));
            assert!(b.as_mut_slice().iter().all(|&x| x == 0));
            assert_eq!(b.as_mut_slice().as_ptr() as usize % DIRECT_ALIGN, 0, "aligned for direct writes");
            b.as_mut_slice()[..3].copy_from_slice(&[7, 8, 9]);
            let (view, frozen) = b.freeze(3);
            assert_eq!(&view[..], &[7, 8, 9]);
            let copy = view.clone();
            drop(view);
            assert!(!frozen.is_free(), "a clone still reads it");
            let frozen = frozen.reclaim().err().expect("a view is left");
            drop(copy);
            assert!(frozen.is_free());
            let mut again = frozen.reclaim().ok().expect("no view is left");
            assert_eq!(&again.as_mut_slice()[..3], &[7, 8, 9], "the same memory");
        }
    }
}
