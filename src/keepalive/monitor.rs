//! The key-peer monitor's decisions: a plain synchronous state machine, no I/O, no tokio,
//! `now` passed in to every call, so every rule below is a unit test.
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
use libp2p::multiaddr::Protocol;
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
            if p.source == Source::Contributor {
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

    /// The libp2p peers feeding a download right now, best first. Each is kept (or added
    /// while there is room, evicting the stalest contributor when the set is full);
    /// contributors silent for [`CONTRIBUTOR_TTL_ROUNDS`] intervals and disconnected leave.
    pub fn set_contributors(&mut self, ranked: &[PeerId], now: Instant) {
        for peer in ranked {
            if let Some(p) = self.peers.get_mut(peer) {
                p.last_contributed = Some(now);
                continue;
            }
            // A lower-ranked peer never displaces a better one of this same ranking.
            if self.len() >= self.cfg.max_size && !self.evict_contributor(Some(now)) {
                break;
            }
            let mut p = KeyPeer::new(Source::Contributor);
            p.last_contributed = Some(now);
            self.peers.insert(*peer, p);
        }
        let ttl = self.cfg.probe_interval * CONTRIBUTOR_TTL_ROUNDS;
        self.peers.retain(|_, p| {
            let stale = p.last_contributed.is_some_and(|t| now.saturating_duration_since(t) >= ttl);
            let leaves = p.source == Source::Contributor && stale && !p.connected && !p.state.in_flight();
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
            .filter(|(_, p)| p.source == Source::Contributor && !p.state.in_flight())
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
        if self.last_reset.is_some_and(|t| now.saturating_duration_since(t) < self.cfg.reset_cool_down) {
            self.resets_suppressed += 1;
            return Action::ResetSuppressed(peer);
        }
        self.last_reset = Some(now);
        self.resets_published += 1;
        Action::PublishReset(peer)
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

/// A `key_peers` entry: a bare PeerId, or a multiaddr ending in `/p2p/<PeerId>` whose
/// address is remembered for dialling.
pub fn parse_key_peer(s: &str) -> Result<(PeerId, Option<Multiaddr>), String> {
    if let Ok(id) = s.parse::<PeerId>() {
        return Ok((id, None));
    }
    let addr: Multiaddr = s.parse().map_err(|e| format!("`{s}` is neither a PeerId nor a multiaddr ({e})"))?;
    match addr.iter().last() {
        Some(Protocol::P2p(id)) => Ok((id, Some(addr))),
        _ => Err(format!("`{s}` does not end in /p2p/<PeerId>")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MonitorConfig {
        MonitorConfig {
            probe_interval: Duration::from_secs(60),
            min_probe_interval: Duration::from_secs(30),
            fail_threshold: 3,
            max_concurrent: 5,
            max_size: 8,
            reset_cool_down: Duration::from_secs(10),
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn with_peers(cfg: MonitorConfig, n: usize, t0: Instant) -> (KeyPeerMonitor, Vec<PeerId>) {
        let mut m = KeyPeerMonitor::new(cfg, t0);
        let ids: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        for id in &ids {
            assert!(m.add_fixed(*id, Source::Configured));
        }
        (m, ids)
    }

    /// Probes `peer` to failure until the monitor asks for a repair; returns the failures
    /// it took.
    fn fail_until_repair(m: &mut KeyPeerMonitor, peer: PeerId, now: &mut Instant) -> u32 {
        for n in 1..=100 {
            *now += m.config().probe_interval.max(m.config().min_probe_interval);
            let due = m.due_probes(*now);
            assert!(due.contains(&peer), "round {n}: {due:?}");
            if let Action::Repair(p) = m.probe_result(peer, false, *now) {
                assert_eq!(p, peer);
                return n;
            }
        }
        panic!("no repair");
    }

    #[test]
    fn repair_after_threshold_failures_in_a_row() {
        let t0 = Instant::now();
        let (mut m, ids) = with_peers(cfg(), 1, t0);
        let p = ids[0];
        assert_eq!(m.due_probes(t0), vec![p]);
        assert_eq!(m.probe_result(p, false, t0), Action::Nothing);
        let mut now = t0 + s(60);
        assert_eq!(m.due_probes(now), vec![p]);
        assert_eq!(m.probe_result(p, true, now), Action::Nothing, "a success breaks the streak");
        assert_eq!(m.failures(&p), 0);
        assert_eq!(fail_until_repair(&mut m, p, &mut now), 3);
        assert_eq!(m.state(&p), Some(RepairState::Repairing));
        assert_eq!(m.failures(&p), 3);
    }

    #[test]
    fn repair_chain_success_reconnects() {
        let t0 = Instant::now();
        let (mut m, ids) = with_peers(cfg(), 1, t0);
        let p = ids[0];
        let mut now = t0;
        fail_until_repair(&mut m, p, &mut now);
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(m.repair_result(p, Some(vec![addr.clone()]), now), Action::Redial(p, vec![addr]));
        assert_eq!(m.state(&p), Some(RepairState::Redialing));
        assert_eq!(m.redial_result(p, true, now), Action::Reconnected(p));
        assert_eq!(m.state(&p), Some(RepairState::Idle));
        assert!(m.is_connected(&p));
        assert_eq!(m.failures(&p), 0);
        assert_eq!(m.view(now).resets_published, 0);
    }

    #[test]
    fn repair_chain_failures_publish_a_reset() {
        let t0 = Instant::now();
        let (mut m, ids) = with_peers(cfg(), 2, t0);
        let mut now = t0;
        // Nothing found in the DHT.
        fail_until_repair(&mut m, ids[0], &mut now);
        assert_eq!(m.repair_result(ids[0], None, now), Action::PublishReset(ids[0]));
        assert_eq!(m.state(&ids[0]), Some(RepairState::Failed));
        // Found, but the redial fails: within the cool-down of the first reset.
        let mut m2 = KeyPeerMonitor::new(cfg(), t0);
        m2.add_fixed(ids[1], Source::Bootstrap);
        let mut now2 = t0;
        fail_until_repair(&mut m2, ids[1], &mut now2);
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!(matches!(m2.repair_result(ids[1], Some(vec![addr]), now2), Action::Redial(..)));
        assert_eq!(m2.redial_result(ids[1], false, now2), Action::PublishReset(ids[1]));
        // An empty address list is a failed lookup.
        let (mut m3, ids3) = with_peers(cfg(), 1, t0);
        let mut now3 = t0;
        fail_until_repair(&mut m3, ids3[0], &mut now3);
        assert_eq!(m3.repair_result(ids3[0], Some(vec![]), now3), Action::PublishReset(ids3[0]));
    }

    #[test]
    fn a_failed_peer_is_probed_again_and_repaired_every_threshold_failures() {
        let t0 = Instant::now();
        let (mut m, ids) = with_peers(cfg(), 1, t0);
        let p = ids[0];
        let mut now = t0;
        assert_eq!(fail_until_repair(&mut m, p, &mut now), 3);
        m.repair_result(p, None, now);
        assert_eq!(fail_until_repair(&mut m, p, &mut now), 3, "the next repair after another threshold failures");
        assert_eq!(m.failures(&p), 6);
        m.repair_result(p, None, now);
        now += s(60);
        assert_eq!(m.due_probes(now), vec![p]);
        assert_eq!(m.probe_result(p, true, now), Action::Nothing);
        assert_eq!(m.state(&p), Some(RepairState::Idle));
    }

    #[test]
    fn rounds_come_every_probe_interval() {
        let t0 = Instant::now();
        let (mut m, ids) = with_peers(cfg(), 1, t0);
        assert_eq!(m.due_probes(t0), ids);
        m.probe_result(ids[0], true, t0);
        assert!(m.due_probes(t0 + s(59)).is_empty());
        assert_eq!(m.due_probes(t0 + s(60)), ids);
    }

    #[test]
    fn no_peer_is_probed_more_often_than_the_min_interval() {
        let t0 = Instant::now();
        let c = MonitorConfig { probe_interval: s(5), min_probe_interval: s(30), ..cfg() };
        let (mut m, ids) = with_peers(c, 1, t0);
        let p = ids[0];
        let mut probes = Vec::new();
        let mut now = t0;
        while now < t0 + s(300) {
            for id in m.due_probes(now) {
                probes.push(now);
                m.probe_result(id, true, now);
            }
            now += Duration::from_millis(250);
        }
        assert!(probes.windows(2).all(|w| w[1] - w[0] >= s(30)), "{probes:?}");
        assert_eq!(probes.len(), 10);
        assert_eq!(m.state(&p), Some(RepairState::Idle));
    }

    #[test]
    fn at_most_max_concurrent_in_flight_and_the_rest_wait_for_slots() {
        let t0 = Instant::now();
        let c = MonitorConfig { max_concurrent: 3, max_size: 16, ..cfg() };
        let (mut m, ids) = with_peers(c, 10, t0);
        let first = m.due_probes(t0);
        assert_eq!(first.len(), 3);
        assert!(m.due_probes(t0).is_empty(), "no free slot");
        assert_eq!(m.in_flight(), 3);
        // One finishes: one more of the same round may start.
        m.probe_result(first[0], true, t0 + s(1));
        let next = m.due_probes(t0 + s(1));
        assert_eq!(next.len(), 1);
        assert!(!first.contains(&next[0]));
        // A repair holds its slot too.
        let mut now = t0 + s(1);
        for id in first[1..].iter().chain(&next) {
            m.probe_result(*id, false, now);
        }
        let mut probed: std::collections::HashSet<PeerId> = first.iter().chain(&next).copied().collect();
        while probed.len() < ids.len() {
            now += s(1);
            let due = m.due_probes(now);
            assert!(m.in_flight() <= 3);
            assert!(!due.is_empty(), "the round goes on as slots free up");
            for id in due {
                probed.insert(id);
                m.probe_result(id, true, now);
            }
        }
    }

    #[test]
    fn the_set_is_bounded_and_fixed_peers_are_never_evicted() {
        let t0 = Instant::now();
        let c = MonitorConfig { max_size: 4, ..cfg() };
        let (mut m, fixed) = with_peers(c, 2, t0);
        let contributors: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        m.set_contributors(&contributors, t0);
        assert_eq!(m.len(), 4);
        assert!(fixed.iter().all(|p| m.contains(p)));
        assert!(m.contains(&contributors[0]) && m.contains(&contributors[1]));
        // New better contributors later take the place of the stalest ones.
        let later = [contributors[1], contributors[4]];
        m.set_contributors(&later, t0 + s(5));
        assert_eq!(m.len(), 4);
        assert!(m.contains(&contributors[4]) && m.contains(&contributors[1]) && !m.contains(&contributors[0]));
        // Fixed peers evict contributors, never each other.
        assert!(m.add_fixed(PeerId::random(), Source::Configured));
        assert!(m.add_fixed(PeerId::random(), Source::Bootstrap));
        assert_eq!(m.len(), 4);
        assert!(!m.add_fixed(PeerId::random(), Source::Configured), "full of fixed peers");
        m.set_contributors(&[PeerId::random()], t0 + s(6));
        assert_eq!(m.len(), 4);
        assert!(fixed.iter().all(|p| m.contains(p)));
    }

    #[test]
    fn a_contributor_under_repair_is_not_evicted_and_stale_ones_leave() {
        let t0 = Instant::now();
        let c = MonitorConfig { max_size: 2, ..cfg() };
        let mut m = KeyPeerMonitor::new(c, t0);
        let a = PeerId::random();
        m.set_contributors(&[a], t0);
        let mut now = t0;
        fail_until_repair(&mut m, a, &mut now);
        m.set_contributors(&[PeerId::random(), PeerId::random()], now);
        assert!(m.contains(&a), "in flight");
        assert_eq!(m.len(), 2);
        m.repair_result(a, None, now);
        let ttl = c.probe_interval * CONTRIBUTOR_TTL_ROUNDS;
        m.set_contributors(&[], now + ttl + s(1));
        assert!(m.is_empty(), "silent and disconnected contributors leave");
    }

    #[test]
    fn resets_are_published_no_faster_than_the_cool_down_under_a_storm() {
        let t0 = Instant::now();
        let c = MonitorConfig {
            probe_interval: s(1),
            min_probe_interval: s(1),
            fail_threshold: 1,
            max_concurrent: 50,
            max_size: 50,
            ..cfg()
        };
        let (mut m, _) = with_peers(c, 20, t0);
        let mut now = t0;
        let mut published = Vec::new();
        // 20 dead key peers, every repair failing, for 100 s.
        while now < t0 + s(100) {
            for id in m.due_probes(now) {
                if let Action::Repair(p) = m.probe_result(id, false, now) {
                    if let Action::PublishReset(_) = m.repair_result(p, None, now) {
                        published.push(now);
                    }
                }
            }
            now += Duration::from_millis(100);
        }
        assert!(published.windows(2).all(|w| w[1] - w[0] >= s(10)), "{published:?}");
        assert_eq!(published.len(), 10);
        let v = m.view(now);
        assert_eq!(v.resets_published, 10);
        assert!(v.resets_suppressed > 1000, "{}", v.resets_suppressed);
    }

    #[test]
    fn late_or_unknown_results_are_ignored() {
        let t0 = Instant::now();
        let (mut m, ids) = with_peers(cfg(), 1, t0);
        assert_eq!(m.probe_result(ids[0], false, t0), Action::Nothing, "not probing");
        assert_eq!(m.failures(&ids[0]), 0);
        assert_eq!(m.probe_result(PeerId::random(), false, t0), Action::Nothing);
        assert_eq!(m.repair_result(ids[0], None, t0), Action::Nothing);
        assert_eq!(m.redial_result(ids[0], true, t0), Action::Nothing);
    }

    #[test]
    fn view_shows_each_key_peer() {
        let t0 = Instant::now();
        let (mut m, ids) = with_peers(cfg(), 1, t0);
        m.due_probes(t0);
        m.probe_result(ids[0], false, t0);
        let v = serde_json::to_value(m.view(t0 + s(2))).unwrap();
        let p = &v["key_peers"][0];
        assert_eq!(p["peer_id"], ids[0].to_base58());
        assert_eq!(p["source"], "configured");
        assert_eq!(p["connected"], false);
        assert_eq!(p["consecutive_failures"], 1);
        assert_eq!(p["last_probe_secs_ago"], 2.0);
        assert_eq!(p["state"], "idle");
    }

    #[test]
    fn key_peer_entries_parse() {
        let id = PeerId::random();
        assert_eq!(parse_key_peer(&id.to_base58()).unwrap(), (id, None));
        let s = format!("/ip4/127.0.0.1/tcp/4001/p2p/{id}");
        assert_eq!(parse_key_peer(&s).unwrap(), (id, Some(s.parse().unwrap())));
        assert!(parse_key_peer("/ip4/127.0.0.1/tcp/4001").unwrap_err().contains("/p2p/"));
        assert!(parse_key_peer("bogus").is_err());
    }
}
