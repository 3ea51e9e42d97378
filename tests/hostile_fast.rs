//! Hostile peers and the BEP 6 fast extension, with the fake-peer kit (`tests/hostile/`)
//! aimed at a real `shoal seed` on 127.0.0.1.
//!
//! A fast message from a peer that did not negotiate fast, have-all after other piece state,
//! and allowed-fast or suggest for a piece out of range each get the connection dropped.
//! Floods of legal fast messages (allowed-fast, suggest, rejects for requests never made)
//! are bounded and leave the connection serving. In every case the seeder does not panic and
//! an honest `shoal download` afterwards completes byte-identical.
mod common;
mod hostile;

use common::wire::{encode, full_bitfield};
use hostile::scene::{assert_alive, Scene};
use hostile::{raw, Dial, FakePeer, Recv, REACT};
use shoal::wire::handshake::reserved;
use shoal::wire::{Handshake, Message, PeerId};
use std::net::SocketAddr;
use std::time::Duration;

const PIECE: u32 = 256 * 1024;
const BLOCK: u32 = 16 * 1024;
/// 14 pieces.
const SIZE: usize = 13 * PIECE as usize + 5000;

fn scene() -> Scene {
    Scene::new(SIZE, "256KiB", 71)
}

/// A peer at the seeder past the handshake (with or without the fast bit) and the seeder's
/// opening piece state (have-all with fast, else a bitfield).
fn peer(s: &Scene, seeder: SocketAddr, fast: bool) -> FakePeer {
    let mut p = FakePeer::connect(seeder, &Dial::default()).expect("connect to the seeder");
    let mut r = [0u8; 8];
    if fast {
        r[reserved::FAST.0] |= reserved::FAST.1;
    }
    p.send_handshake(Handshake { reserved: r, info_hash: s.geo.info_hash, peer_id: PeerId::generate() }).unwrap();
    p.expect_handshake(REACT);
    let opening = if fast { "have-all" } else { "bitfield" };
    p.wait_msg(REACT, opening, |m| matches!(m, Message::HaveAll | Message::Bitfield(_)));
    p
}

/// Sends `offence` and expects the seeder to close; then the seeder lives and serves.
fn dropped(fast: bool, offence: impl FnOnce(&Scene) -> Vec<u8>) {
    let s = scene();
    let (mut seeder, addr) = s.seeder("seeder");
    let mut p = peer(&s, addr, fast);
    let _ = p.send_raw(&offence(&s));
    let c = p.expect_closed(REACT);
    eprintln!("closed ({:?})", c.kind);
    assert_alive(&mut seeder);
    s.honest_download("honest", &[addr]);
    assert_alive(&mut seeder);
}

#[test]
fn each_fast_message_without_negotiating_fast_is_dropped() {
    let s = scene();
    let (mut seeder, addr) = s.seeder("seeder");
    let offences = [
        Message::Suggest { index: 0 },
        Message::HaveAll,
        Message::HaveNone,
        Message::Reject { index: 0, begin: 0, length: BLOCK },
        Message::AllowedFast { index: 0 },
    ];
    for m in offences {
        let mut p = peer(&s, addr, false);
        let _ = p.send(m.clone());
        let c = p.expect_closed(REACT);
        eprintln!("{m:?}: closed ({:?})", c.kind);
    }
    assert_alive(&mut seeder);
    s.honest_download("honest", &[addr]);
}

#[test]
fn have_all_after_a_bitfield_is_dropped() {
    dropped(true, |s| encode([Message::Bitfield(full_bitfield(s.geo.piece_count)), Message::HaveAll]));
}

#[test]
fn have_none_after_a_have_is_dropped() {
    dropped(true, |_| encode([Message::Have { index: 1 }, Message::HaveNone]));
}

#[test]
fn allowed_fast_out_of_range_is_dropped() {
    dropped(true, |s| encode([Message::AllowedFast { index: s.geo.piece_count }]));
}

#[test]
fn suggest_out_of_range_is_dropped() {
    dropped(true, |s| encode([Message::Suggest { index: s.geo.piece_count + 7 }]));
}

#[test]
fn reject_of_a_malformed_length_is_dropped() {
    dropped(true, |_| raw::frame(0x10, &[0, 0, 0, 1, 0, 0, 0, 0]));
}

#[test]
fn floods_of_allowed_fast_suggest_and_stray_rejects_leave_the_connection_serving() {
    let s = scene();
    let (mut seeder, addr) = s.seeder("seeder");
    let mut p = peer(&s, addr, true);
    let n = s.geo.piece_count;
    // 3 x 60,000 legal messages: allowed-fast for every piece over and over (at most 32 are
    // kept), suggestions (ignored), rejects of requests the seeder never made (ignored; the
    // last piece is short, so they name whole blocks of the others).
    for round in 0..20u32 {
        let mut storm = Vec::with_capacity(9000);
        for i in 0..3000u32 {
            storm.push(Message::AllowedFast { index: (round + i) % n });
            storm.push(Message::Suggest { index: i % n });
            storm.push(Message::Reject { index: i % (n - 1), begin: 0, length: BLOCK });
        }
        p.send_all(storm).expect("the seeder keeps reading");
    }
    // Still a working connection: interested, unchoked, served right.
    p.send(Message::Interested).unwrap();
    p.wait_unchoke(Duration::from_secs(30));
    let got = p.fetch_block(2, BLOCK, BLOCK, REACT);
    assert!(got[..] == *s.block(2, BLOCK, BLOCK), "wrong bytes after the storm");
    assert!(p.closed.is_none(), "closed after the storm");
    assert_alive(&mut seeder);
    s.honest_download("honest", &[addr]);
    assert_alive(&mut seeder);
}

#[test]
fn requests_while_choked_are_rejected_one_for_one() {
    let s = scene();
    let (mut seeder, addr) = s.seeder("seeder");
    let mut p = peer(&s, addr, true);
    // Never interested, so choked throughout; 5,000 requests, each answered by a reject
    // (allowed-fast pieces are served instead: those are counted too).
    let requests: Vec<Message> = (0..5000u32)
        .map(|i| Message::Request { index: (i / 16) % 13, begin: (i % 16) * BLOCK, length: BLOCK })
        .collect();
    p.send_all(requests).expect("the seeder keeps reading");
    let (mut rejects, mut pieces) = (0, 0);
    while rejects + pieces < 5000 {
        match p.recv(REACT) {
            Recv::Msg(Message::Reject { .. }) => rejects += 1,
            Recv::Msg(Message::Piece { .. }) => pieces += 1,
            Recv::Msg(_) => {}
            other => panic!("after {rejects} rejects and {pieces} blocks: {other:?}"),
        }
    }
    assert!(p.choked, "the peer was unchoked: the test proves nothing");
    assert!(rejects > 0, "no reject at all");
    assert_alive(&mut seeder);
}
