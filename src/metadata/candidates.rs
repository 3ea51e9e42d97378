//! Which peers to ask for the metadata, and when: every address heard of (bounded), each
//! asked by at most one exchange at a time, retried after a failure with a doubling delay,
//! and never again once it lied.
//!
//! Pure: time is a parameter, nothing here does I/O.
use crate::types::PeerAddr;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Addresses kept; more are ignored (a tracker answering thousands costs nothing).
pub const MAX_KNOWN: usize = 1000;
/// Delay before asking a peer again after its first failure; doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(2);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// May be asked from this time on.
    Ready(Instant),
    Busy,
    Banned,
}

#[derive(Debug)]
struct Entry {
    state: State,
    failures: u32,
}

/// How an exchange with a peer ended, as far as asking it again goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    Ban,
}

#[derive(Debug, Default)]
pub struct Candidates {
    peers: HashMap<PeerAddr, Entry>,
}

impl Candidates {
    /// Adds an address to ask at once; known ones and those past [`MAX_KNOWN`] are ignored.
    pub fn add(&mut self, addr: PeerAddr, now: Instant) {
        if self.peers.len() < MAX_KNOWN {
            self.peers.entry(addr).or_insert(Entry { state: State::Ready(now), failures: 0 });
        }
    }

    /// The peer ready longest, now marked busy.
    pub fn take(&mut self, now: Instant) -> Option<PeerAddr> {
        let (addr, entry) = self
            .peers
            .iter_mut()
            .filter_map(|(a, e)| match e.state {
                State::Ready(at) if at <= now => Some((at, a, e)),
                _ => None,
            })
            .min_by_key(|(at, _, _)| *at)
            .map(|(_, a, e)| (*a, e))?;
        entry.state = State::Busy;
        Some(addr)
    }

    /// An exchange with `addr` ended without the metadata.
    pub fn finished(&mut self, addr: &PeerAddr, verdict: Verdict, now: Instant) {
        let Some(e) = self.peers.get_mut(addr) else { return };
        e.state = match verdict {
            Verdict::Ban => State::Banned,
            Verdict::Retry => {
                let delay = RETRY_FIRST.saturating_mul(1 << e.failures.min(16)).min(RETRY_MAX);
                e.failures += 1;
                State::Ready(now + delay)
            }
        };
    }

    /// When the next peer that is not ready yet will be.
    pub fn next_ready(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|e| match e.state {
                State::Ready(at) => Some(at),
                _ => None,
            })
            .min()
    }

    pub fn known(&self) -> usize {
        self.peers.len()
    }

    pub fn banned(&self) -> usize {
        self.peers.values().filter(|e| e.state == State::Banned).count()
    }

    /// True when every known peer lied (or none is known): nobody is left to ask.
    pub fn all_banned(&self) -> bool {
        self.peers.values().all(|e| e.state == State::Banned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> PeerAddr {
        PeerAddr::Tcp(([127, 0, 0, 1], port).into())
    }

    #[test]
    fn each_peer_once_at_a_time_then_retried_later() {
        let t0 = Instant::now();
        let mut c = Candidates::default();
        c.add(addr(1), t0);
        c.add(addr(1), t0);
        assert_eq!(c.known(), 1);
        assert_eq!(c.take(t0), Some(addr(1)));
        assert_eq!(c.take(t0), None, "busy");
        c.finished(&addr(1), Verdict::Retry, t0);
        assert_eq!(c.take(t0 + Duration::from_secs(1)), None);
        assert_eq!(c.next_ready(), Some(t0 + RETRY_FIRST));
        assert_eq!(c.take(t0 + RETRY_FIRST), Some(addr(1)));
        c.finished(&addr(1), Verdict::Retry, t0);
        assert_eq!(c.next_ready(), Some(t0 + RETRY_FIRST * 2), "the delay doubles");
        for _ in 0..10 {
            c.take(t0 + Duration::from_secs(3600));
            c.finished(&addr(1), Verdict::Retry, t0);
        }
        assert_eq!(c.next_ready(), Some(t0 + RETRY_MAX), "capped");
    }

    #[test]
    fn liars_are_never_asked_again() {
        let t0 = Instant::now();
        let mut c = Candidates::default();
        c.add(addr(1), t0);
        c.add(addr(2), t0 + Duration::from_millis(1));
        assert_eq!(c.take(t0 + Duration::from_secs(1)), Some(addr(1)), "oldest first");
        c.finished(&addr(1), Verdict::Ban, t0);
        c.add(addr(1), t0);
        assert_eq!(c.banned(), 1);
        assert_eq!(c.take(t0 + Duration::from_secs(1)), Some(addr(2)));
        assert_eq!(c.take(t0 + Duration::from_secs(99)), None);
        assert!(!c.all_banned());
        c.finished(&addr(2), Verdict::Ban, t0);
        assert!(c.all_banned());
    }

    #[test]
    fn known_addresses_are_bounded() {
        let t0 = Instant::now();
        let mut c = Candidates::default();
        for p in 0..(MAX_KNOWN as u16 + 50) {
            c.add(addr(p), t0);
        }
        assert_eq!(c.known(), MAX_KNOWN);
    }
}
