//! `Options`: the single source of every setting, its default and its validation.
//!
//! Settings come from four layers, later ones winning: the defaults written here (and only
//! here), a TOML file (`--config FILE`), `SHOAL_<KEY>` environment variables (`env`), then
//! command-line flags. [`Options::validate`] checks
//! the whole result once at start; a bad value is a [`ConfigError`] naming the key, which the
//! CLI turns into exit code 2. Durations are written as `60s`, `2m`, `500ms`.
mod env;
mod file;
mod network;

use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {msg}")]
    Parse { file: String, msg: String },
    #[error("config key `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
}

/// Declares a struct whose fields each carry their default (`pub key: Type = default,`) and
/// implements `Default` from those: a setting's default sits beside its declaration and doc.
macro_rules! with_defaults {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: $ty:ty = $default:expr,)*
    }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* }
            }
        }
    };
}

with_defaults! {
/// Every setting of shoal. Field names are the TOML keys (and the daemon's config JSON keys).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    // --- PeerManager pool ---
    /// Most peer connections per torrent, inbound included: the high-water mark of
    /// connected peers (`max_peers` is another name for it).
    #[serde(alias = "max_peers")]
    pub max_connections: usize = 50,
    /// The low-water mark: with fewer peers connected and none left to dial, discovery is
    /// asked for more.
    pub min_peers: usize = 25,
    /// Most outbound connection attempts in flight per torrent.
    pub max_connecting: usize = 10,
    /// Most peers queued to be dialled; when full the lowest-scored one is dropped.
    pub max_pending: usize = 200,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration = Duration::from_secs(30),
    /// First wait before redialling a peer that failed or left; doubles per failure.
    #[serde(with = "humantime_serde")]
    pub reconnect_delay: Duration = Duration::from_secs(60),
    /// Failed attempts in a row after which a peer is forgotten.
    pub max_connect_failures: u32 = 3,
    /// Upper bound of outstanding block requests to one peer (lowered to the peer's `reqq`).
    pub max_requests_per_peer: usize = 500,
    /// Seconds of transfer the request queue should cover at the peer's current rate
    /// (libtorrent sizes its queue the same way).
    #[serde(with = "humantime_serde")]
    pub target_request_queue: Duration = Duration::from_secs(3),
    /// A request is given back to the picker when the peer has sent no block for this long
    /// since it was made.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration = Duration::from_secs(30),
    /// With every piece, close connections to peers that have every piece too (libtorrent's
    /// setting of the same name).
    pub close_redundant_connections: bool = true,

    // --- hostile-peer bounds (pool, eviction, inbound handshakes) ---
    /// Most peer addresses kept per torrent that are neither connected, being dialled nor
    /// banned; when full the lowest-ranked one is dropped, or the newcomer if it ranks lower.
    pub max_known_peers: usize = 2000,
    /// Most banned peer addresses, and separately banned IPs, per torrent; oldest forgotten.
    pub max_banned_peers: usize = 1000,
    /// Most addresses taken from one discovery message (a tracker response, a DHT batch).
    pub max_addrs_per_message: usize = 200,
    /// Most connections plus dials in flight per torrent to one IP (an IPv6 /64).
    pub max_connections_per_ip: usize = 8,
    /// Neither side interested this long (or snubbed) makes a connected peer evictable
    /// when a slot is needed.
    #[serde(with = "humantime_serde")]
    pub useless_peer_timeout: Duration = Duration::from_secs(60),
    /// Inbound connections whose handshake is being read, TCP and libp2p together.
    pub max_inbound_handshakes: usize = 256,
    /// Of those, most from one IP (an IPv6 /64) or one libp2p peer; past it a connection is
    /// closed before its handshake is read.
    pub max_inbound_handshakes_per_ip: usize = 8,

    /// Wait for the data to reach the disk (fsync) before reporting a download complete.
    /// Off by default, as in other clients: pieces are verified before they are written, and
    /// the start-up check re-verifies anything a crash lost.
    pub sync_on_complete: bool = false,
    /// Write verified pieces around the page cache (`O_DIRECT`) where the file system allows
    /// and the piece is 4 KiB-aligned on disk: less CPU per byte. A piece written while others
    /// wait for the writer goes through the page cache all the same (the disk is behind). Turn
    /// off for spinning disks, where the kernel's write ordering is worth the copy.
    pub direct_io: bool = true,

    // --- peer wire keep-alive ---
    /// A keep-alive is sent after this much silence from us (BEP 3 suggests 2 minutes).
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration = Duration::from_secs(120),
    /// A peer that sends nothing for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration = Duration::from_secs(240),
    /// Time allowed for the handshake after the connection is open.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration = Duration::from_secs(20),
    /// A peer whose socket takes none of our pending output this long is dropped (it
    /// stopped reading).
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration = Duration::from_secs(120),

    // --- memory bounds ---
    /// Block bytes read for one peer and not yet written to its socket.
    pub peer_send_buffer: usize = 1024 * 1024,
    /// The same, summed over every peer of the session.
    pub max_send_buffer: usize = 32 * 1024 * 1024,
    /// Memory of the buffers of pieces in progress (being downloaded or verified) per
    /// torrent; a piece of 1 MiB or more takes whole 2 MiB huge pages. At least two pieces
    /// are always allowed.
    pub max_assembly_bytes: usize = 6 * 1024 * 1024,

    // --- rate limits ---
    /// Bytes per second received from all peers of all torrents; 0 is no limit.
    pub download_rate_limit: u64 = 0,
    /// Bytes per second of blocks sent to all peers of all torrents; 0 is no limit.
    pub upload_rate_limit: u64 = 0,

    // --- choker ---
    /// Regular upload slots (tit-for-tat).
    pub unchoke_slots: usize = 4,
    /// One more regular slot for every this many bytes per second we upload, up to four times
    /// `unchoke_slots`: a fast uploader serves more peers at once, and more reciprocate. 0 keeps
    /// `unchoke_slots` fixed.
    pub unchoke_slot_rate: u64 = 1024 * 1024,
    #[serde(with = "humantime_serde")]
    pub unchoke_interval: Duration = Duration::from_secs(5),
    /// A new optimistic trial this often; a trial also lasts until a piece's worth went
    /// through it (at most 120 s, while used).
    #[serde(with = "humantime_serde")]
    pub optimistic_unchoke_interval: Duration = Duration::from_secs(30),
    /// A peer that sent us nothing this long while we wanted data is snubbed.
    #[serde(with = "humantime_serde")]
    pub snub_timeout: Duration = Duration::from_secs(60),

    // --- trackers ---
    pub numwant: u32 = 50,
    #[serde(with = "humantime_serde")]
    pub tracker_timeout: Duration = Duration::from_secs(15),
    /// Lower bound on announce intervals, whatever a tracker asks.
    #[serde(with = "humantime_serde")]
    pub tracker_min_interval: Duration = Duration::from_secs(30),

    // --- peer exchange (BEP 11) ---
    /// Shortest wait between two PEX messages to one peer (libtorrent disconnects a peer that
    /// sends more than about one a minute; shorten only in tests).
    #[serde(with = "humantime_serde")]
    pub pex_interval: Duration = Duration::from_secs(60),

    // --- DHT and discovery scheduler ---
    /// `auto`, `client` or `server`; `auto` lets each command choose (server for `node` and
    /// `seed`, libp2p's automatic choice for `download`).
    pub dht_mode: String = "auto".into(),
    /// Bound on each DHT query and each libp2p request (stream open, ping).
    #[serde(with = "humantime_serde")]
    pub dht_query_timeout: Duration = Duration::from_secs(30),
    #[serde(with = "humantime_serde")]
    pub discovery_max_interval_cap: Duration = Duration::from_secs(120),
    #[serde(with = "humantime_serde")]
    pub dht_steady_interval_cap: Duration = Duration::from_secs(120),
    #[serde(with = "humantime_serde")]
    pub discovery_reset_min_interval: Duration = Duration::from_secs(30),
    #[serde(with = "humantime_serde")]
    pub discovery_reset_cool_down: Duration = Duration::from_secs(10),

    // --- mainline DHT (BEP 5) ---
    /// Look up and announce public torrents in the mainline DHT, the one every BitTorrent
    /// client uses (`download`, `seed`, `daemon`; `--no-dht` turns it off).
    pub mainline_dht: bool = true,
    /// Its bootstrap nodes, `HOST:PORT` (`--dht-bootstrap` replaces them).
    pub mainline_bootstrap: Vec<String> = crate::mainline::DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
    /// Its UDP address, `IP:PORT` (IPv4); empty: every interface, port 6881 if free, else any.
    pub mainline_listen: String = String::new(),

    // --- the session's network (the flags of the same names override these) ---
    /// BitTorrent listen address; empty: the command's default (`download` any port,
    /// `seed` and `daemon` 6881).
    pub listen: String = String::new(),
    /// Run the libp2p node (Kademlia DHT, encrypted streams); `--no-kad` turns it off.
    pub kad: bool = true,
    /// The libp2p node's listen multiaddrs, comma-separated (add `/ip4/0.0.0.0/udp/0/quic-v1`
    /// for QUIC); empty: `/ip4/0.0.0.0/tcp/0`.
    pub kad_listen: String = String::new(),
    /// Kademlia bootstrap nodes (multiaddrs ending in `/p2p/<PeerId>`).
    pub bootstrap: Vec<String> = Vec::new(),
    /// Multiaddrs others reach our node at; empty: the listen addresses.
    pub external_addrs: Vec<String> = Vec::new(),
    /// Find peers on the local network with mDNS.
    pub mdns: bool = false,
    /// Diagnostics and metrics over HTTP on this address; empty: none.
    pub diag: String = String::new(),
    /// The libp2p node's established connections, per peer, and inbound ones still in
    /// their handshake: past a bound a new connection is denied.
    pub kad_max_connections: u32 = 256,
    pub kad_max_connections_per_peer: u32 = 4,
    pub kad_max_pending_incoming: u32 = 32,
    /// Of the libp2p connections, from one IP address (an IPv6 /64; relayed ones aside):
    /// inbound ones still in their handshake, and established inbound ones. `shoal bench`'s
    /// loopback swarm lifts both.
    pub kad_max_pending_per_ip: u32 = 8,
    pub kad_max_established_per_ip: u32 = 32,
    /// Past this much process memory (MiB) the libp2p node denies new connections; 0: 90 %
    /// of the machine's memory.
    pub kad_max_memory_mb: u64 = 0,
    /// How often AutoNAT probes whether peers can dial us back.
    #[serde(with = "humantime_serde")]
    pub autonat_interval: Duration = Duration::from_secs(90),
    /// AutoNAT counts only peers and addresses on global IPs (off for LAN or test networks).
    pub autonat_only_global_ips: bool = true,
    /// Serve as a circuit relay v2 for nodes behind NAT (`shoal node --relay`), closing each
    /// relayed connection after this long or this many bytes.
    pub relay: bool = false,
    #[serde(with = "humantime_serde")]
    pub relay_max_circuit_duration: Duration = Duration::from_secs(120),
    pub relay_max_circuit_bytes: u64 = 128 * 1024,

    // --- tuning, not protocol (read when a torrent starts) ---
    /// How often a torrent looks at rates, timeouts, the choker and its dials.
    #[serde(with = "humantime_serde")]
    pub tick: Duration = Duration::from_millis(500),
    /// Pieces waiting for their hash and write per torrent before no more are requested.
    pub max_pieces_in_flight: usize = 64,
    /// Events from peer tasks queued for their torrent.
    pub peer_event_queue: usize = 4096,
    /// Commands other than requests queued for one peer task (requests have their own
    /// `max_requests_per_peer`).
    pub peer_command_queue: usize = 1024,

    // --- keepalive layer (KeyPeerMonitor) ---
    pub enable_key_peer_monitor: bool = true,
    #[serde(with = "humantime_serde")]
    pub key_peer_probe_interval: Duration = Duration::from_secs(60),
    #[serde(with = "humantime_serde")]
    pub per_peer_min_probe_interval: Duration = Duration::from_secs(30),
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration = Duration::from_secs(5),
    pub probe_fail_threshold: u32 = 3,
    pub probe_max_concurrent: usize = 5,
    pub key_peer_set_max_size: usize = 128,
    /// PeerIds or multiaddrs that must stay connected.
    pub key_peers: Vec<String> = Vec::new(),
    /// The Kademlia routing table's peers join the key-peer set too (while there is room).
    pub key_peers_from_routing_table: bool = false,
}
}

