//! The libp2p node: one task owns the [`Swarm`] and its event loop; everyone else holds a
//! cloneable [`NodeHandle`] and sends it `Command`s whose replies come back on `oneshot`s
//! (the shape of rust-libp2p's file-sharing example).
//!
//! Behaviour: TCP + Noise + Yamux (DNS names resolved when the system resolver is
//! configured), Kademlia, identify, ping, raw `/shoal/bt/1.0.0` streams (`libp2p_stream`),
//! optional mDNS, and our [`AddressBook`].
//!
//! Choices and the traps they handle:
//! - Kademlia speaks [`KAD_PROTOCOL`] `/shoal/kad/1.0.0`, not `/ipfs/kad/1.0.0`: shoal nodes
//!   form their own DHT, so our provider records are not lost among, or dropped by, IPFS
//!   servers, and IPFS traffic never reaches us. Bootstrap nodes are shoal nodes (`shoal node`).
//! - Provider records carry only the provider's *external* addresses. We confirm the
//!   configured `external` addresses, or, when none are given, every concrete listen address
//!   (on loopback and on a LAN those are the addresses peers reach). Behind NAT give
//!   `external` or run in [`DhtMode::Client`].
//! - Identify results are fed into Kademlia by hand (`add_address` for each dialable listen
//!   address of a peer that speaks our Kademlia protocol) and into the address book.
//! - A provider's addresses live only inside the running `get_providers` query, so each
//!   provider found is dialled by PeerId while the query runs (Kademlia then supplies the
//!   query's addresses); the address that connects, and the listen addresses identify then
//!   reports, go into the address book, which outlives the query.
//! - Re-providing: libp2p-kad keeps our own provider records in its store and republishes them
//!   itself every [`PROVIDER_REPUBLISH`]; records expire after [`PROVIDER_TTL`] so a seeder
//!   that died is no longer handed out an hour later (libp2p's defaults are 12 h and 48 h).
//! - The DHT mode is set explicitly for `Server` and `Client`; `Auto` leaves it to libp2p,
//!   which turns server once an external address is confirmed, so a listening node in `Auto`
//!   becomes a server.
//!
//! Every wait is bounded: each handle call by [`NodeConfig::query_timeout`] (open_stream,
//! ping and dial too), each Kademlia query by the same timeout inside libp2p-kad, and the loop drops
//! pending replies whose caller has gone.
use super::book::{dialable, strip_p2p, AddressBook};
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore, Mode, QueryId, QueryResult};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{identify, identity::Keypair, mdns, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub use libp2p_stream::IncomingStreams;

/// The BitTorrent peer protocol (BEP 3 handshake and messages) over one libp2p stream.
pub const BT_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/bt/1.0.0");
/// Kademlia protocol name of the shoal DHT (see the module doc for why not the IPFS one).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/kad/1.0.0");
/// Identify's protocol-version string.
const IDENTIFY_VERSION: &str = "/shoal/1.0.0";
/// How often libp2p-kad republishes our provider records.
pub const PROVIDER_REPUBLISH: Duration = Duration::from_secs(10 * 60);
/// How long a provider record lives at the nodes that store it.
pub const PROVIDER_TTL: Duration = Duration::from_secs(60 * 60);
/// Providers returned by one lookup, and dialled while it runs.
pub const MAX_PROVIDERS_PER_LOOKUP: usize = 64;
/// Commands queued for the event loop before callers wait.
const COMMAND_QUEUE: usize = 64;
/// Waiters on one peer's ping, and on one peer's dial.
const MAX_PING_WAITERS: usize = 16;
/// How long `spawn` waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections idle (no stream open) for this long are closed.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

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

type Reply<T> = oneshot::Sender<Result<T, NodeError>>;
/// A provider and the addresses it is known to listen on (possibly none, when dialling it
/// failed; `find_peer` may still resolve it).
pub type Provider = (PeerId, Vec<Multiaddr>);

enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    AddAddress { peer: PeerId, addr: Multiaddr, done: oneshot::Sender<()> },
    StartProviding { key: Vec<u8>, reply: Reply<()> },
    StopProviding { key: Vec<u8> },
    GetProviders { key: Vec<u8>, reply: Reply<Vec<Provider>> },
    FindPeer { peer: PeerId, reply: Reply<Vec<Multiaddr>> },
    Ping { peer: PeerId, reply: Reply<Duration> },
    Dial { peer: PeerId, reply: Reply<()> },
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    RoutingTableSize(oneshot::Sender<usize>),
    Bootstrap(Reply<()>),
    Shutdown,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    book: AddressBook,
}

