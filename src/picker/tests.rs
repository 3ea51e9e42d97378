//! Unit tests of the picker.
use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

const BS: u32 = 16384;

fn picker(pieces: usize, piece_len: u32) -> Picker {
    let total = pieces as u64 * piece_len as u64 - 1000; // short last piece
    Picker::new(Geometry::new(piece_len, total).with_block_size(BS), bitvec![u8, Msb0; 0; pieces])
}

fn all(n: usize) -> BitVec<u8, Msb0> {
    bitvec![u8, Msb0; 1; n]
}

/// Every partial piece's `missing` count is its number of `Missing` blocks.
fn missing_counts_match(p: &Picker) -> bool {
    p.partial.values().all(|x| x.missing as usize == x.blocks.iter().filter(|b| **b == BlockState::Missing).count())
}

/// A picker of 10 pieces past its random start (pieces 0-3 verified), where three peers have
/// every piece but `missing`.
fn three_peers_lack(missing: usize, piece_len: u32) -> Picker {
    let mut p = picker(10, piece_len);
    for i in 0..RANDOM_FIRST_PIECES {
        p.piece_verified(i as u32);
    }
    for _ in 0..3 {
        let mut bits = all(10);
        bits.set(missing, false);
        p.peer_bitfield(&bits);
    }
    p
}

#[test]
fn short_last_piece_and_blocks() {
    let mut p = picker(2, 4 * BS);
    let mut rng = StdRng::seed_from_u64(1);
    let got = p.pick(1, &all(2), 100, &mut rng);
    assert_eq!(got.len(), 8);
    let last = got.iter().filter(|b| b.piece == 1).max_by_key(|b| b.begin).unwrap();
    assert_eq!(last.length, BS - 1000);
    assert_eq!(got.iter().map(|b| b.length as u64).sum::<u64>(), 8 * BS as u64 - 1000);
}

#[test]
fn only_pieces_the_peer_has() {
    let mut p = picker(8, BS);
    let mut theirs = bitvec![u8, Msb0; 0; 8];
    theirs.set(3, true);
    let got = p.pick(1, &theirs, 10, &mut StdRng::seed_from_u64(2));
    assert_eq!(got, vec![BlockRef { piece: 3, begin: 0, length: BS }]);
}

#[test]
fn rarest_first_after_the_random_start() {
    // Pieces 4..10 held by 3 peers, piece 7 by only one.
    let mut p = three_peers_lack(7, BS);
    let mut one = bitvec![u8, Msb0; 0; 10];
    one.set(7, true);
    one.set(5, true);
    p.peer_bitfield(&one);
    let got = p.pick(9, &all(10), 1, &mut StdRng::seed_from_u64(3));
    assert_eq!(got[0].piece, 7);
}

#[test]
fn partial_pieces_are_finished_first() {
    let mut p = picker(10, 4 * BS);
    let mut rng = StdRng::seed_from_u64(4);
    let first = p.pick(1, &all(10), 2, &mut rng);
    assert_eq!(first[0].piece, first[1].piece);
    p.release_all(1);
    let next = p.pick(2, &all(10), 4, &mut rng);
    assert!(next.iter().all(|b| b.piece == first[0].piece), "{next:?}");
}

#[test]
fn endgame_duplicates_and_cancels() {
    let mut p = picker(1, 2 * BS);
    let mut rng = StdRng::seed_from_u64(5);
    let a = p.pick(1, &all(1), 10, &mut rng);
    assert_eq!(a.len(), 2);
    let b = p.pick(2, &all(1), 10, &mut rng);
    assert_eq!(b.len(), 2, "endgame hands the same blocks to a second peer");
    assert!(p.pick(3, &all(1), 10, &mut rng).is_empty(), "at most two holders per block");
    let r = p.block_received(2, a[0]).unwrap();
    assert_eq!(r.cancel, vec![1]);
    assert!(!r.piece_complete);
    assert!(p.block_received(1, a[0]).is_none(), "duplicate is dropped");
    let r = p.block_received(1, a[1]).unwrap();
    assert!(r.piece_complete);
    p.piece_verified(0);
    assert!(p.is_complete());
}

#[test]
fn endgame_duplicates_the_most_advanced_piece_first() {
    let mut p = picker(2, 4 * BS);
    let mut rng = StdRng::seed_from_u64(5);
    let asked = p.pick(1, &all(2), 10, &mut rng);
    assert_eq!(asked.len(), 8, "every block of both pieces asked of peer 1");
    let of = |piece: u32| asked.iter().filter(move |b| b.piece == piece).copied();
    for b in of(0).take(1).chain(of(1).take(3)) {
        assert!(p.block_received(1, b).is_some());
    }
    let dup = p.pick(2, &all(2), 1, &mut rng);
    assert_eq!(dup, of(1).skip(3).collect::<Vec<_>>(), "piece 1 lacks one block, piece 0 three");
    let rest = p.pick(2, &all(2), 10, &mut rng);
    assert!(rest.iter().all(|b| b.piece == 0) && rest.len() == 3, "then piece 0: {rest:?}");
}

