//! Piece assembly: the blocks of each piece in progress copied into one buffer, and who
//! sent each block (for smart ban).
//!
//! A buffer ([`PieceBuf`]) is taken when a piece's first block arrives and is frozen when the
//! piece is complete and handed to storage. How many pieces may be in progress at once is the
//! picker's bound (`Picker::set_max_partial`), set by the torrent from `max_assembly_bytes`
//! and the memory each buffer takes, so these buffers never hold more than that.
use super::piece_buf::{Frozen, PieceBuf};
use crate::types::PeerAddr;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Spare buffers are freed after this long without a block, so a download that stalls does
/// not hold them until it completes (a daemon may keep many stalled torrents).
pub const SPARE_IDLE: Duration = Duration::from_secs(30);

struct Partial {
    buf: PieceBuf,
    /// The piece's size: the first bytes of `buf` that are its.
    size: usize,
    /// Sender of each block, by block index.
    senders: Vec<Option<PeerAddr>>,
}

/// A complete piece: its bytes and the sender of each block.
pub struct Finished {
    pub data: Bytes,
    pub senders: Vec<PeerAddr>,
}

pub struct Assembly {
    block_size: u32,
    pieces: HashMap<u32, Partial>,
    /// Memory of the buffers in `pieces`.
    bytes: usize,
    /// Buffers of complete pieces, kept for the next pieces: those storage still reads, and
    /// free ones. A fresh buffer costs zeroing and a page fault per page. Their old bytes are
    /// never read: a piece is taken only once every block of it was copied in.
    spare: Vec<Frozen>,
    /// Memory the spare buffers may take: the assembly bound. Buffers in progress and spare
    /// ones together stay within twice it, and a download maps its buffers once.
    max_spare_bytes: usize,
    /// Blocks added so far; and that count, and when, as [`Assembly::tick`] last saw it change.
    added: u64,
    last_added: (u64, Instant),
}

impl Assembly {
    /// How many pieces may be in progress at once so that their buffers (each held until its
    /// piece is verified; see [`PieceBuf::footprint`]) stay within `max_bytes`; never fewer
    /// than two, so a torrent with huge pieces still downloads.
    pub fn max_pieces(max_bytes: usize, piece_length: u32) -> usize {
        (max_bytes / PieceBuf::footprint(piece_length.max(1) as usize)).max(2)
    }

    /// Piece buffers of `block_size` blocks; up to `max_bytes` of buffers of written pieces are
    /// kept for reuse.
    pub fn new(block_size: u32, max_bytes: usize) -> Assembly {
        Assembly {
            block_size,
            pieces: HashMap::new(),
            bytes: 0,
            spare: Vec::new(),
            max_spare_bytes: max_bytes,
            added: 0,
            last_added: (0, Instant::now()),
        }
    }

    /// Copies a block into its piece's buffer. The caller checked that the block lies
    /// inside a piece of `piece_size` bytes and starts on a block boundary.
    pub fn add(&mut self, piece: u32, piece_size: u32, begin: u32, data: &[u8], from: &PeerAddr) {
        let blocks = piece_size.div_ceil(self.block_size) as usize;
        let p = self.pieces.entry(piece).or_insert_with(|| {
            let size = piece_size as usize;
            let buf = reuse(&mut self.spare, size).unwrap_or_else(|| PieceBuf::new(size));
            self.bytes += buf.capacity();
            Partial { buf, size, senders: vec![None; blocks] }
        });
        self.added += 1;
        let start = begin as usize;
        p.buf.as_mut_slice()[start..start + data.len()].copy_from_slice(data);
        if let Some(s) = p.senders.get_mut(start / self.block_size as usize) {
            *s = Some(*from);
        }
    }

    /// Takes a complete piece out. Its buffer is kept for a later piece (if the spare ones
    /// fit the bound) and reused once every clone of `data` is dropped.
    pub fn take(&mut self, piece: u32) -> Option<Finished> {
        let p = self.pieces.remove(&piece)?;
        self.bytes -= p.buf.capacity();
        let senders = p.senders.into_iter().flatten().collect();
        let (data, frozen) = p.buf.freeze(p.size);
        let held: usize = self.spare.iter().map(Frozen::capacity).sum();
        if held + frozen.capacity() <= self.max_spare_bytes {
            self.spare.push(frozen);
        }
        Some(Finished { data, senders })
    }

    /// Called on the torrent's tick: frees the spare buffers once no block has come for
    /// [`SPARE_IDLE`]. (Pieces in progress keep theirs: they hold blocks received.)
    pub fn tick(&mut self, now: Instant) {
        if self.added != self.last_added.0 {
            self.last_added = (self.added, now);
        } else if now.saturating_duration_since(self.last_added.1) >= SPARE_IDLE && !self.spare.is_empty() {
            tracing::debug!(
                bytes = self.spare.iter().map(Frozen::capacity).sum::<usize>(),
                "stalled: spare buffers freed"
            );
            self.drop_spare();
        }
    }

    /// Frees the spare buffers (the download is complete: no piece will need them).
    pub fn drop_spare(&mut self) {
        self.spare = Vec::new();
    }

