//! The key-peer monitor's task: the I/O around the [`KeyPeerMonitor`] state machine.
//!
//! It owns the monitor (no lock: the task is the owner) and does only what the monitor's
//! [`Action`]s say: ping connected key peers and dial disconnected ones (each bounded by
//! `probe_timeout`, at most `probe_max_concurrent` operations at once in a [`JoinSet`]), look
//! a failing peer up in the DHT, redial it with the addresses found, tell the torrents when it
//! is back, and publish a discovery reset when it is not. It also feeds the monitor the
//! connected peers before each decision and, every [`CONTRIBUTOR_POLL`], the libp2p peers
//! feeding the session's downloads. Counters go to [`metrics()`]`.keepalive`; the latest
//! [`MonitorView`] is published on a `watch` channel for the diagnostics.
//!
//! Counting: a probe is one attempt and one success or failure; a repair is triggered when
//! the monitor says so and ends as a success (the redial connected) or a failure (nothing
//! found, or the redial failed); a reconnect attempt is each redial of the repair chain.
use super::monitor::{rank_contributors, Action, KeyPeerMonitor, MonitorConfig, MonitorView, Source};
use crate::config::Options;
use crate::metrics::metrics;
use crate::p2p::{NodeHandle, Trouble};
use crate::torrent::TorrentHandle;
use crate::types::parse_key_peer;
use crate::types::{PeerAddr, PeerSource};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the contributors are read from the torrents' statistics.
pub const CONTRIBUTOR_POLL: Duration = Duration::from_secs(2);
/// Contributors considered, best download rate first.
const MAX_CONTRIBUTORS: usize = 16;

/// What the monitor needs of the session: its torrents (to hand a reconnected peer to
/// their pools, and to find contributors) and the reset channel of their DHT tasks.
#[derive(Clone)]
pub struct SessionLink {
    torrents: Arc<dyn Fn() -> Vec<TorrentHandle> + Send + Sync>,
    resets: Option<broadcast::Sender<()>>,
    /// The configured `key_peers`, changed while running (the daemon's config).
    key_peers: Option<watch::Receiver<Vec<String>>>,
}

impl SessionLink {
    pub fn new(
        torrents: Arc<dyn Fn() -> Vec<TorrentHandle> + Send + Sync>,
        resets: broadcast::Sender<()>,
        key_peers: watch::Receiver<Vec<String>>,
    ) -> SessionLink {
        SessionLink { torrents, resets: Some(resets), key_peers: Some(key_peers) }
    }

    /// No torrents and no one to reset (`shoal node`).
    pub fn detached() -> SessionLink {
        SessionLink { torrents: Arc::new(Vec::new), resets: None, key_peers: None }
    }

    fn torrents(&self) -> Vec<TorrentHandle> {
        (self.torrents)()
    }

    fn reset(&self) {
        if let Some(tx) = &self.resets {
            let _ = tx.send(());
        }
    }
}

/// The monitor's starting set: configured `key_peers` first, then the bootstrap nodes.
#[derive(Debug, Clone, Default)]
pub struct KeyPeerSeeds {
    pub configured: Vec<(PeerId, Option<Multiaddr>)>,
    pub bootstrap: Vec<(PeerId, Multiaddr)>,
}

impl KeyPeerSeeds {
    /// From `Options::key_peers` (already validated) and the `--bootstrap` multiaddrs.
    pub fn from_options(options: &Options, bootstrap: &[Multiaddr]) -> Result<KeyPeerSeeds, String> {
        let configured = options.key_peers.iter().map(|s| parse_key_peer(s)).collect::<Result<_, _>>()?;
        let bootstrap = bootstrap
            .iter()
            .filter_map(|a| match a.iter().last() {
                Some(Protocol::P2p(id)) => Some((id, a.clone())),
                _ => None,
            })
            .collect();
        Ok(KeyPeerSeeds { configured, bootstrap })
    }
}

