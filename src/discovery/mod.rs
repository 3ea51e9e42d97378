//! Peer discovery: everything that turns a torrent into peer addresses.
//!
//! Discovery only hands over addresses to the torrent's peer manager; it never opens peer
//! connections itself.
//!
//! - [`tracker`]: BEP 3 HTTP and BEP 15 UDP tracker clients, BEP 12 tiers and the announcer task;
//! - [`schedule`]: when the next DHT lookup is due (backoff, resets, cool-down);
//! - [`dht`]: the per-torrent task that provides and looks up the torrent in the Kademlia DHT;
//! - [`mainline`]: the per-torrent task that looks up and announces the torrent in the
//!   mainline DHT (BEP 5), on the same schedule.
pub mod dht;
pub mod mainline;
pub mod schedule;
pub mod tracker;
