//! Alert rules over each torrent's statistics, and the bounded log of raised alerts
//! (`GET /api/alerts`, `POST /api/alerts/{id}/resolve`).
//!
//! Rules, checked once a second by the daemon's supervisor for every running torrent:
//! - `stalled`: downloading with peers connected, no byte verified for [`STALL`];
//! - `no_peers`: downloading with no peer connected for [`NO_PEERS`];
//! - `hash_failures`: [`HASH_FAILURES`] more pieces failed their hash since the last alert;
//! - `disk_error`: the torrent's storage failed (it is `faulted`, see `faults`);
//! - `key_peer_lost`: a key peer of the keepalive layer is not connected and its repair
//!   through the DHT failed (a session alert: its `torrent` is empty, its `name` the peer).
//!
//! A condition raises one alert when it becomes true; it can raise again only after it has
//! been false. Resolving an alert only marks it so. [`Watch`] is plain: it takes `now`.
use crate::keepalive::{MonitorView, RepairState};
use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

pub const STALL: Duration = Duration::from_secs(300);
pub const NO_PEERS: Duration = Duration::from_secs(600);
pub const HASH_FAILURES: u32 = 3;
/// Alerts kept; the oldest are forgotten past it.
pub const MAX_ALERTS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Stalled,
    NoPeers,
    HashFailures,
    DiskError,
    KeyPeerLost,
}

/// What the rules look at, read off a torrent's statistics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observation {
    pub downloading: bool,
    pub failed: bool,
    pub bytes_left: u64,
    pub peers: usize,
    pub hash_failures: u32,
}

/// One torrent's rule state since its task started.
#[derive(Debug, Clone)]
pub struct Watch {
    last_left: u64,
    progress_at: Instant,
    peers_at: Instant,
    hash_baseline: u32,
    active: BTreeSet<AlertKind>,
}

impl Watch {
    pub fn new(now: Instant) -> Watch {
        Watch { last_left: u64::MAX, progress_at: now, peers_at: now, hash_baseline: 0, active: BTreeSet::new() }
    }

    /// The alerts raised by this observation.
    pub fn observe(&mut self, now: Instant, o: &Observation) -> Vec<AlertKind> {
        if !o.downloading || o.bytes_left != self.last_left {
            self.progress_at = now;
        }
        self.last_left = o.bytes_left;
        if !o.downloading || o.peers > 0 {
            self.peers_at = now;
        }
        let mut raised = Vec::new();
        if o.hash_failures >= self.hash_baseline + HASH_FAILURES {
            self.hash_baseline = o.hash_failures;
            raised.push(AlertKind::HashFailures);
        }
        let conditions = [
            (AlertKind::Stalled, o.downloading && o.peers > 0 && now - self.progress_at >= STALL),
            (AlertKind::NoPeers, o.downloading && now - self.peers_at >= NO_PEERS),
            (AlertKind::DiskError, o.failed),
        ];
        for (kind, on) in conditions {
            if on && self.active.insert(kind) {
                raised.push(kind);
            } else if !on {
                self.active.remove(&kind);
            }
        }
        raised
    }
}

/// Which key peers are lost: raised once when a peer's repair failed while it is not
/// connected, and again only after it was connected in between.
#[derive(Debug, Default)]
pub struct KeyPeerWatch {
    lost: BTreeSet<String>,
}

impl KeyPeerWatch {
    /// The peers newly lost in this view, with the alert's sentence.
    pub fn observe(&mut self, view: &MonitorView) -> Vec<(String, String)> {
        let mut raised = Vec::new();
        for p in &view.key_peers {
            if p.connected {
                self.lost.remove(&p.peer_id);
            } else if p.state == RepairState::Failed && self.lost.insert(p.peer_id.clone()) {
                let why = format!("{} probes failed in a row and its DHT repair failed", p.consecutive_failures);
                raised.push((p.peer_id.clone(), format!("key peer {} lost: {why}", p.peer_id)));
            }
        }
        // Peers no longer in the set are forgotten, so the set stays as small as the view.
        self.lost.retain(|id| view.key_peers.iter().any(|p| &p.peer_id == id));
        raised
    }
}

/// One raised alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: u64,
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub torrent: String,
    pub name: String,
    pub kind: AlertKind,
    pub message: String,
    pub resolved: bool,
}

#[derive(Debug, Default)]
pub struct AlertLog {
    next: u64,
    alerts: VecDeque<Alert>,
}

impl AlertLog {
    /// Records an alert (its id and time given here).
    pub fn raise(&mut self, at: u64, torrent: &str, name: &str, kind: AlertKind, message: String) {
        self.next += 1;
        if self.alerts.len() == MAX_ALERTS {
            self.alerts.pop_front();
        }
        let alert =
            Alert { id: self.next, at, torrent: torrent.into(), name: name.into(), kind, message, resolved: false };
        self.alerts.push_back(alert);
    }

