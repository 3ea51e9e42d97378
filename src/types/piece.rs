//! Pieces and blocks: the one [`Geometry`] every layer asks for piece sizes, block counts
//! and whether a block a peer names lies inside the torrent.

/// A piece's position in the torrent (0-based).
pub type PieceIndex = u32;

/// Bytes per block we request: every mainstream client asks for 16 KiB blocks.
pub const BLOCK_SIZE: u32 = 16 * 1024;

/// One block of one piece. Blocks a peer names are made through [`Geometry::block_in`],
/// which refuses any that does not lie inside the torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockRef {
    pub piece: PieceIndex,
    pub begin: u32,
    pub length: u32,
}

/// How a torrent's bytes are cut: `piece_count` pieces of `piece_length`, the last one
/// possibly short, each cut into blocks of `block_size` (the last one possibly short).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    piece_length: u32,
    total_length: u64,
    piece_count: u32,
    block_size: u32,
}

impl Geometry {
    /// The geometry of `total_length` bytes in pieces of `piece_length` (> 0; metainfo
    /// validation guarantees it, and that the piece count fits a `u32`).
    pub fn new(piece_length: u32, total_length: u64) -> Geometry {
        let piece_length = piece_length.max(1);
        let piece_count = u32::try_from(total_length.div_ceil(u64::from(piece_length))).unwrap_or(u32::MAX);
        Geometry { piece_length, total_length, piece_count, block_size: BLOCK_SIZE }
    }

    /// The same pieces cut into blocks of another size (tests use small blocks).
    pub fn with_block_size(mut self, block_size: u32) -> Geometry {
        self.block_size = block_size.max(1);
        self
    }

    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Where piece `index` starts in the torrent's byte stream.
    pub fn piece_offset(&self, index: PieceIndex) -> u64 {
        u64::from(index) * u64::from(self.piece_length)
    }

    /// Length of piece `index` (the last one may be short); `None` when out of range.
    pub fn piece_size(&self, index: PieceIndex) -> Option<u32> {
        if index >= self.piece_count {
            return None;
        }
        let left = self.total_length - self.piece_offset(index);
        // Fits: bounded by piece_length, a u32.
        Some(left.min(u64::from(self.piece_length)) as u32)
    }

    /// Blocks in piece `index` (0 when out of range).
    pub fn blocks_in(&self, index: PieceIndex) -> u32 {
        self.piece_size(index).map_or(0, |s| s.div_ceil(self.block_size))
    }

    /// Block `block` of piece `index`, as we request it. The caller keeps `index` in range
    /// and `block` below `blocks_in(index)`.
    pub fn block(&self, index: PieceIndex, block: u32) -> BlockRef {
        let size = self.piece_size(index).unwrap_or(0);
        let begin = block * self.block_size;
        BlockRef { piece: index, begin, length: size.saturating_sub(begin).min(self.block_size) }
    }

    /// The block `begin..begin+length` of piece `index` if it is non-empty and lies inside the
    /// piece: every block a peer names passes here before anything else looks at it.
    pub fn block_in(&self, index: PieceIndex, begin: u32, length: u32) -> Option<BlockRef> {
        let size = self.piece_size(index)?;
        let end = u64::from(begin) + u64::from(length);
        (length > 0 && end <= u64::from(size)).then_some(BlockRef { piece: index, begin, length })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_last_piece_and_its_blocks() {
        let g = Geometry::new(64 * 1024, 3 * 64 * 1024 + 20_000);
        assert_eq!(g.piece_count(), 4);
        assert_eq!(g.piece_size(2), Some(64 * 1024));
        assert_eq!(g.piece_size(3), Some(20_000));
        assert_eq!(g.piece_size(4), None);
        assert_eq!(g.blocks_in(0), 4);
        assert_eq!(g.blocks_in(3), 2);
        assert_eq!(g.block(3, 1), BlockRef { piece: 3, begin: 16_384, length: 20_000 - 16_384 });
        assert_eq!(g.piece_offset(3), 3 * 64 * 1024);
    }

    #[test]
    fn exact_multiple_has_a_full_last_piece_and_empty_has_none() {
        let g = Geometry::new(32 * 1024, 4 * 32 * 1024);
        assert_eq!(g.piece_count(), 4);
        assert_eq!(g.piece_size(3), Some(32 * 1024));
        let empty = Geometry::new(32 * 1024, 0);
        assert_eq!(empty.piece_count(), 0);
        assert_eq!(empty.piece_size(0), None);
        assert_eq!(empty.blocks_in(0), 0);
    }

    #[test]
    fn a_named_block_must_be_non_empty_and_inside_its_piece() {
        let g = Geometry::new(64 * 1024, 100_000);
        assert!(g.block_in(0, 0, 16_384).is_some());
        assert!(g.block_in(1, 100_000 - 65_536 - 1, 1).is_some(), "the last byte of the short piece");
        assert!(g.block_in(1, 100_000 - 65_536, 1).is_none(), "one past the end");
        assert!(g.block_in(0, 0, 0).is_none(), "empty");
        assert!(g.block_in(2, 0, 1).is_none(), "piece out of range");
        assert!(g.block_in(0, u32::MAX, 2).is_none(), "begin + length overflows u32");
    }

    #[test]
    fn block_size_can_be_changed() {
        let g = Geometry::new(10, 25).with_block_size(4);
        assert_eq!(g.blocks_in(0), 3);
        assert_eq!(g.block(2, 1), BlockRef { piece: 2, begin: 4, length: 1 });
    }
}
