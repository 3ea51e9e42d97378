//! How the node's [`Swarm`] is built: transport, behaviours and the settings that matter.
//!
//! Behaviour: TCP + TLS 1.3 or Noise + Yamux (multistream-select offers TLS first: [`tls`] puts
//! AES-GCM first, a fifth more throughput than ChaCha20 on CPUs with AES instructions; Noise
//! is kept for peers without TLS; [`muxer`] is Yamux sending frames of up to 256 KiB) and QUIC
//! (at most 4 fresh-port dials in flight, [`quic`]; DNS names resolved when the system
//! resolver is configured), both also through circuit relays, Kademlia, identify, ping, raw
//! `/shoal/bt/1.0.0` streams (`libp2p_stream`), optional mDNS, our [`AddressBook`], AutoNAT
//! (v1: connected peers dial us back to tell whether we are reachable; in `DhtMode::Auto`
//! Kademlia follows the verdict; we serve 30 probes a minute), DCUtR (bounded in
//! [`HolePunch`]), connection limits (established, per peer, pending inbound; inbound ones per
//! IP address, `per_ip`) and a process-memory limit: past any of them a new connection is
//! denied, so a stranger cannot fill the node. Circuit relay v2: as a client always (the event
//! loop reserves a slot on a relay once AutoNAT says we are private), as a relay with
//! `relay = true`; DCUtR then tries to replace a relayed connection with a direct one (over
//! QUIC the NAT's hole is punched with UDP, which works behind most
//! home NATs; over TCP it needs a simultaneous open).
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
//!   address of a peer that speaks our Kademlia protocol) and into the address book; what the
//!   book drops leaves Kademlia too, so neither holds more than 8 addresses a peer.
//! - What peers store on us passes through the event loop (`StoreInserts::FilterBoth`):
//!   provider records with at most 8 addresses, values never (`event_loop::store`).
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
use super::book::{strip_p2p, AddressBook};
use super::node::{DhtMode, NodeConfig, NodeError, KAD_PROTOCOL, PROVIDER_REPUBLISH, PROVIDER_TTL};
use super::per_ip::PerIp;
use super::punch::HolePunch;
use super::relay_server::{self, Reservations};
use super::{muxer, quic, tls};
use libp2p::connection_limits::{self, ConnectionLimits};
use libp2p::core::transport::ListenerId;
use libp2p::kad::{self, store::MemoryStore, Mode};
use libp2p::memory_connection_limits;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{autonat, identify, identity::Keypair, mdns, noise, ping, relay, tcp, Multiaddr, Swarm};
use std::collections::HashMap;
use std::time::Duration;

/// Identify's protocol-version string.
const IDENTIFY_VERSION: &str = "/shoal/1.0.0";
/// Connections idle (no stream open) for this long are closed.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(120);

/// The listeners started by [`start`], by id, with the address each was asked for.
pub(super) type Listeners = HashMap<ListenerId, Multiaddr>;

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    pub(super) kad: kad::Behaviour<MemoryStore>,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) stream: libp2p_stream::Behaviour,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) book: AddressBook,
    pub(super) limits: connection_limits::Behaviour,
    pub(super) per_ip: PerIp,
    pub(super) memory: memory_connection_limits::Behaviour,
    pub(super) autonat: autonat::Behaviour,
    /// Circuit relay v2, serving (`relay = true`): others behind NAT reserve a slot here.
    pub(super) relay: Toggle<relay::Behaviour>,
    /// Circuit relay v2, using: listening through a relay once AutoNAT says we are private.
    pub(super) relay_client: relay::client::Behaviour,
    /// Hole punching: a relayed connection is upgraded to a direct one where the NAT allows.
    pub(super) dcutr: HolePunch,
}

/// Builds the swarm, sets its DHT mode and external addresses and starts its listeners
/// (which report their addresses once the swarm is polled).
/// A relay we serve counts its reservations in `reservations`.
pub(super) fn start(
    config: &NodeConfig,
    reservations: &Reservations,
) -> Result<(Swarm<Behaviour>, Listeners), NodeError> {
    let mut swarm = build_swarm(config, reservations)?;
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
    Ok((swarm, listeners))
}

