//! Faults isolated per torrent: a torrent whose own storage fails (phase `failed`) is shown
//! as `faulted`, recorded in a bounded log (`GET /api/faults`), and started again after a
//! backoff (2 s, doubling, at most 5 min) until it runs; every other torrent keeps running.
//!
//! [`RetryPolicy`] decides when, given `now`; the supervisor task here looks at every torrent
//! once a second, retries what is due and runs the alert rules of [`super::alerts`]. A torrent that reaches `seeding` has its fault
//! count reset. Pausing a faulted torrent stops its retries; resuming starts it at once.
use super::alerts::{self, Alert, Observation};
use super::{start, Daemon, DaemonError, Entry};
use crate::torrent::Phase;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Fault records kept; the oldest are forgotten past it.
pub const MAX_FAULTS: usize = 1000;
const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// One fault, as `GET /api/faults` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub message: String,
    /// What the daemon does about it.
    pub recovery: String,
}

/// The most recent faults, oldest first.
#[derive(Debug, Default)]
pub struct FaultLog {
    faults: VecDeque<Fault>,
}

impl FaultLog {
    pub fn push(&mut self, fault: Fault) {
        if self.faults.len() == MAX_FAULTS {
            self.faults.pop_front();
        }
        self.faults.push_back(fault);
    }

    pub fn list(&self) -> Vec<Fault> {
        self.faults.iter().cloned().collect()
    }
}

/// When a faulted torrent is started again: after its `n`th fault in a row,
/// `FIRST_RETRY * 2^(n-1)`, at most `MAX_RETRY`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Faults in a row (reset when the torrent reaches seeding).
    pub faults: u32,
    /// Set while a retry is waiting.
    pub retry_at: Option<Instant>,
}

impl RetryPolicy {
    /// Records a fault seen at `now`; returns the delay before the retry.
    pub fn on_fault(&mut self, now: Instant) -> Duration {
        self.faults = self.faults.saturating_add(1);
        let delay = FIRST_RETRY.saturating_mul(1 << (self.faults - 1).min(16)).min(MAX_RETRY);
        self.retry_at = Some(now + delay);
        delay
    }

    /// True once the retry is due (and forgets it: one retry per fault).
    pub fn due(&mut self, now: Instant) -> bool {
        match self.retry_at {
            Some(at) if now >= at => {
                self.retry_at = None;
                true
            }
            _ => false,
        }
    }

    pub fn waiting(&self) -> bool {
        self.retry_at.is_some()
    }
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Daemon {
    /// Looks at every torrent once a second until the daemon is dropped or its session stops.
    pub(super) async fn supervise(daemon: Weak<Daemon>, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Owned by this loop alone: which key peers have been reported lost.
        let mut key_peers = alerts::KeyPeerWatch::default();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(d) = daemon.upgrade() else { return };
            d.supervise_once(Instant::now()).await;
            d.check_key_peers(&mut key_peers);
        }
    }

    async fn supervise_once(&self, now: Instant) {
        let mut torrents = self.torrents.lock().await;
        for entry in torrents.values_mut() {
            let Some(stats) = entry.handle.as_ref().map(|h| h.stats().borrow().clone()) else { continue };
            self.check_alerts(entry, &stats, now);
            match stats.phase {
                Phase::Seeding => entry.retry.faults = 0,
                Phase::Failed if !entry.retry.waiting() => {
                    let delay = entry.retry.on_fault(now);
                    let message = stats.error.map(|e| e.to_string()).unwrap_or_default();
                    tracing::warn!(id = %entry.record.id, %message, ?delay, "torrent faulted; retrying later");
                    self.faults.lock().expect("faults lock").push(Fault {
                        at: unix_now(),
                        id: entry.record.id.clone(),
                        name: entry.name(),
                        kind: "storage",
                        message,
                        recovery: format!("restart in {}s", delay.as_secs()),
                    });
                }
                Phase::Failed if entry.retry.due(now) => self.retry(entry).await,
                _ => {}
            }
        }
    }

    async fn retry(&self, entry: &mut Entry) {
        if let Some(handle) = entry.handle.take() {
            self.session.remove_torrent(&handle.info_hash).await;
        }
        tracing::info!(id = %entry.record.id, "restarting a faulted torrent");
        start(&self.session, &self.state, entry).await;
    }

    /// Raises `key_peer_lost` for each key peer newly lost (no monitor: nothing to watch).
    fn check_key_peers(&self, watch: &mut alerts::KeyPeerWatch) {
        let Some(view) = self.session.key_peers() else { return };
        for (peer, msg) in watch.observe(&view) {
            tracing::warn!(%peer, %msg, "alert");
            let mut log = self.alerts.lock().expect("alerts lock");
            log.raise(unix_now(), "", &peer, alerts::AlertKind::KeyPeerLost, msg);
        }
    }

    /// Runs the alert rules on one torrent's latest statistics.
    fn check_alerts(&self, entry: &mut Entry, stats: &crate::torrent::TorrentStats, now: Instant) {
        let o = Observation {
            downloading: stats.phase == Phase::Downloading,
            failed: stats.phase == Phase::Failed,
            bytes_left: stats.bytes_left,
            peers: stats.peers.len(),
            hash_failures: stats.hash_failures,
        };
        for kind in entry.watch.observe(now, &o) {
            let msg = alerts::message(kind, &o, stats.error.as_ref().map(|e| e.to_string()));
            tracing::warn!(id = %entry.record.id, ?kind, %msg, "alert");
            let mut log = self.alerts.lock().expect("alerts lock");
            log.raise(unix_now(), &entry.record.id, &entry.name(), kind, msg);
        }
    }

    /// Every raised alert, oldest first.
    pub fn alerts(&self) -> Vec<Alert> {
        self.alerts.lock().expect("alerts lock").list()
    }

    /// Marks alert `id` resolved.
    pub fn resolve_alert(&self, id: u64) -> Result<Alert, DaemonError> {
        self.alerts.lock().expect("alerts lock").resolve(id).ok_or(DaemonError::NoAlert(id))
    }

    /// Every recorded fault, oldest first.
    pub fn faults(&self) -> Vec<Fault> {
        self.faults.lock().expect("faults lock").list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_and_each_fault_retries_once() {
        let t0 = Instant::now();
        let mut p = RetryPolicy::default();
        assert_eq!(p.on_fault(t0), Duration::from_secs(2));
        assert!(!p.due(t0 + Duration::from_secs(1)));
        assert!(p.due(t0 + Duration::from_secs(2)));
        assert!(!p.due(t0 + Duration::from_secs(3)), "one retry per fault");
        assert_eq!(p.on_fault(t0), Duration::from_secs(4));
        for _ in 0..20 {
            p.on_fault(t0);
        }
        assert_eq!(p.on_fault(t0), MAX_RETRY);
    }

    #[test]
    fn the_log_is_bounded() {
        let mut log = FaultLog::default();
        for i in 0..MAX_FAULTS + 5 {
            let f = Fault {
                at: i as u64,
                id: String::new(),
                name: String::new(),
                kind: "storage",
                message: String::new(),
                recovery: String::new(),
            };
            log.push(f);
        }
        let list = log.list();
        assert_eq!((list.len(), list[0].at), (MAX_FAULTS, 5));
    }
}