    /// Bytes held in buffers of pieces in progress.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A spare buffer of at least `size` bytes that storage no longer reads.
fn reuse(spare: &mut Vec<Frozen>, size: usize) -> Option<PieceBuf> {
    let i = spare.iter().position(|b| b.capacity() >= size && b.is_free())?;
    spare.swap_remove(i).reclaim().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pieces_in_progress_fit_the_byte_bound_but_never_fewer_than_two() {
        assert_eq!(super::Assembly::max_pieces(32 << 20, 256 << 10), 128);
        assert_eq!(super::Assembly::max_pieces(32 << 20, 16 << 20), 2);
        assert_eq!(super::Assembly::max_pieces(32 << 20, 64 << 20), 2);
        assert_eq!(super::Assembly::max_pieces(0, 0), 2);
        // 1 MiB pieces sit in a huge page each.
        assert_eq!(super::Assembly::max_pieces(6 << 20, 1 << 20), 3);
    }

    use super::*;

    fn peer(n: u8) -> PeerAddr {
        PeerAddr::Tcp(std::net::SocketAddr::from(([127, 0, 0, n], 6881)))
    }

    #[test]
    fn blocks_land_in_place_with_their_senders() {
        let mut a = Assembly::new(4, 1 << 20);
        a.add(2, 10, 4, &[5; 4], &peer(2));
        a.add(2, 10, 0, &[1; 4], &peer(1));
        a.add(2, 10, 8, &[9; 2], &peer(2));
        assert_eq!(a.bytes(), PieceBuf::footprint(10));
        let f = a.take(2).unwrap();
        assert_eq!(&f.data[..], &[1, 1, 1, 1, 5, 5, 5, 5, 9, 9]);
        assert_eq!(f.senders, vec![peer(1), peer(2), peer(2)]);
        assert_eq!(a.bytes(), 0);
        assert!(a.take(2).is_none());
    }

    #[test]
    fn a_buffer_is_reused_only_once_storage_dropped_every_view_of_it() {
        let mut a = Assembly::new(4, 1 << 20);
        a.add(0, 8, 0, &[1; 4], &peer(1));
        a.add(0, 8, 4, &[2; 4], &peer(1));
        let first = a.take(0).unwrap().data;
        let ptr = first.as_ptr();
        let held = first.clone();
        drop(first);
        a.add(1, 4, 0, &[9; 4], &peer(1));
        let other = a.take(1).unwrap().data;
        assert_ne!(other.as_ptr(), ptr, "a buffer someone still reads is not reused");
        // `other` stays in use to the end, so the only free spare is the first buffer.
        drop(held);
        // The next piece of the same size lands in it, every byte overwritten.
        a.add(2, 8, 4, &[4; 4], &peer(2));
        a.add(2, 8, 0, &[3; 4], &peer(2));
        let second = a.take(2).unwrap().data;
        assert_eq!(second.as_ptr(), ptr);
        assert_eq!(&second[..], &[3, 3, 3, 3, 4, 4, 4, 4]);
        drop(second);
        // A short last piece takes a spare buffer and is only its own bytes.
        a.add(3, 5, 4, &[6], &peer(2));
        a.add(3, 5, 0, &[5; 4], &peer(2));
        let last = a.take(3).unwrap().data;
        assert_eq!(last.as_ptr(), ptr);
        assert_eq!(&last[..], &[5, 5, 5, 5, 6]);
        assert_eq!(&other[..], &[9; 4]);
    }

    #[test]
    fn spare_buffers_stay_within_the_assembly_bound_and_go_when_the_download_is_done() {
        let mut a = Assembly::new(4, 2 * PieceBuf::footprint(8));
        for piece in 0..3 {
            a.add(piece, 8, 0, &[1; 4], &peer(1));
            a.add(piece, 8, 4, &[1; 4], &peer(1));
        }
        let done: Vec<Bytes> = (0..3).map(|p| a.take(p).unwrap().data).collect();
        drop(done);
        assert_eq!(a.spare.len(), 2, "two buffers fit the bound, the third is freed");
        a.drop_spare();
        assert!(a.spare.is_empty());
    }

    #[test]
    fn spare_buffers_go_once_no_block_came_for_the_idle_time() {
        let mut a = Assembly::new(4, 2 * PieceBuf::footprint(8));
        let t0 = Instant::now();
        a.add(0, 4, 0, &[1; 4], &peer(1));
        a.add(5, 4, 0, &[1; 4], &peer(1));
        drop((a.take(0), a.take(5)));
        a.tick(t0 + SPARE_IDLE * 2); // a block came since the last tick: the clock restarts
        a.tick(t0 + SPARE_IDLE * 3 - Duration::from_secs(1));
        assert_eq!(a.spare.len(), 2, "kept: not idle for long enough");
        a.add(1, 8, 0, &[1; 4], &peer(1)); // half of an 8-byte piece, in one of the spares
        a.tick(t0 + SPARE_IDLE * 3);
        a.tick(t0 + SPARE_IDLE * 4 - Duration::from_secs(1));
        assert_eq!(a.spare.len(), 1, "kept: a block came within the idle time");
        a.tick(t0 + SPARE_IDLE * 4);
        assert!(a.spare.is_empty(), "freed after the idle time without a block");
        assert_eq!(a.bytes(), PieceBuf::footprint(8), "the piece in progress keeps its buffer");
    }
}
