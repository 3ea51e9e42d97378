//! The announcer: one task per torrent that keeps the torrent announced to its trackers.
//!
//! It owns the torrent's [`TrackerList`] and the announce schedule, and nothing else: it reads
//! transfer totals from a `watch`, hands peer addresses to the torrent over a bounded `mpsc`, and
//! publishes per-tracker status on an optional `watch`. It never connects to peers.
//!
//! Schedule (BEP 3, BEP 12):
//! - `started` first; an event stays pending until some tracker accepts it.
//! - Each round tries the trackers tier by tier (skipping those backing off) until one answers;
//!   that one moves to the front of its tier. The next regular announce is due after
//!   `max(interval, min interval, cfg.min_interval)`.
//! - `completed` once, as soon as `left` reaches 0 after having been above 0. (If that happens
//!   before `started` got through, `completed` replaces it.)
//! - A "need more peers" nudge brings the next announce forward, but never sooner than
//!   `max(tracker min interval, cfg.min_interval)` after the last successful one.
//! - A failing tracker backs off exponentially (see [`TrackerList::record_failure`]).
//! - On cancel: `stopped` to the tracker that last answered, bounded by a short timeout, then exit.
//!   The task also ends when the peer channel closes (the torrent is gone).
//!
//! Every announce is bounded by `cfg.timeout`, and cancellation interrupts any wait.
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{announce, Announce, AnnounceParams, Event, TrackerList, TransferTotals};
use crate::metainfo::InfoHash;
use crate::wire::PeerId;

/// Upper bound on the farewell `stopped` announce (never longer than `cfg.timeout` either), so
/// shutdown is not held up by a dead tracker.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the announcer needs to know about the torrent and our settings
/// (`numwant`, `timeout`, `min_interval` come from `Options::{numwant, tracker_timeout,
/// tracker_min_interval}`).
#[derive(Clone, Debug)]
pub struct AnnouncerConfig {
    pub peer_id: PeerId,
    pub info_hash: InfoHash,
    /// Our listening port, announced to trackers.
    pub port: u16,
    pub numwant: u32,
    /// Bound on one announce to one tracker.
    pub timeout: Duration,
    /// Our own floor between announces, whatever the tracker says.
    pub min_interval: Duration,
}

/// The last known state of one tracker, for display.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerStatus {
    pub url: String,
    /// Why the last announce to this tracker failed; `None` once it answers again.
    pub last_error: Option<String>,
    /// The `warning message` of its last answer, if it had one.
    pub last_warning: Option<String>,
    /// Peers in its last answer.
    pub peers: usize,
}

/// Optional connections between the announcer and the rest of the torrent.
#[derive(Debug, Default)]
pub struct AnnouncerLinks {
    /// "Need more peers": each message asks for an announce as soon as the minimum interval
    /// allows. Repeated nudges coalesce; a capacity-1 channel fed with `try_send` is enough.
    /// A closed channel simply stops the nudges.
    pub need_peers: Option<mpsc::Receiver<()>>,
    /// Receives the status of every tracker (in tier order) after each announce attempt.
    pub status: Option<watch::Sender<Vec<TrackerStatus>>>,
}

/// Starts the announcer task for one torrent. It runs until `cancel` fires (then sends
/// `stopped`) or until `peers_out` is closed.
pub fn spawn(
    tiers: Vec<Vec<String>>,
    cfg: AnnouncerConfig,
    stats: watch::Receiver<TransferTotals>,
    peers_out: mpsc::Sender<Vec<SocketAddr>>,
    links: AnnouncerLinks,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let list = TrackerList::new(tiers, &mut rand::thread_rng());
    let announcer = Announcer::new(list, cfg, stats, peers_out, links);
    tokio::spawn(announcer.run(cancel))
}

struct Announcer {
    list: TrackerList,
    cfg: AnnouncerConfig,
    /// Our BEP 3 `key`, fixed for the life of the task.
    key: u32,
    stats: watch::Receiver<TransferTotals>,
    stats_open: bool,
    peers_out: mpsc::Sender<Vec<SocketAddr>>,
    need_peers: Option<mpsc::Receiver<()>>,
    status_out: Option<watch::Sender<Vec<TrackerStatus>>>,
    status: Vec<TrackerStatus>,
    /// The event the next announce carries; cleared when a tracker accepts it.
    pending: Option<Event>,
    /// `left` has been above 0, so reaching 0 means we completed the download.
    had_left: bool,
    completed_queued: bool,
    next_at: Instant,
    /// The tracker that last answered, and when.
    last_ok: Option<(String, Instant)>,
    /// Floor between a successful announce and a nudged one.
    nudge_floor: Duration,
}

