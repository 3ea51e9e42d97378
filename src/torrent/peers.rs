//! What the torrent task knows of each connected peer, and the arithmetic on it: rates,
//! round-trip time, the request pipeline depth.
use crate::manager::{ChokeCandidate, ScoreInputs, ScoreParts};
use crate::peer::rate::RateLimit;
use crate::peer::{CloseReason, PeerCommand, PeerCounters};
use crate::types::PeerAddr;
use crate::types::{BlockRef, PeerKey};
use crate::wire::PeerId;
use bitvec::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Requests kept outstanding to a peer that did not say how many it accepts (`reqq`):
/// requests past a peer's limit are dropped silently and the download would stall.
pub const DEFAULT_PEER_REQQ: usize = 128;
/// Unrequested blocks a peer may send (more than it sent good ones) before it is closed.
/// Blocks of requests we withdrew are not counted (see [`Withdrawn`]).
const MAX_UNREQUESTED: u32 = 64;
/// Withdrawn requests remembered per peer; the oldest are forgotten first.
const WITHDRAWN_KEPT: usize = 1024;
/// Pipeline depth before the peer's rate is known.
const INITIAL_DEPTH: usize = 32;
/// Never fewer outstanding requests than this to an unchoked peer.
const MIN_DEPTH: usize = 4;

/// Requests we withdrew from a peer whose blocks may still be on the way: timed out, voided
/// by its choke, or cancelled in endgame. Such a block is the honest answer to a request we
/// made, not junk, and is taken if still wanted: in `scripts/swarm-sim` a free rider held
/// the only copy of a piece on a 16 KiB/s uplink, its blocks came after the 30 s timeout,
/// were dropped as unrequested, and 38 peers never got the piece. Bounded by
/// `WITHDRAWN_KEPT`; a block is forgiven once.
#[derive(Debug, Default)]
pub struct Withdrawn {
    order: VecDeque<BlockRef>,
    set: HashSet<BlockRef>,
}

impl Withdrawn {
    pub fn add(&mut self, b: BlockRef) {
        if self.order.len() >= WITHDRAWN_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        if self.set.insert(b) {
            self.order.push_back(b);
        }
    }

    /// Whether `b` was withdrawn (and not yet answered); forgets it.
    pub fn take(&mut self, b: &BlockRef) -> bool {
        self.set.remove(b)
    }
}

/// A rate over a sliding window, updated from a running byte total each tick.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    last_total: u64,
    bytes_per_sec: f64,
    /// Time since the total last grew, to the tick.
    idle: Duration,
}

impl Rate {
    /// Folds in the total at the end of a tick of length `dt` (exponential smoothing with a
    /// time constant of about 2 s, so a burst shows quickly and a stall decays).
    pub fn update(&mut self, total: u64, dt: Duration) {
        let delta = total.saturating_sub(self.last_total);
        self.last_total = total;
        self.idle = if delta == 0 { self.idle + dt } else { Duration::ZERO };
        let secs = dt.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let instant = delta as f64 / secs;
        let alpha = (secs / 2.0).min(1.0);
        self.bytes_per_sec += alpha * (instant - self.bytes_per_sec);
    }

    /// How long no byte has moved (to the tick); counted from the first update.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Bytes per second; below one byte per second counts as idle.
    pub fn get(&self) -> f64 {
        if self.bytes_per_sec < 1.0 {
            0.0
        } else {
            self.bytes_per_sec
        }
    }
}

/// How the torrent reaches a peer task: commands, the counters it writes, its cancel token,
/// its upload share.
pub struct PeerLink {
    pub commands: mpsc::Sender<PeerCommand>,
    pub counters: Arc<PeerCounters>,
    pub cancel: CancellationToken,
    pub upload_share: Arc<RateLimit>,
}

