//! shoal: a BitTorrent swarm client and seeder.
//!
//! The task graph, for one torrent:
//!
//! ```text
//! trackers / --peer / DHT ──addresses──▶ TorrentHandle ──▶ torrent task (torrent::task)
//! session accept loop ──inbound handshake──▶ torrent task      │ owns picker, pool, choker,
//!                                                               │ scoring, assembly, stats
//! peer tasks (peer::connection) ◀──PeerCommand── torrent task ──┘
//! peer tasks ──PeerEvent (blocks as Bytes)──▶ torrent task ──full piece──▶ storage
//!                                                  (hash + write on the blocking pool)
//! ```
//!
//! Modules in reading order: [`types`] (the shared vocabulary), [`bencode`], [`metainfo`],
//! [`wire`], [`storage`], [`picker`], [`manager`] (pool, scoring, choker), [`peer`], [`torrent`],
//! [`metadata`] (BEP 9: the info dict of a magnet, fetched from peers), [`session`], [`discovery`],
//! [`p2p`] (libp2p node, Kademlia), [`mainline`] (the BitTorrent DHT, BEP 5), [`keepalive`] (KeyPeerMonitor),
//! [`config`], [`metrics`], [`httpd`] (bounded HTTP serving), [`diag`], [`daemon`] (many torrents
//! managed over an HTTP API).
//!
//! [`session::Session::builder`] is the composition root: it starts a session's listener, libp2p
//! node, key-peer monitor and diagnostics server, and tracks every task it spawns. The command
//! line (`src/cli/`, with `shoal bench`) is the binary's, built with the default `cli` feature;
//! the library needs none of clap, indicatif or anyhow.
#![forbid(unsafe_code)]
pub mod bencode;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod discovery;
pub mod httpd;
pub mod keepalive;
pub mod mainline;
pub mod manager;
pub mod metadata;
pub mod metainfo;
pub mod metrics;
pub mod p2p;
pub mod peer;
pub mod picker;
pub mod session;
pub mod storage;
pub mod torrent;
pub mod types;
pub mod wire;
