//! The choker: who may download from us (BEP 3 tit-for-tat).
//!
//! Every `unchoke_interval` (5 s) the `slots` (4) interested peers that give us the most are
//! unchoked: ranked by the rate we receive from them while we download; while seeding, in
//! turn, a peer that has held a slot for 30 s moved to the back so every interested peer is
//! served over time.
//!
//! - Rounds are 5 s, not BEP 3's 10 s: the rates are smoothed over about 2 s, and in a
//!   40-peer swarm where a download takes 25 s, 10 s rounds left tit-for-tat two rounds to
//!   find who reciprocates (`scripts/swarm-sim`: upload cap ~ download rate 0.54–0.78 with
//!   10 s, 0.71–0.90 with 5 s, contributors no slower). The seeding rotation stays at 30 s.
//!
//! - More slots when we upload fast: one per `slot_rate` (1 MiB/s) of our upload rate, up to
//!   four times `slots`, so a fast uploader serves more peers at once, more of them reciprocate
//!   and its download rate grows with its upload rate (libtorrent's rate-based choker in
//!   spirit). While we download, a slot past `slots` goes only to a peer sending us at least an
//!   eighth of `slot_rate`, never to a free rider.
//! - A peer snubbed (nothing sent for `snub_timeout` while we wanted data) ranks after every
//!   peer that sends us data. Excluded outright, a leecher holding the only copies of pieces saw
//!   everyone as snubbed (nobody had what it lacked) and served nobody but its optimistic peer: a
//!   swarm whose seeder had left stalled for minutes (`scripts/swarm-sim`).
//! - Every `optimistic_interval` (30 s) one choked interested peer is unchoked on trial, newly
//!   connected peers three times as likely, so a newcomer can earn a slot. A trial lasts until
//!   a piece's worth (the quota, below) went through it too: with a piece it can trade. On a
//!   16 KiB/s uplink 30 s moved 210 KiB to the trial peer, and when that uplink held the only
//!   copy of a piece the trial ended six blocks short of it (`scripts/swarm-sim`).
//! - A peer whose socket stopped taking our blocks (stalled) gets no slot at all: it would hold
//!   one and use none.
//! - While seeding, the waiting peers are served in the order they started waiting, each moved
//!   up the line by as much as one rotation (30 s) in proportion to the share of the torrent
//!   it has: one nearly done soon seeds in turn, and nobody waits more than 30 s longer than
//!   plain round robin would make it. The peers that waited longest were the free riders,
//!   choked by every leecher, so each peer turning seeder served them first (`scripts/swarm-sim`:
//!   free riders 1.46–1.99 times slower than contributors before, 1.49–1.94 after, the median
//!   run 1.62 before and 1.79 after; contributors no slower). Served strictly by share held, a
//!   peer with little could wait as long as others kept arriving ahead of it.
//! - While seeding, a slot holder that has asked us for nothing for `IDLE_SLOT` (5 s) goes to
//!   the back at once (the torrent runs a round for it when someone waits): interested but
//!   fetching what we have from others, it held a super-seeder's slot for 30 s while the
//!   pieces only the seeder had waited with choked peers (`scripts/swarm-sim`).
//!
//! - A regular holder keeps its slot until a piece's worth (the quota) went through it, for
//!   at most `QUOTA_HOLD` (120 s) and only while it uses the slot; and while every holder is
//!   owed blocks (our uplink is what limits) and the uplink moves less than a piece per 30 s
//!   per slot, there are fewer regular slots, at least one. On a fast uplink neither changes
//!   anything (a piece goes through a slot within a round). On a 16 KiB/s uplink, four
//!   holders plus the optimistic one got a few blocks each per round and rotated, none
//!   finished a piece, and when that uplink held the only copy of one the swarm waited for
//!   minutes (`scripts/swarm-sim` once its instruments stopped queueing behind free riders).
//!
//! How much of an upload limit each unchoked peer may take is [`crate::manager::share`]'s part.
use crate::types::PeerKey;
use rand::Rng;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A peer seen by the choker at one round.
#[derive(Debug, Clone)]
pub struct ChokeCandidate {
    pub key: PeerKey,
    /// They are interested in our pieces.
    pub interested: bool,
    /// Bytes per second they send us.
    pub rate_from: f64,
    /// Bytes per second we send them.
    pub rate_to: f64,
    pub snubbed: bool,
    /// Its socket has taken none of the blocks we queued for a while: it is not reading.
    /// A stalled peer gets no slot of either kind until its socket drains.
    pub stalled: bool,
    pub connected_at: Instant,
    /// Since when they hold a regular slot, if they do.
    pub unchoked_since: Option<Instant>,
    /// Since when they wait without a slot (their connection time if never served).
    pub choked_since: Option<Instant>,
    /// How long we have sent them nothing while owing them nothing (their slot is unused).
    pub idle_to: Duration,
    /// Payload bytes we sent them since we unchoked them, for a regular slot or on trial (0
    /// while choked).
    pub sent_since_unchoke: u64,
    /// Requests of theirs wait with us (queued, being read or in the outbox).
    pub owed: bool,
    /// The share of the torrent they have, 0 to 1.
    pub done: f64,
}

