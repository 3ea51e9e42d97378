//! The fetch: peers asked a few at a time until one hands over an info dict whose SHA-1 is
//! the info-hash, under one overall deadline.
//!
//! Each exchange runs in a task of the fetch's own `JoinSet`, so when the fetch returns (or
//! its future is dropped) every connection it opened is closed with it.
use super::candidates::{Candidates, Verdict};
use super::exchange::{Exchange, Outcome};
use super::MetadataError;
use crate::metainfo::InfoHash;
use crate::torrent::{dial, Connector};
use crate::types::PeerAddr;
use crate::wire::metadata::MAX_METADATA_SIZE;
use crate::wire::{Handshake, PeerId};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Exchanges at once.
pub const MAX_PEERS: usize = 4;
/// Bytes of dicts being assembled at once, across every exchange: two of the largest.
pub const BUDGET_BYTES: u64 = 2 * MAX_METADATA_SIZE;

/// What a fetch needs.
pub struct FetchConfig {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub connector: Arc<dyn Connector>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    /// Longest a peer may go without sending anything useful.
    pub idle: Duration,
    /// The whole fetch fails after this long.
    pub deadline: Duration,
}

/// Where a fetch stands, for progress lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchStatus {
    /// Peer addresses heard of.
    pub known: usize,
    /// Being asked now.
    pub asking: usize,
    /// Caught sending wrong metadata (or bogus sizes); never asked again.
    pub banned: usize,
    /// Pieces received and in all, from the peer furthest along (0/0 before any size).
    pub pieces: (u32, u32),
}

/// Fetches the info dict: from `initial` and every batch that arrives on `more` (trackers).
/// Returns the verified dict, or why there is none.
pub async fn fetch(
    cfg: FetchConfig,
    initial: Vec<PeerAddr>,
    mut more: mpsc::Receiver<Vec<PeerAddr>>,
    status: watch::Sender<FetchStatus>,
) -> Result<Bytes, MetadataError> {
    let deadline = Instant::now() + cfg.deadline;
    let (progress_tx, mut progress) = watch::channel((0, 0));
    let exchange = Arc::new(Exchange {
        info_hash: cfg.info_hash,
        idle: cfg.idle,
        budget: Arc::new(Semaphore::new((BUDGET_BYTES / 1024) as usize)),
        progress: progress_tx,
    });
    let cfg = Arc::new(cfg);
    let mut cands = Candidates::default();
    for a in initial {
        cands.add(a, std::time::Instant::now());
    }
    let mut tasks: JoinSet<(PeerAddr, Outcome)> = JoinSet::new();
    let mut more_open = true;
    loop {
        while tasks.len() < MAX_PEERS {
            let Some(addr) = cands.take(std::time::Instant::now()) else { break };
            tasks.spawn(ask(cfg.clone(), exchange.clone(), addr));
        }
        let now_status = FetchStatus {
            known: cands.known(),
            asking: tasks.len(),
            banned: cands.banned(),
            pieces: *progress.borrow_and_update(),
        };
        status.send_if_modified(|s| std::mem::replace(s, now_status.clone()) != now_status);
        if tasks.is_empty() && !more_open && cands.all_banned() {
            return Err(if cands.known() == 0 {
                MetadataError::NoPeers
            } else {
                MetadataError::AllLied { banned: cands.banned() }
            });
        }
        let wake = cands.next_ready().filter(|_| tasks.len() < MAX_PEERS).map(Instant::from_std);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err(MetadataError::TimedOut { after: cfg.deadline, known: cands.known(), banned: cands.banned() })
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                // A task that panicked leaves its peer busy: it is not asked again.
                let Ok((addr, outcome)) = done else { continue };
                if let Some(info) = settle(&mut cands, addr, outcome) {
                    return Ok(info);
                }
            }
            batch = more.recv(), if more_open => match batch {
                None => more_open = false,
                Some(addrs) => {
                    for a in addrs {
                        cands.add(a, std::time::Instant::now());
                    }
                }
            },
            _ = tokio::time::sleep_until(wake.unwrap_or(deadline)), if wake.is_some() => {}
            // Progress of a running exchange: only the status changes. The sender lives in
            // `exchange`, as long as this loop, so this never ends in an error.
            _ = progress.changed() => {}
        }
    }
}

/// Records how an exchange ended; the dict when it brought one.
fn settle(cands: &mut Candidates, addr: PeerAddr, outcome: Outcome) -> Option<Bytes> {
    let now = std::time::Instant::now();
    match outcome {
        Outcome::Got(info) => {
            tracing::info!(peer = %addr, bytes = info.len(), "metadata received and verified");
            return Some(info);
        }
        Outcome::Failed(why) => {
            tracing::debug!(peer = %addr, %why, "metadata: no metadata from this peer for now");
            cands.finished(&addr, Verdict::Retry, now);
        }
        Outcome::Liar(why) => {
            tracing::warn!(peer = %addr, %why, "metadata peer banned");
            cands.finished(&addr, Verdict::Ban, now);
        }
    }
    None
}

/// Dials one peer and runs the exchange.
async fn ask(cfg: Arc<FetchConfig>, exchange: Arc<Exchange>, addr: PeerAddr) -> (PeerAddr, Outcome) {
    let ours = Handshake::new(cfg.info_hash, cfg.peer_id);
    let outcome = match dial::dial(cfg.connector.clone(), addr, ours, cfg.connect_timeout, cfg.handshake_timeout).await
    {
        Ok((conn, theirs)) => exchange.run(conn, theirs).await,
        Err(e) => Outcome::Failed(e.to_string()),
    };
    (addr, outcome)
}
