//! The BEP 6 fast extension against real `shoal` processes on 127.0.0.1.
//!
//! As a seeder (a fake peer from `tests/hostile/` that negotiates fast): `shoal seed` opens
//! with have-all and the allowed-fast set the BEP's algorithm gives for 127.0.0.1, serves
//! allowed-fast pieces while choking, rejects other requests while choking, answers every
//! request exactly once (block or reject) even when cancelled, and takes thousands of
//! requests at once (what ctorrent does) without dropping any.
//! As a downloader: `shoal download` completes from a fake fast seeder that never unchokes
//! but grants every piece as allowed-fast and rejects a request, asking again for the
//! rejected block. With python3-libtorrent both ways: fast is negotiated and the data is
//! byte-identical.
mod common;
mod hostile;

use common::clients::{lt_peer, shoal_download, shoal_seeder, skip_on_purpose, TRANSFER};
use common::torrent::assert_same_bytes;
use hostile::scene::{assert_alive, Scene, HONEST};
use hostile::{Dial, FakeListener, FakePeer, Recv, REACT};
use shoal::wire::fast::{allowed_fast_set, ALLOWED_FAST_SET};
use shoal::wire::handshake::reserved;
use shoal::wire::{Handshake, Message, PeerId};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const PIECE: u32 = 256 * 1024;
const BLOCK: u32 = 16 * 1024;
/// 14 pieces: more than the allowed-fast set of 10, so some pieces are outside it.
const SIZE: usize = 13 * PIECE as usize + 5000;

fn fast_reserved() -> [u8; 8] {
    let mut r = [0u8; 8];
    r[reserved::FAST.0] |= reserved::FAST.1;
    r
}

/// A fake peer at `seeder` that negotiated fast, past the seeder's have-all.
fn fast_peer(s: &Scene, seeder: SocketAddr) -> FakePeer {
    let mut p = FakePeer::connect(seeder, &Dial::default()).expect("connect to the seeder");
    p.send_handshake(Handshake { reserved: fast_reserved(), info_hash: s.geo.info_hash, peer_id: PeerId::generate() })
        .expect("send the handshake");
    let hs = p.expect_handshake(REACT);
    assert!(hs.has(reserved::FAST), "shoal's handshake does not offer the fast extension");
    match p.recv(REACT) {
        Recv::Msg(Message::HaveAll) => {}
        other => panic!("a seeder's first message to a fast peer should be have-all, got {other:?}"),
    }
    p
}

/// Reads the seeder's allowed-fast messages until it has sent `n`.
fn allowed_fast(p: &mut FakePeer, n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| match p.wait_msg(REACT, "allowed-fast", |m| matches!(m, Message::AllowedFast { .. })) {
            Message::AllowedFast { index } => index,
            _ => unreachable!(),
        })
        .collect()
}

fn block_of(piece: u32, begin: u32, length: u32) -> (u32, u32, u32) {
    (piece, begin, length)
}

/// Reads until every request in `asked` has had its answer; returns how many of each kind
/// each block got (`(pieces, rejects)`). Panics on a close or after [`REACT`].
fn answers(p: &mut FakePeer, asked: &[(u32, u32, u32)]) -> HashMap<(u32, u32, u32), (u32, u32)> {
    let mut got: HashMap<(u32, u32, u32), (u32, u32)> = HashMap::new();
    let deadline = Instant::now() + REACT;
    while !asked.iter().all(|b| got.contains_key(b)) {
        let m = match p.recv(deadline.saturating_duration_since(Instant::now())) {
            Recv::Msg(m) => m,
            other => panic!("waiting for {} answers, {} so far: {other:?}", asked.len(), got.len()),
        };
        match m {
            Message::Piece { index, begin, data } => got.entry((index, begin, data.len() as u32)).or_default().0 += 1,
            Message::Reject { index, begin, length } => got.entry((index, begin, length)).or_default().1 += 1,
            _ => {}
        }
    }
    got
}