/// What one finished operation reports.
enum Done {
    Probe(PeerId, Result<(), String>),
    Lookup(PeerId, Result<Vec<Multiaddr>, String>),
    Redial(PeerId, Vec<Multiaddr>, Result<(), String>),
}

/// Starts the monitor on `tasks` and returns the receiver of its latest view. Runs until
/// `cancel`; its probes and repairs end with it.
pub async fn spawn(
    node: NodeHandle,
    options: &Options,
    seeds: KeyPeerSeeds,
    link: SessionLink,
    tasks: &TaskTracker,
    cancel: CancellationToken,
) -> watch::Receiver<MonitorView> {
    let cfg = MonitorConfig::from_options(options);
    let now = Instant::now();
    let mut monitor = KeyPeerMonitor::new(cfg, now);
    let fixed = seeds.configured.iter().map(|(id, a)| (*id, a.clone(), Source::Configured));
    let fixed = fixed.chain(seeds.bootstrap.iter().map(|(id, a)| (*id, Some(a.clone()), Source::Bootstrap)));
    for (peer, addr, source) in fixed {
        if peer == node.peer_id() {
            continue;
        }
        if let Some(addr) = addr {
            if let Err(e) = node.add_address(peer, addr).await {
                tracing::warn!(%peer, error = %e, "cannot remember a key peer's address");
            }
        }
        if !monitor.add_fixed(peer, source) {
            tracing::warn!(%peer, max = cfg.max_size, "key peer left out: key_peer_set_max_size reached");
        }
    }
    tracing::info!(
        key_peers = monitor.len(),
        probe_interval = ?cfg.probe_interval,
        per_peer_min_probe_interval = ?cfg.min_probe_interval,
        probe_timeout = ?options.probe_timeout,
        probe_fail_threshold = cfg.fail_threshold,
        probe_max_concurrent = cfg.max_concurrent,
        key_peer_set_max_size = cfg.max_size,
        reset_cool_down = ?cfg.reset_cool_down,
        "key-peer monitor started"
    );
    let (view_tx, view_rx) = watch::channel(monitor.view(now));
    let task = MonitorTask {
        monitor,
        node,
        link,
        probe_timeout: options.probe_timeout,
        from_routing_table: options.key_peers_from_routing_table,
        ops: JoinSet::new(),
        view: view_tx,
    };
    tasks.spawn(task.run(cancel));
    view_rx
}

struct MonitorTask {
    monitor: KeyPeerMonitor,
    node: NodeHandle,
    link: SessionLink,
    probe_timeout: Duration,
    /// `key_peers_from_routing_table`: the routing table's peers are read with the
    /// contributors.
    from_routing_table: bool,
    ops: JoinSet<Done>,
    view: watch::Sender<MonitorView>,
}

