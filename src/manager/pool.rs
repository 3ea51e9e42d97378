//! The peer pool: every peer moves known → pending → connecting → connected.
//!
//! Bounds (all from `Options`):
//! - at most `max_pending` queued to be dialled: the pending queue is always the best-ranked
//!   dialable known peers (score, then fewer failures, then first heard of);
//! - at most `max_known` entries neither connecting, connected nor banned: when the set is
//!   full, a newcomer drops the lowest-ranked such entry, or is refused if it ranks lower
//!   still (a fresh address ranks below every fresh address already held, so a flood of new
//!   addresses cannot flush the ones we had);
//! - at most `max_connecting` dials in flight, `max_connections` connections with inbound
//!   ones counted, and `max_per_ip` of both together per IP ([`ip_key`]);
//! - at most `max_banned` banned addresses and as many banned IPs, oldest forgotten first.
//!
//! A failed dial waits `reconnect_delay`, doubled per failure in a row (capped at an hour);
//! after `max_connect_failures` the peer is forgotten. A pending peer whose IP is at its
//! connection bound waits `reconnect_delay` too, without a failure.
//!
//! Quick retries ([`quick_retry_wait`]: 1 s, doubling up to `reconnect_delay`): a peer the
//! user named ([`PeerSource::Explicit`]) is redialled on that ladder after every failure or
//! disconnect and is never forgotten (nor trimmed: it ranks above every other peer); a peer
//! that closed the connection during the handshake ([`Pool::connect_closed`]: a client that
//! has only just added the torrent refuses it for a moment) climbs the same ladder before its
//! failures start to count.
//!
//! Bans: a banned address is never dialled nor accepted again in this session, and the
//! IP of a banned TCP peer is refused for inbound connections from any port (an inbound
//! peer's source port names nothing; a listening address names one client, so NAT
//! neighbours of a liar are still dialled). The listen address an inbound peer told us
//! ([`Pool::learn_listen_addr`]) is banned with it.
//!
//! Aliases (`alias`): that listen address, or an address whose dial reached a peer already
//! connected, is not dialled while the connection lasts.
//!
//! Cost: every operation is O(log n) in the number of entries, or O(k log n) for the k
//! entries it moves. Per-state counts are kept as entries change state; pending and ready
//! peers sit in rank-ordered indexes, waiting peers in a time-ordered one, so `maintain`
//! touches only the peers whose wait is over.
use super::bans::BoundedSet;
use crate::types::{ip_key, PeerAddr, PeerSource};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

mod alias;
#[cfg(test)]
mod alias_tests;
mod index;
#[cfg(test)]
mod retry_tests;
#[cfg(test)]
mod tests;

use alias::Aliases;
use index::{Entry, Index, State};

/// Longest wait before redialling, whatever the failure count.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Pending peers `next_dial` may set aside (their IP is at its bound) in one call, so one
/// call stays cheap even when thousands of queued addresses share an IP.
const MAX_SKIPS_PER_DIAL: usize = 64;

/// The first quick retry waits this long.
pub const QUICK_RETRY: Duration = Duration::from_secs(1);