impl ChokeCandidate {
    /// A regular slot held for `IDLE_SLOT` through which nothing went for as long.
    pub fn wastes_slot(&self, now: Instant) -> bool {
        wastes_slot(self.unchoked_since, self.idle_to, now)
    }
}

/// A regular slot held since `unchoked_since` through which nothing went for `idle_to`:
/// both at least `IDLE_SLOT`.
pub fn wastes_slot(unchoked_since: Option<Instant>, idle_to: Duration, now: Instant) -> bool {
    unchoked_since.is_some_and(|t| now.duration_since(t) >= IDLE_SLOT) && idle_to >= IDLE_SLOT
}

/// How long a peer counts as new for the optimistic unchoke.
const NEW_PEER: Duration = Duration::from_secs(60);
/// Regular slots are at most this many times `slots`.
const MAX_SLOT_FACTOR: usize = 4;
/// How long a seeding slot is held before it rotates, whatever the round interval.
const SEED_ROTATION: Duration = Duration::from_secs(30);
/// A holder keeps its slot for its quota at most this long: a peer that reads a byte a
/// second does not keep one for good.
const QUOTA_HOLD: Duration = Duration::from_secs(120);
/// A seeding slot through which nothing went for this long is given to the next in line.
const IDLE_SLOT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Choker {
    slots: usize,
    interval: Duration,
    optimistic_interval: Duration,
    last_round: Option<Instant>,
    last_optimistic: Option<Instant>,
    optimistic: Option<PeerKey>,
    /// Our upload rate (bytes per second) per regular slot past `slots`; 0 keeps `slots`.
    slot_rate: f64,
    /// Bytes a regular holder gets before its slot may go to another peer for any reason but
    /// its own (it stops asking, stalls or loses interest); 0: none.
    quota: u64,
}

/// The decision of one round: everyone in `unchoke` is unchoked, everyone else choked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub unchoke: HashSet<PeerKey>,
    pub optimistic: Option<PeerKey>,
}

impl Choker {
    pub fn new(slots: usize, interval: Duration, optimistic_interval: Duration) -> Choker {
        Choker {
            slots,
            interval,
            optimistic_interval,
            last_round: None,
            last_optimistic: None,
            optimistic: None,
            slot_rate: 0.0,
            quota: 0,
        }
    }

    /// A holder keeps its regular slot until it got `bytes` (a piece) through it: whatever
    /// our uplink gives a slot, the holder ends up with a whole piece it can pass on.
    pub fn with_quota(mut self, bytes: u64) -> Choker {
        self.quota = bytes;
        self
    }

    /// A regular slot past `slots` for every `rate` bytes per second we upload (0: none).
    pub fn with_slot_rate(mut self, rate: u64) -> Choker {
        self.slot_rate = rate as f64;
        self
    }

    /// New slots and intervals, from the next round on (a running torrent's config change).
    pub fn configure(&mut self, slots: usize, slot_rate: u64, interval: Duration, optimistic_interval: Duration) {
        (self.slots, self.interval, self.optimistic_interval) = (slots, interval, optimistic_interval);
        self.slot_rate = slot_rate as f64;
    }

