//! Fetching a torrent's info dictionary from peers (BEP 9), for a magnet link without its
//! `.torrent`.
//!
//! Given the info-hash and peer addresses (the magnet's `x.pe`, `--peer`, later batches from
//! its trackers), [`fetch`](fetch()) dials peers a few at a time with the usual BEP 3 handshake
//! (extension bit set), reads each one's BEP 10 handshake (`m.ut_metadata`,
//! `metadata_size`), asks for the dict in 16 KiB pieces and keeps the first copy whose SHA-1
//! is the info-hash. [`torrent_file`] then wraps the dict in a `.torrent`, and the download
//! goes on exactly as with a file. Serving metadata to others is not here: the peer task
//! does it (`peer::metadata`).
//!
//! Parts, in reading order:
//! - [`fetch`](fetch()): the coordinator: which peers to ask, the overall deadline, status;
//! - `candidates`: who to ask next, retry delays, bans (pure);
//! - `exchange`: one peer's conversation;
//! - `assembly`: one copy of the dict being filled in and checked (pure);
//! - `torrent_file`: the `.torrent` bytes around a fetched dict.
//!
//! Bounds: a dict over 16 MiB is refused before anything is allocated (the peer is banned
//! from metadata, as is one whose bytes fail the hash or that sends bogus sizes or pieces
//! nobody asked for); at most [`fetch::MAX_PEERS`] peers are asked at once and the copies
//! being filled hold at most [`fetch::BUDGET_BYTES`] between them; every wait is bounded by
//! the idle timeout and the whole fetch by its deadline; at most
//! [`candidates::MAX_KNOWN`] addresses are kept.
mod assembly;
pub mod candidates;
mod exchange;
pub mod fetch;
mod torrent_file;

pub use fetch::{fetch, FetchConfig, FetchStatus};
pub use torrent_file::torrent_file;

use std::time::Duration;

/// Why no metadata was fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("no peer sent the metadata within {} s ({known} peers tried, {banned} banned for lying)", after.as_secs())]
    TimedOut { after: Duration, known: usize, banned: usize },
    #[error("no peers to ask for the metadata (give the magnet an x.pe, --peer or a tracker)")]
    NoPeers,
    #[error("every peer ({banned}) sent wrong metadata")]
    AllLied { banned: usize },
}
