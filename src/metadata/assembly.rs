//! One peer's copy of the info dict being put together: which pieces to ask for next (a
//! small window), where each piece goes, and the final SHA-1 check against the info-hash.
//!
//! Pure: no I/O, no clock. The buffer is allocated once, at the size the peer announced,
//! which the caller has already bounded (`wire::metadata::size_ok`) and paid for from the
//! fetch's byte budget.
use crate::metainfo::InfoHash;
use crate::wire::metadata::{piece_count, piece_range};
use bytes::Bytes;

/// Requests outstanding to one peer at a time (libtorrent keeps a handful too).
pub const WINDOW: usize = 4;

/// Why a peer's pieces cannot be believed; the peer is banned from metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("sent metadata piece {0}, which we did not ask for")]
    Unrequested(u32),
    #[error("sent total_size {got}, but its handshake announced {announced}")]
    SizeChanged { got: u64, announced: u64 },
    #[error("sent metadata that fails the info-hash check")]
    WrongHash,
}

#[derive(Debug)]
pub struct Assembly {
    size: u64,
    buf: Vec<u8>,
    received: Vec<bool>,
    missing: u32,
    next: u32,
    outstanding: Vec<u32>,
}

impl Assembly {
    /// An empty copy of a dict of `size` bytes (bounded by the caller).
    pub fn new(size: u64) -> Assembly {
        let n = piece_count(size);
        Assembly {
            size,
            buf: vec![0; size as usize],
            received: vec![false; n as usize],
            missing: n,
            next: 0,
            outstanding: Vec::new(),
        }
    }

    /// The pieces to ask for now, to fill the window.
    pub fn requests(&mut self) -> Vec<u32> {
        let mut out = Vec::new();
        while self.outstanding.len() < WINDOW && self.next < piece_count(self.size) {
            out.push(self.next);
            self.outstanding.push(self.next);
            self.next += 1;
        }
        out
    }

    /// Stores a piece (its length was checked against `total_size` by the codec).
    pub fn on_data(&mut self, piece: u32, total_size: u64, data: &[u8]) -> Result<(), AssemblyError> {
        if total_size != self.size {
            return Err(AssemblyError::SizeChanged { got: total_size, announced: self.size });
        }
        let Some(at) = self.outstanding.iter().position(|p| *p == piece) else {
            return Err(AssemblyError::Unrequested(piece));
        };
        self.outstanding.swap_remove(at);
        let range = piece_range(self.size, piece).ok_or(AssemblyError::Unrequested(piece))?;
        self.buf[range].copy_from_slice(data);
        if !std::mem::replace(&mut self.received[piece as usize], true) {
            self.missing -= 1;
        }
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }

    /// Pieces received so far, and in all.
    pub fn progress(&self) -> (u32, u32) {
        (piece_count(self.size) - self.missing, piece_count(self.size))
    }

    /// The whole dict, if its SHA-1 is the info-hash.
    pub fn finish(self, info_hash: InfoHash) -> Result<Bytes, AssemblyError> {
        if InfoHash::of_info(&self.buf) == info_hash {
            Ok(Bytes::from(self.buf))
        } else {
            Err(AssemblyError::WrongHash)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::metadata::METADATA_PIECE;

    fn dict(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 7) as u8).collect()
    }

    fn fill(a: &mut Assembly, d: &[u8], size: u64) {
        while !a.is_complete() {
            for p in a.requests() {
                let r = piece_range(size, p).unwrap();
                a.on_data(p, size, &d[r]).unwrap();
            }
        }
    }

    #[test]
    fn assembles_in_a_window_and_verifies() {
        let size = 9 * METADATA_PIECE + 5;
        let d = dict(size);
        let mut a = Assembly::new(size as u64);
        let first = a.requests();
        assert_eq!(first, vec![0, 1, 2, 3]);
        assert!(a.requests().is_empty(), "the window is full");
        assert_eq!(a.progress(), (0, 10));
        for p in first {
            a.on_data(p, size as u64, &d[piece_range(size as u64, p).unwrap()]).unwrap();
        }
        assert_eq!(a.progress(), (4, 10));
        fill(&mut a, &d, size as u64);
        assert_eq!(a.finish(InfoHash::of_info(&d)).unwrap(), d);
    }

    #[test]
    fn wrong_bytes_fail_the_hash() {
        let d = dict(100);
        let mut a = Assembly::new(100);
        fill(&mut a, &[0u8; 100], 100);
        assert_eq!(a.finish(InfoHash::of_info(&d)), Err(AssemblyError::WrongHash));
    }

    #[test]
    fn unrequested_and_resized_pieces_are_refused() {
        let mut a = Assembly::new(40_000);
        assert_eq!(a.on_data(0, 40_000, &[0; METADATA_PIECE]), Err(AssemblyError::Unrequested(0)));
        a.requests();
        let e = a.on_data(0, 50_000, &[0; METADATA_PIECE]);
        assert_eq!(e, Err(AssemblyError::SizeChanged { got: 50_000, announced: 40_000 }));
        a.on_data(0, 40_000, &[0; METADATA_PIECE]).unwrap();
        assert_eq!(a.on_data(0, 40_000, &[0; METADATA_PIECE]), Err(AssemblyError::Unrequested(0)), "twice");
    }
}
