//! The key-peer monitor's decisions: a plain synchronous state machine, no I/O, no tokio,
//! `now` passed in to every call, so every rule below is a unit test (in `monitor/tests.rs`).
//!
//! It owns the key-peer set and each key peer's probe and repair state. It never probes,
//! dials or looks anything up itself: it answers "which peers are due for a probe" and turns
//! each outcome into an [`Action`] the task ([`super::task`]) carries out and reports back.
//!
//! The set. Fixed members come from the configuration (`key_peers`) and the bootstrap nodes;
//! they are never evicted. Contributors (libp2p peers feeding a download, best first) fill
//! what is left of `key_peer_set_max_size`; when the set is full a new contributor takes the
//! place of the contributor that contributed least recently, and a contributor that has not
//! contributed for [`CONTRIBUTOR_TTL_ROUNDS`] probe intervals and is not connected is
//! dropped (a peer that left the swarm is not chased forever). Invariant: `peers.len() <=
//! max_size` once the fixed members are within the bound.
//!
//! One peer's life:
//!
//! ```text
//! Idle ──due──▶ Probing ──ok──▶ Idle
//!                  │ fail (failures % threshold != 0) ──▶ Idle (probed again next round)
//!                  └ fail (every threshold-th in a row) ──▶ Repairing (find_peer in the DHT)
//! Repairing ──addresses──▶ Redialing ──connected──▶ Idle (Reconnected)
//!     └ none ──▶ Failed ◀── dial failed ─┘     (PublishReset, or ResetSuppressed in cool-down)
//! Failed ──due──▶ Probing ...
//! ```
//!
//! Rate limits: a probe round starts every `probe_interval`; no peer is probed again sooner
//! than `min_probe_interval` after its last probe; at most `max_concurrent` operations
//! (probes, lookups, redials) are in flight; a reset is published at most once per
//! `reset_cool_down` (the DHT scheduler enforces its own limits as well; this keeps a storm
//! of failing key peers from even reaching it).
use crate::config::Options;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A contributor silent (and disconnected) for this many probe intervals leaves the set.
pub const CONTRIBUTOR_TTL_ROUNDS: u32 = 10;

/// The monitor's settings, all from [`Options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorConfig {
    pub probe_interval: Duration,
    pub min_probe_interval: Duration,
    pub fail_threshold: u32,
    pub max_concurrent: usize,
    pub max_size: usize,
    pub reset_cool_down: Duration,
}

impl MonitorConfig {
    pub fn from_options(o: &Options) -> MonitorConfig {
        MonitorConfig {
            probe_interval: o.key_peer_probe_interval,
            min_probe_interval: o.per_peer_min_probe_interval,
            fail_threshold: o.probe_fail_threshold.max(1),
            max_concurrent: o.probe_max_concurrent.max(1),
            max_size: o.key_peer_set_max_size,
            reset_cool_down: o.discovery_reset_cool_down,
        }
    }
}

/// Why a peer is in the key-peer set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Named in `key_peers` (or `--key-peer`).
    Configured,
    /// A `--bootstrap` node.
    Bootstrap,
    /// Currently (or recently) among the peers feeding a download.
    Contributor,
    /// In the Kademlia routing table (with `key_peers_from_routing_table`).
    RoutingTable,
}

impl Source {
    /// Contributors and routing-table peers come and go; configured and bootstrap peers stay.
    fn is_dynamic(self) -> bool {
        matches!(self, Source::Contributor | Source::RoutingTable)
    }
}

/// Where a key peer is in its probe and repair cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairState {
    Idle,
    Probing,
    /// Looking the peer up by PeerId in the DHT.
    Repairing,
    /// Dialling the addresses the lookup found.
    Redialing,
    /// The last repair failed; probed again like an idle peer.
    Failed,
}

impl RepairState {
    fn in_flight(self) -> bool {
        matches!(self, RepairState::Probing | RepairState::Repairing | RepairState::Redialing)
    }
}

/// What the task must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Look the peer up by PeerId in the DHT, then report with [`KeyPeerMonitor::repair_result`].
    Repair(PeerId),
    /// Remember these addresses and dial the peer; report with [`KeyPeerMonitor::redial_result`].
    Redial(PeerId, Vec<Multiaddr>),
    /// The repair reconnected the peer: tell the torrents, so their pools redial it now.
    Reconnected(PeerId),
    /// The repair failed: publish a discovery-interval reset.
    PublishReset(PeerId),
    /// The repair failed, but a reset was published less than the cool-down ago.
    ResetSuppressed(PeerId),
}

