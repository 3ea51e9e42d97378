//! The PeerManager's decisions, as plain synchronous structs the torrent task owns:
//!
//! - [`pool`]: which peers are known, queued, being dialled and connected, with the bounds,
//!   backoff and bans (O(log n) per operation);
//! - [`bans`]: the bounded ban lists and what counts as one IP ([`ip_key`](crate::types::ip_key));
//! - [`evict`]: which useless connected peer to let go when a slot is needed;
//! - [`scoring`]: the rarity-weighted peer score that orders dialling, eviction and block
//!   hand-out;
//! - [`scarce`]: scarce pieces offered to the best-scored peer that has them;
//! - [`choker`]: tit-for-tat upload slots with an optimistic unchoke;
//! - [`share`]: the upload limit split among the unchoked peers by what each gives us;
//! - [`superseed`]: BEP 16 super-seeding, the pieces a seeder tells each peer of.
//!
//! None of them does I/O or reads the clock: `now` is an argument, so each is unit-tested
//! in its own file.
pub mod bans;
pub mod choker;
pub mod evict;
pub mod pool;
pub mod scarce;
pub mod scoring;
pub mod share;
pub mod superseed;

pub use choker::{ChokeCandidate, Choker};
pub use evict::{pick_victim, EvictFacts, EvictPolicy};
pub use pool::{quick_retry_wait, Pool, PoolLimits, PoolStats, Refusal};
pub use scoring::{score, ScoreInputs, ScoreParts, ScoreScale};