/// One connected peer as seen by its torrent.
pub struct PeerSlot {
    pub addr: PeerAddr,
    pub peer_id: PeerId,
    pub inbound: bool,
    pub client: Option<String>,
    pub commands: mpsc::Sender<PeerCommand>,
    pub counters: Arc<PeerCounters>,
    /// Cancelled to close the connection, whatever its socket is doing.
    pub cancel: CancellationToken,
    /// Its share of our upload limit, set at each choker round.
    pub upload_share: Arc<RateLimit>,
    /// Why we closed it, once we have; the peer task only knows it was cancelled.
    pub closing: Option<CloseReason>,
    /// Payload bytes of blocks we asked this peer for and took: its download rate counts
    /// only these, so junk blocks earn no standing with the choker or the scores.
    pub accepted: u64,
    /// Blocks it sent that nobody asked it for.
    pub violations: u32,
    /// The last tick at which either side was interested (for eviction of useless peers).
    pub last_interested: Option<Instant>,
    pub bitfield: BitVec<u8, Msb0>,
    pub am_interested: bool,
    pub am_choking: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// Our requests to it, with when they were sent.
    pub outstanding: HashMap<BlockRef, Instant>,
    /// Requests we took back whose blocks may still come.
    pub withdrawn: Withdrawn,
    /// Its `reqq`, if it told us.
    pub reqq: Option<usize>,
    /// Both sides negotiated the BEP 6 fast extension.
    pub fast: bool,
    /// The extensions of ours the peer offered in its extension handshake (`SPOKEN` names).
    pub extensions: Vec<&'static str>,
    /// Pieces it lets us request while it chokes us (BEP 6), bounded.
    pub allowed_fast: Vec<u32>,
    pub rate_down: Rate,
    pub rate_up: Rate,
    /// Smoothed block round-trip time.
    pub rtt: Option<Duration>,
    pub connected_at: Instant,
    /// `connected_at` on the wall clock, for people and the API.
    pub added: std::time::SystemTime,
    pub last_block_at: Instant,
    pub snubbed: bool,
    pub unchoked_since: Option<Instant>,
    /// What we had sent it when we last unchoked it.
    pub sent_at_unchoke: u64,
    pub choked_since: Option<Instant>,
    pub score: ScoreParts,
}

/// Whether a peer that sent `violations` unrequested blocks and `accepted` bytes of good
/// ones is closed: past the allowance, once its junk outnumbers its good blocks.
fn sends_mostly_junk(violations: u32, accepted: u64) -> bool {
    violations > MAX_UNREQUESTED && violations as u64 > accepted / crate::types::BLOCK_SIZE as u64
}

impl PeerSlot {
    /// What the choker weighs of this peer.
    pub fn choke_candidate(&self, key: PeerKey) -> ChokeCandidate {
        ChokeCandidate {
            key,
            interested: self.peer_interested,
            rate_from: self.rate_down.get(),
            rate_to: self.rate_up.get(),
            snubbed: self.snubbed,
            stalled: self.counters.stalled(),
            connected_at: self.connected_at.into_std(),
            unchoked_since: self.unchoked_since.map(|t| t.into_std()),
            choked_since: self.choked_since.map(|t| t.into_std()),
            idle_to: self.slot_idle(),
            owed: self.counters.owed(),
            sent_since_unchoke: match self.am_choking {
                false => self.counters.uploaded().saturating_sub(self.sent_at_unchoke),
                true => 0,
            },
            done: self.bitfield.count_ones() as f64 / self.bitfield.len().max(1) as f64,
        }
    }

    /// Applies a choker round: unchoked or not, for a regular slot or on trial. Returns the
    /// command to send when its choke state changes. A trial peer that earned a regular slot
    /// holds it from now (its quota counts from here); a holder picked for the trial holds none.
    pub fn apply_round(&mut self, unchoke: bool, regular: bool, now: Instant) -> Option<PeerCommand> {
        let changed = unchoke == self.am_choking;
        if changed || regular != self.unchoked_since.is_some() {
            self.unchoked_since = regular.then_some(now);
            self.sent_at_unchoke = self.counters.uploaded();
        }
        if !changed {
            return None;
        }
        self.am_choking = !unchoke;
        self.choked_since = (!unchoke).then_some(now);
        Some(if unchoke { PeerCommand::Unchoke } else { PeerCommand::Choke })
    }