#[derive(Debug, Clone)]
struct KeyPeer {
    source: Source,
    connected: bool,
    /// Probe failures in a row.
    failures: u32,
    last_probe: Option<Instant>,
    state: RepairState,
    /// Contributors: when last seen feeding a download.
    last_contributed: Option<Instant>,
}

impl KeyPeer {
    fn new(source: Source) -> KeyPeer {
        KeyPeer {
            source,
            connected: false,
            failures: 0,
            last_probe: None,
            state: RepairState::Idle,
            last_contributed: None,
        }
    }
}

/// One key peer as the diagnostics show it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyPeerView {
    pub peer_id: String,
    pub source: Source,
    pub connected: bool,
    pub consecutive_failures: u32,
    /// Seconds since the last probe started; `None` before the first.
    pub last_probe_secs_ago: Option<f64>,
    pub state: RepairState,
}

/// The `/debug/p2p/keepalive` report.
#[derive(Debug, Clone, Serialize)]
pub struct MonitorView {
    pub enabled: bool,
    pub probe_interval_secs: f64,
    pub min_probe_interval_secs: f64,
    pub fail_threshold: u32,
    pub max_concurrent: usize,
    pub max_size: usize,
    pub in_flight: usize,
    pub resets_published: u64,
    pub resets_suppressed: u64,
    pub key_peers: Vec<KeyPeerView>,
}

/// The key-peer set and its probe/repair state machine.
#[derive(Debug)]
pub struct KeyPeerMonitor {
    cfg: MonitorConfig,
    peers: HashMap<PeerId, KeyPeer>,
    /// Peers of the current round still waiting for a free slot.
    round: VecDeque<PeerId>,
    next_round: Instant,
    last_reset: Option<Instant>,
    resets_published: u64,
    resets_suppressed: u64,
}

impl KeyPeerMonitor {
    /// A monitor whose first round is due at `now`.
    pub fn new(cfg: MonitorConfig, now: Instant) -> KeyPeerMonitor {
        KeyPeerMonitor {
            cfg,
            peers: HashMap::new(),
            round: VecDeque::new(),
            next_round: now,
            last_reset: None,
            resets_published: 0,
            resets_suppressed: 0,
        }
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.cfg
    }

