//! shoal: a BitTorrent swarm client and seeder.
pub mod bencode;
pub mod cli;
pub mod config;
pub mod manager;
pub mod metainfo;
pub mod peer;
pub mod picker;
pub mod session;
pub mod storage;
pub mod torrent;
pub mod wire;