/// The wait before quick retry number `n` (1-based): 1 s, 2 s, 4 s... never above `cap`.
pub fn quick_retry_wait(n: u32, cap: Duration) -> Duration {
    let factor = 2u32.saturating_pow(n.saturating_sub(1).min(31));
    QUICK_RETRY.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// `now + wait`, the wait capped at [`MAX_BACKOFF`] (a configured delay can never overflow
/// `Instant`).
fn after(now: Instant, wait: Duration) -> Instant {
    let wait = wait.min(MAX_BACKOFF);
    now.checked_add(wait).unwrap_or(now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    pub max_connections: usize,
    /// Below this many connected peers, with none left to dial, the pool asks for more.
    pub min_peers: usize,
    pub max_connecting: usize,
    pub max_pending: usize,
    pub reconnect_delay: Duration,
    pub max_connect_failures: u32,
    /// Entries neither connecting, connected nor banned.
    pub max_known: usize,
    /// Banned addresses, and separately banned IPs.
    pub max_banned: usize,
    /// Connections plus dials in flight to one IP.
    pub max_per_ip: usize,
}

/// Why an inbound connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("banned")]
    Banned,
    #[error("already connected from this address")]
    AlreadyConnected,
    #[error("too many connections from this IP")]
    IpLimit,
    /// Every slot is taken: evicting a useless peer would make room.
    #[error("no free connection slot")]
    Full,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    pub known: usize,
    pub pending: usize,
    pub connecting: usize,
    pub connected: usize,
    pub banned: usize,
}

#[derive(Debug)]
pub struct Pool {
    limits: PoolLimits,
    entries: HashMap<PeerAddr, Entry>,
    next_seq: u64,
    index: Index,
    banned: BoundedSet<PeerAddr>,
    banned_ips: BoundedSet<IpAddr>,
    aliases: Aliases,
}

impl Pool {
    /// New limits from now on (a running torrent's config change). Peers over a lowered
    /// bound stay until they leave; the ban lists keep the size they started with.
    pub fn set_limits(&mut self, limits: PoolLimits) {
        self.limits = PoolLimits { max_banned: self.limits.max_banned, ..limits };
    }

    /// The limits in force.
    pub fn limits(&self) -> PoolLimits {
        self.limits
    }

    pub fn new(limits: PoolLimits) -> Pool {
        Pool {
            limits,
            entries: HashMap::new(),
            next_seq: 0,
            index: Index::default(),
            banned: BoundedSet::new(limits.max_banned),
            banned_ips: BoundedSet::new(limits.max_banned),
            aliases: Aliases::default(),
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            known: self.entries.len() - self.banned.len(),
            pending: self.index.pending.len(),
            connecting: self.index.connecting,
            connected: self.index.connected,
            banned: self.banned.len(),
        }
    }

    /// A peer address from a tracker. Returns true when it was new and is kept.
    pub fn add(&mut self, addr: PeerAddr, now: Instant) -> bool {
        self.add_from(addr, PeerSource::Tracker, now)
    }

    /// A peer address heard of from `source`. Returns true when it was new and is kept.
    /// An address heard of again keeps its first source, unless the user names it now.
    /// (`_now` is unused since readiness no longer depends on it.)
    pub fn add_from(&mut self, addr: PeerAddr, source: PeerSource, _now: Instant) -> bool {
        if !addr.is_dialable() {
            return false;
        }
        if let Some(e) = self.entries.get_mut(&addr) {
            if e.state == State::Banned {
                return false;
            }
            e.dialable = true;
            let named = source == PeerSource::Explicit && e.source != source;
            let waiting = matches!(e.state, State::Waiting(_));
            if named {
                // Its rank changes: re-linked through `update`.
                self.update(&addr, |e| e.source = source);
            }
            // Heard of again (a new announce, a repaired key peer): its backoff wait ends,
            // its failure count stays.
            if waiting {
                self.set_state(&addr, State::Ready);
            }
            self.rebalance();
            return false;
        }
        self.insert(&addr, State::Ready, true, source);
        self.trim_known();
        self.rebalance();
        self.entries.contains_key(&addr)
    }

    /// Where the pool first heard of `addr`, if it knows it.
    pub fn source(&self, addr: &PeerAddr) -> Option<PeerSource> {
        self.entries.get(addr).map(|e| e.source)
    }

    /// Updates the score that orders dialling and eviction.
    pub fn set_score(&mut self, addr: &PeerAddr, score: f64) {
        let Some(e) = self.entries.get_mut(addr) else { return };
        if matches!(e.state, State::Connecting | State::Connected | State::Banned) {
            // In no ranked index: nothing to re-key.
            e.score = score;
            return;
        }
        self.update(addr, |e| e.score = score);
        self.rebalance();
    }

    /// Housekeeping: known peers whose wait is over become dialable again.
    pub fn maintain(&mut self, now: Instant) {
        while let Some((&(at, _), addr)) = self.index.waiting.first_key_value() {
            if at > now {
                break;
            }
            let addr = *addr;
            self.set_state(&addr, State::Ready);
        }
        self.rebalance();
    }

    /// The next peer to dial, the best-ranked pending one, if the bounds allow a dial.
    /// Pending peers whose IP is at `max_per_ip` are set aside for `reconnect_delay`.
    pub fn next_dial(&mut self, now: Instant) -> Option<PeerAddr> {
        let mut skipped = 0;
        while self.index.connecting < self.limits.max_connecting
            && self.index.connecting + self.index.connected < self.limits.max_connections
            && skipped < MAX_SKIPS_PER_DIAL
        {
            let addr = *self.index.pending.last_key_value()?.1;
            if self.ip_full(&addr) {
                self.set_state(&addr, State::Waiting(after(now, self.limits.reconnect_delay)));
                skipped += 1;
            } else {
                self.set_state(&addr, State::Connecting);
                self.rebalance();
                return Some(addr);
            }
            self.rebalance();
        }
        None
    }

    /// A dial or handshake failed.
    pub fn connect_failed(&mut self, addr: &PeerAddr, now: Instant) {
        self.dial_failed(addr, now, false);
    }

    /// The peer closed the connection during the handshake: quick retries first.
    pub fn connect_closed(&mut self, addr: &PeerAddr, now: Instant) {
        self.dial_failed(addr, now, true);
    }

    fn dial_failed(&mut self, addr: &PeerAddr, now: Instant, closed: bool) {
        let limits = self.limits;
        if self.entries.get(addr).is_none_or(|e| e.state != State::Connecting) {
            // The address got connected another way meanwhile (an inbound libp2p stream).
            return;
        }
        if self.keep_aliased(addr) {
            return;
        }
        let Some(e) = self.entries.get(addr) else { return };
        let quick = quick_retry_wait(e.retries + 1, limits.reconnect_delay);
        if e.source == PeerSource::Explicit || (closed && quick < limits.reconnect_delay) {
            self.wait_quick(addr, now);
            return;
        }
        let failures = e.failures + 1;
        if failures >= limits.max_connect_failures {
            self.forget(addr);
            self.rebalance();
            return;
        }
        let factor = 2u32.saturating_pow(failures - 1);
        let backoff = limits.reconnect_delay.checked_mul(factor).unwrap_or(MAX_BACKOFF);
        self.update(addr, |e| {
            e.failures = failures;
            e.state = State::Waiting(after(now, backoff));
        });
        self.trim_known();
        self.rebalance();
    }

    /// Whether an inbound connection from `addr` may be accepted; if so it is counted.
    pub fn accept_inbound(&mut self, addr: &PeerAddr) -> Result<(), Refusal> {
        if addr.ip().is_some_and(|ip| self.banned_ips.contains(&ip)) {
            return Err(Refusal::Banned);
        }
        let state = self.entries.get(addr).map(|e| e.state);
        match state {
            Some(State::Banned) => return Err(Refusal::Banned),
            Some(State::Connected) => return Err(Refusal::AlreadyConnected),
            // Already counted against every bound by the dial in flight.
            Some(State::Connecting) => {}
            _ if self.ip_full(addr) => return Err(Refusal::IpLimit),
            _ if self.index.connecting + self.index.connected >= self.limits.max_connections => {
                return Err(Refusal::Full)
            }
            _ => {}
        }
        if state.is_none() {
            self.insert(addr, State::Connected, false, PeerSource::Inbound);
        } else {
            self.aliases.unlink(addr);
            self.set_state(addr, State::Connected);
            self.rebalance();
        }
        Ok(())
    }

    /// An outbound dial finished its handshake.
    pub fn connected(&mut self, addr: &PeerAddr) {
        if self.entries.get(addr).is_some_and(|e| e.state == State::Connecting) {
            // Not the alias of another connection after all: a peer of its own.
            self.aliases.unlink(addr);
            self.update(addr, |e| {
                e.state = State::Connected;
                e.failures = 0;
            });
        }
    }

    /// A connection closed: redial later if it is a listening address. Only a connected
    /// entry changes, so a second call for the same connection is harmless.
    pub fn disconnected(&mut self, addr: &PeerAddr, now: Instant) {
        let Some(e) = self.entries.get(addr) else { return };
        if e.state != State::Connected {
            return;
        }
        self.release_alias(addr, now);
        let Some(e) = self.entries.get(addr) else { return };
        if !e.dialable {
            self.forget(addr);
        } else if e.source == PeerSource::Explicit {
            self.wait_quick(addr, now);
            return;
        } else {
            self.set_state(addr, State::Waiting(after(now, self.limits.reconnect_delay)));
            self.trim_known();
        }
        self.rebalance();
    }

    /// Never talk to this peer again in this session: its address is not dialled nor
    /// accepted, its IP is refused for inbound connections, and the listen address it told
    /// us is banned with it.
    pub fn ban(&mut self, addr: &PeerAddr) {
        if let Some(ip) = addr.ip() {
            self.banned_ips.insert(ip);
        }
        let learned = self.aliases.of(addr);
        self.ban_addr(addr);
        if let Some(l) = learned {
            self.ban_addr(&l);
        }
        self.rebalance();
    }

    fn ban_addr(&mut self, addr: &PeerAddr) {
        self.aliases.unlink(addr);
        if !self.entries.contains_key(addr) {
            self.insert(addr, State::Banned, false, PeerSource::Inbound);
        } else {
            self.update(addr, |e| {
                e.state = State::Banned;
                e.dialable = false;
            });
        }
        for old in self.banned.insert(*addr) {
            self.entries.remove(&old);
        }
    }

    /// The address is our own (a dial reached ourselves): never dialled again. Unlike a
    /// ban, its IP stays welcome (other peers share it, on loopback or behind a NAT).
    pub fn refuse_own(&mut self, addr: &PeerAddr) {
        self.ban_addr(addr);
        self.rebalance();
    }

    /// Forgets `addr` (a user removed the peer): not dialled until a source names it anew.
    /// A banned address stays banned. False when it was not known.
    pub fn remove(&mut self, addr: &PeerAddr) -> bool {
        let known = self.entries.contains_key(addr) && !self.is_banned(addr);
        if known {
            self.forget(addr);
            self.rebalance();
        }
        known
    }

    /// Whether this address is banned (for dialling and accepting it).
    pub fn is_banned(&self, addr: &PeerAddr) -> bool {
        self.entries.get(addr).is_some_and(|e| e.state == State::Banned)
    }

    /// Whether inbound connections from this IP are refused.
    pub fn is_ip_banned(&self, ip: IpAddr) -> bool {
        self.banned_ips.contains(&ip_key(ip))
    }

    /// The hook discovery listens to: nothing left to dial and room for more connections.
    pub fn needs_more_peers(&self) -> bool {
        self.index.pending.is_empty() && self.index.connecting == 0 && self.index.connected < self.limits.min_peers
    }

    /// Peers wait to be dialled but every connection slot is taken: evicting a useless
    /// peer (see [`super::evict`]) would let one in.
    pub fn needs_slot(&self) -> bool {
        !self.index.pending.is_empty() && self.index.connecting + self.index.connected >= self.limits.max_connections
    }

    /// Waits out the next quick retry, counted, without a failure.
    fn wait_quick(&mut self, addr: &PeerAddr, now: Instant) {
        let cap = self.limits.reconnect_delay;
        self.update(addr, |e| {
            e.retries += 1;
            e.state = State::Waiting(after(now, quick_retry_wait(e.retries, cap)));
        });
        self.trim_known();
        self.rebalance();
    }

    // ---- index upkeep: every state change goes through link/unlink ----

    fn ip_full(&self, addr: &PeerAddr) -> bool {
        addr.ip().is_some_and(|ip| self.index.on_ip(ip) >= self.limits.max_per_ip)
    }

    /// Applies `f` to the entry with its index membership and counts kept right.
    fn update(&mut self, addr: &PeerAddr, f: impl FnOnce(&mut Entry)) {
        let Some(e) = self.entries.get_mut(addr) else { return };
        self.index.unlink(addr, e);
        f(e);
        self.index.link(addr, e);
    }

    fn insert(&mut self, addr: &PeerAddr, state: State, dialable: bool, source: PeerSource) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let e = Entry { state, failures: 0, score: 0.0, dialable, seq, source, retries: 0 };
        self.index.link(addr, &e);
        self.entries.insert(*addr, e);
    }

    fn set_state(&mut self, addr: &PeerAddr, state: State) {
        self.update(addr, |e| e.state = state);
    }

    /// Drops an entry (not for banned ones: they leave only through `banned`), with the
    /// alias it set aside, if any.
    fn forget(&mut self, addr: &PeerAddr) {
        if let Some(e) = self.entries.remove(addr) {
            self.index.unlink(addr, &e);
        }
        if let Some(alias) = self.aliases.unlink(addr) {
            if self.entries.get(&alias).is_some_and(|e| e.state == State::Aliased) {
                self.forget(&alias);
            }
        }
    }

    /// Drops the lowest-ranked known entries while there are more than `max_known`.
    fn trim_known(&mut self) {
        while self.index.known.len() > self.limits.max_known {
            let addr = *self.index.known.first_key_value().expect("longer than max_known").1;
            self.forget(&addr);
        }
    }

    /// Restores "pending holds the best `max_pending` of pending ∪ ready". Each step moves
    /// one entry, and one pool operation breaks the invariant by at most a few entries
    /// (`maintain`: by the k peers whose wait ended).
    fn rebalance(&mut self) {
        loop {
            let best_ready = self.index.ready.last_key_value().map(|(r, a)| (*r, *a));
            let Some((ready_rank, ready_addr)) = best_ready else { return };
            if self.index.pending.len() < self.limits.max_pending {
                self.set_state(&ready_addr, State::Pending);
                continue;
            }
            let Some((&low_rank, low_addr)) = self.index.pending.first_key_value() else { return };
            if ready_rank <= low_rank {
                return;
            }
            let low_addr = *low_addr;
            self.set_state(&low_addr, State::Ready);
            self.set_state(&ready_addr, State::Pending);
        }
    }
}