fn build_swarm(config: &NodeConfig, reservations: &Reservations) -> Result<Swarm<Behaviour>, NodeError> {
    let transport_err = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
    let tcp_config = || tcp::Config::default().nodelay(true);
    let make = |key: &Keypair, relay_client| make_behaviour(key, relay_client, config, reservations);
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT);
    // The same tail twice: the builder's phases are distinct types with and without DNS.
    macro_rules! finish {
        ($builder:expr) => {
            Ok($builder
                .with_relay_client((tls::Config::new, noise::Config::new), muxer::Config::new)
                .map_err(|e| transport_err(&e))?
                .with_behaviour(make)
                .map_err(|e| transport_err(&e))?
                .with_swarm_config(idle)
                .build())
        };
    }
    let builder = || {
        libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
            .with_tokio()
            .with_tcp(tcp_config(), (tls::Config::new, noise::Config::new), muxer::Config::new)
            .map_err(|e| transport_err(&e))?
            .with_other_transport(quic::FreshPortsBounded::new)
            .map_err(|e| transport_err(&e))
    };
    // The system resolver can be missing (containers without /etc/resolv.conf): then the
    // node runs without DNS, and /dns addresses fail to dial with a clear error.
    match builder()?.with_dns() {
        Ok(b) => finish!(b),
        Err(e) => {
            tracing::warn!("no system DNS resolver ({e}); /dns multiaddrs will not resolve");
            finish!(builder()?)
        }
    }
}

fn make_behaviour(
    key: &Keypair,
    relay_client: relay::client::Behaviour,
    config: &NodeConfig,
    reservations: &Reservations,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let peer_id = key.public().to_peer_id();
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_query_timeout(config.query_timeout)
        .set_provider_publication_interval(Some(PROVIDER_REPUBLISH))
        .set_provider_record_ttl(Some(PROVIDER_TTL))
        // What peers store on us goes through `event_loop::store` (values dropped, provider
        // records with a few addresses).
        .set_record_filtering(kad::StoreInserts::FilterBoth);
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
        autonat: autonat::Behaviour::new(peer_id, autonat_config(config)),
        relay: config
            .relay
            .map(|limits| relay::Behaviour::new(peer_id, relay_server::config(limits, reservations)))
            .into(),
        relay_client,
        dcutr: HolePunch::new(peer_id),
        memory: match config.limits.memory_bytes {
            Some(bytes) => memory_connection_limits::Behaviour::with_max_bytes(bytes),
            None => memory_connection_limits::Behaviour::with_max_percentage(0.9),
        },
        per_ip: PerIp::new(config.limits.pending_per_ip, config.limits.established_per_ip),
        limits: connection_limits::Behaviour::new(
            ConnectionLimits::default()
                .with_max_established(Some(config.limits.established))
                .with_max_established_per_peer(Some(config.limits.per_peer))
                .with_max_pending_incoming(Some(config.limits.pending_incoming)),
        ),
    })
}

/// AutoNAT probes every `nat.interval` (the first one sooner, once some peers are connected)
/// through connected peers, and serves their probes in turn: at most
/// [`AUTONAT_PROBES_SERVED`] a minute in all, 3 a peer, each dialling back at most
/// [`AUTONAT_DIAL_BACK_ADDRS`] addresses one after another (QUIC ones only while `quic` has a
/// fresh-port dial free).
fn autonat_config(config: &NodeConfig) -> autonat::Config {
    let every = config.nat.interval;
    autonat::Config {
        boot_delay: every.min(Duration::from_secs(15)),
        retry_interval: every,
        refresh_interval: every.max(Duration::from_secs(15 * 60)).min(every * 10),
        throttle_server_period: every.min(Duration::from_secs(90)),
        only_global_ips: config.nat.only_global_ips,
        throttle_clients_global_max: AUTONAT_PROBES_SERVED,
        throttle_clients_period: Duration::from_secs(60),
        max_peer_addresses: AUTONAT_DIAL_BACK_ADDRS,
        ..autonat::Config::default()
    }
}

/// Probes our AutoNAT server takes a minute, from all peers together: go-libp2p's bound.
/// libp2p's 30 a *second* let strangers keep 30 dial-backs starting every second.
const AUTONAT_PROBES_SERVED: usize = 30;
/// Addresses one probe has dialled back, one after another: a prober's addresses all carry
/// the IP address we see it at, so a few cover its transports (libp2p tries 16).
const AUTONAT_DIAL_BACK_ADDRS: usize = 4;
