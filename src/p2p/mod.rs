//! Peers over libp2p: the node that runs the Kademlia DHT and carries the BitTorrent peer
//! protocol on `/shoal/bt/1.0.0` streams.
//!
//! Parts, in reading order:
//! - [`identity`]: the persistent Ed25519 keypair (the PeerId survives restarts);
//! - [`key`]: the DHT key a torrent's providers are announced under;
//! - [`book`]: our address book, so a peer found once can be dialled by PeerId later;
//! - [`node`]: the node's vocabulary (configuration, errors, protocol names, bounds);
//! - [`handle`]: the cloneable [`NodeHandle`] everyone else holds, and its commands;
//! - `swarm`: how the `Swarm` is built (transport, behaviours, and why they are set so);
//! - [`tls`]: the libp2p TLS 1.3 upgrade with the fastest cipher suite first;
//! - [`muxer`]: the Yamux upgrade, with data frames of up to 256 KiB;
//! - `quic`: QUIC, bounding the fresh-port dials only AutoNAT's dial-backs ask for;
//! - `per_ip`: inbound connections counted per IP address, in their handshake and established;
//! - `event_loop`: the one task that owns the `Swarm` and answers the commands;
//! - `pending`: the callers waiting for an answer (query replies, ping and dial waiters);
//! - `punch`: hole punching (DCUtR), told our confirmed addresses too;
//! - `relay_server`: the circuit relay we serve, with reservations per IP address bounded;
//! - [`connector`]: [`P2pConnector`], how the torrent dials `PeerAddr::P2p` peers.
//!
//! This module only finds peers and opens streams; it knows nothing of torrents beyond the
//! key derivation. Handing found peers to a torrent's pool and routing inbound streams to a
//! torrent is the discovery scheduler's and the session's work.
pub mod book;
pub mod connector;
mod event_loop;
pub mod handle;
pub mod identity;
pub mod key;
pub mod muxer;
pub mod node;
mod pending;
mod per_ip;
mod punch;
mod quic;
mod relay_server;
mod swarm;
pub mod tls;

pub use connector::{into_box_stream, peer_addr, P2pConnector};
pub use identity::{default_identity_path, load_or_create, IdentityError};
pub use key::torrent_key;
pub use node::{
    ConnectionBounds, DhtMode, IncomingStreams, NatProbe, NodeConfig, NodeError, NodeHandle, Provider, Reachability,
    RelayLimits, Trouble, BT_PROTOCOL, KAD_PROTOCOL,
};