#[test]
fn seeder_gives_have_all_and_the_bep_allowed_fast_set_and_serves_it_while_choking() {
    let s = Scene::new(SIZE, "256KiB", 61);
    let (mut seeder, addr) = s.seeder("seeder");
    let mut p = fast_peer(&s, addr);
    let mut got = allowed_fast(&mut p, ALLOWED_FAST_SET);
    let mut want = allowed_fast_set(Ipv4Addr::LOCALHOST, &s.geo.info_hash, s.geo.piece_count, ALLOWED_FAST_SET);
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "the allowed-fast set is not the BEP 6 set for 127.0.0.1");
    // Never interested, so never unchoked: a piece outside the set is rejected ...
    let outside = (0..s.geo.piece_count).find(|i| !want.contains(i)).expect("14 pieces, 10 allowed");
    p.send(Message::Request { index: outside, begin: 0, length: BLOCK }).unwrap();
    let m = p.wait_msg(REACT, "the answer", |m| matches!(m, Message::Reject { .. } | Message::Piece { .. }));
    assert_eq!(m, Message::Reject { index: outside, begin: 0, length: BLOCK });
    // ... and one inside is served, still choked.
    let inside = want[0];
    let len = BLOCK.min(s.geo.piece_size(inside));
    p.send(Message::Request { index: inside, begin: 0, length: len }).unwrap();
    let m = p.wait_msg(REACT, "the block", |m| matches!(m, Message::Reject { .. } | Message::Piece { .. }));
    let Message::Piece { index, begin: 0, data } = m else { panic!("allowed-fast request not served: {m:?}") };
    assert_eq!(index, inside);
    assert!(data[..] == *s.block(inside, 0, len), "wrong bytes for an allowed-fast block");
    assert!(p.choked, "the peer was unchoked: the test proves nothing");
    assert_alive(&mut seeder);
}

#[test]
fn every_request_gets_exactly_one_answer_even_when_cancelled() {
    let s = Scene::new(SIZE, "256KiB", 62);
    let (mut seeder, addr) = s.seeder("seeder");
    let mut p = fast_peer(&s, addr);
    p.send(Message::Interested).unwrap();
    p.wait_unchoke(Duration::from_secs(30));
    let asked: Vec<_> = (0..64).map(|i| block_of(i / 16, (i % 16) * BLOCK, BLOCK)).collect();
    let mut msgs: Vec<Message> =
        asked.iter().map(|&(index, begin, length)| Message::Request { index, begin, length }).collect();
    msgs.extend(asked.iter().map(|&(index, begin, length)| Message::Cancel { index, begin, length }));
    p.send_all(msgs).unwrap();
    // One more block behind them: answers come in order, so once it is here every answer
    // to the cancelled ones is too.
    let last = block_of(5, 0, BLOCK);
    p.send(Message::Request { index: last.0, begin: last.1, length: last.2 }).unwrap();
    let mut all = asked.clone();
    all.push(last);
    let got = answers(&mut p, &all);
    for b in &asked {
        let (pieces, rejects) = got.get(b).copied().unwrap_or_default();
        assert_eq!(pieces + rejects, 1, "block {b:?}: {pieces} pieces and {rejects} rejects");
    }
    assert_eq!(got.len(), all.len(), "answers to blocks nobody asked for: {got:?}");
    assert_alive(&mut seeder);
}

