//! The peer pool: every peer moves known → pending → connecting → connected.
//!
//! Bounds (all from `Options`): at most `max_pending` queued (when full, the lowest-scored
//! pending peer goes back to known), `max_connecting` dials in flight, `max_connections`
//! connections with inbound ones counted. A failed dial waits `reconnect_delay`, doubled per
//! failure in a row; after `max_connect_failures` the peer is forgotten. Banned peers are
//! never dialled nor accepted again in this session.
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How a peer is reached. One peer is one address, whatever told us about it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerAddr {
    Tcp(SocketAddr),
    /// A libp2p peer, by its PeerId in base58.
    P2p(String),
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(a) => write!(f, "{a}"),
            PeerAddr::P2p(id) => write!(f, "/p2p/{id}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    pub max_connections: usize,
    pub max_connecting: usize,
    pub max_pending: usize,
    pub reconnect_delay: Duration,
    pub max_connect_failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Heard of; dialled again once `retry_at` has passed.
    Known {
        retry_at: Option<Instant>,
    },
    Pending,
    Connecting,
    Connected,
    Banned,
}

#[derive(Debug, Clone)]
struct Entry {
    state: State,
    failures: u32,
    score: f64,
    /// Only addresses peers listen on are redialled; an inbound peer's source port is not.
    dialable: bool,
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
}

impl Pool {
    pub fn new(limits: PoolLimits) -> Pool {
        Pool { limits, entries: HashMap::new() }
    }

    fn count(&self, f: impl Fn(&State) -> bool) -> usize {
        self.entries.values().filter(|e| f(&e.state)).count()
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            known: self.entries.values().filter(|e| e.state != State::Banned).count(),
            pending: self.count(|s| *s == State::Pending),
            connecting: self.count(|s| *s == State::Connecting),
            connected: self.count(|s| *s == State::Connected),
            banned: self.count(|s| *s == State::Banned),
        }
    }

    /// A peer address from discovery. Returns true when it was new.
    pub fn add(&mut self, addr: PeerAddr, now: Instant) -> bool {
        if let Some(e) = self.entries.get_mut(&addr) {
            // Heard of again (a new announce, a repaired key peer): its backoff wait ends,
            // its failure count stays.
            e.dialable = true;
            if let State::Known { retry_at: Some(_) } = e.state {
                e.state = State::Known { retry_at: None };
            }
            self.promote(&addr, now);
            return false;
        }
        self.entries.insert(
            addr.clone(),
            Entry { state: State::Known { retry_at: None }, failures: 0, score: 0.0, dialable: true },
        );
        self.promote(&addr, now);
        true
    }

    /// Updates the score that orders dialling and eviction.
    pub fn set_score(&mut self, addr: &PeerAddr, score: f64) {
        if let Some(e) = self.entries.get_mut(addr) {
            e.score = score;
        }
    }

    /// Moves a known peer into the pending queue if its wait is over and there is room
    /// (evicting a lower-scored pending peer when the queue is full).
    fn promote(&mut self, addr: &PeerAddr, now: Instant) {
        let Some(e) = self.entries.get(addr) else { return };
        let ready = matches!(e.state, State::Known { retry_at } if retry_at.is_none_or(|t| t <= now)) && e.dialable;
        if !ready {
            return;
        }
        let score = e.score;
        if self.count(|s| *s == State::Pending) >= self.limits.max_pending {
            let lowest = self
                .entries
                .iter()
                .filter(|(_, e)| e.state == State::Pending)
                .min_by(|a, b| a.1.score.total_cmp(&b.1.score))
                .map(|(a, e)| (a.clone(), e.score));
            match lowest {
                Some((low, low_score)) if low_score < score => {
                    self.entries.get_mut(&low).expect("present").state = State::Known { retry_at: None };
                }
                _ => return,
            }
        }
        self.entries.get_mut(addr).expect("present").state = State::Pending;
    }

    /// Housekeeping: known peers whose wait is over go back to pending.
    pub fn maintain(&mut self, now: Instant) {
        let ready: Vec<PeerAddr> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.dialable && matches!(e.state, State::Known { retry_at } if retry_at.is_none_or(|t| t <= now))
            })
            .map(|(a, _)| a.clone())
            .collect();
        for a in ready {
            self.promote(&a, now);
        }
    }

    /// The next peer to dial, the best-scored pending one, if the bounds allow a dial.
    pub fn next_dial(&mut self) -> Option<PeerAddr> {
        let connecting = self.count(|s| *s == State::Connecting);
        let connected = self.count(|s| *s == State::Connected);
        if connecting >= self.limits.max_connecting || connecting + connected >= self.limits.max_connections {
            return None;
        }
        let best = self
            .entries
            .iter()
            .filter(|(_, e)| e.state == State::Pending)
            .max_by(|a, b| a.1.score.total_cmp(&b.1.score))
            .map(|(a, _)| a.clone())?;
        self.entries.get_mut(&best).expect("present").state = State::Connecting;
        Some(best)
    }

    /// A dial or handshake failed.
    pub fn connect_failed(&mut self, addr: &PeerAddr, now: Instant) {
        let limits = self.limits;
        let Some(e) = self.entries.get_mut(addr) else { return };
        if e.state == State::Banned {
            return;
        }
        e.failures += 1;
        if e.failures >= limits.max_connect_failures {
            self.entries.remove(addr);
            return;
        }
        let backoff = limits.reconnect_delay * 2u32.saturating_pow(e.failures - 1);
        e.state = State::Known { retry_at: Some(now + backoff) };
    }

    /// Whether an inbound connection from `addr` may be accepted; if so it is counted.
    pub fn accept_inbound(&mut self, addr: &PeerAddr) -> bool {
        let busy = self.count(|s| matches!(s, State::Connected | State::Connecting));
        match self.entries.get(addr).map(|e| e.state) {
            Some(State::Banned) | Some(State::Connected) => false,
            _ if busy >= self.limits.max_connections => false,
            Some(_) => {
                self.entries.get_mut(addr).expect("present").state = State::Connected;
                true
            }
            None => {
                self.entries
                    .insert(addr.clone(), Entry { state: State::Connected, failures: 0, score: 0.0, dialable: false });
                true
            }
        }
    }

    /// An outbound dial finished its handshake.
    pub fn connected(&mut self, addr: &PeerAddr) {
        if let Some(e) = self.entries.get_mut(addr) {
            e.state = State::Connected;
            e.failures = 0;
        }
    }

    /// A connection closed: redial later if it is a listening address.
    pub fn disconnected(&mut self, addr: &PeerAddr, now: Instant) {
        let delay = self.limits.reconnect_delay;
        let Some(e) = self.entries.get_mut(addr) else { return };
        match e.state {
            State::Banned => {}
            _ if !e.dialable => {
                self.entries.remove(addr);
            }
            _ => e.state = State::Known { retry_at: Some(now + delay) },
        }
    }

    /// Never talk to this peer again in this session.
    pub fn ban(&mut self, addr: &PeerAddr) {
        let e = self.entries.entry(addr.clone()).or_insert(Entry {
            state: State::Banned,
            failures: 0,
            score: 0.0,
            dialable: false,
        });
        e.state = State::Banned;
    }

    pub fn is_banned(&self, addr: &PeerAddr) -> bool {
        self.entries.get(addr).is_some_and(|e| e.state == State::Banned)
    }

    /// The hook discovery listens to: nothing left to dial and room for more connections.
    pub fn needs_more_peers(&self) -> bool {
        let s = self.stats();
        s.pending == 0 && s.connecting == 0 && s.connected < self.limits.max_connections / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PoolLimits {
        PoolLimits {
            max_connections: 3,
            max_connecting: 2,
            max_pending: 4,
            reconnect_delay: Duration::from_secs(60),
            max_connect_failures: 3,
        }
    }

    fn addr(n: u16) -> PeerAddr {
        PeerAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], n)))
    }

    #[test]
    fn known_pending_connecting_connected() {
        let now = Instant::now();
        let mut p = Pool::new(limits());
        assert!(p.add(addr(1), now));
        assert!(!p.add(addr(1), now));
        assert_eq!(p.stats(), PoolStats { known: 1, pending: 1, ..Default::default() });
        assert_eq!(p.next_dial(), Some(addr(1)));
        assert_eq!(p.stats().connecting, 1);
        p.connected(&addr(1));
        assert_eq!(p.stats().connected, 1);
        p.disconnected(&addr(1), now);
        assert_eq!(p.stats().pending, 0, "waits reconnect_delay");
        p.maintain(now + Duration::from_secs(61));
        assert_eq!(p.stats().pending, 1);
    }

    #[test]
    fn bounds_on_connecting_and_connections() {
        let now = Instant::now();
        let mut p = Pool::new(limits());
        for n in 1..=4 {
            p.add(addr(n), now);
        }
        assert!(p.next_dial().is_some());
        assert!(p.next_dial().is_some());
        assert!(p.next_dial().is_none(), "max_connecting 2");
        assert!(p.accept_inbound(&addr(100)), "inbound counts against max_connections 3");
        assert!(!p.accept_inbound(&addr(101)));
        assert!(p.next_dial().is_none());
    }

    #[test]
    fn full_queue_evicts_the_lowest_score() {
        let now = Instant::now();
        let mut p = Pool::new(limits());
        for n in 1..=4 {
            p.add(addr(n), now);
            p.set_score(&addr(n), n as f64);
        }
        // A fifth peer with a score of 0 finds the queue full and stays known.
        p.add(addr(5), now);
        assert_eq!(p.stats().pending, 4);
        p.set_score(&addr(5), 10.0);
        p.maintain(now);
        assert_eq!(p.stats().pending, 4);
        assert_eq!(p.next_dial(), Some(addr(5)), "the better peer displaced addr(1) and is dialled first");
        assert_eq!(p.next_dial(), Some(addr(4)));
    }

    #[test]
    fn failures_back_off_then_forget() {
        let t = Instant::now();
        let mut p = Pool::new(limits());
        p.add(addr(1), t);
        p.next_dial();
        p.connect_failed(&addr(1), t);
        p.maintain(t + Duration::from_secs(59));
        assert_eq!(p.stats().pending, 0);
        p.maintain(t + Duration::from_secs(60));
        assert_eq!(p.next_dial(), Some(addr(1)));
        p.connect_failed(&addr(1), t + Duration::from_secs(60));
        p.maintain(t + Duration::from_secs(60 + 119));
        assert_eq!(p.stats().pending, 0, "second wait doubles to 120 s");
        p.maintain(t + Duration::from_secs(180));
        assert_eq!(p.next_dial(), Some(addr(1)));
        p.connect_failed(&addr(1), t);
        assert_eq!(p.stats().known, 0, "forgotten after 3 failures");
    }

    #[test]
    fn hearing_of_a_waiting_peer_again_ends_its_wait() {
        let t = Instant::now();
        let mut p = Pool::new(limits());
        p.add(addr(1), t);
        p.next_dial();
        p.connect_failed(&addr(1), t);
        assert_eq!(p.stats().pending, 0);
        assert!(!p.add(addr(1), t));
        assert_eq!(p.next_dial(), Some(addr(1)));
    }

    #[test]
    fn banned_peers_stay_out() {
        let t = Instant::now();
        let mut p = Pool::new(limits());
        p.add(addr(1), t);
        p.ban(&addr(1));
        assert!(p.next_dial().is_none());
        assert!(!p.accept_inbound(&addr(1)));
        p.add(addr(1), t);
        p.maintain(t);
        assert!(p.next_dial().is_none());
        assert_eq!(p.stats().banned, 1);
    }

    #[test]
    fn inbound_peers_are_not_redialled() {
        let t = Instant::now();
        let mut p = Pool::new(limits());
        assert!(p.accept_inbound(&addr(7)));
        p.disconnected(&addr(7), t);
        assert_eq!(p.stats().known, 0);
        assert!(p.needs_more_peers());
    }
}