    /// Whether a round is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.last_round.is_none_or(|t| now.duration_since(t) >= self.interval)
    }

    /// Runs a round. Call when [`Choker::due`], or early when a slot holder left or lost
    /// interest (the optimistic peer is kept until its own interval is over).
    pub fn round(&mut self, now: Instant, peers: &[ChokeCandidate], seeding: bool, rng: &mut impl Rng) -> Round {
        self.last_round = Some(now);
        // A trial, like a regular slot, also lasts until a piece's worth went through it (for
        // at most QUOTA_HOLD, and only while it is used).
        let trial_unfinished = |since: Instant| {
            let p = self.optimistic.and_then(|k| peers.iter().find(|p| p.key == k));
            p.is_some_and(|p| self.owes_quota(since, p, now))
        };
        let optimistic_due = self
            .last_optimistic
            .is_none_or(|t| now.duration_since(t) >= self.optimistic_interval && !trial_unfinished(t));
        let still_valid =
            self.optimistic.is_some_and(|k| peers.iter().any(|p| p.key == k && p.interested && !p.stalled));
        // A standing optimistic peer keeps its extra slot and does not take a regular one.
        let kept = if optimistic_due || !still_valid { None } else { self.optimistic };
        let mut regular: Vec<&ChokeCandidate> =
            peers.iter().filter(|p| p.interested && !p.stalled && Some(p.key) != kept).collect();
        // A holder that has not had its quota through its slot keeps it (unless it leaves it
        // unused).
        let owed_quota = |p: &ChokeCandidate| p.unchoked_since.is_some_and(|t| self.owes_quota(t, p, now));
        regular.sort_by(|a, b| {
            if seeding {
                // Round robin: current holders keep their slot for SEED_ROTATION and their
                // quota (unless they leave it unused), then the peers that waited longest,
                // then those who just held a slot.
                let group = |p: &ChokeCandidate| match p.unchoked_since {
                    Some(_) if owed_quota(p) => 0,
                    Some(t) if now.duration_since(t) >= SEED_ROTATION || p.wastes_slot(now) => 2,
                    Some(_) => 0,
                    None => 1,
                };
                // A waiting peer's place in line moves up by as much as one rotation in
                // proportion to what it has: nearly done, it soon seeds in turn.
                let turn = |p: &ChokeCandidate| {
                    let waited = p.choked_since.map_or(Duration::MAX, |t| now.saturating_duration_since(t));
                    waited.saturating_add(SEED_ROTATION.mul_f64(p.done.clamp(0.0, 1.0)))
                };
                group(a).cmp(&group(b)).then(turn(b).cmp(&turn(a))).then(b.rate_to.total_cmp(&a.rate_to))
            } else {
                owed_quota(b)
                    .cmp(&owed_quota(a))
                    .then(a.snubbed.cmp(&b.snubbed))
                    .then(b.rate_from.total_cmp(&a.rate_from))
            }
        });
        // The slots past `slots` are earned: while we download, only by a peer that sends us at
        // least an eighth of the slot rate, so the extra slots of a fast uploader go to peers that
        // reciprocate, never to free riders.
        let earned = |p: &&&ChokeCandidate| seeding || p.rate_from >= self.slot_rate / 8.0;
        let slots = self.regular_slots(peers);
        let base = slots.min(self.slots);
        let mut unchoke: HashSet<PeerKey> = regular.iter().take(base).map(|p| p.key).collect();
        unchoke.extend(regular.iter().skip(base).filter(earned).take(slots - base).map(|p| p.key));
        if kept.is_none() {
            self.optimistic = self.pick_optimistic(now, peers, &unchoke, rng);
            self.last_optimistic = Some(now);
        }
        if let Some(k) = self.optimistic {
            unchoke.insert(k);
        }
        Round { unchoke, optimistic: self.optimistic }
    }

    /// Whether `p`, unchoked since `since`, still keeps its slot for its quota: less than a
    /// piece's worth went through it, for less than `QUOTA_HOLD`, and it uses the slot.
    fn owes_quota(&self, since: Instant, p: &ChokeCandidate, now: Instant) -> bool {
        now.duration_since(since) < QUOTA_HOLD
            && p.sent_since_unchoke < self.quota
            && !wastes_slot(Some(since), p.idle_to, now)
    }

    /// Regular slots this round: `slots`, or one per `slot_rate` of what we upload now; fewer
    /// when our uplink is the bottleneck (every holder is owed blocks) and too slow to move a
    /// quota (a piece) per `SEED_ROTATION` through each of `slots`: then one per that rate, at
    /// least one. Spread thinner, a 16 KiB/s uplink gave five peers a few blocks each of the
    /// piece only it had, none of them finished it, and the swarm waited
    /// (`scripts/swarm-sim`).
    fn regular_slots(&self, peers: &[ChokeCandidate]) -> usize {
        let upload: f64 = peers.iter().map(|p| p.rate_to).sum();
        let mut holders = peers.iter().filter(|p| p.unchoked_since.is_some()).peekable();
        let saturated = holders.peek().is_some() && holders.all(|p| p.owed);
        let quota_rate = self.quota as f64 / SEED_ROTATION.as_secs_f64();
        if saturated && upload < self.slots as f64 * quota_rate {
            return ((upload / quota_rate) as usize).clamp(1, self.slots);
        }
        if self.slot_rate <= 0.0 {
            return self.slots;
        }
        ((upload / self.slot_rate) as usize).clamp(self.slots, self.slots * MAX_SLOT_FACTOR)
    }

    fn pick_optimistic(
        &self,
        now: Instant,
        peers: &[ChokeCandidate],
        regular: &HashSet<PeerKey>,
        rng: &mut impl Rng,
    ) -> Option<PeerKey> {
        let weight = |p: &ChokeCandidate| if now.duration_since(p.connected_at) < NEW_PEER { 3 } else { 1 };
        let choked: Vec<&ChokeCandidate> =
            peers.iter().filter(|p| p.interested && !p.stalled && !regular.contains(&p.key)).collect();
        let total: u32 = choked.iter().map(|p| weight(p)).sum();
        if total == 0 {
            return None;
        }
        let mut ticket = rng.gen_range(0..total);
        for p in choked {
            if ticket < weight(p) {
                return Some(p.key);
            }
            ticket -= weight(p);
        }
        None
    }
}

#[cfg(test)]
mod tests;
