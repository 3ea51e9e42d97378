//! Unit tests of the choker.
use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn peer(key: PeerKey, rate_from: f64, at: Instant) -> ChokeCandidate {
    ChokeCandidate {
        key,
        interested: true,
        rate_from,
        rate_to: 0.0,
        snubbed: false,
        stalled: false,
        connected_at: at,
        unchoked_since: None,
        choked_since: Some(at),
        idle_to: Duration::ZERO,
        sent_since_unchoke: 0,
        owed: false,
        done: 0.0,
    }
}

#[test]
fn four_best_uploaders_plus_one_optimistic() {
    let t0 = Instant::now();
    let mut c = Choker::new(4, Duration::from_secs(10), Duration::from_secs(30));
    let peers: Vec<_> = (0..8).map(|k| peer(k, k as f64 * 100.0, t0)).collect();
    let r = c.round(t0, &peers, false, &mut StdRng::seed_from_u64(1));
    for k in 4..8 {
        assert!(r.unchoke.contains(&k));
    }
    let opt = r.optimistic.unwrap();
    assert!(opt < 4, "optimistic is one of the choked");
    assert_eq!(r.unchoke.len(), 5);
}

#[test]
fn a_fast_uploader_opens_a_slot_per_mib_per_second_up_to_four_times_the_slots() {
    let t0 = Instant::now();
    const MIB: u64 = 1 << 20;
    let mut c = Choker::new(4, Duration::from_secs(10), Duration::from_secs(30)).with_slot_rate(MIB);
    let mut peers: Vec<_> = (0..30).map(|k| peer(k, (k + 1) as f64 * MIB as f64 / 8.0, t0)).collect();
    for (up, regular) in [(3.5, 4), (8.5, 8), (40.0, 16)] {
        for p in &mut peers {
            p.rate_to = up * MIB as f64 / 30.0;
        }
        let r = c.round(t0, &peers, false, &mut StdRng::seed_from_u64(1));
        assert_eq!(r.unchoke.len(), regular + 1, "{up} MiB/s up: {regular} regular slots and the optimistic");
        for k in (30 - regular as u64)..30 {
            assert!(r.unchoke.contains(&k), "the best uploaders to us hold the regular slots");
        }
    }
    // Free riders (under an eighth of the slot rate to us) earn no extra slot while we
    // download; while we seed, anyone may.
    for p in &mut peers[..26] {
        p.rate_from = 10_000.0;
    }
    let mut c = Choker::new(4, Duration::from_secs(10), Duration::from_secs(30)).with_slot_rate(MIB);
    let r = c.round(t0, &peers, false, &mut StdRng::seed_from_u64(1));
    assert_eq!(r.unchoke.len(), 4 + 1, "the four regular slots and the optimistic, no extra");
    let r = c.round(t0 + Duration::from_secs(10), &peers, true, &mut StdRng::seed_from_u64(1));
    assert_eq!(r.unchoke.len(), 16 + 1, "seeding: every extra slot is used");
    c.configure(4, 0, Duration::from_secs(10), Duration::from_secs(30));
    let r = c.round(t0 + Duration::from_secs(20), &peers, false, &mut StdRng::seed_from_u64(1));
    assert_eq!(r.unchoke.len(), 5, "slot rate 0: the slots are fixed");
}

#[test]
fn rhythm_ten_and_thirty_seconds() {
    let t0 = Instant::now();
    let mut c = Choker::new(1, Duration::from_secs(10), Duration::from_secs(30));
    let peers: Vec<_> = (0..20).map(|k| peer(k, if k == 0 { 1000.0 } else { 0.0 }, t0 - NEW_PEER)).collect();
    let mut rng = StdRng::seed_from_u64(2);
    assert!(c.due(t0));
    let first = c.round(t0, &peers, false, &mut rng).optimistic;
    assert!(!c.due(t0 + Duration::from_secs(9)));
    assert!(c.due(t0 + Duration::from_secs(10)));
    for s in [10, 20] {
        let r = c.round(t0 + Duration::from_secs(s), &peers, false, &mut rng);
        assert_eq!(r.optimistic, first, "optimistic kept until 30 s");
    }
    let mut changed = false;
    for round in 0..5 {
        let r = c.round(t0 + Duration::from_secs(30 * (round + 1)), &peers, false, &mut rng);
        changed |= r.optimistic != first;
    }
    assert!(changed, "optimistic rotates every 30 s");
}

