//! The discovery scheduler: when to look for peers in the DHT next.
//!
//! A plain struct; `now` is an argument. Lookups start fast and back off, doubling from
//! `INITIAL` up to a cap: `discovery_max_interval_cap` while the torrent still wants data,
//! `dht_steady_interval_cap` once it seeds. A reset (the pool ran dry, or the keepalive layer
//! gave up on a key peer) brings the next lookup forward (the backoff goes on from there), but:
//! - resets arriving within `cool_down` of the last accepted one are ignored (event storms);
//! - a reset never schedules a lookup sooner than `reset_min_interval` after the previous
//!   reset-driven lookup;
//! - a reset never schedules a lookup sooner than [`INITIAL`] after the previous lookup of any
//!   kind: that lookup's results are still fresh (a pool that runs dry just after a lookup
//!   found nothing would otherwise get a second, identical lookup at once);
//! - a reset while a lookup is already due changes nothing and is not counted as a reset.
use std::time::{Duration, Instant};

/// The first interval: the second lookup comes this soon after the first.
pub const INITIAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleConfig {
    pub max_interval_cap: Duration,
    pub steady_interval_cap: Duration,
    pub reset_min_interval: Duration,
    pub cool_down: Duration,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: ScheduleConfig,
    interval: Duration,
    next: Instant,
    steady: bool,
    last_reset: Option<Instant>,
    last_reset_lookup: Option<Instant>,
    last_lookup: Option<Instant>,
}

/// What a reset event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetOutcome {
    /// Next lookup moved to this time.
    Accepted(Instant),
    /// Ignored: within the cool-down of the last accepted reset.
    CoolingDown,
    /// Ignored: a lookup is due already (the first one, at start), so there is nothing to
    /// bring forward; counting it would hold off a real reset for `reset_min_interval`.
    AlreadyDue,
}

impl Schedule {
    /// A schedule whose first lookup is due at `now`.
    pub fn new(cfg: ScheduleConfig, now: Instant) -> Schedule {
        Schedule {
            cfg,
            interval: INITIAL,
            next: now,
            steady: false,
            last_reset: None,
            last_reset_lookup: None,
            last_lookup: None,
        }
    }

    pub fn next_lookup(&self) -> Instant {
        self.next
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn cap(&self) -> Duration {
        if self.steady {
            self.cfg.steady_interval_cap
        } else {
            self.cfg.max_interval_cap
        }
    }

    /// Seeding torrents look less eagerly.
    pub fn set_steady(&mut self, steady: bool) {
        self.steady = steady;
        self.interval = self.interval.min(self.cap());
    }

    /// A lookup ran at `now`: schedule the next one and back off.
    pub fn lookup_done(&mut self, now: Instant) {
        if self.last_reset.is_some_and(|r| r <= now && self.last_reset_lookup.is_none_or(|l| l < r)) {
            self.last_reset_lookup = Some(now);
        }
        self.last_lookup = Some(now);
        self.next = now + self.interval;
        self.interval = (self.interval * 2).min(self.cap());
    }

    /// A reset event at `now`.
    pub fn reset(&mut self, now: Instant) -> ResetOutcome {
        if self.next <= now {
            return ResetOutcome::AlreadyDue;
        }
        if self.last_reset.is_some_and(|r| now.duration_since(r) < self.cfg.cool_down) {
            return ResetOutcome::CoolingDown;
        }
        self.last_reset = Some(now);
        let after_reset_lookup = self.last_reset_lookup.map_or(now, |l| l + self.cfg.reset_min_interval);
        let after_lookup = self.last_lookup.map_or(now, |l| l + INITIAL);
        let earliest = now.max(after_reset_lookup).max(after_lookup);
        self.next = self.next.min(earliest);
        ResetOutcome::Accepted(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ScheduleConfig {
        ScheduleConfig {
            max_interval_cap: Duration::from_secs(120),
            steady_interval_cap: Duration::from_secs(300),
            reset_min_interval: Duration::from_secs(30),
            cool_down: Duration::from_secs(10),
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn starts_fast_and_backs_off_to_the_cap() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(cfg(), t0);
        assert_eq!(sc.next_lookup(), t0);
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..9 {
            sc.lookup_done(now);
            gaps.push(sc.next_lookup() - now);
            now = sc.next_lookup();
        }
        assert_eq!(gaps, vec![s(2), s(4), s(8), s(16), s(32), s(64), s(120), s(120), s(120)]);
    }

    #[test]
    fn steady_cap_applies_when_seeding() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(cfg(), t0);
        sc.set_steady(true);
        let mut now = t0;
        for _ in 0..10 {
            sc.lookup_done(now);
            now = sc.next_lookup();
        }
        assert_eq!(sc.interval(), s(300));
        sc.set_steady(false);
        assert_eq!(sc.interval(), s(120));
    }

    #[test]
    fn reset_brings_the_lookup_forward() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(cfg(), t0);
        let mut now = t0;
        for _ in 0..8 {
            sc.lookup_done(now);
            now = sc.next_lookup();
        }
        sc.lookup_done(now);
        let r = now + s(5);
        assert_eq!(sc.reset(r), ResetOutcome::Accepted(r));
        sc.lookup_done(r);
        assert_eq!(sc.next_lookup(), r + s(120), "the backoff stays at its cap");
    }

    #[test]
    fn a_steady_stream_of_resets_drives_a_lookup_at_most_every_min_interval() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(cfg(), t0);
        let mut lookups = Vec::new();
        let mut now = t0;
        // One reset every second for 10 minutes; lookups run when due.
        while now < t0 + s(600) {
            sc.reset(now);
            if sc.next_lookup() <= now {
                lookups.push(now);
                sc.lookup_done(now);
            }
            now += s(1);
        }
        let driven: Vec<_> = lookups.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(driven.iter().skip(6).all(|d| *d >= s(30)), "{driven:?}");
        assert!(lookups.len() <= 30, "{} lookups", lookups.len());
    }

    /// The double lookup at start-up: the torrent's first tick finds its pool empty and
    /// raises "need peers" just after the first lookup (which found nothing) returned. That
    /// reset must not bring a second lookup forward to at once.
    #[test]
    fn a_reset_just_after_a_lookup_waits_for_the_initial_interval() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(cfg(), t0);
        sc.lookup_done(t0 + Duration::from_millis(5));
        let r = t0 + Duration::from_millis(15);
        assert_eq!(sc.reset(r), ResetOutcome::Accepted(t0 + Duration::from_millis(5) + INITIAL));
        assert_eq!(sc.next_lookup(), t0 + Duration::from_millis(5) + INITIAL, "the first gap stays 2 s");
    }

