//! The PeerManager's decisions, as plain synchronous structs the torrent task owns:
//!
//! - [`pool`]: which peers are known, queued, being dialled and connected, with the bounds,
//!   backoff and bans;
//! - [`scoring`]: the rarity-weighted peer score that orders dialling, eviction and block
//!   hand-out;
//! - [`choker`]: tit-for-tat upload slots with an optimistic unchoke.
//!
//! None of them does I/O or reads the clock: `now` is an argument, so each is unit-tested
//! in its own file.
pub mod choker;
pub mod pool;
pub mod scoring;

pub use choker::{ChokeCandidate, Choker};
pub use pool::{PeerAddr, Pool, PoolLimits, PoolStats};
pub use scoring::{score, ScoreInputs, ScoreParts, ScoreScale};