#[test]
fn a_trial_lasts_until_a_piece_went_through_it_for_at_most_quota_hold() {
    let t0 = Instant::now();
    let quota = 256 * 1024;
    let at = |s| t0 + Duration::from_secs(s);
    let mut c = Choker::new(1, Duration::from_secs(5), Duration::from_secs(30)).with_quota(quota);
    // Peer 0 holds the regular slot; the trial goes to one of the others.
    let mut peers: Vec<_> = (0..20).map(|k| peer(k, if k == 0 { 1000.0 } else { 0.0 }, t0 - NEW_PEER)).collect();
    let mut rng = StdRng::seed_from_u64(3);
    let trial = c.round(t0, &peers, false, &mut rng).optimistic.unwrap();
    let t = trial as usize;
    // A slow uplink: 210 KiB through it after 30 s, short of a piece: the trial goes on.
    peers[t].sent_since_unchoke = 210 * 1024;
    for s in [30, 60] {
        assert_eq!(c.round(at(s), &peers, false, &mut rng).optimistic, Some(trial), "{s} s");
    }
    // Its piece is through: the next round may try another.
    peers[t].sent_since_unchoke = quota;
    let changed = (0..5).any(|i| c.round(at(65 + 30 * i), &peers, false, &mut rng).optimistic != Some(trial));
    assert!(changed, "a trial that got its piece ends at its interval");
    // Short of a piece, a trial ends after QUOTA_HOLD, or once it goes unused.
    for (idle, end) in [(Duration::ZERO, QUOTA_HOLD.as_secs()), (IDLE_SLOT, 30)] {
        let mut c = Choker::new(1, Duration::from_secs(5), Duration::from_secs(30)).with_quota(quota);
        let mut rng = StdRng::seed_from_u64(3);
        let trial = c.round(t0, &peers, false, &mut rng).optimistic.unwrap();
        let t = trial as usize;
        (peers[t].sent_since_unchoke, peers[t].idle_to) = (100, idle);
        assert_eq!(c.round(at(end - 5), &peers, false, &mut rng).optimistic, Some(trial));
        let changed = (0..5).any(|i| c.round(at(end + 30 * i), &peers, false, &mut rng).optimistic != Some(trial));
        assert!(changed, "idle {idle:?}: the trial ends by {end} s");
        (peers[t].sent_since_unchoke, peers[t].idle_to) = (0, Duration::ZERO);
    }
}

#[test]
fn snubbed_peers_get_a_regular_slot_only_when_nobody_else_wants_it() {
    let t0 = Instant::now();
    let mut c = Choker::new(1, Duration::from_secs(10), Duration::from_secs(30));
    let mut fast = peer(1, 1000.0, t0);
    let slow = peer(2, 10.0, t0);
    fast.snubbed = true;
    let r = c.round(t0, &[fast.clone(), slow], false, &mut StdRng::seed_from_u64(3));
    assert!(r.unchoke.contains(&2));
    assert_eq!(r.optimistic, Some(1), "a snubbed peer may still win the optimistic slot");
    // Every peer snubbed (none has what we lack): the slots are still used.
    let mut c = Choker::new(2, Duration::from_secs(10), Duration::from_secs(30));
    let mut peers: Vec<_> = (1..=4).map(|k| peer(k, 0.0, t0)).collect();
    for p in &mut peers {
        p.snubbed = true;
    }
    let r = c.round(t0, &peers, false, &mut StdRng::seed_from_u64(3));
    assert_eq!(r.unchoke.len(), 3, "two regular slots and the optimistic: {:?}", r.unchoke);
}