    pub fn list(&self) -> Vec<Alert> {
        self.alerts.iter().cloned().collect()
    }

    /// Marks alert `id` resolved; `None` when there is no such alert.
    pub fn resolve(&mut self, id: u64) -> Option<Alert> {
        let alert = self.alerts.iter_mut().find(|a| a.id == id)?;
        alert.resolved = true;
        Some(alert.clone())
    }
}

/// The sentence an alert carries.
pub fn message(kind: AlertKind, o: &Observation, error: Option<String>) -> String {
    match kind {
        AlertKind::Stalled => format!("no progress for {}s with {} peers connected", STALL.as_secs(), o.peers),
        AlertKind::NoPeers => format!("no peer connected for {}s", NO_PEERS.as_secs()),
        AlertKind::HashFailures => format!("{} pieces failed their hash check", o.hash_failures),
        AlertKind::DiskError => error.unwrap_or_else(|| "storage failed".into()),
        AlertKind::KeyPeerLost => error.unwrap_or_else(|| "a key peer is lost".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn downloading(left: u64, peers: usize) -> Observation {
        Observation { downloading: true, bytes_left: left, peers, ..Default::default() }
    }

    #[test]
    fn a_stall_with_peers_raises_once_until_progress_resumes() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0);
        assert!(w.observe(t0, &downloading(100, 2)).is_empty());
        assert!(w.observe(t0 + STALL - Duration::from_secs(1), &downloading(100, 2)).is_empty());
        assert_eq!(w.observe(t0 + STALL, &downloading(100, 2)), vec![AlertKind::Stalled]);
        assert!(w.observe(t0 + STALL * 2, &downloading(100, 2)).is_empty(), "raised once");
        let t1 = t0 + STALL * 2;
        assert!(w.observe(t1, &downloading(50, 2)).is_empty(), "progress clears it");
        assert_eq!(w.observe(t1 + STALL, &downloading(50, 2)), vec![AlertKind::Stalled], "and it can come back");
    }

    #[test]
    fn no_peers_hash_failures_and_disk_errors() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0);
        assert_eq!(w.observe(t0 + NO_PEERS, &downloading(100, 0)), vec![AlertKind::NoPeers]);
        let mut o = downloading(100, 1);
        o.hash_failures = 2;
        assert!(w.observe(t0 + NO_PEERS, &o).is_empty());
        o.hash_failures = 3;
        assert_eq!(w.observe(t0 + NO_PEERS, &o), vec![AlertKind::HashFailures]);
        o.hash_failures = 5;
        assert!(w.observe(t0 + NO_PEERS, &o).is_empty(), "counted from the last alert");
        let failed = Observation { failed: true, ..Default::default() };
        assert_eq!(w.observe(t0 + NO_PEERS, &failed), vec![AlertKind::DiskError]);
        assert!(w.observe(t0 + NO_PEERS, &failed).is_empty());
    }

    #[test]
    fn a_key_peer_is_lost_once_its_repair_failed_until_it_is_back() {
        use crate::keepalive::monitor::KeyPeerView;
        let peer = |state, connected| KeyPeerView {
            peer_id: "12D3KooWPeer".into(),
            source: crate::keepalive::Source::Configured,
            connected,
            consecutive_failures: 3,
            last_probe_secs_ago: Some(1.0),
            state,
        };
        let view = |p: KeyPeerView| MonitorView {
            enabled: true,
            probe_interval_secs: 1.0,
            min_probe_interval_secs: 1.0,
            fail_threshold: 3,
            max_concurrent: 5,
            max_size: 128,
            in_flight: 0,
            resets_published: 0,
            resets_suppressed: 0,
            key_peers: vec![p],
        };
        let mut w = KeyPeerWatch::default();
        assert!(w.observe(&view(peer(RepairState::Repairing, false))).is_empty(), "not lost while repairing");
        let raised = w.observe(&view(peer(RepairState::Failed, false)));
        assert_eq!(raised.len(), 1);
        assert!(raised[0].1.contains("key peer 12D3KooWPeer lost"), "{}", raised[0].1);
        assert!(w.observe(&view(peer(RepairState::Probing, false))).is_empty(), "a re-probe does not clear it");
        assert!(w.observe(&view(peer(RepairState::Failed, false))).is_empty(), "raised once");
        assert!(w.observe(&view(peer(RepairState::Idle, true))).is_empty());
        assert_eq!(w.observe(&view(peer(RepairState::Failed, false))).len(), 1, "lost again after it was back");
    }

    #[test]
    fn alerts_resolve_by_id_and_the_log_is_bounded() {
        let mut log = AlertLog::default();
        for _ in 0..MAX_ALERTS + 1 {
            log.raise(1, "t", "n", AlertKind::DiskError, "m".into());
        }
        assert_eq!(log.list().len(), MAX_ALERTS);
        assert!(log.resolve(1).is_none(), "the oldest is gone");
        assert!(log.resolve(2).unwrap().resolved);
    }
}