    /// Adds a configured or bootstrap peer (never evicted). Returns false when the set is
    /// full of fixed peers already.
    pub fn add_fixed(&mut self, peer: PeerId, source: Source) -> bool {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.source.is_dynamic() {
                p.source = source;
            }
            return true;
        }
        if self.len() >= self.cfg.max_size && !self.evict_contributor(None) {
            return false;
        }
        self.peers.insert(peer, KeyPeer::new(source));
        true
    }

    /// The configured peers are now `peers` (the config changed while running): those no
    /// longer listed leave, new ones join. Returns the ones left out (the set is full).
    pub fn set_configured(&mut self, peers: &[PeerId]) -> Vec<PeerId> {
        self.peers.retain(|id, p| p.source != Source::Configured || peers.contains(id));
        let kept = &self.peers;
        self.round.retain(|id| kept.contains_key(id));
        peers.iter().filter(|p| !self.add_fixed(**p, Source::Configured)).copied().collect()
    }

    /// The peers of a dynamic `source` (the libp2p peers feeding a download, or those of the
    /// routing table) right now, best first. Each is kept (or added while there is room,
    /// evicting the stalest dynamic peer when the set is full); those not seen for
    /// [`CONTRIBUTOR_TTL_ROUNDS`] intervals and disconnected leave.
    pub fn set_dynamic(&mut self, source: Source, ranked: &[PeerId], now: Instant) {
        for peer in ranked {
            if let Some(p) = self.peers.get_mut(peer) {
                p.last_contributed = Some(now);
                continue;
            }
            // A lower-ranked peer never displaces a better one of this same ranking.
            if self.len() >= self.cfg.max_size && !self.evict_contributor(Some(now)) {
                break;
            }
            let mut p = KeyPeer::new(source);
            p.last_contributed = Some(now);
            self.peers.insert(*peer, p);
        }
        let ttl = self.cfg.probe_interval * CONTRIBUTOR_TTL_ROUNDS;
        self.peers.retain(|_, p| {
            let stale = p.last_contributed.is_some_and(|t| now.saturating_duration_since(t) >= ttl);
            let leaves = p.source == source && stale && !p.connected && !p.state.in_flight();
            !leaves
        });
        let peers = &self.peers;
        self.round.retain(|id| peers.contains_key(id));
    }

    /// Removes the contributor that contributed least recently (before `seen_before`, when
    /// given) and has nothing in flight.
    fn evict_contributor(&mut self, seen_before: Option<Instant>) -> bool {
        let victim = self
            .peers
            .iter()
            .filter(|(_, p)| p.source.is_dynamic() && !p.state.in_flight())
            .filter(|(_, p)| seen_before.is_none_or(|t| p.last_contributed.is_some_and(|c| c < t)))
            .min_by_key(|(_, p)| p.last_contributed)
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.peers.remove(&id);
                self.round.retain(|p| *p != id);
                true
            }
            None => false,
        }
    }

    /// Which key peers have a live connection (read from the node before each decision).
    pub fn set_connected(&mut self, connected: &[PeerId]) {
        for (id, p) in &mut self.peers {
            p.connected = connected.contains(id);
        }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.connected)
    }

    pub fn source(&self, peer: &PeerId) -> Option<Source> {
        self.peers.get(peer).map(|p| p.source)
    }

    /// Probe failures in a row of `peer`.
    pub fn failures(&self, peer: &PeerId) -> u32 {
        self.peers.get(peer).map_or(0, |p| p.failures)
    }

    pub fn state(&self, peer: &PeerId) -> Option<RepairState> {
        self.peers.get(peer).map(|p| p.state)
    }

    /// Operations in flight (probes, lookups, redials).
    pub fn in_flight(&self) -> usize {
        self.peers.values().filter(|p| p.state.in_flight()).count()
    }

    /// Whether a new round started at `now` (for the task's per-round debug line).
    pub fn round_due(&self, now: Instant) -> bool {
        now >= self.next_round
    }

    /// The peers to probe now; each is marked `Probing` and must be answered with
    /// [`KeyPeerMonitor::probe_result`]. A round starts every `probe_interval` and queues every
    /// idle peer; queued peers are handed out as slots free up, skipping any probed less than
    /// `min_probe_interval` ago.
    pub fn due_probes(&mut self, now: Instant) -> Vec<PeerId> {
        if now >= self.next_round {
            self.next_round = now + self.cfg.probe_interval;
            let mut ids: Vec<(PeerId, u32)> = self
                .peers
                .iter()
                .filter(|(id, p)| !p.state.in_flight() && !self.round.contains(id))
                .map(|(id, p)| (*id, p.failures))
                .collect();
            // Disconnected, failing peers first: they are the ones that need attention.
            ids.sort_by_key(|(id, failures)| (std::cmp::Reverse(*failures), id.to_bytes()));
            self.round.extend(ids.into_iter().map(|(id, _)| id));
        }
        let mut out = Vec::new();
        let mut slots = self.cfg.max_concurrent.saturating_sub(self.in_flight());
        while slots > 0 {
            let Some(id) = self.round.pop_front() else { break };
            let Some(p) = self.peers.get_mut(&id) else { continue };
            let recent = p.last_probe.is_some_and(|t| now.saturating_duration_since(t) < self.cfg.min_probe_interval);
            if p.state.in_flight() || recent {
                continue;
            }
            p.state = RepairState::Probing;
            p.last_probe = Some(now);
            out.push(id);
            slots -= 1;
        }
        out
    }

    /// The outcome of a probe handed out by [`KeyPeerMonitor::due_probes`]. Every
    /// `fail_threshold`-th failure in a row starts the repair chain.
    pub fn probe_result(&mut self, peer: PeerId, ok: bool, _now: Instant) -> Action {
        let threshold = self.cfg.fail_threshold;
        let Some(p) = self.peers.get_mut(&peer).filter(|p| p.state == RepairState::Probing) else {
            return Action::Nothing;
        };
        if ok {
            p.failures = 0;
            p.connected = true;
            p.state = RepairState::Idle;
            return Action::Nothing;
        }
        p.failures += 1;
        p.connected = false;
        if p.failures % threshold == 0 {
            p.state = RepairState::Repairing;
            Action::Repair(peer)
        } else {
            p.state = RepairState::Idle;
            Action::Nothing
        }
    }

    /// The outcome of the DHT lookup of a peer under repair: the addresses found (empty or
    /// `None` when the lookup failed).
    pub fn repair_result(&mut self, peer: PeerId, addrs: Option<Vec<Multiaddr>>, now: Instant) -> Action {
        if self.peers.get(&peer).is_none_or(|p| p.state != RepairState::Repairing) {
            return Action::Nothing;
        }
        match addrs.filter(|a| !a.is_empty()) {
            Some(addrs) => {
                self.set_state(&peer, RepairState::Redialing);
                Action::Redial(peer, addrs)
            }
            None => self.repair_failed(peer, now),
        }
    }

    /// The outcome of the redial with the addresses the lookup found.
    pub fn redial_result(&mut self, peer: PeerId, ok: bool, now: Instant) -> Action {
        let Some(p) = self.peers.get_mut(&peer).filter(|p| p.state == RepairState::Redialing) else {
            return Action::Nothing;
        };
        if ok {
            p.failures = 0;
            p.connected = true;
            p.state = RepairState::Idle;
            return Action::Reconnected(peer);
        }
        self.repair_failed(peer, now)
    }

    fn repair_failed(&mut self, peer: PeerId, now: Instant) -> Action {
        self.set_state(&peer, RepairState::Failed);
        if self.reset_allowed(now) {
            Action::PublishReset(peer)
        } else {
            Action::ResetSuppressed(peer)
        }
    }

    /// The node saw a sign that discovery should look again (a closest-peers lookup found
    /// nobody, an address-book entry expired): true when a reset may be published now, false
    /// inside the cool-down of the last one, whatever its cause.
    pub fn discovery_trouble(&mut self, now: Instant) -> bool {
        self.reset_allowed(now)
    }

    /// Counts a reset as published, or as suppressed inside the cool-down.
    fn reset_allowed(&mut self, now: Instant) -> bool {
        if self.last_reset.is_some_and(|t| now.saturating_duration_since(t) < self.cfg.reset_cool_down) {
            self.resets_suppressed += 1;
            return false;
        }
        self.last_reset = Some(now);
        self.resets_published += 1;
        true
    }

    fn set_state(&mut self, peer: &PeerId, state: RepairState) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.state = state;
        }
    }

    /// The report for `/debug/p2p/keepalive`, peers sorted by PeerId.
    pub fn view(&self, now: Instant) -> MonitorView {
        let mut key_peers: Vec<KeyPeerView> = self
            .peers
            .iter()
            .map(|(id, p)| KeyPeerView {
                peer_id: id.to_base58(),
                source: p.source,
                connected: p.connected,
                consecutive_failures: p.failures,
                last_probe_secs_ago: p.last_probe.map(|t| now.saturating_duration_since(t).as_secs_f64()),
                state: p.state,
            })
            .collect();
        key_peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        MonitorView {
            enabled: true,
            probe_interval_secs: self.cfg.probe_interval.as_secs_f64(),
            min_probe_interval_secs: self.cfg.min_probe_interval.as_secs_f64(),
            fail_threshold: self.cfg.fail_threshold,
            max_concurrent: self.cfg.max_concurrent,
            max_size: self.cfg.max_size,
            in_flight: self.in_flight(),
            resets_published: self.resets_published,
            resets_suppressed: self.resets_suppressed,
            key_peers,
        }
    }
}

/// The contributors to hand [`KeyPeerMonitor::set_dynamic`]: each libp2p peer's download
/// rates summed over every torrent it feeds, best first, at most `max`.
pub fn rank_contributors(found: impl IntoIterator<Item = (PeerId, f64)>, max: usize) -> Vec<PeerId> {
    let mut ranked: Vec<(PeerId, f64)> = Vec::new();
    for (id, rate) in found {
        match ranked.iter_mut().find(|(r, _)| *r == id) {
            Some((_, sum)) => *sum += rate,
            None => ranked.push((id, rate)),
        }
    }
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.into_iter().take(max).map(|(id, _)| id).collect()
}

#[cfg(test)]
mod tests;
