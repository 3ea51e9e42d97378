//! The announcer: one task per torrent that keeps the torrent announced to its trackers.
//!
//! It owns the torrent's [`TrackerList`] and the announce schedule, and nothing else: it reads
//! transfer totals from a `watch`, hands peer addresses to the torrent over a bounded `mpsc`, and
//! publishes per-tracker status on an optional `watch`. It never connects to peers.
//!
//! The session starts it once the torrent's data is checked, with the checked totals, so a
//! seeder's first announce already says `left=0` and it never sends `completed`.
//!
//! Schedule (BEP 3, BEP 12):
//! - `started` first; an event stays pending until some tracker accepts it.
//! - Each round tries the trackers tier by tier (skipping those backing off) until one answers;
//!   that one moves to the front of its tier. The next regular announce is due after
//!   `max(interval, min interval, cfg.min_interval)`, each remote value first clamped to
//!   `cfg.min_interval..=MAX_INTERVAL` ([`clamp_interval`]; `cfg.min_interval` itself is at
//!   least [`MIN_INTERVAL_FLOOR`]): a tracker cannot make us announce
//!   in a loop, nor push the next announce (and an `Instant`) past any sane horizon.
//! - `completed` once, as soon as `left` reaches 0 after having been above 0. (If that happens
//!   before `started` got through, `completed` replaces it.)
//! - A "need more peers" nudge brings the next announce forward, but never sooner than
//!   `max(tracker min interval, cfg.min_interval)` after the last successful one.
//! - A failing tracker backs off exponentially (see [`TrackerList::record_failure`]).
//! - On cancel: `stopped` to the tracker that last answered, bounded by a short timeout, then exit.
//!   The task also ends when the peer channel closes (the torrent is gone).
//!
//! Every announce is bounded by `cfg.timeout`, and cancellation interrupts any wait.
//!
//! The task does the I/O; the decisions live in two plain structs taking `now`: [`TrackerList`]
//! (which tracker, backoff) and `Schedule` (when, with which event), both unit-tested.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{announce, Announce, AnnounceParams, Event, TrackerList, TransferTotals};
use crate::metainfo::InfoHash;
use crate::wire::PeerId;

/// Longest wait a tracker can ask for between announces (`interval` or `min interval`).
/// libtorrent keeps `interval` in 32-bit seconds (`seconds32`, http_tracker_connection.cpp)
/// with only the `min_announce_interval` floor, and waits at most 60 minutes before retrying a
/// failing tracker (`tracker_retry_delay_max`, announce_entry.cpp). One hour is above the
/// 30-minute interval most trackers ask for, and bounds how long a torrent can go unannounced.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Shortest wait between announces whatever the settings say: with `tracker_min_interval`
/// set to 0, a tracker answering `interval` 0 would otherwise have us announce in a busy loop.
pub const MIN_INTERVAL_FLOOR: Duration = Duration::from_secs(1);

/// A tracker-supplied wait clamped to `floor..=MAX_INTERVAL` (`floor` is our own
/// `min_interval`; a floor above the cap wins, it is the user's explicit choice).
pub fn clamp_interval(remote: Duration, floor: Duration) -> Duration {
    remote.min(MAX_INTERVAL).max(floor)
}

/// `at + wait` that cannot panic: a sum past what `Instant` holds saturates to
/// `at + MAX_INTERVAL` (and to `at` if even that overflows).
pub fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait).or_else(|| at.checked_add(MAX_INTERVAL)).unwrap_or(at)
}

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
    schedule: Schedule,
    /// The tracker that last answered: the one told `stopped` at the end.
    last_ok: Option<String>,
}

impl Announcer {
    fn new(
        list: TrackerList,
        cfg: AnnouncerConfig,
        stats: watch::Receiver<TransferTotals>,
        peers_out: mpsc::Sender<Vec<SocketAddr>>,
        links: AnnouncerLinks,
    ) -> Announcer {
        let status = list.urls().map(|url| TrackerStatus { url: url.to_owned(), ..TrackerStatus::default() }).collect();
        let schedule = Schedule::new(now(), stats.borrow().left, cfg.min_interval);
        Announcer {
            list,
            cfg,
            key: rand::random(),
            stats,
            stats_open: true,
            peers_out,
            need_peers: links.need_peers,
            status_out: links.status,
            status,
            schedule,
            last_ok: None,
        }
    }