#[test]
fn stalled_peers_get_no_slot_of_either_kind() {
    let t0 = Instant::now();
    let mut c = Choker::new(2, Duration::from_secs(10), Duration::from_secs(30));
    let mut peers: Vec<ChokeCandidate> = (1..=6).map(|k| peer(k, 0.0, t0)).collect();
    for p in peers.iter_mut().take(5) {
        p.stalled = true;
    }
    for seeding in [true, false] {
        for seed in 0..20 {
            let r = c.round(t0, &peers, seeding, &mut StdRng::seed_from_u64(seed));
            assert_eq!(r.unchoke, HashSet::from([6]), "only the reading peer is unchoked");
        }
    }
    // A standing optimistic peer that stalls loses its slot at the next round.
    peers[5].stalled = true;
    peers[0].stalled = false;
    let r = c.round(t0 + Duration::from_secs(10), &peers, true, &mut StdRng::seed_from_u64(1));
    assert_eq!(r.unchoke, HashSet::from([1]));
}

#[test]
fn uninterested_peers_stay_choked() {
    let t0 = Instant::now();
    let mut c = Choker::new(4, Duration::from_secs(10), Duration::from_secs(30));
    let mut p = peer(1, 1000.0, t0);
    p.interested = false;
    let r = c.round(t0, &[p], false, &mut StdRng::seed_from_u64(4));
    assert!(r.unchoke.is_empty());
}

#[test]
fn seeding_rotates_so_everyone_is_served() {
    let t0 = Instant::now();
    let mut c = Choker::new(2, Duration::from_secs(10), Duration::from_secs(3600));
    let mut peers: Vec<_> = (0..6).map(|k| peer(k, 0.0, t0 - NEW_PEER)).collect();
    let mut served = HashSet::new();
    let mut rng = StdRng::seed_from_u64(5);
    for round in 0..12 {
        let now = t0 + Duration::from_secs(10 * round);
        let r = c.round(now, &peers, true, &mut rng);
        for p in &mut peers {
            let unchoked = r.unchoke.contains(&p.key) && r.optimistic != Some(p.key);
            p.unchoked_since = if unchoked { p.unchoked_since.or(Some(now)) } else { None };
            p.choked_since = if unchoked { None } else { p.choked_since.or(Some(now)) };
            p.rate_to = if unchoked { 100.0 } else { 0.0 };
            if r.unchoke.contains(&p.key) {
                served.insert(p.key);
            }
        }
    }
    assert_eq!(served.len(), 6, "every interested peer was unchoked: {served:?}");
}

#[test]
fn a_seeding_slot_is_held_30_s_whatever_the_round_interval() {
    let t0 = Instant::now();
    let mut c = Choker::new(1, Duration::from_secs(5), Duration::from_secs(3600));
    let mut peers: Vec<_> = (0..3).map(|k| peer(k, 0.0, t0)).collect();
    (peers[0].unchoked_since, peers[0].choked_since) = (Some(t0), None);
    peers[0].rate_to = 100.0;
    let mut rng = StdRng::seed_from_u64(8);
    let regular = |r: &Round| r.unchoke.iter().copied().filter(|k| Some(*k) != r.optimistic).collect::<Vec<_>>();
    for s in (5..30).step_by(5) {
        let r = c.round(t0 + Duration::from_secs(s), &peers, true, &mut rng);
        assert_eq!(regular(&r), [0], "held at {s} s: {r:?}");
    }
    let r = c.round(t0 + SEED_ROTATION, &peers, true, &mut rng);
    assert!(!regular(&r).contains(&0) && regular(&r).len() == 1, "rotated at 30 s: {r:?}");
}

