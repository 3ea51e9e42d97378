//! shoal: a BitTorrent swarm client and seeder.
pub mod bencode;
pub mod cli;
pub mod metainfo;
pub mod wire;
