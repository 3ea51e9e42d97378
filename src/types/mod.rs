//! The crate's vocabulary: the small value types every layer speaks, kept in one room so
//! that no layer has to reach into another's module for them. A leaf: it imports nothing
//! from the rest of the crate.
//!
//! - [`peer`]: [`PeerAddr`] (how a peer is reached), [`PeerKey`] (a connection of a torrent),
//!   [`ip_key`] (the host an address counts against in per-IP bounds) and
//!   [`parse_key_peer`] (a `key_peers` entry);
//! - [`piece`]: [`PieceIndex`], [`BlockRef`] and [`Geometry`], the one place piece and block
//!   sizes are computed;
//! - [`slots`]: [`Slots`], inbound connections bounded in all and per source.
pub mod peer;
pub mod piece;
pub mod slots;

pub use peer::{ip_key, parse_key_peer, PeerAddr, PeerKey, PeerSource};
pub use piece::{BlockRef, Geometry, PieceIndex, BLOCK_SIZE};
pub use slots::{Busy, SlotPermit, Slots};