/// A cloneable handle to the node task. The task stops on [`NodeHandle::shutdown`] or when
/// the last handle is dropped.
#[derive(Clone)]
pub struct NodeHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    incoming: Arc<Mutex<Option<IncomingStreams>>>,
    timeout: Duration,
}

impl NodeHandle {
    /// Builds the swarm, starts listening (waiting until each listener has an address), dials
    /// the bootstrap nodes and spawns the event loop.
    pub async fn spawn(config: NodeConfig) -> Result<NodeHandle, NodeError> {
        let peer_id = config.keypair.public().to_peer_id();
        let mut swarm = build_swarm(&config)?;
        let mut control = swarm.behaviour().stream.new_control();
        let incoming = control.accept(BT_PROTOCOL).map_err(|e| NodeError::Transport(e.to_string()))?;
        match config.dht_mode {
            DhtMode::Server => swarm.behaviour_mut().kad.set_mode(Some(Mode::Server)),
            DhtMode::Client => swarm.behaviour_mut().kad.set_mode(Some(Mode::Client)),
            DhtMode::Auto => {}
        }
        for addr in &config.external {
            swarm.add_external_address(strip_p2p(addr));
        }
        let mut listeners = HashMap::new();
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen { addr: addr.clone(), reason: e.to_string() })?;
            listeners.insert(id, addr.clone());
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let mut event_loop = EventLoop::new(swarm, rx, &config);
        event_loop.await_listeners(listeners).await?;
        event_loop.dial_bootstrap(&config.bootstrap)?;
        tokio::spawn(event_loop.run());
        Ok(NodeHandle {
            peer_id,
            commands: tx,
            control,
            incoming: Arc::new(Mutex::new(Some(incoming))),
            timeout: config.query_timeout,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Current listen addresses, each ending in `/p2p/<our PeerId>` (what others pass to
    /// `--bootstrap`).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask("listen_addrs", Command::ListenAddrs).await
    }

    /// Remembers an address of a peer (e.g. from `--peer /ip4/../p2p/<id>`) for later dials;
    /// returns once the node has it, so a dial that follows uses it.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NodeError> {
        self.ask("add_address", |done| Command::AddAddress { peer, addr, done }).await
    }

    /// Announces us as a provider of `key` and keeps it announced (libp2p-kad republishes).
    /// Returns once the first announcement has been stored at the closest peers found.
    pub async fn start_providing(&self, key: Vec<u8>) -> Result<(), NodeError> {
        self.ask("start_providing", |reply| Command::StartProviding { key, reply }).await?
    }

    /// Stops republishing; records already stored elsewhere expire after [`PROVIDER_TTL`].
    pub async fn stop_providing(&self, key: Vec<u8>) -> Result<(), NodeError> {
        self.send(Command::StopProviding { key }).await
    }

    /// Providers of `key` (ourselves excluded) with their addresses, at most
    /// [`MAX_PROVIDERS_PER_LOOKUP`].
    pub async fn get_providers(&self, key: Vec<u8>) -> Result<Vec<Provider>, NodeError> {
        self.ask("get_providers", |reply| Command::GetProviders { key, reply }).await?
    }

    /// The addresses of `peer`, found with a closest-peers lookup of its PeerId.
    pub async fn find_peer(&self, peer: PeerId) -> Result<Vec<Multiaddr>, NodeError> {
        self.ask("find_peer", |reply| Command::FindPeer { peer, reply }).await?
    }

    /// Round-trip time to `peer`, dialling it when not connected: the latest ping on a live
    /// connection, or the first one on a new connection.
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, NodeError> {
        self.ask("ping", |reply| Command::Ping { peer, reply }).await?
    }

    /// Connects to `peer` by PeerId (addresses from the address book and Kademlia) and
    /// returns once a connection is established; at once when one already is.
    pub async fn dial(&self, peer: PeerId) -> Result<(), NodeError> {
        self.ask("dial", |reply| Command::Dial { peer, reply }).await?
    }

    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NodeError> {
        self.ask("connected_peers", Command::ConnectedPeers).await
    }

    pub async fn is_connected(&self, peer: PeerId) -> Result<bool, NodeError> {
        Ok(self.connected_peers().await?.contains(&peer))
    }

    /// Peers in the Kademlia routing table.
    pub async fn routing_table_size(&self) -> Result<usize, NodeError> {
        self.ask("routing_table_size", Command::RoutingTableSize).await
    }

    /// Runs a Kademlia bootstrap (self-lookup and bucket refresh) to completion.
    pub async fn bootstrap(&self) -> Result<(), NodeError> {
        self.ask("bootstrap", Command::Bootstrap).await?
    }

    /// Opens a `/shoal/bt/1.0.0` stream to `peer`, dialling it by PeerId when not connected
    /// (addresses from the address book and Kademlia).
    ///
    /// Each call clones the stream `Control`, and each clone owns one queue slot inside
    /// libp2p-stream; concurrent calls are bounded by the caller (the pool's `max_connecting`).
    pub async fn open_stream(&self, peer: PeerId) -> Result<libp2p::Stream, NodeError> {
        let mut control = self.control.clone();
        match tokio::time::timeout(self.timeout, control.open_stream(peer, BT_PROTOCOL)).await {
            Err(_) => Err(NodeError::Timeout("open_stream")),
            Ok(Err(e)) => Err(NodeError::OpenStream { peer, reason: e.to_string() }),
            Ok(Ok(stream)) => Ok(stream),
        }
    }

    /// The inbound `/shoal/bt/1.0.0` streams; `Some` only on the first call. Streams that
    /// arrive while no one polls are dropped by libp2p-stream, not queued.
    pub fn take_incoming(&self) -> Option<IncomingStreams> {
        self.incoming.lock().ok()?.take()
    }

    /// Stops the event loop; connections close and later calls fail with `Stopped`.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }

    async fn send(&self, cmd: Command) -> Result<(), NodeError> {
        match tokio::time::timeout(self.timeout, self.commands.send(cmd)).await {
            Err(_) => Err(NodeError::Timeout("command queue")),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn ask<T>(
        &self,
        what: &'static str,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.commands.send(make(tx)).await.map_err(|_| NodeError::Stopped)?;
            rx.await.map_err(|_| NodeError::Stopped)
        };
        tokio::time::timeout(self.timeout, asked).await.map_err(|_| NodeError::Timeout(what))?
    }
}

fn build_swarm(config: &NodeConfig) -> Result<Swarm<Behaviour>, NodeError> {
    let transport_err = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
    let tcp_config = || tcp::Config::default().nodelay(true);
    let make = |key: &Keypair| make_behaviour(key, config);
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT);
    let builder = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(tcp_config(), noise::Config::new, yamux::Config::default)
        .map_err(|e| transport_err(&e))?;
    // The system resolver can be missing (containers without /etc/resolv.conf): then the
    // node runs without DNS, and /dns addresses fail to dial with a clear error.
    match builder.with_dns() {
        Ok(b) => Ok(b.with_behaviour(make).map_err(|e| transport_err(&e))?.with_swarm_config(idle).build()),
        Err(e) => {
            tracing::warn!("no system DNS resolver ({e}); /dns multiaddrs will not resolve");
            let b = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
                .with_tokio()
                .with_tcp(tcp_config(), noise::Config::new, yamux::Config::default)
                .map_err(|e| transport_err(&e))?;
            Ok(b.with_behaviour(make).map_err(|e| transport_err(&e))?.with_swarm_config(idle).build())
        }
    }
}

fn make_behaviour(key: &Keypair, config: &NodeConfig) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let peer_id = key.public().to_peer_id();
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_query_timeout(config.query_timeout)
        .set_provider_publication_interval(Some(PROVIDER_REPUBLISH))
        .set_provider_record_ttl(Some(PROVIDER_TTL));
    let kad = kad::Behaviour::with_config(peer_id, MemoryStore::new(peer_id), kad_config);
    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_VERSION.into(), key.public())
            .with_agent_version(format!("shoal/{}", env!("CARGO_PKG_VERSION"))),
    );
    let mdns = if config.mdns { Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?) } else { None };
    Ok(Behaviour {
        kad,
        identify,
        ping: ping::Behaviour::new(ping::Config::new()),
        stream: libp2p_stream::Behaviour::new(),
        mdns: mdns.into(),
        book: AddressBook::default(),
    })
}