impl Announcer {
    fn new(
        list: TrackerList,
        cfg: AnnouncerConfig,
        stats: watch::Receiver<TransferTotals>,
        peers_out: mpsc::Sender<Vec<SocketAddr>>,
        links: AnnouncerLinks,
    ) -> Announcer {
        let status = list
            .urls()
            .map(|url| TrackerStatus { url: url.to_owned(), ..TrackerStatus::default() })
            .collect();
        let had_left = stats.borrow().left > 0;
        Announcer {
            list,
            key: rand::random(),
            stats,
            stats_open: true,
            peers_out,
            need_peers: links.need_peers,
            status_out: links.status,
            status,
            pending: Some(Event::Started),
            had_left,
            completed_queued: false,
            next_at: Instant::now(),
            last_ok: None,
            nudge_floor: cfg.min_interval,
            cfg,
        }
    }

    async fn run(mut self, cancel: CancellationToken) {
        if self.list.urls().next().is_none() {
            cancel.cancelled().await;
            return;
        }
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(self.next_at) => {
                    let still_wanted = tokio::select! {
                        biased;
                        _ = cancel.cancelled() => break,
                        wanted = self.round() => wanted,
                    };
                    if !still_wanted {
                        break;
                    }
                }
                changed = self.stats.changed(), if self.stats_open => self.on_stats(changed.is_ok()),
                nudge = recv_nudge(&mut self.need_peers) => self.on_nudge(nudge),
            }
        }
        self.stop().await;
    }

    /// One announce round. Returns false when the torrent no longer takes peers.
    async fn round(&mut self) -> bool {
        let params = self.params(self.pending);
        for url in self.list.candidates(Instant::now().into_std()) {
            match announce(&url, &params, self.cfg.timeout).await {
                Ok(answer) => return self.on_answer(&url, answer).await,
                Err(e) => {
                    let delay = self.list.record_failure(&url, Instant::now().into_std());
                    tracing::warn!(tracker = %url, retry_in = ?delay, "announce failed: {e}");
                    self.update_status(&url, |s| s.last_error = Some(e.to_string()));
                }
            }
        }
        // Nobody answered: try again when the first tracker's backoff ends.
        let now = Instant::now();
        self.next_at = self
            .list
            .next_available()
            .map_or(now + self.cfg.min_interval, Instant::from_std)
            .max(now);
        true
    }

    async fn on_answer(&mut self, url: &str, answer: Announce) -> bool {
        self.list.record_success(url);
        if let Some(warning) = &answer.warning {
            tracing::warn!(tracker = %url, "tracker warning: {warning}");
        }
        self.update_status(url, |s| {
            s.last_error = None;
            s.last_warning = answer.warning.clone();
            s.peers = answer.peers.len();
        });
        tracing::debug!(tracker = %url, peers = answer.peers.len(), event = ?self.pending, "announced");
        self.pending = None;
        let tracker_floor = answer.min_interval.unwrap_or_default();
        self.nudge_floor = tracker_floor.max(self.cfg.min_interval);
        let now = Instant::now();
        self.last_ok = Some((url.to_owned(), now));
        self.next_at = now + answer.interval.max(self.nudge_floor);
        answer.peers.is_empty() || self.peers_out.send(answer.peers).await.is_ok()
    }

    fn on_stats(&mut self, open: bool) {
        if !open {
            self.stats_open = false;
            return;
        }
        let left = self.stats.borrow_and_update().left;
        if left > 0 {
            self.had_left = true;
        } else if self.had_left && !self.completed_queued {
            self.completed_queued = true;
            self.pending = Some(Event::Completed);
            self.next_at = Instant::now();
        }
    }

    fn on_nudge(&mut self, nudge: Option<()>) {
        if nudge.is_none() {
            self.need_peers = None;
            return;
        }
        let earliest = match &self.last_ok {
            Some((_, at)) => (*at + self.nudge_floor).max(Instant::now()),
            None => return, // not announced yet: the pending retry is already as soon as allowed
        };
        self.next_at = self.next_at.min(earliest);
    }

    /// The farewell `stopped`, only to a tracker that knows us.
    async fn stop(&mut self) {
        let Some((url, _)) = self.last_ok.take() else { return };
        let params = self.params(Some(Event::Stopped));
        match announce(&url, &params, STOP_TIMEOUT.min(self.cfg.timeout)).await {
            Ok(_) => tracing::debug!(tracker = %url, "announced stopped"),
            Err(e) => tracing::warn!(tracker = %url, "stopped announce failed: {e}"),
        }
    }

    fn params(&self, event: Option<Event>) -> AnnounceParams {
        let totals = *self.stats.borrow();
        AnnounceParams {
            info_hash: self.cfg.info_hash,
            peer_id: self.cfg.peer_id,
            port: self.cfg.port,
            uploaded: totals.uploaded,
            downloaded: totals.downloaded,
            left: totals.left,
            event,
            numwant: self.cfg.numwant,
            key: self.key,
        }
    }

    fn update_status(&mut self, url: &str, change: impl FnOnce(&mut TrackerStatus)) {
        if let Some(s) = self.status.iter_mut().find(|s| s.url == url) {
            change(s);
        }
        if let Some(out) = &self.status_out {
            out.send_replace(self.status.clone());
        }
    }
}

/// The next nudge, or never when there is no nudge channel.
async fn recv_nudge(rx: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