    /// Takes back our request for `b`, if outstanding: its block may still come and is then
    /// taken if wanted (see [`Withdrawn`]). The caller gives it back to the picker.
    pub fn withdraw(&mut self, b: BlockRef) -> bool {
        let was = self.outstanding.remove(&b).is_some();
        if was {
            self.withdrawn.add(b);
        }
        was
    }

    /// Our requests to it for pieces others have too (`availability` above 1) made no later
    /// than the first for a piece only it has (made in the same batch, they may be ahead of it:
    /// the batch was picked before the piece became the only copy), or all of them when none is
    /// asked for yet: in its queue they come before the piece nobody else can give us.
    pub fn requests_ahead_of_sole_piece(&self, availability: &[u32]) -> Vec<BlockRef> {
        let shared = |b: &BlockRef| availability.get(b.piece as usize).is_some_and(|a| *a > 1);
        let first_sole = self.outstanding.iter().filter(|(b, _)| !shared(b)).map(|(_, t)| *t).min();
        self.outstanding
            .iter()
            .filter(|(b, t)| shared(b) && first_sole.is_none_or(|f| **t <= f))
            .map(|(b, _)| *b)
            .collect()
    }

    /// It holds a regular slot through which nothing went for a while (the choker's rule,
    /// without building a whole [`ChokeCandidate`]).
    pub fn wastes_slot(&self, now: Instant) -> bool {
        crate::manager::choker::wastes_slot(self.unchoked_since.map(|t| t.into_std()), self.slot_idle(), now.into_std())
    }

    /// How long its slot has gone unused: we sent it nothing and owe it nothing. Owed
    /// blocks count as use: on a 16 KiB/s uplink shared by five holders a block takes five
    /// seconds, and counting only bytes sent rotated every holder out after one block, so
    /// none of them finished the piece only we had (`scripts/swarm-sim`).
    fn slot_idle(&self) -> Duration {
        if self.counters.owed() {
            Duration::ZERO
        } else {
            self.rate_up.idle()
        }
    }

    /// It has every piece.
    pub fn is_seed(&self) -> bool {
        !self.bitfield.is_empty() && self.bitfield.all()
    }

    /// Whether its unrequested blocks passed the allowance and outnumber its good ones:
    /// such a peer is closed.
    pub fn sends_mostly_junk(&self) -> bool {
        sends_mostly_junk(self.violations, self.accepted)
    }

    pub fn new(
        addr: PeerAddr,
        peer_id: PeerId,
        inbound: bool,
        link: PeerLink,
        pieces: usize,
        now: Instant,
    ) -> PeerSlot {
        let PeerLink { commands, counters, cancel, upload_share } = link;
        PeerSlot {
            addr,
            peer_id,
            inbound,
            client: None,
            commands,
            counters,
            cancel,
            upload_share,
            closing: None,
            accepted: 0,
            violations: 0,
            last_interested: None,
            bitfield: bitvec![u8, Msb0; 0; pieces],
            am_interested: false,
            am_choking: true,
            peer_choking: true,
            peer_interested: false,
            outstanding: HashMap::new(),
            withdrawn: Withdrawn::default(),
            reqq: None,
            fast: false,
            extensions: Vec::new(),
            allowed_fast: Vec::new(),
            rate_down: Rate::default(),
            rate_up: Rate::default(),
            rtt: None,
            connected_at: now,
            added: std::time::SystemTime::now(),
            last_block_at: now,
            snubbed: false,
            unchoked_since: None,
            sent_at_unchoke: 0,
            choked_since: Some(now),
            score: ScoreParts::default(),
        }
    }

    /// Sends a command without waiting; false when the peer task is gone or not keeping up
    /// (the caller then closes the connection).
    pub fn command(&self, cmd: PeerCommand) -> bool {
        self.commands.try_send(cmd).is_ok()
    }

    /// How many requests to keep outstanding: `target` seconds of transfer at the current
    /// rate, at least `INITIAL_DEPTH`, at most min(reqq, our cap). The floor is for peers whose
    /// requests wait seconds behind their own upload (a slow uplink): the rate alone would
    /// keep too few in flight to fill the time they take to arrive.
    pub fn depth(&self, target: Duration, cap: usize, block: u32) -> usize {
        let limit = self.reqq.unwrap_or(DEFAULT_PEER_REQQ).min(cap).max(1);
        let rate = self.rate_down.get();
        let want =
            if rate <= 0.0 { INITIAL_DEPTH } else { (rate * target.as_secs_f64() / block as f64).ceil() as usize };
        want.max(INITIAL_DEPTH.min(limit)).clamp(MIN_DEPTH.min(limit), limit)
    }