mod humantime_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Written as it is read back: `1m 30s`, `500ms`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration ({e}); write e.g. 30s or 2m")))
    }
}

fn nonzero<T: PartialEq + Default>(key: &'static str, v: T) -> Result<(), ConfigError> {
    if v == T::default() {
        Err(ConfigError::Invalid { key, why: "must be greater than 0".into() })
    } else {
        Ok(())
    }
}

impl Options {
    /// Checks the settings as a whole.
    pub fn validate(&self) -> Result<(), ConfigError> {
        nonzero("max_connections", self.max_connections)?;
        nonzero("max_connecting", self.max_connecting)?;
        nonzero("max_pending", self.max_pending)?;
        nonzero("max_connect_failures", self.max_connect_failures)?;
        nonzero("max_requests_per_peer", self.max_requests_per_peer)?;
        nonzero("unchoke_slots", self.unchoke_slots)?;
        nonzero("probe_fail_threshold", self.probe_fail_threshold)?;
        nonzero("probe_max_concurrent", self.probe_max_concurrent)?;
        nonzero("key_peer_set_max_size", self.key_peer_set_max_size)?;
        nonzero("peer_send_buffer", self.peer_send_buffer)?;
        nonzero("max_send_buffer", self.max_send_buffer)?;
        nonzero("max_assembly_bytes", self.max_assembly_bytes)?;
        nonzero("pex_interval", self.pex_interval)?;
        self.validate_hostile_bounds()?;
        self.validate_network()?;
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("idle_timeout", self.idle_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("write_stall_timeout", self.write_stall_timeout),
            ("unchoke_interval", self.unchoke_interval),
            ("optimistic_unchoke_interval", self.optimistic_unchoke_interval),
            ("snub_timeout", self.snub_timeout),
            ("tracker_timeout", self.tracker_timeout),
            ("key_peer_probe_interval", self.key_peer_probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("discovery_max_interval_cap", self.discovery_max_interval_cap),
            ("dht_steady_interval_cap", self.dht_steady_interval_cap),
            ("dht_query_timeout", self.dht_query_timeout),
        ] {
            nonzero(key, d)?;
        }
        if self.idle_timeout <= self.keepalive_interval {
            return Err(ConfigError::Invalid {
                key: "idle_timeout",
                why: "must be longer than keepalive_interval".into(),
            });
        }
        for entry in &self.key_peers {
            crate::types::parse_key_peer(entry).map_err(|why| ConfigError::Invalid { key: "key_peers", why })?;
        }
        if !matches!(self.dht_mode.as_str(), "auto" | "client" | "server") {
            return Err(ConfigError::Invalid {
                key: "dht_mode",
                why: format!("`{}` is not one of auto, client, server", self.dht_mode),
            });
        }
        self.validate_mainline()?;
        if self.max_connecting > self.max_connections {
            return Err(ConfigError::Invalid { key: "max_connecting", why: "must not exceed max_connections".into() });
        }
        Ok(())
    }
}

impl Options {
    /// The bounds against hostile peers: each at least 1, and consistent with the pool.
    fn validate_hostile_bounds(&self) -> Result<(), ConfigError> {
        nonzero("max_known_peers", self.max_known_peers)?;
        nonzero("max_banned_peers", self.max_banned_peers)?;
        nonzero("max_addrs_per_message", self.max_addrs_per_message)?;
        nonzero("max_connections_per_ip", self.max_connections_per_ip)?;
        nonzero("useless_peer_timeout", self.useless_peer_timeout)?;
        nonzero("max_inbound_handshakes", self.max_inbound_handshakes)?;
        nonzero("max_inbound_handshakes_per_ip", self.max_inbound_handshakes_per_ip)?;
        if self.max_known_peers < self.max_pending {
            return Err(ConfigError::Invalid { key: "max_known_peers", why: "must be at least max_pending".into() });
        }
        Ok(())
    }
}

impl Options {
    /// `mainline_listen`, when set: an IPv4 `IP:PORT` (the mainline crate speaks IPv4 only).
    pub fn mainline_listen_addr(&self) -> Result<Option<std::net::SocketAddrV4>, ConfigError> {
        if self.mainline_listen.is_empty() {
            return Ok(None);
        }
        self.mainline_listen.parse().map(Some).map_err(|_| ConfigError::Invalid {
            key: "mainline_listen",
            why: format!("`{}` is not an IPv4 IP:PORT", self.mainline_listen),
        })
    }

    fn validate_mainline(&self) -> Result<(), ConfigError> {
        self.mainline_listen_addr()?;
        for entry in &self.mainline_bootstrap {
            crate::mainline::check_host_port(entry)
                .map_err(|why| ConfigError::Invalid { key: "mainline_bootstrap", why })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
