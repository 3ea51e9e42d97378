//! Mainline DHT (BEP 5) discovery for one torrent: `get_peers` lookups on the same
//! [`Schedule`] as the Kademlia lookups (backoff, caps, resets from the pool's "need more
//! peers" and the keep-alive layer), every address found handed to the torrent's pool as
//! [`PeerSource::Dht`]; and `announce_peer` with our BitTorrent port, so other clients find
//! us. Never started for a private torrent (BEP 27; the session decides).
//!
//! Bounds: one lookup passes on at most `max_addrs_per_message` distinct addresses and ends
//! after `dht_query_timeout`; the pool keeps at most `max_known_peers` per torrent whatever
//! the sources. A seeding torrent stops looking up (it needs no peers) but keeps announcing.
use super::dht::{on_reset, LookupLog, LookupRecord};
use super::schedule::{Schedule, ScheduleConfig, INITIAL};
use crate::mainline::MainlineHandle;
use crate::metrics::metrics;
use crate::torrent::{Phase, TorrentHandle};
use crate::types::{PeerAddr, PeerSource};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How often a successful announcement is renewed (nodes forget peers after about 30 min).
pub const REANNOUNCE: Duration = Duration::from_secs(15 * 60);

/// One torrent's mainline discovery; [`MainlineDiscovery::run`] drives it.
pub struct MainlineDiscovery {
    pub dht: MainlineHandle,
    pub handle: TorrentHandle,
    /// Our BitTorrent listen port; `None`: nothing to announce, lookups only.
    pub port: Option<u16>,
    pub schedule: ScheduleConfig,
    /// Most addresses one lookup passes on.
    pub max_addrs: usize,
    /// How long one lookup may run.
    pub lookup_timeout: Duration,
    pub log: Arc<LookupLog>,
    pub started: Instant,
}

/// When to announce next: after a success [`REANNOUNCE`], after a failure a retry backing off
/// from [`INITIAL`] to the schedule's cap. Plain; `now` is an argument.
#[derive(Debug, Clone)]
struct AnnounceTimer {
    next: Instant,
    retry: Duration,
    cap: Duration,
}

impl AnnounceTimer {
    fn new(now: Instant, cap: Duration) -> AnnounceTimer {
        AnnounceTimer { next: now, retry: INITIAL, cap }
    }

    fn done(&mut self, ok: bool, now: Instant) {
        if ok {
            self.retry = INITIAL;
            self.next = now + REANNOUNCE;
        } else {
            self.next = now + self.retry;
            self.retry = (self.retry * 2).min(self.cap.max(INITIAL));
        }
    }
}

impl MainlineDiscovery {
    /// Runs until `cancel`.
    pub async fn run(self, mut resets: broadcast::Receiver<()>, cancel: CancellationToken) {
        let mut stats = self.handle.stats();
        let mut need = self.handle.need_peers();
        let mut schedule = Schedule::new(self.schedule, Instant::now());
        let mut announce = AnnounceTimer::new(Instant::now(), self.schedule.max_interval_cap);
        loop {
            let seeding = stats.borrow_and_update().phase == Phase::Seeding;
            schedule.set_steady(seeding);
            let lookup_due = tokio::time::Instant::from_std(schedule.next_lookup());
            let announce_due = tokio::time::Instant::from_std(announce.next);
            tokio::select! {
                _ = cancel.cancelled() => return,
                // A lookup or announcement under way is dropped when the torrent stops: it may
                // run for the whole lookup timeout, and shutdown waits for this task.
                _ = tokio::time::sleep_until(lookup_due), if !seeding => {
                    if cancel.run_until_cancelled(self.lookup()).await.is_none() {
                        return;
                    }
                    schedule.lookup_done(Instant::now());
                    // As for Kademlia: a need raised before or during this lookup is answered by it.
                    need.borrow_and_update();
                }
                _ = tokio::time::sleep_until(announce_due), if self.port.is_some() => {
                    let Some(ok) = cancel.run_until_cancelled(self.announce()).await else { return };
                    announce.done(ok, Instant::now());
                }
                r = stats.changed() => if r.is_err() { return },
                r = need.changed() => {
                    if r.is_err() { return }
                    on_reset(&mut schedule, "pool needs peers");
                }
                r = resets.recv() => match r {
                    Err(broadcast::error::RecvError::Closed) => return,
                    _ => on_reset(&mut schedule, "discovery reset event"),
                },
            }
        }
    }

    async fn announce(&self) -> bool {
        let Some(port) = self.port else { return false };
        match self.dht.announce(&self.handle.info_hash, port).await {
            Ok(()) => {
                tracing::info!(info_hash = %self.handle.info_hash, port, "announced in the mainline DHT");
                true
            }
            Err(e) => {
                tracing::debug!(info_hash = %self.handle.info_hash, error = %e, "mainline DHT announce failed");
                false
            }
        }
    }

    async fn lookup(&self) {
        let t0 = Instant::now();
        let mut found = 0;
        let mut batches = Box::pin(self.dht.get_peers(&self.handle.info_hash, self.max_addrs, self.lookup_timeout));
        while let Some(batch) = batches.next().await {
            found += batch.len();
            self.handle.add_peers_from(PeerSource::Dht, batch.into_iter().map(PeerAddr::Tcp).collect()).await;
        }
        metrics().observe_mainline_lookup(t0.elapsed());
        let millis = t0.elapsed().as_millis() as u64;
        tracing::info!(info_hash = %self.handle.info_hash, peers = found, millis, "mainline get_peers lookup");
        self.log.push(LookupRecord {
            info_hash: self.handle.info_hash.to_hex(),
            providers: found,
            millis,
            error: None,
            at_secs: self.started.elapsed().as_secs_f64(),
            dht: "mainline",
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_renews_after_success_and_backs_off_after_failure() {
        let t0 = Instant::now();
        let mut t = AnnounceTimer::new(t0, Duration::from_secs(10));
        assert_eq!(t.next, t0, "the first announcement is due at once");
        t.done(false, t0);
        assert_eq!(t.next, t0 + INITIAL);
        t.done(false, t0);
        assert_eq!(t.next, t0 + INITIAL * 2);
        for _ in 0..10 {
            t.done(false, t0);
        }
        assert_eq!(t.next, t0 + Duration::from_secs(10), "retries capped");
        t.done(true, t0);
        assert_eq!(t.next, t0 + REANNOUNCE);
        t.done(false, t0);
        assert_eq!(t.next, t0 + INITIAL, "a success resets the backoff");
    }
}
