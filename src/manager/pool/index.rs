//! The pool's entries and the indexes over them, kept in step by [`Index::link`] and
//! [`Index::unlink`]: every state or rank change of an entry is an unlink, the change, and
//! a link, so counts and ordered sets always equal a recount of the entries.
use super::{PeerAddr, PeerSource};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Heard of; ready again at the instant (backoff after a failure or a disconnect).
    Waiting(Instant),
    /// Heard of, may be dialled, but ranks below the pending queue.
    Ready,
    Pending,
    Connecting,
    Connected,
    /// Another address of a connected peer, not dialled while that connection lasts
    /// (see `alias`).
    Aliased,
    Banned,
}

/// An f64 ordered by `total_cmp`, so a NaN score cannot break the indexes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Score(pub(super) f64);

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The value of a peer to dial or keep: higher is better. Peers the user named come first
/// (so they are dialled first and never trimmed from the known set). `seq` is unique per
/// entry, so a rank names one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank(bool, Score, Reverse<u32>, Reverse<u64>);

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) state: State,
    pub(super) failures: u32,
    pub(super) score: f64,
    /// Only addresses peers listen on are redialled; an inbound peer's source port is not.
    /// Only dialable entries are ever `Waiting`, `Ready` or `Pending`.
    pub(super) dialable: bool,
    /// Order of first hearing; unique.
    pub(super) seq: u64,
    /// Where we first heard of it (`Explicit` wins over any other).
    pub(super) source: PeerSource,
    /// Quick retries made (see `quick_retry_wait`); never reset, so they run out.
    pub(super) retries: u32,
}

impl Entry {
    /// Waiting, ready or pending: a candidate to dial, counted against `max_known`.
    pub(super) fn is_queued(&self) -> bool {
        matches!(self.state, State::Waiting(_) | State::Ready | State::Pending)
    }

    pub(super) fn rank(&self) -> Rank {
        Rank(self.source == PeerSource::Explicit, Score(self.score), Reverse(self.failures), Reverse(self.seq))
    }
}

/// Where each entry is found by what the pool asks of it.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// `Waiting` entries by the instant their wait ends.
    pub(super) waiting: BTreeMap<(Instant, u64), PeerAddr>,
    pub(super) ready: BTreeMap<Rank, PeerAddr>,
    pub(super) pending: BTreeMap<Rank, PeerAddr>,
    /// `Waiting`, `Ready` and `Pending` together, the set `max_known` bounds, lowest first.
    pub(super) known: BTreeMap<Rank, PeerAddr>,
    pub(super) connecting: usize,
    pub(super) connected: usize,
    /// Connecting plus connected entries per IP.
    pub(super) per_ip: HashMap<IpAddr, usize>,
}

impl Index {
    /// Connections plus dials in flight to `ip`.
    pub(super) fn on_ip(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    pub(super) fn link(&mut self, addr: &PeerAddr, e: &Entry) {
        let rank = e.rank();
        match e.state {
            State::Waiting(at) => {
                self.waiting.insert((at, e.seq), *addr);
                self.known.insert(rank, *addr);
            }
            State::Ready => {
                self.ready.insert(rank, *addr);
                self.known.insert(rank, *addr);
            }
            State::Pending => {
                self.pending.insert(rank, *addr);
                self.known.insert(rank, *addr);
            }
            State::Connecting | State::Connected => {
                if e.state == State::Connecting {
                    self.connecting += 1;
                } else {
                    self.connected += 1;
                }
                if let Some(ip) = addr.ip() {
                    *self.per_ip.entry(ip).or_default() += 1;
                }
            }
            State::Aliased | State::Banned => {}
        }
    }

    pub(super) fn unlink(&mut self, addr: &PeerAddr, e: &Entry) {
        let rank = e.rank();
        match e.state {
            State::Waiting(at) => {
                self.waiting.remove(&(at, e.seq));
                self.known.remove(&rank);
            }
            State::Ready => {
                self.ready.remove(&rank);
                self.known.remove(&rank);
            }
            State::Pending => {
                self.pending.remove(&rank);
                self.known.remove(&rank);
            }
            State::Connecting | State::Connected => {
                if e.state == State::Connecting {
                    self.connecting -= 1;
                } else {
                    self.connected -= 1;
                }
                if let Some(ip) = addr.ip() {
                    if let Some(n) = self.per_ip.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            self.per_ip.remove(&ip);
                        }
                    }
                }
            }
            State::Aliased | State::Banned => {}
        }
    }
}