#[test]
fn in_endgame_a_duplicate_is_left_to_a_better_scored_peer() {
    let mut p = picker(1, 2 * BS);
    let mut rng = StdRng::seed_from_u64(5);
    let first = p.pick(1, &all(1), 10, &mut rng);
    assert_eq!(first.len(), 2);
    // Peer 3 scores better than peer 2 and could take requests: 2 gets no duplicate.
    let has = all(1);
    let better = [(3, has.as_bitslice())];
    assert!(p.pick_deferring(2, &all(1), 10, &mut rng, &better).is_empty(), "left to peer 3");
    assert_eq!(p.pick_deferring(3, &all(1), 10, &mut rng, &[]), first, "the better peer gets them");
    assert!(p.pick_deferring(2, &all(1), 10, &mut rng, &better).is_empty(), "two holders already");
    // Without a better peer, the lower-scored one is served as before.
    let mut p = picker(1, 2 * BS);
    let first = p.pick(1, &all(1), 10, &mut rng);
    let lacks = BitVec::<u8, Msb0>::repeat(false, 1);
    assert_eq!(p.pick_deferring(2, &all(1), 10, &mut rng, &[(3, lacks.as_bitslice())]), first, "3 lacks the piece");
}

#[test]
fn failed_piece_is_requested_again() {
    let mut p = picker(1, BS);
    let mut rng = StdRng::seed_from_u64(6);
    let a = p.pick(1, &all(1), 10, &mut rng);
    assert!(p.block_received(1, a[0]).unwrap().piece_complete);
    assert!(p.pick(2, &all(1), 10, &mut rng).is_empty());
    p.piece_failed(0);
    assert_eq!(p.pick(2, &all(1), 10, &mut rng), a);
}

#[test]
fn released_requests_go_to_others() {
    let mut p = picker(1, 2 * BS);
    let mut rng = StdRng::seed_from_u64(7);
    let a = p.pick(1, &all(1), 1, &mut rng);
    p.release(1, a[0]);
    assert_eq!(p.pick(2, &all(1), 1, &mut rng), a);
    p.peer_bitfield(&all(1));
    p.peer_gone(2, &all(1));
    assert_eq!(p.availability[0], 0);
    assert_eq!(p.pick(3, &all(1), 1, &mut rng), a);
}

#[test]
fn bogus_blocks_are_refused() {
    let mut p = picker(2, 2 * BS);
    let mut rng = StdRng::seed_from_u64(8);
    let a = p.pick(1, &all(2), 1, &mut rng);
    let b = a[0];
    assert!(p.block_received(1, BlockRef { begin: b.begin + 1, ..b }).is_none());
    assert!(p.block_received(1, BlockRef { length: 5, ..b }).is_none());
    assert!(p.block_received(1, BlockRef { piece: 99, ..b }).is_none());
    assert!(p.block_received(1, b).is_some());
}

#[test]
fn the_missing_count_follows_every_block_given_back() {
    let mut p = Picker::new(Geometry::new(4 * BS, 4 * BS as u64), bitvec![u8, Msb0; 0; 1]);
    let mut rng = StdRng::seed_from_u64(1);
    let a = p.pick(1, &all(1), 3, &mut rng);
    assert_eq!(a.len(), 3);
    p.release(1, a[0]);
    assert!(missing_counts_match(&p));
    p.release_all(1);
    assert!(missing_counts_match(&p));
    // Everything given back is picked again, by another peer, and nothing more.
    assert_eq!(p.pick(2, &all(1), 10, &mut rng).len(), 4);
    assert!(missing_counts_match(&p));
}

#[test]
fn what_only_this_peer_has_comes_before_partial_pieces() {
    // Three peers have pieces 4..10; the seeder (all) alone has piece 9.
    let mut p = three_peers_lack(9, 4 * BS);
    p.peer_bitfield(&all(10));
    let mut rng = StdRng::seed_from_u64(5);
    let mut common = all(10);
    common.set(9, false);
    let started = p.pick(1, &common, 1, &mut rng);
    assert_ne!(started[0].piece, 9);
    // Asked for work, the seeder is asked for its unique piece before the started one.
    let got = p.pick(2, &all(10), 4, &mut rng);
    assert!(got.iter().all(|b| b.piece == 9), "{got:?}");
    // Then the started piece's three missing blocks, before a new piece.
    let more = p.pick(2, &all(10), 4, &mut rng);
    assert!(more[..3].iter().all(|b| b.piece == started[0].piece), "{more:?}");
}

