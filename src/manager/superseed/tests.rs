//! Unit tests of the super-seeding policy.
use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn t0() -> Instant {
    Instant::now()
}

fn none(n: usize) -> BitVec<u8, Msb0> {
    bitvec![u8, Msb0; 0; n]
}

/// `pieces` pieces; peer 1 was given two at `at` and announced the first. Returns them.
fn one_announced(pieces: usize, seed: u64, at: Instant) -> (SuperSeed, StdRng, Vec<u32>) {
    let mut ss = SuperSeed::new(pieces);
    let mut rng = StdRng::seed_from_u64(seed);
    ss.add_peer(1);
    let given = ss.top_up(1, &none(pieces), &vec![0; pieces], true, at, &mut rng);
    ss.peer_has(1, given[0], at);
    (ss, rng, given)
}

#[test]
fn peers_are_offered_different_pieces_until_every_piece_is_offered() {
    let mut ss = SuperSeed::new(8);
    let mut rng = StdRng::seed_from_u64(1);
    let avail = vec![0; 8];
    let mut all = Vec::new();
    for key in 1..=4 {
        ss.add_peer(key);
        let got = ss.top_up(key, &none(8), &avail, true, t0(), &mut rng);
        assert_eq!(got.len(), OFFERS_PER_PEER);
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (0..8).collect::<Vec<u32>>(), "each of 8 pieces offered once to 4 peers");
    // A fifth peer gets pieces offered once already, not nothing.
    ss.add_peer(5);
    assert_eq!(ss.top_up(5, &none(8), &avail, true, t0(), &mut rng).len(), OFFERS_PER_PEER);
}

#[test]
fn a_peer_is_offered_more_once_another_peer_announces_a_piece_it_was_given() {
    let mut ss = SuperSeed::new(4);
    let mut rng = StdRng::seed_from_u64(2);
    ss.add_peer(1);
    // Pieces 0 and 1 are held by three peers, piece 2 by one, piece 3 by two.
    let avail = [3, 3, 1, 2];
    assert_eq!(ss.top_up(1, &none(4), &avail, true, t0(), &mut rng), vec![2, 3]);
    assert!(ss.top_up(1, &none(4), &avail, true, t0(), &mut rng).is_empty(), "two unsettled offers: nothing new");
    assert!(ss.peer_has(1, 2, t0()).is_empty(), "nobody passed anything on");
    let mut theirs = none(4);
    theirs.set(2, true);
    assert!(ss.top_up(1, &theirs, &avail, true, t0(), &mut rng).is_empty(), "piece 2 is not passed on yet");
    assert!(!ss.settle_stranded(1, t0(), |_| true), "others lack piece 2: it waits");
    assert_eq!(ss.peer_has(5, 2, t0()), vec![1], "peer 5 announced piece 2: peer 1 passed it on");
    let next = ss.top_up(1, &theirs, &avail, true, t0(), &mut rng);
    assert!(next.len() == 1 && (next[0] == 0 || next[0] == 1), "3 is still offered, 2 is theirs: {next:?}");
    // A piece no other peer lacks cannot be passed on: settled once the peer has it.
    assert!(ss.peer_has(1, 3, t0()).is_empty());
    assert!(ss.settle_stranded(1, t0(), |p| p != 3));
    theirs.set(3, true);
    let last = ss.top_up(1, &theirs, &avail, true, t0(), &mut rng);
    assert!(last.len() == 1 && last[0] != next[0] && last[0] < 2, "{next:?} then {last:?}");
}

#[test]
fn announcing_a_piece_it_was_not_given_gets_a_peer_nothing() {
    let mut ss = SuperSeed::new(4);
    let mut rng = StdRng::seed_from_u64(6);
    ss.add_peer(1);
    ss.add_peer(2);
    let given = ss.top_up(1, &none(4), &[0; 4], true, t0(), &mut rng);
    let other = (0..4).find(|p| !given.contains(p)).unwrap();
    assert!(ss.peer_has(1, other, t0()).is_empty());
    assert!(ss.peer_has(2, other, t0()).is_empty(), "peer 1 was never to pass piece {other} on");
    assert!(ss.top_up(1, &none(4), &[0; 4], true, t0(), &mut rng).is_empty());
}

#[test]
fn it_ends_for_newcomers_once_every_piece_was_announced_and_a_peer_that_left_frees_its_offers() {
    let mut ss = SuperSeed::new(3);
    let mut rng = StdRng::seed_from_u64(3);
    ss.add_peer(1);
    let offered = ss.top_up(1, &none(3), &[0, 0, 0], true, t0(), &mut rng);
    ss.forget(1);
    assert!(!ss.is_super_seeded(1));
    assert!(ss.offers.iter().all(|&o| o == 0), "offers of a peer that left are free: {:?}", ss.offers);
    ss.add_peer(2);
    let again = ss.top_up(2, &none(3), &[0, 0, 0], true, t0(), &mut rng);
    assert_eq!(again.len(), 2);
    assert!(offered.len() == 2 && ss.is_on());
    for p in 0..3 {
        ss.peer_has(7, p, t0());
    }
    assert!(!ss.is_on(), "every piece was announced");
    assert!(ss.is_super_seeded(2), "a peer that connected under it keeps being offered pieces");
}

