//! shoal: a BitTorrent swarm client and seeder.
pub mod bencode;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod metainfo;
pub mod storage;
pub mod wire;