    async fn run(mut self, cancel: CancellationToken) {
        if self.list.urls().next().is_none() {
            cancel.cancelled().await;
            return;
        }
        loop {
            let due = tokio::time::Instant::from_std(self.schedule.due());
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(due) => {
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
        let params = self.params(self.schedule.event());
        for url in self.list.candidates(now()) {
            match announce(&url, &params, self.cfg.timeout).await {
                Ok(answer) => return self.on_answer(&url, answer).await,
                Err(e) => {
                    let delay = self.list.record_failure(&url, now());
                    tracing::warn!(tracker = %url, retry_in = ?delay, "announce failed: {e}");
                    self.update_status(&url, |s| s.last_error = Some(e.to_string()));
                }
            }
        }
        self.schedule.all_failed(now(), self.list.next_available());
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
        tracing::debug!(tracker = %url, peers = answer.peers.len(), event = ?self.schedule.event(), "announced");
        self.schedule.announced(now(), answer.interval, answer.min_interval);
        self.last_ok = Some(url.to_owned());
        answer.peers.is_empty() || self.peers_out.send(answer.peers).await.is_ok()
    }

    fn on_stats(&mut self, open: bool) {
        if open {
            let left = self.stats.borrow_and_update().left;
            self.schedule.left_changed(now(), left);
        } else {
            self.stats_open = false;
        }
    }

    fn on_nudge(&mut self, nudge: Option<()>) {
        match nudge {
            Some(()) => self.schedule.need_peers(now()),
            None => self.need_peers = None,
        }
    }

    /// The farewell `stopped`, only to a tracker that knows us.
    async fn stop(&mut self) {
        let Some(url) = self.last_ok.take() else {
            return;
        };
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

/// The current time on tokio's clock (so `tokio::time::pause` governs it), as a std `Instant`
/// for the plain structs.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// When to announce next and with which event: plain data, `now` passed in.
///
/// Invariants: the pending event is cleared only by a successful announce; `completed` is queued
/// at most once, and only after `left` was seen above 0; a nudge never moves the next announce
/// before `last success + max(tracker min interval, our min interval)`.
#[derive(Debug)]
struct Schedule {
    /// Our own floor between announces (`Options::tracker_min_interval`).
    min_interval: Duration,
    pending: Option<Event>,
    had_left: bool,
    completed_queued: bool,
    next_at: Instant,
    last_ok: Option<Instant>,
    /// `max(tracker min interval, min_interval)`, from the last answer.
    nudge_floor: Duration,
}

impl Schedule {
    /// A torrent that starts now with `left` bytes to go: `started` is due at once.
    fn new(now: Instant, left: u64, min_interval: Duration) -> Schedule {
        let min_interval = min_interval.max(MIN_INTERVAL_FLOOR);
        Schedule {
            min_interval,
            pending: Some(Event::Started),
            had_left: left > 0,
            completed_queued: false,
            next_at: now,
            last_ok: None,
            nudge_floor: min_interval,
        }
    }

    fn due(&self) -> Instant {
        self.next_at
    }

    /// The event the next announce carries.
    fn event(&self) -> Option<Event> {
        self.pending
    }

    /// A tracker answered with `interval` and perhaps a `min interval`.
    fn announced(&mut self, now: Instant, interval: Duration, tracker_min: Option<Duration>) {
        self.pending = None;
        self.nudge_floor = clamp_interval(tracker_min.unwrap_or_default(), self.min_interval);
        self.last_ok = Some(now);
        self.next_at = later(now, clamp_interval(interval, self.min_interval).max(self.nudge_floor));
    }

    /// No tracker answered; `retry_at` is when the first backed-off tracker is usable again.
    fn all_failed(&mut self, now: Instant, retry_at: Option<Instant>) {
        self.next_at = retry_at.unwrap_or_else(|| later(now, self.min_interval)).max(now);
    }

    /// The torrent's `left` changed: queue `completed` when the download just finished.
    fn left_changed(&mut self, now: Instant, left: u64) {
        if left > 0 {
            self.had_left = true;
        } else if self.had_left && !self.completed_queued {
            self.completed_queued = true;
            self.pending = Some(Event::Completed);
            self.next_at = now;
        }
    }

    /// The torrent wants more peers: announce as soon as the floor allows. Before the first
    /// success the next attempt is already as early as backoff allows, so nothing changes.
    fn need_peers(&mut self, now: Instant) {
        if let Some(last) = self.last_ok {
            self.next_at = self.next_at.min(later(last, self.nudge_floor).max(now));
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

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Duration = Duration::from_secs(30);
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn started_is_due_at_once_and_cleared_by_success() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100, OURS);
        assert_eq!((s.due(), s.event()), (t0, Some(Event::Started)));
        s.all_failed(t0, Some(t0 + S(60)));
        assert_eq!((s.due(), s.event()), (t0 + S(60), Some(Event::Started)), "kept until accepted");
        s.announced(t0 + S(60), S(1800), Some(S(900)));
        assert_eq!((s.due(), s.event()), (t0 + S(1860), None));
    }

    #[test]
    fn interval_is_raised_to_the_larger_floor() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100, OURS);
        s.announced(t0, S(5), None);
        assert_eq!(s.due(), t0 + OURS, "our min interval");
        s.announced(t0, S(5), Some(S(120)));
        assert_eq!(s.due(), t0 + S(120), "tracker min interval");
    }

    #[test]
    fn completed_once_after_downloading_never_for_a_seed() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100, OURS);
        s.announced(t0, S(1800), None);
        s.left_changed(t0 + S(10), 50);
        assert_eq!(s.event(), None);
        s.left_changed(t0 + S(20), 0);
        assert_eq!((s.due(), s.event()), (t0 + S(20), Some(Event::Completed)));
        s.announced(t0 + S(20), S(1800), None);
        s.left_changed(t0 + S(30), 0);
        assert_eq!(s.event(), None, "only once");

        let mut seed = Schedule::new(t0, 0, OURS);
        seed.left_changed(t0, 0);
        assert_eq!(seed.event(), Some(Event::Started));
    }