#[test]
fn a_quarter_of_the_bound_is_kept_for_pieces_at_most_two_peers_have() {
    let mut p = picker(10, 4 * BS);
    for i in 0..RANDOM_FIRST_PIECES {
        p.piece_verified(i as u32);
    }
    // Pieces 4-8 held by three peers; piece 9 by two (a seeder and a free rider, say).
    let mut shared = all(10);
    shared.set(9, false);
    for _ in 0..3 {
        p.peer_bitfield(&shared);
    }
    let mut only_nine = bitvec![u8, Msb0; 0; 10];
    only_nine.set(9, true);
    p.peer_bitfield(&only_nine);
    p.peer_bitfield(&only_nine);
    p.set_max_partial(4);
    let mut rng = StdRng::seed_from_u64(3);
    let first = p.pick(1, &shared, 100, &mut rng);
    assert_eq!(p.partial_count(), 3, "shared pieces start up to three quarters of the bound");
    assert_eq!(first.len(), 12);
    assert!(p.pick(2, &shared, 100, &mut rng).is_empty(), "no fourth shared piece");
    let scarce = p.pick(3, &all(10), 100, &mut rng);
    assert_eq!(scarce.len(), 4, "the piece two peers have still starts");
    assert!(scarce.iter().all(|b| b.piece == 9));
    assert_eq!(p.partial_count(), 4);
}

#[test]
fn a_late_block_is_taken_while_it_is_still_wanted() {
    // One piece of two blocks. Peer 1's request for block 0 timed out and went to peer 2;
    // its request for block 1 was given back and nobody asked again.
    let mut p = picker(1, 2 * BS);
    let mut rng = StdRng::seed_from_u64(3);
    let a = p.pick(1, &all(1), 2, &mut rng);
    assert_eq!(a.len(), 2);
    p.release(1, a[0]);
    p.release(1, a[1]);
    assert_eq!(p.pick(2, &all(1), 1, &mut rng), vec![a[0]]);
    assert!(p.block_received(1, a[0]).is_none(), "not on time: its request was given back");
    let r = p.late_block_received(1, a[0]).expect("still wanted");
    assert_eq!(r.cancel, vec![2], "the peer it went to is told to cancel");
    assert!(p.block_received(2, a[0]).is_none(), "and its copy is not taken twice");
    let r = p.late_block_received(1, a[1]).expect("missing, so wanted");
    assert!(r.cancel.is_empty() && r.piece_complete);
    assert!(p.late_block_received(1, a[1]).is_none(), "a second copy is not");
    assert!(p.pick(3, &all(1), 2, &mut rng).is_empty(), "nothing left to ask");
    assert!(missing_counts_match(&p));
}

#[test]
fn blocks_overdue_at_a_slow_peer_go_to_a_faster_one_too() {
    // Two pieces of four blocks: peer 1 (slow) was asked for all of piece 0, peer 2 for piece 1.
    let mut p = picker(2, 4 * BS);
    let mut rng = StdRng::seed_from_u64(2);
    let mut zero = bitvec![u8, Msb0; 0; 2];
    zero.set(0, true);
    let slow = p.pick(1, &zero, 4, &mut rng);
    let busy = p.pick(2, &all(2), 4, &mut rng);
    assert!(slow.iter().all(|b| b.piece == 0) && busy.iter().all(|b| b.piece == 1));
    // Only the first two of peer 1's blocks are overdue; nothing of peer 2's is.
    let overdue = |k: PeerKey, b: BlockRef| k == 1 && b.begin < 2 * BS;
    let got = p.pick_overdue(3, &all(2), 10, overdue);
    assert_eq!(got, slow[..2].to_vec(), "the overdue blocks are asked again of peer 3");
    assert!(p.pick_overdue(3, &all(2), 10, overdue).is_empty(), "never twice of the same peer");
    assert!(p.pick_overdue(4, &all(2), 10, overdue).is_empty(), "nor of a third");
    // Peer 3 is first: peer 1 is told to cancel, and its late copy is not taken.
    assert_eq!(p.block_received(3, slow[0]).expect("asked of 3").cancel, vec![1]);
    assert!(p.block_received(1, slow[0]).is_none());
    // A peer without the piece is not asked.
    let mut one = bitvec![u8, Msb0; 0; 2];
    one.set(1, true);
    let other = p.pick_overdue(5, &one, 10, |_, _| true);
    assert_eq!(other.len(), 4);
    assert!(other.iter().all(|b| b.piece == 1), "{other:?}");
    assert!(missing_counts_match(&p));
}