/// `n` distinct requests of `len` bytes sent at once to an unchoked peer: each answered.
fn thousands_of_requests(fast: bool, n: u32, len: u32) -> (u32, u32) {
    let s = Scene::new(SIZE, "256KiB", 63);
    let (mut seeder, addr) = s.seeder("seeder");
    let mut p = if fast {
        fast_peer(&s, addr)
    } else {
        let mut p = FakePeer::connect(addr, &Dial::default()).unwrap();
        p.handshake(s.geo.info_hash);
        p
    };
    p.send(Message::Interested).unwrap();
    p.wait_unchoke(Duration::from_secs(30));
    let per_piece = PIECE / len;
    let asked: Vec<_> = (0..n).map(|i| block_of(i / per_piece, (i % per_piece) * len, len)).collect();
    p.send_all(asked.iter().map(|&(index, begin, length)| Message::Request { index, begin, length })).unwrap();
    let got = answers(&mut p, &asked);
    assert_alive(&mut seeder);
    assert_eq!(got.len(), asked.len(), "answers to blocks nobody asked for");
    got.values().fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
}

#[test]
fn three_thousand_requests_at_once_are_all_served() {
    // What ctorrent does with 16 MiB pieces, in 1 KiB blocks to keep the test small. Before,
    // shoal dropped every request past 500 without a word and this waited in vain.
    let (pieces, rejects) = thousands_of_requests(false, 3000, 1024);
    assert_eq!((pieces, rejects), (3000, 0));
}

#[test]
fn past_the_queue_bound_a_fast_peer_gets_rejects_and_every_request_one_answer() {
    // 6,000 of 512 bytes fit in the 13 whole pieces.
    let (pieces, rejects) = thousands_of_requests(true, 6000, 512);
    assert_eq!(pieces + rejects, 6000);
    assert!(pieces >= 4096, "only {pieces} served: the queue holds 4,096");
}

/// A fake seeder that negotiates fast, has every piece, grants every piece as allowed-fast
/// and never unchokes; it rejects the first request it gets and serves the rest. Returns how
/// often the rejected block was asked for, once the downloader hangs up.
fn fast_seeder_that_never_unchokes(s: &Scene, listener: FakeListener) -> u32 {
    let mut p = listener.accept(REACT).expect("the downloader dials");
    let theirs = p.expect_handshake(REACT);
    assert!(theirs.has(reserved::FAST), "shoal download does not offer the fast extension");
    let hs = Handshake { reserved: fast_reserved(), info_hash: s.geo.info_hash, peer_id: PeerId::generate() };
    p.send_handshake(hs).unwrap();
    let mut opening = vec![Message::HaveAll];
    opening.extend((0..s.geo.piece_count).map(|index| Message::AllowedFast { index }));
    p.send_all(opening).unwrap();
    let (mut rejected, mut asked_again) = (None, 0);
    loop {
        match p.recv(HONEST) {
            Recv::Msg(Message::Request { index, begin, length }) => {
                let answer = match rejected {
                    None => {
                        rejected = Some((index, begin, length));
                        Message::Reject { index, begin, length }
                    }
                    Some(r) => {
                        asked_again += u32::from(r == (index, begin, length));
                        Message::Piece { index, begin, data: s.block(index, begin, length).to_vec().into() }
                    }
                };
                if p.send(answer).is_err() {
                    return asked_again;
                }
            }
            Recv::Msg(_) => {}
            Recv::Closed(_) => return asked_again,
            other => panic!("fake fast seeder: {other:?}"),
        }
    }
}

#[test]
fn shoal_downloads_allowed_fast_pieces_from_a_seeder_that_never_unchokes() {
    let s = Scene::new(4 * PIECE as usize - 3000, "256KiB", 64);
    let listener = FakeListener::bind();
    let mut leecher = s.download("leecher", &[listener.addr]);
    let asked_again = fast_seeder_that_never_unchokes(&s, listener);
    leecher.expect_success(HONEST);
    assert_same_bytes(&s.data, &s.path().join("leecher").join("data.bin"));
    assert_eq!(asked_again, 1, "the rejected block was not asked for again exactly once");
    assert!(leecher.log_text().contains("fast=true"), "the connected line does not say fast=true");
}

