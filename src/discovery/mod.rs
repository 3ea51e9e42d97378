//! Peer discovery: everything that turns a torrent into peer addresses.
//!
//! Discovery only hands over addresses (`SocketAddr`s) to the torrent's peer manager; it never
//! opens peer connections itself.
//!
//! - [`tracker`]: BEP 3 HTTP and BEP 15 UDP tracker clients, BEP 12 tiers and the announcer task.
pub mod tracker;