    /// Seconds of transfer its outstanding requests hold at its current rate (none asked: 0;
    /// asked and no rate yet: as good as forever).
    pub fn queued_secs(&self, block: u32) -> f64 {
        match self.outstanding.len() {
            0 => 0.0,
            n => n as f64 * block as f64 / self.rate_down.get().max(f64::MIN_POSITIVE),
        }
    }

    /// Folds one block's round-trip time into the smoothed value (RFC 6298 style, 1/8).
    pub fn observe_rtt(&mut self, sample: Duration) {
        self.rtt = Some(match self.rtt {
            None => sample,
            Some(r) => (r * 7 + sample) / 8,
        });
    }

    pub fn score_inputs(&self, rarity: f64) -> ScoreInputs {
        ScoreInputs {
            download_rate: self.rate_down.get(),
            queue_len: self.outstanding.len(),
            response_time: self.rtt,
            rarity,
        }
    }
}

/// A peer of 8 pieces connected at `t0` whose commands go nowhere (for tests).
#[cfg(test)]
pub(crate) fn test_slot(t0: Instant) -> PeerSlot {
    let (tx, _rx) = mpsc::channel(1);
    let link = PeerLink {
        commands: tx,
        counters: Default::default(),
        cancel: CancellationToken::new(),
        upload_share: Default::default(),
    };
    PeerSlot::new(PeerAddr::P2p(libp2p::PeerId::random()), PeerId([0; 20]), false, link, 8, t0)
}

#[cfg(test)]
mod tests {
    use super::test_slot as slot;

    #[test]
    fn a_holder_owed_blocks_does_not_waste_its_slot() {
        let t0 = Instant::now();
        let mut p = slot(t0);
        p.unchoked_since = Some(t0);
        p.rate_up.update(0, Duration::from_secs(10));
        let now = t0 + Duration::from_secs(10);
        assert!(p.wastes_slot(now), "nothing sent for 10 s and nothing asked");
        p.counters.owed.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(!p.wastes_slot(now), "its blocks wait for our slow uplink");
        assert_eq!(p.choke_candidate(1).idle_to, Duration::ZERO);
    }

    #[test]
    fn a_trial_peer_promoted_to_a_regular_slot_holds_it_from_then() {
        let t0 = Instant::now();
        let mut p = slot(t0);
        assert!(matches!(p.apply_round(true, false, t0), Some(PeerCommand::Unchoke)));
        assert_eq!((p.am_choking, p.unchoked_since, p.choked_since), (false, None, None), "on trial");
        p.counters.uploaded.store(100_000, std::sync::atomic::Ordering::Relaxed);
        let t1 = t0 + Duration::from_secs(30);
        assert!(p.apply_round(true, true, t1).is_none(), "already unchoked: no command");
        assert_eq!((p.unchoked_since, p.sent_at_unchoke), (Some(t1), 100_000), "its quota counts from here");
        assert!(p.apply_round(true, true, t1 + Duration::from_secs(5)).is_none());
        assert_eq!(p.unchoked_since, Some(t1), "a holder keeps its start");
        assert!(p.apply_round(true, false, t1 + Duration::from_secs(10)).is_none());
        assert_eq!(p.unchoked_since, None, "picked for the trial: no regular slot");
        let t2 = t1 + Duration::from_secs(15);
        assert!(matches!(p.apply_round(false, false, t2), Some(PeerCommand::Choke)));
        assert_eq!((p.am_choking, p.choked_since), (true, Some(t2)));
    }