#[test]
fn a_holder_keeps_its_slot_until_a_piece_went_through_it_for_at_most_quota_hold() {
    // One regular slot, 256 KiB pieces; peer 0 holds the slot, peer 1 sends us more.
    let t0 = Instant::now();
    let quota = 256 * 1024;
    let at = |s| t0 + Duration::from_secs(s);
    // A new optimistic peer every round (peer 1's trials are over at once: it got its piece),
    // so it never keeps anyone out of the regular slot.
    let new_choker = || Choker::new(1, Duration::from_secs(5), Duration::ZERO).with_quota(quota);
    let mut peers: Vec<_> = (0..2).map(|k| peer(k, k as f64 * 1000.0, t0)).collect();
    peers[1].sent_since_unchoke = quota;
    (peers[0].unchoked_since, peers[0].choked_since) = (Some(t0), None);
    let mut rng = StdRng::seed_from_u64(10);
    let regular = |r: &Round| r.unchoke.iter().copied().filter(|k| Some(*k) != r.optimistic).collect::<Vec<_>>();
    for seeding in [false, true] {
        let mut c = new_choker();
        // A slow uplink: 200 KiB through the slot after 40 s, still short of a piece.
        peers[0].sent_since_unchoke = 200 * 1024;
        let r = c.round(at(40), &peers, seeding, &mut rng);
        assert_eq!(regular(&r), [0], "seeding {seeding}: kept until its piece is through: {r:?}");
        peers[0].sent_since_unchoke = quota;
        let r = c.round(at(45), &peers, seeding, &mut rng);
        assert_eq!(regular(&r), [1], "seeding {seeding}: then the usual order: {r:?}");
        // A peer reading a byte a second keeps it no longer than QUOTA_HOLD... (A new choker:
        // this one has just made peer 0 its trial peer.)
        c = new_choker();
        peers[0].sent_since_unchoke = 100;
        let r = c.round(t0 + QUOTA_HOLD - Duration::from_secs(1), &peers, seeding, &mut rng);
        assert_eq!(regular(&r), [0], "{r:?}");
        let r = c.round(t0 + QUOTA_HOLD, &peers, seeding, &mut rng);
        assert_eq!(regular(&r), [1], "seeding {seeding}: not past QUOTA_HOLD: {r:?}");
        // ...and one that asks for nothing not even that long.
        peers[0].idle_to = IDLE_SLOT;
        let r = c.round(at(10), &peers, seeding, &mut rng);
        assert_eq!(regular(&r), [1], "seeding {seeding}: an unused slot is not kept: {r:?}");
        peers[0].idle_to = Duration::ZERO;
    }
}

#[test]
fn a_saturated_slow_uplink_serves_fewer_peers_at_a_time() {
    // 256 KiB pieces: a slot should move one per 30 s, about 8.5 KiB/s.
    let t0 = Instant::now();
    let mut c = Choker::new(4, Duration::from_secs(5), Duration::from_secs(3600)).with_quota(256 * 1024);
    let mut peers: Vec<_> = (0..8).map(|k| peer(k, 0.0, t0)).collect();
    let mut rng = StdRng::seed_from_u64(11);
    let regular = |r: &Round| r.unchoke.iter().filter(|k| Some(**k) != r.optimistic).count();
    // The first round knows nothing of our uplink: every slot.
    assert_eq!(regular(&c.round(t0, &peers, true, &mut rng)), 4);
    // Four holders share 16 KiB/s and each waits for blocks: one slot (and the optimistic
    // one), 8 KiB/s each.
    for p in &mut peers[..4] {
        (p.unchoked_since, p.choked_since, p.rate_to, p.owed) = (Some(t0), None, 4096.0, true);
    }
    let later = t0 + Duration::from_secs(5);
    assert_eq!(regular(&c.round(later, &peers, true, &mut rng)), 1, "16 KiB/s is one piece per 30 s and a bit");
    // 40 KiB/s: four pieces per 30 s and a bit.
    for p in &mut peers[..4] {
        p.rate_to = 10240.0;
    }
    assert_eq!(regular(&c.round(later, &peers, true, &mut rng)), 4);
    for p in &mut peers[..4] {
        p.rate_to = 6144.0;
    }
    assert_eq!(regular(&c.round(later, &peers, true, &mut rng)), 2, "24 KiB/s");
    for p in &mut peers[..4] {
        p.rate_to = 4096.0;
    }
    // A holder that is owed nothing: the uplink is not what limits us.
    peers[0].owed = false;
    assert_eq!(regular(&c.round(later, &peers, true, &mut rng)), 4);
    // A fast uplink keeps every slot, saturated or not.
    for p in &mut peers[..4] {
        (p.rate_to, p.owed) = (256.0 * 1024.0, true);
    }
    assert_eq!(regular(&c.round(later, &peers, false, &mut rng)), 4);
}