#[test]
fn a_peer_with_every_piece_or_an_unknown_peer_gets_no_offer() {
    let mut ss = SuperSeed::new(2);
    let mut rng = StdRng::seed_from_u64(4);
    ss.add_peer(1);
    assert!(ss.top_up(1, &bitvec![u8, Msb0; 1; 2], &[1, 1], true, t0(), &mut rng).is_empty());
    assert!(ss.top_up(9, &none(2), &[0, 0], true, t0(), &mut rng).is_empty(), "peer 9 connected before");
    assert!(!ss.declined(9, t0() + DECLINE_AFTER));
    ss.peer_has(1, 5, t0()); // out of range: ignored
    assert!(ss.is_on());
}

#[test]
fn declined_offers_are_replaced_and_never_offered_again() {
    let mut ss = SuperSeed::new(5);
    let mut rng = StdRng::seed_from_u64(5);
    ss.add_peer(1);
    let at = t0();
    let first = ss.top_up(1, &none(5), &[0; 5], true, at, &mut rng);
    assert!(!ss.declined(1, at + DECLINE_AFTER / 2), "too soon: it may not have heard of them");
    assert!(ss.declined(1, at + DECLINE_AFTER));
    assert!(!ss.declined(1, at + DECLINE_AFTER), "nothing open any more");
    let later = at + DECLINE_AFTER;
    let second = ss.top_up(1, &none(5), &[0; 5], true, later, &mut rng);
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|p| !first.contains(p)), "{first:?} offered again: {second:?}");
    assert!(!ss.declined(1, later), "just offered");
    assert!(ss.declined(1, later + DECLINE_AFTER));
    let last = ss.top_up(1, &none(5), &[0; 5], true, later, &mut rng);
    assert_eq!(last.len(), 1, "one piece left that it did not decline");
    assert!(ss.declined(1, later + DECLINE_AFTER));
    assert!(ss.top_up(1, &none(5), &[0; 5], true, later, &mut rng).is_empty());
    assert!(ss.offers.iter().all(|&o| o == 0));
}

#[test]
fn a_piece_not_passed_on_in_time_is_settled_anyway() {
    let at = t0();
    let (mut ss, mut rng, given) = one_announced(4, 7, at);
    assert!(!ss.settle_stranded(1, at + PASS_WITHIN / 2, |_| true));
    assert!(!ss.settle_stranded(1, at + PASS_WITHIN, |_| true), "kept: it still holds the offer");
    assert!(
        ss.top_up(1, &none(4), &[0; 4], true, at + PASS_WITHIN, &mut rng).is_empty(),
        "no new piece for a kept one"
    );
    assert!(ss.stranded[given[0] as usize], "others lack it, and it waited long enough: offered again");
    // Once nobody connected lacks it, the kept piece frees the offer.
    assert!(ss.settle_stranded(1, at + PASS_WITHIN, |p| p != given[0]));
    assert_eq!(ss.top_up(1, &none(4), &[0; 4], true, at + PASS_WITHIN, &mut rng).len(), 1);
}

#[test]
fn a_peer_that_passes_a_piece_on_is_freed_of_what_it_kept() {
    let at = t0();
    let (mut ss, mut rng, given) = one_announced(6, 9, at);
    assert!(!ss.settle_stranded(1, at + PASS_WITHIN, |_| true));
    ss.peer_has(1, given[1], at + PASS_WITHIN);
    assert!(ss.top_up(1, &none(6), &[0; 6], true, at + PASS_WITHIN, &mut rng).is_empty(), "one kept, one to pass on");
    assert_eq!(ss.peer_has(2, given[1], at + PASS_WITHIN), vec![1], "peer 2 got piece {} from it", given[1]);
    assert_eq!(ss.top_up(1, &none(6), &[0; 6], true, at + PASS_WITHIN, &mut rng).len(), 2, "both offers free again");
}

#[test]
fn a_stranded_piece_is_offered_again_before_any_piece_nobody_holds() {
    let mut ss = SuperSeed::new(6);
    let mut rng = StdRng::seed_from_u64(8);
    let at = t0();
    ss.add_peer(1);
    let given = ss.top_up(1, &none(6), &[0; 6], true, at, &mut rng);
    let (kept, settled) = (given[0], given[1]);
    ss.peer_has(1, kept, at);
    ss.peer_has(1, settled, at);
    let mut avail = [0; 6];
    avail[kept as usize] = 1;
    avail[settled as usize] = 1;
    // Nobody else lacks `settled` (not stranded: nobody needs it from peer 1); others lack `kept`.
    assert!(ss.settle_stranded(1, at + PASS_WITHIN, |p| p == kept));
    let later = at + PASS_WITHIN;
    ss.add_peer(2);
    let offered = ss.top_up(2, &none(6), &avail, true, later, &mut rng);
    assert_eq!(offered[0], kept, "the piece peer 1 kept comes first: {offered:?}");
    assert!(avail[offered[1] as usize] == 0, "then a piece nobody holds: {offered:?}");
    // Once peer 2 announces it, it is out like any other piece.
    ss.peer_has(2, kept, later);
    avail[kept as usize] = 2;
    ss.add_peer(3);
    let third = ss.top_up(3, &none(6), &avail, true, later, &mut rng);
    assert!(third.iter().all(|&p| avail[p as usize] == 0 && !offered.contains(&p)), "{third:?}");
}