    #[test]
    fn withdrawn_requests_are_forgiven_once_and_bounded() {
        let b = |i: u32| BlockRef { piece: i, begin: 0, length: 16384 };
        let mut w = Withdrawn::default();
        w.add(b(1));
        w.add(b(1));
        assert!(w.take(&b(1)));
        assert!(!w.take(&b(1)), "a second copy is junk");
        assert!(!w.take(&b(2)), "never withdrawn");
        for i in 0..WITHDRAWN_KEPT as u32 + 10 {
            w.add(b(100 + i));
        }
        assert!(w.order.len() <= WITHDRAWN_KEPT && w.set.len() <= WITHDRAWN_KEPT);
        assert!(!w.take(&b(100)), "the oldest were forgotten");
        assert!(w.take(&b(100 + WITHDRAWN_KEPT as u32 + 9)), "the newest are kept");
    }

    #[test]
    fn junk_is_tolerated_until_it_passes_the_allowance_and_the_good_blocks() {
        let block = crate::types::BLOCK_SIZE as u64;
        assert!(!sends_mostly_junk(MAX_UNREQUESTED, 0), "the allowance itself is fine");
        assert!(sends_mostly_junk(MAX_UNREQUESTED + 1, 0));
        assert!(!sends_mostly_junk(500, 500 * block), "as many good blocks as junk");
        assert!(sends_mostly_junk(501, 500 * block));
    }

    use super::*;

    #[test]
    fn rate_follows_the_flow_and_decays() {
        let mut r = Rate::default();
        let mut total = 0;
        for _ in 0..20 {
            total += 1_000_000;
            r.update(total, Duration::from_secs(1));
        }
        assert!((r.get() - 1_000_000.0).abs() < 10_000.0, "{}", r.get());
        assert_eq!(r.idle(), Duration::ZERO);
        for _ in 0..20 {
            r.update(total, Duration::from_secs(1));
        }
        assert!(r.get() < 10_000.0);
        assert_eq!(r.idle(), Duration::from_secs(20), "idle since the last byte");
        r.update(total + 1, Duration::from_secs(1));
        assert_eq!(r.idle(), Duration::ZERO);
    }

    #[test]
    fn requests_queued_before_the_sole_piece_are_the_ones_given_up() {
        let mut p = slot(Instant::now());
        let b = |piece: u32| BlockRef { piece, begin: 0, length: 16384 };
        // Piece 0 is held by three peers, piece 1 only by this one, piece 2 by two.
        let availability = [3, 1, 2];
        let t0 = Instant::now();
        p.outstanding.insert(b(0), t0);
        p.outstanding.insert(b(2), t0 + Duration::from_secs(1));
        let mut ahead = p.requests_ahead_of_sole_piece(&availability);
        ahead.sort_by_key(|b| b.piece);
        assert_eq!(ahead, vec![b(0), b(2)], "nothing asked of the sole piece yet: all of them");
        p.outstanding.insert(b(1), t0 + Duration::from_secs(1));
        let mut ahead = p.requests_ahead_of_sole_piece(&availability);
        ahead.sort_by_key(|b| b.piece);
        assert_eq!(ahead, vec![b(0), b(2)], "those made before it and with it");
        p.outstanding.insert(BlockRef { piece: 0, begin: 16384, length: 16384 }, t0 + Duration::from_secs(2));
        assert_eq!(
            ahead.len(),
            p.requests_ahead_of_sole_piece(&availability).len(),
            "those made after it wait behind it"
        );
    }

    #[test]
    fn depth_covers_target_seconds_within_reqq() {
        let mut p = slot(Instant::now());
        assert_eq!(p.depth(Duration::from_secs(3), 500, 16384), INITIAL_DEPTH);
        p.rate_down.update(16384 * 10, Duration::from_secs(1));
        p.rate_down.update(16384 * 20, Duration::from_secs(1));
        assert!(p.depth(Duration::from_secs(3), 500, 16384) >= INITIAL_DEPTH);
        p.rate_down = Rate { bytes_per_sec: 100e6, ..Rate::default() };
        assert_eq!(p.depth(Duration::from_secs(3), 500, 16384), DEFAULT_PEER_REQQ, "no reqq: conservative default");
        p.reqq = Some(250);
        assert_eq!(p.depth(Duration::from_secs(3), 500, 16384), 250);
        p.reqq = Some(2);
        assert_eq!(p.depth(Duration::from_secs(3), 500, 16384), 2, "never past the peer's limit");
    }
}
