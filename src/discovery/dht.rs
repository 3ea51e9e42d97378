//! DHT discovery for one torrent: announce ourselves as a provider once we have a piece,
//! and look up other providers on the [`Schedule`], handing every one found to the
//! torrent's pool as a libp2p peer. The pool's "need more peers" signal and the session's
//! discovery-reset events bring the next lookup forward (within the schedule's limits).
use super::schedule::{ResetOutcome, Schedule, ScheduleConfig};
use crate::config::Options;
use crate::metrics::metrics;
use crate::p2p::{peer_addr, torrent_key, NodeHandle};
use crate::torrent::{Phase, TorrentHandle};
use crate::types::PeerSource;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What the last lookups found, for diagnostics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LookupRecord {
    pub info_hash: String,
    pub providers: usize,
    pub millis: u64,
    pub error: Option<String>,
    /// Seconds since the session started.
    pub at_secs: f64,
    /// Which DHT: `kad` or `mainline`.
    pub dht: &'static str,
}

/// Bounded log of recent lookups, shared with the diagnostics endpoint.
#[derive(Debug, Default)]
pub struct LookupLog {
    records: Mutex<std::collections::VecDeque<LookupRecord>>,
}

const LOOKUP_LOG: usize = 32;
/// Wait before announcing again after a failed announcement.
const PROVIDE_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl LookupLog {
    pub fn push(&self, r: LookupRecord) {
        let mut q = self.records.lock().expect("lookup log");
        if q.len() == LOOKUP_LOG {
            q.pop_front();
        }
        q.push_back(r);
    }

    pub fn recent(&self) -> Vec<LookupRecord> {
        self.records.lock().expect("lookup log").iter().cloned().collect()
    }
}

pub fn schedule_config(o: &Options) -> ScheduleConfig {
    ScheduleConfig {
        max_interval_cap: o.discovery_max_interval_cap,
        steady_interval_cap: o.dht_steady_interval_cap,
        reset_min_interval: o.discovery_reset_min_interval,
        cool_down: o.discovery_reset_cool_down,
    }
}

/// Runs until `cancel`: provides and looks up `handle`'s torrent on `node`.
pub async fn run(
    node: NodeHandle,
    handle: TorrentHandle,
    cfg: ScheduleConfig,
    mut resets: broadcast::Receiver<()>,
    log: Arc<LookupLog>,
    started: Instant,
    cancel: CancellationToken,
) {
    let key = torrent_key(&handle.info_hash);
    let mut stats = handle.stats();
    let mut need = handle.need_peers();
    let mut schedule = Schedule::new(cfg, Instant::now());
    let mut providing = false;
    let mut provide_retry_at = Instant::now();
    loop {
        let (have, phase) = {
            let s = stats.borrow_and_update();
            (s.pieces_have, s.phase)
        };
        schedule.set_steady(phase == Phase::Seeding);
        if have > 0 && !providing && Instant::now() >= provide_retry_at {
            providing = true;
            let Some(provided) = cancel.run_until_cancelled(node.start_providing(key.clone())).await else { return };
            match provided {
                Ok(()) => tracing::info!(info_hash = %handle.info_hash, "announced as a provider in the DHT"),
                Err(e) => {
                    // A lone node has nobody to store the record at: retried a little later.
                    providing = false;
                    provide_retry_at = Instant::now() + PROVIDE_RETRY;
                    tracing::debug!(info_hash = %handle.info_hash, error = %e, "providing failed");
                }
            }
        }
        let due = tokio::time::Instant::from_std(schedule.next_lookup());
        tokio::select! {
            _ = cancel.cancelled() => return,
            // Dropped when the torrent stops (a Kademlia query may run for a minute, and
            // shutdown waits for this task).
            _ = tokio::time::sleep_until(due), if phase != Phase::Seeding || !providing => {
                if cancel.run_until_cancelled(lookup(&node, &handle, &key, &log, started)).await.is_none() {
                    return;
                }
                schedule.lookup_done(Instant::now());
                // A need raised before or during this lookup is answered by its results; only
                // a later one may bring the next lookup forward (else every start does two
                // lookups back to back and spends the reset budget on the second).
                need.borrow_and_update();
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

pub(super) fn on_reset(schedule: &mut Schedule, why: &str) {
    if let ResetOutcome::Accepted(at) = schedule.reset(Instant::now()) {
        tracing::debug!(
            reason = why,
            in_ms = at.saturating_duration_since(Instant::now()).as_millis() as u64,
            "next DHT lookup brought forward"
        );
    }
}

async fn lookup(node: &NodeHandle, handle: &TorrentHandle, key: &[u8], log: &LookupLog, started: Instant) {
    let t0 = Instant::now();
    let r = node.get_providers(key.to_vec()).await;
    metrics().observe_dht_lookup(t0.elapsed());
    let millis = t0.elapsed().as_millis() as u64;
    let mut record = LookupRecord {
        info_hash: handle.info_hash.to_hex(),
        millis,
        at_secs: started.elapsed().as_secs_f64(),
        dht: "kad",
        ..Default::default()
    };
    match r {
        Ok(providers) => {
            record.providers = providers.len();
            tracing::info!(info_hash = %handle.info_hash, providers = providers.len(), millis, "DHT lookup");
            let addrs = providers.iter().filter(|(_, addrs)| !addrs.is_empty()).map(|(p, _)| peer_addr(p)).collect();
            handle.add_peers_from(PeerSource::Kad, addrs).await;
        }
        Err(e) => {
            tracing::debug!(info_hash = %handle.info_hash, error = %e, "DHT lookup failed");
            record.error = Some(e.to_string());
        }
    }
    log.push(record);
}