#[test]
fn a_stranded_piece_goes_to_a_peer_we_serve_not_to_one_we_choke() {
    let at = t0();
    let (mut ss, mut rng, given) = one_announced(4, 10, at);
    ss.settle_stranded(1, at + PASS_WITHIN, |_| true);
    let mut avail = [0; 4];
    avail[given[0] as usize] = 1;
    let later = at + PASS_WITHIN;
    ss.add_peer(2);
    let choked = ss.top_up(2, &none(4), &avail, false, later, &mut rng);
    assert!(!choked.contains(&given[0]), "a peer we choke is offered pieces nobody holds: {choked:?}");
    ss.add_peer(3);
    assert_eq!(ss.top_up(3, &none(4), &avail, true, later, &mut rng)[0], given[0], "a peer we serve gets it");
}

#[test]
fn a_have_from_a_peer_we_offered_the_piece_to_credits_nobody() {
    let mut ss = SuperSeed::new(4);
    let mut rng = StdRng::seed_from_u64(11);
    ss.add_peer(1);
    let given = ss.top_up(1, &none(4), &[0; 4], true, t0(), &mut rng);
    ss.peer_has(1, given[0], t0());
    // Peer 2 is offered the same piece (one holder, the rarest), fetches it from us and says so.
    let mut avail = [5; 4];
    avail[given[0] as usize] = 1;
    ss.add_peer(2);
    assert!(ss.top_up(2, &none(4), &avail, true, t0(), &mut rng).contains(&given[0]));
    assert!(ss.peer_has(2, given[0], t0()).is_empty(), "peer 1 credited with our upload");
    // Peer 3, never offered it, got it from peer 1 or 2: both were to pass it on.
    ss.add_peer(3);
    let mut credited = ss.peer_has(3, given[0], t0());
    credited.sort_unstable();
    assert_eq!(credited, vec![1, 2]);
}

#[test]
fn a_stranded_piece_is_not_offered_to_a_peer_that_kept_one() {
    let at = t0();
    let later = at + PASS_WITHIN;
    let (mut ss, mut rng, given) = one_announced(6, 12, at);
    // Peer 2 keeps its first piece too; its other offer is declined, freeing a slot.
    ss.add_peer(2);
    let theirs = ss.top_up(2, &none(6), &[0; 6], true, at, &mut rng);
    ss.peer_has(2, theirs[0], at);
    ss.settle_stranded(1, later, |_| true);
    ss.settle_stranded(2, later, |_| true);
    assert!(ss.declined(2, at + DECLINE_AFTER));
    let mut avail = [0; 6];
    avail[given[0] as usize] = 1;
    avail[theirs[0] as usize] = 1;
    let mut has = none(6);
    has.set(theirs[0] as usize, true);
    let next = ss.top_up(2, &has, &avail, true, at + DECLINE_AFTER, &mut rng);
    assert_eq!(next.len(), 1);
    assert!(next[0] != given[0], "peer 1's stranded piece offered to peer 2, which kept one");
    ss.add_peer(3);
    let fresh = ss.top_up(3, &none(6), &avail, true, at + DECLINE_AFTER, &mut rng);
    assert!(fresh.contains(&given[0]) && fresh.contains(&theirs[0]), "a peer that kept nothing gets both: {fresh:?}");
}

#[test]
fn a_piece_fetched_late_is_due_soon_after_its_have() {
    let at = t0();
    let mut ss = SuperSeed::new(4);
    let mut rng = StdRng::seed_from_u64(13);
    ss.add_peer(1);
    let given = ss.top_up(1, &none(4), &[0; 4], true, at, &mut rng);
    // Announced 8 s after the offer: due 1 s later, not 5.
    let have_at = at + Duration::from_secs(8);
    ss.peer_has(1, given[0], have_at);
    ss.settle_stranded(1, have_at + PASS_AFTER_HAVE / 2, |_| true);
    assert!(!ss.is_stranded(given[0]), "no time at all to pass it on");
    ss.settle_stranded(1, have_at + PASS_AFTER_HAVE, |_| true);
    assert!(ss.is_stranded(given[0]), "stranded {PASS_AFTER_HAVE:?} after a late have");
    // Announced at once: due PASS_WITHIN after the offer.
    ss.peer_has(1, given[1], at);
    ss.settle_stranded(1, at + PASS_WITHIN - PASS_AFTER_HAVE, |_| true);
    assert!(!ss.is_stranded(given[1]));
    ss.settle_stranded(1, at + PASS_WITHIN, |_| true);
    assert!(ss.is_stranded(given[1]));
}
