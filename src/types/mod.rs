//! The crate's vocabulary: the small value types every layer speaks, kept in one room so
//! that no layer has to reach into another's module for them. A leaf: it imports nothing
//! from the rest of the crate.
//!
//! - [`peer`]: [`PeerAddr`] (how a peer is reached), [`PeerKey`] (a connection of a torrent)
//!   and [`ip_key`] (the host an address counts against in per-IP bounds);
//! - [`piece`]: [`PieceIndex`], [`BlockRef`] and [`Geometry`], the one place piece and block
//!   sizes are computed.
pub mod peer;
pub mod piece;

pub use peer::{ip_key, PeerAddr, PeerKey};
pub use piece::{BlockRef, Geometry, PieceIndex, BLOCK_SIZE};
