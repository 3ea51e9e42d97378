//! Scarce pieces go to the best-scored peer that has them (design §5). A piece few connected
//! peers have (at most [`SCARCE_HOLDERS`]) is not offered to a peer asking for work while a
//! better-scored peer that has it could take it now (it unchokes us and its request pipeline
//! has room): the scarce piece goes to the better source, not to whichever peer asked first.
//! Pieces already started are always offered, so a piece in progress is never held up. And a
//! scarce piece waits for the better source only while the asking peer has other work: early in
//! a swarm nearly every piece is scarce, and withholding them all left the request pipes of the
//! peers that unchoke us empty (in `scripts/swarm-sim` the fast peers finished last). Pure: the
//! torrent passes what it knows.
use crate::picker::Picker;
use crate::types::{BlockRef, PeerKey};
use bitvec::prelude::*;
use rand::Rng;

/// A piece held by at most this many connected peers is scarce.
pub const SCARCE_HOLDERS: u32 = 2;

/// Another connected peer that unchokes us and could take requests now.
pub struct Rival<'a> {
    pub key: PeerKey,
    pub score: f64,
    pub has: &'a BitSlice<u8, Msb0>,
}

/// The pieces of `theirs` to offer the asking peer (scored `score`): `None` when that is all
/// of them, else a copy without the scarce, unstarted pieces a better-scored rival also has.
pub fn offer(
    theirs: &BitSlice<u8, Msb0>,
    score: f64,
    availability: &[u32],
    started: impl Fn(u32) -> bool,
    rivals: &[Rival<'_>],
) -> Option<BitVec<u8, Msb0>> {
    let better: Vec<&Rival> = rivals.iter().filter(|r| r.score > score).collect();
    if better.is_empty() {
        return None;
    }
    let mut out: Option<BitVec<u8, Msb0>> = None;
    // Over the availability counts, not `theirs.iter_ones()`: run on every top-up, that bit
    // iteration cost more than the check, and with several seeders no piece is scarce at all.
    for (piece, _) in availability.iter().enumerate().filter(|(_, &a)| a <= SCARCE_HOLDERS) {
        let has = |bits: &BitSlice<u8, Msb0>| bits.get(piece).is_some_and(|b| *b);
        if has(theirs) && !started(piece as u32) && better.iter().any(|r| has(r.has)) {
            out.get_or_insert_with(|| theirs.to_bitvec()).set(piece, false);
        }
    }
    out
}

/// Up to `need` blocks for the asking peer `key`: first from `offered` (what [`offer`] left
/// it, `None` for all of `theirs`), then, if its pipe is still short, from all of `theirs`.
/// `better` goes to [`Picker::pick_deferring`] for the endgame.
pub fn pick(
    picker: &mut Picker,
    key: PeerKey,
    theirs: &BitSlice<u8, Msb0>,
    offered: Option<&BitSlice<u8, Msb0>>,
    need: usize,
    rng: &mut impl Rng,
    better: &[(PeerKey, &BitSlice<u8, Msb0>)],
) -> Vec<BlockRef> {
    let mut blocks = picker.pick_deferring(key, offered.unwrap_or(theirs), need, rng, better);
    if offered.is_some() && blocks.len() < need {
        blocks.extend(picker.pick_deferring(key, theirs, need - blocks.len(), rng, better));
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Geometry;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn bits(s: &str) -> BitVec<u8, Msb0> {
        s.chars().map(|c| c == '1').collect()
    }

    #[test]
    fn the_score_decides_who_is_offered_a_scarce_piece() {
        // Pieces 0-3: 0 and 1 scarce (2 holders), 2 common (5), 3 held by one peer.
        let availability = [2, 2, 5, 1];
        let (a_has, b_has) = (bits("1111"), bits("1010"));
        // A asks while B, scored higher, could take piece 0: A is offered the rest.
        let b = [Rival { key: 9, score: 0.6, has: &b_has }];
        let offered = offer(&a_has, 0.2, &availability, |_| false, &b).expect("piece 0 is left to B");
        assert_eq!(offered, bits("0111"), "1 (B lacks it), 2 (common) and 3 stay on offer");
        // The same peers with the scores the other way round: A is offered everything, and B,
        // asking, is not offered piece 0.
        let b = [Rival { key: 9, score: 0.1, has: &b_has }];
        assert_eq!(offer(&a_has, 0.2, &availability, |_| false, &b), None);
        let a = [Rival { key: 9, score: 0.2, has: &a_has }];
        assert_eq!(offer(&b_has, 0.1, &availability, |_| false, &a), Some(bits("0010")));
        assert_eq!(
            offer(&a_has, 0.2, &availability, |p| p == 0, &[Rival { key: 9, score: 0.6, has: &b_has }]),
            None,
            "a started piece stays on offer"
        );
        let common = [10, 10, 10, 10];
        assert_eq!(
            offer(&a_has, 0.2, &common, |_| false, &[Rival { key: 9, score: 0.6, has: &b_has }]),
            None,
            "nothing is scarce"
        );
    }

    #[test]
    fn scarce_pieces_wait_for_the_better_source_only_while_there_is_other_work() {
        // 4 pieces of one 16 KiB block; we have none. Pieces 0 and 1 are scarce (one holder),
        // 2 and 3 common (six).
        let mut picker = Picker::new(Geometry::new(16384, 4 * 16384), bits("0000"));
        picker.peer_bitfield(&bits("1111"));
        for _ in 0..5 {
            picker.peer_has(2);
            picker.peer_has(3);
        }
        let (a_has, b_has) = (bits("1111"), bits("1111"));
        let b = [Rival { key: 9, score: 0.6, has: &b_has }];
        let offered = offer(&a_has, 0.2, picker.availability(), |_| false, &b).expect("0 and 1 left to B");
        let mut rng = StdRng::seed_from_u64(1);
        let first = pick(&mut picker, 1, &a_has, Some(&offered), 2, &mut rng, &[]);
        let pieces: Vec<u32> = first.iter().map(|b| b.piece).collect();
        assert_eq!(pieces.len(), 2);
        assert!(pieces.iter().all(|p| *p >= 2), "other work first: {pieces:?}");
        // Nothing but scarce pieces is left: A's pipe is filled with them rather than left empty.
        let offered = offer(&a_has, 0.2, picker.availability(), |_| false, &b).expect("0 and 1 still scarce");
        let second = pick(&mut picker, 1, &a_has, Some(&offered), 2, &mut rng, &[]);
        let mut pieces: Vec<u32> = second.iter().map(|b| b.piece).collect();
        pieces.sort_unstable();
        assert_eq!(pieces, vec![0, 1]);
    }
}