    #[test]
    fn a_reset_before_the_first_lookup_is_not_counted() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(cfg(), t0);
        assert_eq!(sc.reset(t0), ResetOutcome::AlreadyDue);
        sc.lookup_done(t0);
        // Not within a cool-down: the reset at t0 did not count. (Held to INITIAL after the
        // lookup.)
        assert_eq!(sc.reset(t0 + s(1)), ResetOutcome::Accepted(t0 + INITIAL));
    }

    #[test]
    fn a_reset_is_held_to_both_minimum_gaps() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(cfg(), t0);
        for _ in 0..4 {
            let n = sc.next_lookup();
            sc.lookup_done(n);
        }
        let last = t0 + s(14);
        assert_eq!(sc.next_lookup(), last + s(16));
        let r = last + Duration::from_millis(1500);
        assert_eq!(sc.reset(r), ResetOutcome::Accepted(last + INITIAL), "not closer than INITIAL to the last");
        let r2 = last + s(12);
        sc.lookup_done(last + INITIAL);
        assert_eq!(sc.reset(r2), ResetOutcome::Accepted(last + INITIAL + s(30)), "min interval after a reset lookup");
    }

    #[test]
    fn storms_are_cooled_down() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(cfg(), t0);
        for _ in 0..6 {
            let n = sc.next_lookup();
            sc.lookup_done(n);
        }
        // The last lookup ran at t0 + 62 s; the next is due at t0 + 126 s.
        let t1 = t0 + s(70);
        let mut accepted = 0;
        for i in 0..100 {
            // one event every 100 ms for 10 s
            if matches!(sc.reset(t1 + Duration::from_millis(100 * i)), ResetOutcome::Accepted(_)) {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 1);
        assert_eq!(sc.next_lookup(), t1, "the first reset of the storm brought the lookup forward");
        sc.lookup_done(t1);
        // Past the cool-down, held to the min interval after the lookup it drove.
        assert_eq!(sc.reset(t1 + s(10)), ResetOutcome::Accepted(t1 + s(30)));
    }

    #[test]
    fn resets_never_drive_lookups_closer_than_the_min_interval() {
        let t0 = Instant::now();
        let mut sc = Schedule::new(cfg(), t0);
        sc.lookup_done(t0);
        for _ in 0..6 {
            let n = sc.next_lookup();
            sc.lookup_done(n);
        }
        let r1 = t0 + s(200);
        sc.reset(r1);
        assert_eq!(sc.next_lookup(), r1);
        sc.lookup_done(r1);
        assert_eq!(sc.next_lookup(), r1 + s(120), "backed off to the cap");
        // A second reset 12 s later (past the cool-down) may not bring a lookup before
        // r1 + 30 s.
        let r2 = r1 + s(12);
        assert_eq!(sc.reset(r2), ResetOutcome::Accepted(r1 + s(30)));
    }
}