/// A `get_providers` in progress: the Kademlia query, then the dials of the providers it found.
struct ProvidersLookup {
    reply: Reply<Vec<Provider>>,
    found: Vec<PeerId>,
    /// Providers dialled and not yet connected or failed.
    dialing: HashSet<PeerId>,
    query_done: bool,
    deadline: Instant,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    /// Advertise listen addresses as external (no `external` configured).
    advertise_listen: bool,
    query_timeout: Duration,
    start_providing: HashMap<QueryId, Reply<()>>,
    providers: HashMap<QueryId, ProvidersLookup>,
    find_peer: HashMap<QueryId, (PeerId, Reply<Vec<Multiaddr>>)>,
    bootstrap: HashMap<QueryId, Reply<()>>,
    ping_waiters: HashMap<PeerId, Vec<Reply<Duration>>>,
    dial_waiters: HashMap<PeerId, Vec<Reply<()>>>,
    last_rtt: HashMap<PeerId, Duration>,
}

impl EventLoop {
    fn new(swarm: Swarm<Behaviour>, commands: mpsc::Receiver<Command>, config: &NodeConfig) -> EventLoop {
        EventLoop {
            swarm,
            commands,
            advertise_listen: config.external.is_empty(),
            query_timeout: config.query_timeout,
            start_providing: HashMap::new(),
            providers: HashMap::new(),
            find_peer: HashMap::new(),
            bootstrap: HashMap::new(),
            ping_waiters: HashMap::new(),
            dial_waiters: HashMap::new(),
            last_rtt: HashMap::new(),
        }
    }

