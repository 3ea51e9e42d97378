//! The node's event loop: the one task that owns the [`Swarm`]. It answers the handle's
//! [`Command`]s, turns swarm and behaviour events into replies to the callers waiting in
//! [`super::pending`], and once a second forgets callers that gave up.
//!
//! Read it as a dispatcher: [`EventLoop::run`] selects on cancellation, swarm events, commands
//! and the sweep tick; each arm calls one named method, and each command and each event kind
//! has its own small handler below. How the swarm is built, and why Kademlia, identify and
//! the address book are wired as they are, is in [`super::swarm`].
use super::book::{dialable, strip_p2p};
use super::handle::Command;
mod nat;
mod relays;
mod store;

use super::node::{DhtMode, NodeConfig, NodeError, Provider, Trouble};
use super::pending::{Lookups, ProvidersLookup, Reply, Waiters};
use super::relay_server::Reservations;
use super::swarm::{Behaviour, BehaviourEvent, Listeners};
use futures::StreamExt;
use libp2p::kad::{self, QueryId, QueryResult};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{autonat, identify, mdns, ping, Multiaddr, PeerId, Swarm};
use nat::Nat;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Callers waiting on one peer's ping, and on one peer's dial.
const MAX_WAITERS_PER_PEER: usize = 16;
/// How long `spawn` waits for the listeners to report their addresses.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often callers that gave up are forgotten and late provider lookups answered.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    /// Advertise listen addresses as external (no `external` configured).
    advertise_listen: bool,
    query_timeout: Duration,
    start_providing: HashMap<QueryId, Reply<()>>,
    providers: Lookups<QueryId>,
    find_peer: HashMap<QueryId, (PeerId, Reply<Vec<Multiaddr>>)>,
    bootstrap: HashMap<QueryId, Reply<()>>,
    pings: Waiters<PeerId, Result<Duration, NodeError>>,
    dials: Waiters<PeerId, Result<(), NodeError>>,
    /// The latest round trip of each connected peer, what a ping on a live connection answers.
    last_rtt: HashMap<PeerId, Duration>,
    troubles: broadcast::Sender<Trouble>,
    /// Reachability, relays, hole punches and relayed connections.
    nat: Nat,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        troubles: broadcast::Sender<Trouble>,
        config: &NodeConfig,
        served: Reservations,
    ) -> EventLoop {
        EventLoop {
            swarm,
            commands,
            advertise_listen: config.external.is_empty(),
            query_timeout: config.query_timeout,
            start_providing: HashMap::new(),
            providers: Lookups::new(),
            find_peer: HashMap::new(),
            bootstrap: HashMap::new(),
            pings: Waiters::new(MAX_WAITERS_PER_PEER),
            dials: Waiters::new(MAX_WAITERS_PER_PEER),
            last_rtt: HashMap::new(),
            troubles,
            nat: Nat::new(config.dht_mode == DhtMode::Auto, served),
        }
    }

    /// Drives the swarm until every listener has reported an address (or failed).
    pub(super) async fn await_listeners(&mut self, mut listeners: Listeners) -> Result<(), NodeError> {
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

    pub(super) fn dial_bootstrap(&mut self, bootstrap: &[Multiaddr]) -> Result<(), NodeError> {
        for addr in bootstrap {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                return Err(NodeError::BootstrapAddr(addr.clone()));
            };
            let bare = strip_p2p(addr);
            self.nat.bootstrap_peer(peer);
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

    /// Runs until `cancel`, a [`Command::Shutdown`], or the last handle is dropped; dropping
    /// the swarm then closes every connection.
    pub(super) async fn run(mut self, cancel: CancellationToken) {
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                event = self.swarm.select_next_some() => {
                    self.on_swarm_event(event);
                    for peer in self.swarm.behaviour_mut().book.take_expired() {
                        self.trouble(Trouble::AddressExpired(peer));
                    }
                }
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.on_command(command),
                },
                _ = sweep.tick() => self.sweep(Instant::now()),
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs());
            }
            Command::AddAddress { peer, addr, done } => {
                self.learn(peer, std::slice::from_ref(&addr), false);
                let _ = done.send(());
            }
            Command::StartProviding { key, reply } => self.on_start_providing(key, reply),
            Command::StopProviding { key } => self.swarm.behaviour_mut().kad.stop_providing(&kad::RecordKey::new(&key)),
            Command::GetProviders { key, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_providers(kad::RecordKey::new(&key));
                self.providers.insert(id, ProvidersLookup::new(reply, Instant::now() + self.query_timeout));
            }
            Command::FindPeer { peer, reply } => self.on_find_peer(peer, reply),
            Command::Ping { peer, reply } => self.on_ping_command(peer, reply),
            Command::Dial { peer, reply } => self.on_dial_command(peer, reply),
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::RoutingTableSize(reply) => {
                let size = self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
                let _ = reply.send(size);
            }
            Command::RoutingTablePeers(reply) => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                let _ = reply.send(
                    kad.kbuckets().flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>()).collect(),
                );
            }
            Command::Reachability(reply) => {
                let mode = match self.swarm.behaviour().kad.mode() {
                    kad::Mode::Server => "server",
                    kad::Mode::Client => "client",
                };
                let _ = reply.send((self.nat.reachability.clone(), mode));
            }
            Command::Bootstrap(reply) => self.on_bootstrap_command(reply),
            Command::AwaitDirect { peer, reply } => self.on_await_direct(peer, reply),
            Command::Shutdown => {}
        }
    }

    /// Our listen addresses, each ending in `/p2p/<our PeerId>`.
    fn listen_addrs(&self) -> Vec<Multiaddr> {
        let me = *self.swarm.local_peer_id();
        self.swarm.listeners().map(|a| strip_p2p(a).with(Protocol::P2p(me))).collect()
    }

    fn on_start_providing(&mut self, key: Vec<u8>, reply: Reply<()>) {
        match self.swarm.behaviour_mut().kad.start_providing(kad::RecordKey::new(&key)) {
            Ok(id) => {
                self.start_providing.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    fn on_find_peer(&mut self, peer: PeerId, reply: Reply<Vec<Multiaddr>>) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        // We look a peer up because what we know of it may be stale (it restarted on another
        // port). Left in our routing table, it would be queried first at the old address, fail,
        // and be struck from the query for good, even after other nodes hand out its new
        // address; so the lookup starts without it.
        kad.remove_peer(&peer);
        let id = kad.get_closest_peers(peer);
        self.find_peer.insert(id, (peer, reply));
    }

    fn on_bootstrap_command(&mut self, reply: Reply<()>) {
        match self.swarm.behaviour_mut().kad.bootstrap() {
            Ok(id) => _ = self.bootstrap.insert(id, reply),
            Err(_) => _ = reply.send(Err(NodeError::NoKnownPeers)),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.on_kad_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                self.on_identified(peer_id, &info)
            }
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => self.on_relay_client_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.nat.served.on_event(&e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.on_dcutr_event(e),
            SwarmEvent::ListenerClosed { listener_id, .. } => self.on_listener_closed(listener_id),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.on_ping_event(e),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. })) => {
                self.on_nat_status(new)
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::InboundProbe(
                autonat::InboundProbeEvent::Response { peer, address, .. },
            ))) => self.on_dial_back_done(peer, &address),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    // Everyone on the LAN answering shoal's mDNS is a shoal node.
                    self.learn(peer, std::slice::from_ref(&addr), true);
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => self.on_listen_addr(address, true),
            SwarmEvent::ExpiredListenAddr { address, .. } => self.on_listen_addr(address, false),
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                let dialed = endpoint.is_dialer().then(|| endpoint.get_remote_address());
                self.on_connection_up(peer_id, connection_id, endpoint.is_relayed(), dialed);
                self.dials.finish(&peer_id, || Ok(()));
                // Only our dials: an inbound connection tells us no address to hand out.
                if endpoint.is_dialer() {
                    self.on_dial_done(peer_id, None);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), error, .. } => {
                let reason = error.to_string();
                self.dials.finish(&peer, || Err(NodeError::Dial { peer, reason: reason.clone() }));
                self.on_dial_done(peer, Some(&error));
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, .. } => {
                self.on_connection_down(peer_id, connection_id);
                if num_established == 0 {
                    self.last_rtt.remove(&peer_id);
                }
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

    /// Records addresses a peer listens on; into Kademlia's routing table too when the peer
    /// is a DHT server (Kademlia never learns listen addresses on its own). Kademlia keeps
    /// every address it is given, so what the book drops goes from it too: a peer announcing
    /// new addresses over and over (identify pushes) never holds more than the book's 8 there.
    fn learn(&mut self, peer: PeerId, addrs: &[Multiaddr], into_kad: bool) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        let behaviour = self.swarm.behaviour_mut();
        for addr in addrs.iter().filter_map(dialable) {
            let dropped = behaviour.book.add(peer, &addr);
            if into_kad {
                behaviour.kad.add_address(&peer, addr);
                if let Some(old) = dropped {
                    behaviour.kad.remove_address(&peer, &old);
                }
            }
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        let (id, result, step) = match event {
            kad::Event::OutboundQueryProgressed { id, result, step, .. } => (id, result, step),
            kad::Event::InboundRequest { request } => {
                return store::on_inbound(self.swarm.behaviour_mut().kad.store_mut(), request)
            }
            _ => return,
        };
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

    /// A bootstrap runs in several queries' worth of steps; the caller hears at the last one
    /// or at the first failure.
    fn on_bootstrap_step(&mut self, id: QueryId, result: Result<(), kad::BootstrapError>, last: bool) {
        if result.is_ok() && !last {
            return;
        }
        if result.is_err() {
            self.trouble(Trouble::LookupFailed);
        }
        if let Some(reply) = self.bootstrap.remove(&id) {
            let _ = reply.send(result.map_err(|e| NodeError::Query(e.to_string())));
        }
    }

    /// Dials each new provider while the query (and with it the provider's addresses) lives.
    fn on_providers_found(&mut self, id: QueryId, providers: HashSet<PeerId>) {
        let me = *self.swarm.local_peer_id();
        let Some(lookup) = self.providers.get_mut(&id) else { return };
        for peer in providers {
            if !lookup.add_found(peer, me) || self.swarm.is_connected(&peer) {
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
        self.finish_providers(ProvidersLookup::is_complete);
    }

    /// A dial (ours or anyone's) to `peer` ended: lookups waiting on it may be complete, and
    /// pings waiting on a failed dial fail.
    fn on_dial_done(&mut self, peer: PeerId, error: Option<&DialError>) {
        self.providers.dial_ended(&peer);
        self.finish_providers(ProvidersLookup::is_complete);
        if let Some(error) = error {
            let reason = error.to_string();
            self.pings.finish(&peer, || Err(NodeError::Dial { peer, reason: reason.clone() }));
        }
    }

    /// Replies to, and forgets, every lookup `done` says is finished.
    fn finish_providers(&mut self, done: impl Fn(&ProvidersLookup) -> bool) {
        for (id, lookup) in self.providers.take(done) {
            if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                query.finish();
            }
            let book = &self.swarm.behaviour().book;
            let found: Vec<Provider> = lookup.found.iter().map(|p| (*p, book.get(p))).collect();
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
        if peers.is_empty() {
            self.trouble(Trouble::LookupFailed);
        }
        let _ = reply.send(if known.is_empty() { Err(NodeError::PeerNotFound(target)) } else { Ok(known) });
    }

    fn trouble(&self, trouble: Trouble) {
        tracing::debug!(?trouble, "discovery trouble");
        let _ = self.troubles.send(trouble);
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
        if let Err(reply) = self.pings.push(peer, reply) {
            let _ = reply.send(Err(NodeError::Ping { peer, reason: "too many pings in flight".into() }));
        }
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
        if let Err(reply) = self.dials.push(peer, reply) {
            let _ = reply.send(Err(NodeError::Dial { peer, reason: "too many dials in flight".into() }));
        }
    }

    fn on_ping_event(&mut self, event: ping::Event) {
        let peer = event.peer;
        match event.result {
            Ok(rtt) => {
                self.last_rtt.insert(peer, rtt);
                self.pings.finish(&peer, || Ok(rtt));
            }
            Err(e) => {
                // A failed ping voids the cached round trip: the next ping waits for a fresh one.
                self.last_rtt.remove(&peer);
                let reason = e.to_string();
                self.pings.finish(&peer, || Err(NodeError::Ping { peer, reason: reason.clone() }));
            }
        }
    }

    /// Drops replies whose caller gave up, and answers provider lookups past their deadline
    /// with what they have.
    fn sweep(&mut self, now: Instant) {
        self.start_providing.retain(|_, r| !r.is_closed());
        self.find_peer.retain(|_, (_, r)| !r.is_closed());
        self.bootstrap.retain(|_, r| !r.is_closed());
        self.pings.sweep();
        self.dials.sweep();
        self.nat.sweep();
        self.finish_providers(|lookup| lookup.is_expired(now));
    }
}
