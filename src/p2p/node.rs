//! The node's vocabulary: its configuration, its errors, the protocol names it speaks and the
//! bounds callers can rely on. The node itself is in [`super::handle`] (what callers hold),
//! `event_loop.rs` (the task that owns the `Swarm`), `pending.rs` (callers waiting for an
//! answer) and `swarm.rs` (how the `Swarm` is built).
//!
//! Every wait is bounded: each handle call by [`NodeConfig::query_timeout`] (open_stream,
//! ping and dial too), each Kademlia query by the same timeout inside libp2p-kad, and the loop
//! drops pending replies whose caller has gone.
use libp2p::kad;
use libp2p::{identity::Keypair, Multiaddr, PeerId, StreamProtocol};
use std::str::FromStr;
use std::time::Duration;

pub use super::handle::NodeHandle;
pub use libp2p_stream::IncomingStreams;

/// The BitTorrent peer protocol (BEP 3 handshake and messages) over one libp2p stream.
pub const BT_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/bt/1.0.0");
/// Kademlia protocol name of the shoal DHT (see `swarm.rs` for why not the IPFS one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/kad/1.0.0");
/// How often libp2p-kad republishes our provider records.
pub const PROVIDER_REPUBLISH: Duration = Duration::from_secs(10 * 60);
/// How long a provider record lives at the nodes that store it.
pub const PROVIDER_TTL: Duration = Duration::from_secs(60 * 60);
/// Providers returned by one lookup, and dialled while it runs.
pub const MAX_PROVIDERS_PER_LOOKUP: usize = 64;

/// Kademlia server/client mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DhtMode {
    /// libp2p decides: server once an external address is confirmed.
    #[default]
    Auto,
    /// Queries only; answers nothing and is in no one's routing table.
    Client,
    /// Answers queries and stores records: `shoal node`, seeders with a reachable address.
    Server,
}

impl FromStr for DhtMode {
    type Err = String;
    fn from_str(s: &str) -> Result<DhtMode, String> {
        match s {
            "auto" => Ok(DhtMode::Auto),
            "client" => Ok(DhtMode::Client),
            "server" => Ok(DhtMode::Server),
            other => Err(format!("dht mode `{other}` is not one of auto, client, server")),
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub keypair: Keypair,
    /// e.g. `/ip4/0.0.0.0/tcp/0`; may be empty (a client that only dials).
    pub listen: Vec<Multiaddr>,
    /// Each must end in `/p2p/<PeerId>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses others reach us at; when empty the listen addresses are advertised.
    pub external: Vec<Multiaddr>,
    pub dht_mode: DhtMode,
    pub mdns: bool,
    /// Bound of every handle call and of each Kademlia query.
    pub query_timeout: Duration,
    /// Bounds on the node's connections (libp2p's connection-limits).
    pub limits: ConnectionBounds,
    /// How AutoNAT probes our reachability.
    pub nat: NatProbe,
    /// Serve as a circuit relay v2 with these bounds; `None`: only use relays.
    pub relay: Option<RelayLimits>,
}

/// What one relayed connection may cost a relay we run: past either bound the circuit is
/// closed (libp2p's defaults, 2 minutes and 128 KiB, leave room for hole punching only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    pub max_circuit_duration: Duration,
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> RelayLimits {
        RelayLimits { max_circuit_duration: Duration::from_secs(120), max_circuit_bytes: 128 * 1024 }
    }
}

/// AutoNAT's settings: how often our reachability is probed, and whether only peers and
/// addresses on global IPs count (libp2p's default; tests and private deployments on
/// loopback, LAN or 198.18.0.0/15 addresses turn it off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatProbe {
    pub interval: Duration,
    pub only_global_ips: bool,
}

impl Default for NatProbe {
    fn default() -> NatProbe {
        NatProbe { interval: Duration::from_secs(90), only_global_ips: true }
    }
}

/// What AutoNAT last concluded: other peers could dial us back at an address (`Public`),
/// could not (`Private`), or no verdict yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Reachability {
    #[default]
    Unknown,
    Public(Multiaddr),
    Private,
}

impl Reachability {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public(_) => "public",
            Reachability::Private => "private",
        }
    }

    /// The gauge's value: 1 public, 0 unknown, -1 private.
    pub fn gauge(&self) -> i64 {
        match self {
            Reachability::Unknown => 0,
            Reachability::Public(_) => 1,
            Reachability::Private => -1,
        }
    }
}

/// How many libp2p connections the node keeps: past a bound a new connection is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBounds {
    /// Established connections, both directions.
    pub established: u32,
    /// Established connections to one peer.
    pub per_peer: u32,
    /// Inbound connections still in their handshake (TLS or Noise, Yamux).
    pub pending_incoming: u32,
    /// Of those, from one IP address (`per_ip`).
    pub pending_per_ip: u32,
    /// Established inbound connections from one IP address (`per_ip`).
    pub established_per_ip: u32,
    /// Past this much process memory new connections are denied; `None`: 90 % of the
    /// machine's memory.
    pub memory_bytes: Option<usize>,
}

impl Default for ConnectionBounds {
    fn default() -> ConnectionBounds {
        ConnectionBounds {
            established: 256,
            per_peer: 4,
            pending_incoming: 32,
            pending_per_ip: 8,
            established_per_ip: 32,
            memory_bytes: None,
        }
    }
}

impl NodeConfig {
    /// A node with no listeners or bootstrap peers; `query_timeout` comes from
    /// `Options::dht_query_timeout`.
    pub fn new(keypair: Keypair, query_timeout: Duration) -> NodeConfig {
        NodeConfig {
            keypair,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            external: Vec::new(),
            dht_mode: DhtMode::Auto,
            mdns: false,
            query_timeout,
            limits: ConnectionBounds::default(),
            nat: NatProbe::default(),
            relay: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("p2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("bootstrap address {0} does not end in /p2p/<PeerId>")]
    BootstrapAddr(Multiaddr),
    #[error("no known DHT peers: give a --bootstrap address")]
    NoKnownPeers,
    #[error("p2p {0} timed out")]
    Timeout(&'static str),
    #[error("the p2p node has stopped")]
    Stopped,
    #[error("dht store: {0}")]
    Store(#[from] kad::store::Error),
    #[error("dht query failed: {0}")]
    Query(String),
    #[error("peer {0} not found in the DHT")]
    PeerNotFound(PeerId),
    #[error("cannot dial peer {peer}: {reason}")]
    Dial { peer: PeerId, reason: String },
    #[error("cannot open a stream to peer {peer}: {reason}")]
    OpenStream { peer: PeerId, reason: String },
    #[error("ping to peer {peer} failed: {reason}")]
    Ping { peer: PeerId, reason: String },
}

/// A provider and the addresses it is known to listen on (possibly none, when dialling it
/// failed; `find_peer` may still resolve it).
pub type Provider = (PeerId, Vec<Multiaddr>);

/// A sign that discovery should look again, published by the node
/// ([`super::NodeHandle::troubles`]); the key-peer monitor turns it into a discovery reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// A closest-peers lookup (a PeerId looked up, or the bootstrap walk) found nobody.
    LookupFailed,
    /// Every address the address book had for this peer failed to dial: its entry expired.
    AddressExpired(PeerId),
}