    /// Drives the swarm until every listener has reported an address (or failed).
    async fn await_listeners(
        &mut self,
        mut listeners: HashMap<libp2p::core::transport::ListenerId, Multiaddr>,
    ) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while !listeners.is_empty() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| NodeError::Timeout("listen"))?;
            match &event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    listeners.remove(listener_id);
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                    if let Some(addr) = listeners.remove(listener_id) {
                        let reason = reason.as_ref().err().map_or("closed".to_string(), |e| e.to_string());
                        return Err(NodeError::Listen { addr, reason });
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some(addr) = listeners.remove(listener_id) {
                        return Err(NodeError::Listen { addr, reason: error.to_string() });
                    }
                }
                _ => {}
            }
            self.on_swarm_event(event);
        }
        Ok(())
    }

    fn dial_bootstrap(&mut self, bootstrap: &[Multiaddr]) -> Result<(), NodeError> {
        for addr in bootstrap {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                return Err(NodeError::BootstrapAddr(addr.clone()));
            };
            let bare = strip_p2p(addr);
            self.swarm.behaviour_mut().book.add(peer, &bare);
            self.swarm.behaviour_mut().kad.add_address(&peer, bare);
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, "bootstrap dial: {e}");
            }
        }
        if !bootstrap.is_empty() {
            // Err only when the routing table is empty, which it is not here.
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
        Ok(())
    }

    async fn run(mut self) {
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.on_command(command),
                },
                _ = sweep.tick() => self.sweep(Instant::now()),
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match command {
            Command::ListenAddrs(reply) => {
                let me = *self.swarm.local_peer_id();
                let addrs = self.swarm.listeners().map(|a| strip_p2p(a).with(Protocol::P2p(me))).collect();
                let _ = reply.send(addrs);
            }
            Command::AddAddress { peer, addr, done } => {
                self.learn(peer, std::slice::from_ref(&addr), false);
                let _ = done.send(());
            }
            Command::StartProviding { key, reply } => match kad.start_providing(kad::RecordKey::new(&key)) {
                Ok(id) => {
                    self.start_providing.insert(id, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::StopProviding { key } => kad.stop_providing(&kad::RecordKey::new(&key)),
            Command::GetProviders { key, reply } => {
                let id = kad.get_providers(kad::RecordKey::new(&key));
                let deadline = Instant::now() + self.query_timeout;
                self.providers.insert(
                    id,
                    ProvidersLookup { reply, found: Vec::new(), dialing: HashSet::new(), query_done: false, deadline },
                );
            }
            Command::FindPeer { peer, reply } => {
                // We look a peer up because what we know of it may be stale (it restarted on
                // another port). Left in our routing table, it would be queried first at the
                // old address, fail, and be struck from the query for good, even after other
                // nodes hand out its new address; so the lookup starts without it.
                kad.remove_peer(&peer);
                let id = kad.get_closest_peers(peer);
                self.find_peer.insert(id, (peer, reply));
            }
            Command::Ping { peer, reply } => self.on_ping_command(peer, reply),
            Command::Dial { peer, reply } => self.on_dial_command(peer, reply),
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::RoutingTableSize(reply) => {
                let _ = reply.send(kad.kbuckets().map(|b| b.num_entries()).sum());
            }
            Command::Bootstrap(reply) => match kad.bootstrap() {
                Ok(id) => {
                    self.bootstrap.insert(id, reply);
                }
                Err(_) => {
                    let _ = reply.send(Err(NodeError::NoKnownPeers));
                }
            },
            Command::Shutdown => {}
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.on_kad_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                let speaks_kad = info.protocols.contains(&KAD_PROTOCOL);
                self.learn(peer_id, &info.listen_addrs, speaks_kad);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.on_ping_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    // Everyone on the LAN answering shoal's mDNS is a shoal node.
                    self.learn(peer, std::slice::from_ref(&addr), true);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => self.on_listen_addr(address, true),
            SwarmEvent::ExpiredListenAddr { address, .. } => self.on_listen_addr(address, false),
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                self.finish_dials(peer_id, Ok(()));
                // Only our dials: an inbound connection tells us no address to hand out.
                if endpoint.is_dialer() {
                    self.on_dial_done(peer_id, None);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                self.finish_dials(peer, Err(error.to_string()));
                self.on_dial_done(peer, Some(&error));
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.last_rtt.remove(&peer_id);
            }
            _ => {}
        }
    }

    /// With no `external` configured, our concrete listen addresses are what we advertise:
    /// provider records carry only confirmed external addresses.
    fn on_listen_addr(&mut self, address: Multiaddr, up: bool) {
        if !self.advertise_listen {
            return;
        }
        if !up {
            self.swarm.remove_external_address(&address);
        } else if dialable(&address).is_some() {
            self.swarm.add_external_address(address);
        }
    }

    /// A bootstrap runs in several queries' worth of steps; the caller hears at the last one
    /// or at the first failure.
    fn on_bootstrap_step(&mut self, id: QueryId, result: Result<(), kad::BootstrapError>, last: bool) {
        if result.is_ok() && !last {
            return;
        }
        if let Some(reply) = self.bootstrap.remove(&id) {
            let _ = reply.send(result.map_err(|e| NodeError::Query(e.to_string())));
        }
    }

    /// Records addresses a peer listens on; into Kademlia's routing table too when the peer
    /// is a DHT server (Kademlia never learns listen addresses on its own).
    fn learn(&mut self, peer: PeerId, addrs: &[Multiaddr], into_kad: bool) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        let behaviour = self.swarm.behaviour_mut();
        for addr in addrs.iter().filter_map(dialable) {
            behaviour.book.add(peer, &addr);
            if into_kad {
                behaviour.kad.add_address(&peer, addr);
            }
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        let kad::Event::OutboundQueryProgressed { id, result, step, .. } = event else { return };
        match result {
            QueryResult::StartProviding(result) => {
                if let Some(reply) = self.start_providing.remove(&id) {
                    let _ = reply.send(result.map(|_| ()).map_err(|e| NodeError::Query(e.to_string())));
                }
            }
            QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders { providers, .. })) => {
                self.on_providers_found(id, providers);
                if step.last {
                    self.on_providers_query_done(id);
                }
            }
            QueryResult::GetProviders(_) => self.on_providers_query_done(id),
            QueryResult::GetClosestPeers(result) => {
                let peers = match result {
                    Ok(ok) => ok.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                self.on_closest_peers(id, peers);
            }
            QueryResult::Bootstrap(result) => self.on_bootstrap_step(id, result.map(|_| ()), step.last),
            _ => {}
        }
    }

    /// Dials each new provider while the query (and with it the provider's addresses) lives.
    fn on_providers_found(&mut self, id: QueryId, providers: HashSet<PeerId>) {
        let me = *self.swarm.local_peer_id();
        let Some(lookup) = self.providers.get_mut(&id) else { return };
        for peer in providers {
            if peer == me || lookup.found.contains(&peer) || lookup.found.len() >= MAX_PROVIDERS_PER_LOOKUP {
                continue;
            }
            lookup.found.push(peer);
            if self.swarm.is_connected(&peer) {
                continue;
            }
            let opts = DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).build();
            match self.swarm.dial(opts) {
                Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                    lookup.dialing.insert(peer);
                }
                Err(e) => tracing::debug!(%peer, "provider dial: {e}"),
            }
        }
    }

    fn on_providers_query_done(&mut self, id: QueryId) {
        if let Some(lookup) = self.providers.get_mut(&id) {
            lookup.query_done = true;
        }
        self.finish_providers(|lookup| lookup.query_done && lookup.dialing.is_empty());
    }

    /// A dial (ours or anyone's) to `peer` ended: lookups waiting on it may be complete, and
    /// pings waiting on a failed dial fail.
    fn on_dial_done(&mut self, peer: PeerId, error: Option<&DialError>) {
        for lookup in self.providers.values_mut() {
            lookup.dialing.remove(&peer);
        }
        self.finish_providers(|lookup| lookup.query_done && lookup.dialing.is_empty());
        if let Some(error) = error {
            for reply in self.ping_waiters.remove(&peer).unwrap_or_default() {
                let _ = reply.send(Err(NodeError::Dial { peer, reason: error.to_string() }));
            }
        }
    }

    /// Replies to, and forgets, every lookup `done` says is complete.
    fn finish_providers(&mut self, done: impl Fn(&ProvidersLookup) -> bool) {
        let finished: Vec<QueryId> = self.providers.iter().filter(|(_, l)| done(l)).map(|(id, _)| *id).collect();
        for id in finished {
            let Some(lookup) = self.providers.remove(&id) else { continue };
            if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                query.finish();
            }
            let book = &self.swarm.behaviour().book;
            let found = lookup.found.iter().map(|p| (*p, book.get(p))).collect();
            let _ = lookup.reply.send(Ok(found));
        }
    }

    fn on_closest_peers(&mut self, id: QueryId, peers: Vec<kad::PeerInfo>) {
        let Some((target, reply)) = self.find_peer.remove(&id) else { return };
        if let Some(info) = peers.iter().find(|p| p.peer_id == target) {
            self.learn(target, &info.addrs, true);
            let addrs: Vec<Multiaddr> = info.addrs.iter().filter_map(dialable).collect();
            if !addrs.is_empty() {
                let _ = reply.send(Ok(addrs));
                return;
            }
        }
        // Not in the DHT (a client-mode peer never is): what we learned by other means.
        let known = self.swarm.behaviour().book.get(&target);
        let _ = reply.send(if known.is_empty() { Err(NodeError::PeerNotFound(target)) } else { Ok(known) });
    }

    fn on_ping_command(&mut self, peer: PeerId, reply: Reply<Duration>) {
        if self.swarm.is_connected(&peer) {
            if let Some(rtt) = self.last_rtt.get(&peer) {
                let _ = reply.send(Ok(*rtt));
                return;
            }
        } else if let Err(reason) = self.start_dial(peer) {
            let _ = reply.send(Err(NodeError::Dial { peer, reason }));
            return;
        }
        let waiters = self.ping_waiters.entry(peer).or_default();
        if waiters.len() >= MAX_PING_WAITERS {
            let _ = reply.send(Err(NodeError::Ping { peer, reason: "too many pings in flight".into() }));
            return;
        }
        waiters.push(reply);
    }

    /// Dials `peer` by PeerId unless a dial is already under way (whose outcome the caller
    /// then waits for); Err with libp2p's reason when it refuses at once.
    fn start_dial(&mut self, peer: PeerId) -> Result<(), String> {
        let opts = DialOpts::peer_id(peer).condition(PeerCondition::DisconnectedAndNotDialing).build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn on_dial_command(&mut self, peer: PeerId, reply: Reply<()>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        if let Err(reason) = self.start_dial(peer) {
            let _ = reply.send(Err(NodeError::Dial { peer, reason }));
            return;
        }
        let waiters = self.dial_waiters.entry(peer).or_default();
        if waiters.len() >= MAX_PING_WAITERS {
            let _ = reply.send(Err(NodeError::Dial { peer, reason: "too many dials in flight".into() }));
            return;
        }
        waiters.push(reply);
    }

    /// Answers everyone waiting for a connection to `peer`.
    fn finish_dials(&mut self, peer: PeerId, result: Result<(), String>) {
        for reply in self.dial_waiters.remove(&peer).unwrap_or_default() {
            let _ = reply.send(result.clone().map_err(|reason| NodeError::Dial { peer, reason }));
        }
    }

    fn on_ping_event(&mut self, event: ping::Event) {
        let result = match event.result {
            Ok(rtt) => {
                self.last_rtt.insert(event.peer, rtt);
                Ok(rtt)
            }
            Err(e) => {
                // A failed ping voids the cached round trip: the next ping waits for a fresh one.
                self.last_rtt.remove(&event.peer);
                Err(e.to_string())
            }
        };
        for reply in self.ping_waiters.remove(&event.peer).unwrap_or_default() {
            let _ = reply.send(result.clone().map_err(|reason| NodeError::Ping { peer: event.peer, reason }));
        }
    }

    /// Drops replies whose caller gave up, and answers provider lookups past their deadline
    /// with what they have.
    fn sweep(&mut self, now: Instant) {
        self.start_providing.retain(|_, r| !r.is_closed());
        self.find_peer.retain(|_, (_, r)| !r.is_closed());
        self.bootstrap.retain(|_, r| !r.is_closed());
        self.ping_waiters.retain(|_, list| {
            list.retain(|r| !r.is_closed());
            !list.is_empty()
        });
        self.dial_waiters.retain(|_, list| {
            list.retain(|r| !r.is_closed());
            !list.is_empty()
        });
        self.finish_providers(|lookup| lookup.deadline <= now || lookup.reply.is_closed());
    }
}