/// A fake fast seeder that unchokes, and at the first request chokes, serves every request
/// it has (a fast choke does not void them), unchokes again and serves the rest. Returns the
/// most times any one block was asked for, once the downloader hangs up.
fn fast_seeder_that_chokes_mid_transfer(s: &Scene, listener: FakeListener) -> u32 {
    let mut p = listener.accept(REACT).expect("the downloader dials");
    p.expect_handshake(REACT);
    let hs = Handshake { reserved: fast_reserved(), info_hash: s.geo.info_hash, peer_id: PeerId::generate() };
    p.send_handshake(hs).unwrap();
    p.send(Message::HaveAll).unwrap();
    let mut asked: HashMap<(u32, u32), u32> = HashMap::new();
    let mut choked_once = false;
    loop {
        let m = match p.recv(HONEST) {
            Recv::Msg(m) => m,
            Recv::Closed(_) => return asked.values().copied().max().unwrap_or(0),
            other => panic!("fake fast seeder: {other:?}"),
        };
        let mut out = Vec::new();
        match m {
            Message::Interested => out.push(Message::Unchoke),
            Message::Request { index, begin, length } => {
                *asked.entry((index, begin)).or_default() += 1;
                if !choked_once {
                    choked_once = true;
                    out.push(Message::Choke);
                }
                out.push(Message::Piece { index, begin, data: s.block(index, begin, length).to_vec().into() });
            }
            _ => {}
        }
        // Unchoked again once the requests read so far are answered.
        if choked_once && out.first() == Some(&Message::Choke) {
            out.push(Message::Unchoke);
        }
        if p.send_all(out).is_err() {
            return asked.values().copied().max().unwrap_or(0);
        }
    }
}

#[test]
fn a_fast_choke_keeps_our_requests_so_no_block_is_asked_twice() {
    // Before, a choke gave every request back: the blocks that came after it were dropped as
    // unrequested and asked for again after the unchoke.
    let s = Scene::new(4 * PIECE as usize - 3000, "256KiB", 67);
    let listener = FakeListener::bind();
    let mut leecher = s.download("leecher", &[listener.addr]);
    let most = fast_seeder_that_chokes_mid_transfer(&s, listener);
    leecher.expect_success(HONEST);
    assert_same_bytes(&s.data, &s.path().join("leecher").join("data.bin"));
    assert_eq!(most, 1, "a block was asked for {most} times");
}

// ---- python3-libtorrent, which supports the fast extension ----

fn lt_fixture(seed: u64) -> (tempfile::TempDir, Scene, std::path::PathBuf) {
    let s = Scene::new(3 * 1024 * 1024 + 777, "256KiB", seed);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    (dir, s, out)
}

#[test]
fn shoal_downloads_from_libtorrent_with_fast_negotiated() {
    if skip_on_purpose() {
        return;
    }
    let (_dir, s, out) = lt_fixture(65);
    let seed_dir = s.data.parent().unwrap().to_path_buf();
    let (_seeder, port) = lt_peer("seed", &s.torrent, &seed_dir, &[], s.path());
    let mut leecher = shoal_download(&s.torrent, &out, &[format!("127.0.0.1:{port}")], s.path());
    leecher.expect_success(TRANSFER);
    assert_same_bytes(&s.data, &out.join("data.bin"));
    assert!(leecher.log_text().contains("fast=true"), "fast was not negotiated with libtorrent");
}

#[test]
fn libtorrent_downloads_from_shoal_with_fast_negotiated() {
    if skip_on_purpose() {
        return;
    }
    let (_dir, s, out) = lt_fixture(66);
    let (seeder, port) = shoal_seeder(&s.data, &s.torrent, &[], s.path());
    let (mut leecher, _) = lt_peer("leech", &s.torrent, &out, &[format!("127.0.0.1:{port}")], s.path());
    leecher.expect_success(TRANSFER);
    assert_same_bytes(&s.data, &out.join("data.bin"));
    assert!(seeder.log_text().contains("fast=true"), "fast was not negotiated with libtorrent");
}