    #[test]
    fn nudges_respect_the_tracker_min_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100, OURS);
        s.all_failed(t0, Some(t0 + S(60)));
        s.need_peers(t0 + S(1));
        assert_eq!(s.due(), t0 + S(60), "no success yet: backoff stands");

        s.announced(t0, S(1800), Some(S(300)));
        s.need_peers(t0 + S(10));
        assert_eq!(s.due(), t0 + S(300));
        s.need_peers(t0 + S(400));
        assert_eq!(s.due(), t0 + S(300), "never later than already planned");
        s.announced(t0 + S(400), S(1800), None);
        s.need_peers(t0 + S(1000));
        assert_eq!(s.due(), t0 + S(1000), "floor long passed: now");
    }

    #[test]
    fn clamp_keeps_remote_intervals_within_our_floor_and_the_cap() {
        assert_eq!(clamp_interval(S(1800), OURS), S(1800));
        assert_eq!(clamp_interval(S(0), OURS), OURS);
        assert_eq!(clamp_interval(S(u64::MAX), OURS), MAX_INTERVAL);
        assert_eq!(clamp_interval(Duration::MAX, OURS), MAX_INTERVAL);
        assert_eq!(clamp_interval(S(10), S(2 * 3600)), S(2 * 3600), "the user's floor wins over the cap");
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100, Duration::ZERO);
        s.announced(t0, Duration::ZERO, Some(Duration::ZERO));
        assert_eq!(s.due(), t0 + MIN_INTERVAL_FLOOR, "no busy loop with a zero floor");
        assert_eq!(later(t0, Duration::MAX), t0 + MAX_INTERVAL);
        assert_eq!(later(t0, S(5)), t0 + S(5));
    }

    #[test]
    fn huge_intervals_from_a_tracker_never_panic_and_stay_within_the_cap() {
        let t0 = Instant::now();
        // i64::MAX seconds, as an HTTP tracker can send it; u32::MAX as a UDP one can.
        for huge in [S(i64::MAX as u64), S(u64::MAX), Duration::MAX, S(u32::MAX.into())] {
            let mut s = Schedule::new(t0, 100, OURS);
            s.announced(t0, huge, Some(huge));
            assert_eq!(s.due(), t0 + MAX_INTERVAL);
            s.need_peers(t0 + S(1));
            assert_eq!(s.due(), t0 + MAX_INTERVAL, "min interval capped too");
            s.announced(t0, huge, None);
            s.need_peers(t0 + S(1));
            assert_eq!(s.due(), t0 + OURS, "nudge floor back to ours");
        }
    }
}