#[test]
fn seeding_an_unused_slot_goes_to_the_next_in_line() {
    let t0 = Instant::now();
    let mut c = Choker::new(2, Duration::from_secs(10), Duration::from_secs(3600));
    let mut peers: Vec<_> = (0..4).map(|k| peer(k, 0.0, t0)).collect();
    let mut rng = StdRng::seed_from_u64(7);
    // Peers 0 and 1 were unchoked at t0; 2 and 3 wait (3 the longest).
    for p in &mut peers[..2] {
        (p.unchoked_since, p.choked_since) = (Some(t0), None);
    }
    peers[3].choked_since = Some(t0 - Duration::from_secs(1));
    let at = |s| t0 + Duration::from_secs(s);
    // Peer 0 has asked for nothing since it was unchoked; peer 1 keeps fetching.
    peers[0].idle_to = Duration::from_secs(4);
    assert!(!peers[0].wastes_slot(at(4)), "not before IDLE_SLOT");
    let r = c.round(at(4), &peers, true, &mut rng);
    assert!(r.unchoke.contains(&0) && r.unchoke.contains(&1));
    peers[0].idle_to = IDLE_SLOT;
    assert!(peers[0].wastes_slot(at(5)) && !peers[1].wastes_slot(at(5)));
    let r = c.round(at(5), &peers, true, &mut rng);
    assert!(!r.unchoke.contains(&0), "the unused slot is given away: {r:?}");
    assert!(r.unchoke.contains(&1) && r.unchoke.contains(&3), "{r:?}");
    // While downloading, slots follow what peers give us, used or not.
    peers[1].rate_from = 10.0;
    peers[0].rate_from = 20.0;
    let r = c.round(at(15), &peers, false, &mut rng);
    assert!(r.unchoke.contains(&0));
}

#[test]
fn seeding_serves_a_waiting_peer_nearly_done_sooner_but_everyone_in_turn() {
    let t0 = Instant::now();
    let mut c = Choker::new(1, Duration::from_secs(5), Duration::from_secs(3600));
    // Peer 0 has waited 10 s longer than the others but has nothing; peer 1 has 90 % of
    // the torrent, peer 2 half.
    let mut peers: Vec<_> = (0..3).map(|k| peer(k, 0.0, t0 + Duration::from_secs(10))).collect();
    peers[0].choked_since = Some(t0);
    (peers[1].done, peers[2].done) = (0.9, 0.5);
    let mut rng = StdRng::seed_from_u64(9);
    // At a first round peer 3 takes the optimistic slot and keeps it (peer 4 then leaves).
    let first = [peer(3, 0.0, t0), peer(4, 0.0, t0 - Duration::from_secs(60))];
    assert_eq!(c.round(t0, &first, true, &mut rng).optimistic, Some(3));
    peers.push(first[0].clone());
    let mut order = Vec::new();
    for s in (10..=100).step_by(5) {
        let now = t0 + Duration::from_secs(s);
        let r = c.round(now, &peers, true, &mut rng);
        let regular: Vec<_> = r.unchoke.iter().copied().filter(|k| Some(*k) != r.optimistic).collect();
        assert_eq!((regular.len(), r.optimistic), (1, Some(3)), "{r:?}");
        if order.last() != Some(&regular[0]) {
            order.push(regular[0]);
        }
        for p in &mut peers {
            let unchoked = regular[0] == p.key;
            p.unchoked_since = if unchoked { p.unchoked_since.or(Some(now)) } else { None };
            p.choked_since = if unchoked { None } else { p.choked_since.or(Some(now)) };
        }
    }
    // Peer 1 gets in ahead of peer 0, but not back ahead of it once it has had its turn.
    assert_eq!(order, [1, 2, 0, 1], "{order:?}");
}

#[test]
fn newcomers_are_favoured_for_the_optimistic_slot() {
    let t0 = Instant::now() + Duration::from_secs(1000);
    let mut new_wins = 0;
    let mut rng = StdRng::seed_from_u64(6);
    for _ in 0..400 {
        let mut c = Choker::new(0, Duration::from_secs(10), Duration::from_secs(30));
        let peers = vec![peer(1, 0.0, t0 - Duration::from_secs(600)), peer(2, 0.0, t0)];
        if c.round(t0, &peers, false, &mut rng).optimistic == Some(2) {
            new_wins += 1;
        }
    }
    assert!((250..350).contains(&new_wins), "new peer should win ~3/4: {new_wins}");
}