impl MonitorTask {
    async fn run(mut self, cancel: CancellationToken) {
        let cfg = *self.monitor.config();
        // A tick finer than either interval; the monitor decides what is due.
        let tick_every = (cfg.probe_interval.min(cfg.min_probe_interval) / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut contributors = tokio::time::interval(CONTRIBUTOR_POLL);
        contributors.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut troubles = self.node.troubles();
        let mut troubles_open = true;
        let mut key_peers = self.link.key_peers.take();
        loop {
            let configured = async {
                match key_peers.as_mut() {
                    Some(rx) => rx.changed().await.map(|()| rx.borrow_and_update().clone()).ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                list = configured => match list {
                    Some(list) => self.on_key_peers(&list).await,
                    None => key_peers = None,
                },
                _ = tick.tick() => self.on_tick().await,
                _ = contributors.tick() => self.on_contributors().await,
                t = troubles.recv(), if troubles_open => match t {
                    Ok(t) => self.on_trouble(t),
                    Err(broadcast::error::RecvError::Lagged(_)) => self.on_trouble(Trouble::LookupFailed),
                    Err(broadcast::error::RecvError::Closed) => troubles_open = false,
                },
                Some(done) = self.ops.join_next(), if !self.ops.is_empty() => match done {
                    Ok(done) => self.on_done(done).await,
                    Err(e) => tracing::warn!(error = %e, "key-peer operation panicked"),
                },
            }
            let _ = self.view.send(self.monitor.view(Instant::now()));
        }
        self.ops.shutdown().await;
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if !self.monitor.round_due(now) && self.monitor.in_flight() >= self.monitor.config().max_concurrent {
            return;
        }
        match self.node.connected_peers().await {
            Ok(connected) => self.monitor.set_connected(&connected),
            Err(e) => tracing::debug!(error = %e, "cannot read the connected peers"),
        }
        let round = self.monitor.round_due(now);
        let due = self.monitor.due_probes(now);
        if round {
            tracing::debug!(
                key_peers = self.monitor.len(),
                probes = due.len(),
                in_flight = self.monitor.in_flight(),
                "key-peer probe round"
            );
        }
        for peer in due {
            self.start_probe(peer);
        }
    }

    /// The configured `key_peers` changed (validated by then): new ones are probed from the
    /// next round, dropped ones leave the set.
    async fn on_key_peers(&mut self, list: &[String]) {
        let mut ids = Vec::new();
        for (peer, addr) in list.iter().filter_map(|s| parse_key_peer(s).ok()) {
            if let Some(addr) = addr.filter(|_| peer != self.node.peer_id()) {
                if let Err(e) = self.node.add_address(peer, addr).await {
                    tracing::warn!(%peer, error = %e, "cannot remember a key peer's address");
                }
            }
            ids.push(peer);
        }
        ids.retain(|p| *p != self.node.peer_id());
        for peer in self.monitor.set_configured(&ids) {
            tracing::warn!(%peer, "key peer left out: key_peer_set_max_size reached");
        }
        tracing::info!(key_peers = self.monitor.len(), "configured key peers changed");
    }

    /// A connected peer is pinged; a disconnected one is dialled by PeerId.
    fn start_probe(&mut self, peer: PeerId) {
        metrics().keepalive.inc_probe_attempts();
        let (node, timeout, connected) = (self.node.clone(), self.probe_timeout, self.monitor.is_connected(&peer));
        self.ops.spawn(async move {
            let probe = async {
                if connected {
                    node.ping(peer).await.map(|_| ())
                } else {
                    node.dial(peer).await
                }
            };
            let result = match tokio::time::timeout(timeout, probe).await {
                Err(_) => Err(format!("no answer within {timeout:?}")),
                Ok(r) => r.map_err(|e| e.to_string()),
            };
            Done::Probe(peer, result)
        });
    }

    /// A sign from the node that discovery should look again: a reset, unless one went out
    /// less than the cool-down ago (from any source), or the sign is about a key peer, whose
    /// probes and repair already decide.
    fn on_trouble(&mut self, trouble: Trouble) {
        if let Trouble::AddressExpired(peer) = trouble {
            // A key peer's failures are its repair's to judge (and to reset for).
            if self.monitor.source(&peer).is_some() {
                tracing::debug!(%peer, "a key peer's address expired; left to its repair");
                return;
            }
        }
        let cause = match trouble {
            Trouble::LookupFailed => "a closest-peers lookup found nobody".to_string(),
            Trouble::AddressExpired(peer) => format!("the address-book entry of {peer} expired"),
        };
        if self.monitor.discovery_trouble(Instant::now()) {
            metrics().keepalive.inc_reset_events_published();
            self.link.reset();
            tracing::info!("reset event published: {cause}, discovery brought forward");
        } else {
            tracing::debug!("{cause}; reset not published (cool-down)");
        }
    }

    /// Reads the peers feeding the downloads and, when asked, the routing table's peers.
    async fn on_contributors(&mut self) {
        let mut found = Vec::new();
        for handle in self.link.torrents() {
            found.extend(handle.stats().borrow().libp2p_contributors());
        }
        let ids = rank_contributors(found, MAX_CONTRIBUTORS);
        self.monitor.set_dynamic(Source::Contributor, &ids, Instant::now());
        if self.from_routing_table {
            match self.node.routing_table_peers().await {
                Ok(peers) => self.monitor.set_dynamic(Source::RoutingTable, &peers, Instant::now()),
                Err(e) => tracing::debug!(error = %e, "cannot read the routing table"),
            }
        }
    }

    async fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        let action = match done {
            Done::Probe(peer, result) => {
                let ok = result.is_ok();
                if let Err(e) = result {
                    metrics().keepalive.inc_probe_fail();
                    let (n, threshold) = (self.monitor.failures(&peer) + 1, self.monitor.config().fail_threshold);
                    tracing::warn!(%peer, error = %e, "probe failed {n}/{threshold}");
                } else {
                    metrics().keepalive.inc_probe_success();
                }
                self.monitor.probe_result(peer, ok, now)
            }
            Done::Lookup(peer, result) => {
                let addrs =
                    result.map_err(|e| tracing::info!(%peer, error = %e, "repair: peer not found in the DHT")).ok();
                self.monitor.repair_result(peer, addrs, now)
            }
            Done::Redial(peer, addrs, result) => {
                let ok = result.is_ok();
                match result {
                    Ok(()) => {
                        metrics().keepalive.inc_reconnect_success();
                        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                        tracing::info!(%peer, addrs = ?addrs, "reconnected with a new address");
                    }
                    Err(e) => tracing::info!(%peer, error = %e, "repair: redial failed"),
                }
                self.monitor.redial_result(peer, ok, now)
            }
        };
        self.execute(action).await;
    }

    async fn execute(&mut self, action: Action) {
        match action {
            Action::Nothing => {}
            Action::Repair(peer) => {
                metrics().keepalive.inc_repair_triggered();
                tracing::info!(%peer, failures = self.monitor.failures(&peer), "repair started: looking the peer up in the DHT");
                let node = self.node.clone();
                self.ops
                    .spawn(async move { Done::Lookup(peer, node.find_peer(peer).await.map_err(|e| e.to_string())) });
            }
            Action::Redial(peer, addrs) => {
                metrics().keepalive.inc_reconnect_attempts();
                let (node, timeout) = (self.node.clone(), self.probe_timeout);
                self.ops.spawn(async move {
                    let redial = async {
                        for a in &addrs {
                            node.add_address(peer, a.clone()).await?;
                        }
                        node.dial(peer).await
                    };
                    let result = match tokio::time::timeout(timeout, redial).await {
                        Err(_) => Err(format!("no connection within {timeout:?}")),
                        Ok(r) => r.map_err(|e| e.to_string()),
                    };
                    Done::Redial(peer, addrs, result)
                });
            }
            Action::Reconnected(peer) => {
                metrics().keepalive.inc_repair_success();
                // A bootstrap node serves no torrent; anyone else may.
                if self.monitor.source(&peer) == Some(Source::Bootstrap) {
                    return;
                }
                // A private torrent (BEP 27) takes peers from its trackers only.
                for handle in self.link.torrents().into_iter().filter(|h| !h.meta.private) {
                    handle.add_peers_from(PeerSource::KeyPeer, vec![PeerAddr::P2p(peer)]).await;
                }
            }
            Action::PublishReset(peer) => {
                metrics().keepalive.inc_repair_fail();
                metrics().keepalive.inc_reset_events_published();
                self.link.reset();
                tracing::info!(%peer, "reset event published: repair failed, discovery brought forward");
            }
            Action::ResetSuppressed(peer) => {
                metrics().keepalive.inc_repair_fail();
                tracing::debug!(%peer, "repair failed; reset not published (cool-down)");
            }
        }
    }
}
