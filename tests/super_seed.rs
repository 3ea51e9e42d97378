//! BEP 16 super-seeding against a real `shoal seed --super-seed` on 127.0.0.1.
//!
//! With fake peers from `tests/hostile/` that negotiate fast: a peer is shown have-none, then
//! two `have`s, each granted allowed-fast, and no more; a request outside them is rejected, one inside is served; a second
//! peer is offered two other pieces; a peer is offered one more once another peer announces a
//! piece it was given (it passed it on), one nobody holds or was offered, and not before;
//! a piece its one holder keeps past 5 s is counted stranded (diagnostics) and offered
//! again first, granted allowed-fast, to a peer that passed one on;
//! once every piece has reached a peer (the diagnostics say
//! super-seeding is off), a newcomer is shown have-all. With real clients: python3-libtorrent
//! and `shoal download` fetch the whole torrent from it at once, byte-identical.
mod common;
mod hostile;

use common::clients::{lt_peer, shoal_download, shoal_seeder_with, skip_on_purpose, TRANSFER};
use common::http::wait_json;
use common::torrent::assert_same_bytes;
use hostile::scene::{assert_alive, Scene};
use hostile::{Dial, FakePeer, Recv, REACT};
use shoal::wire::handshake::reserved;
use shoal::wire::{Handshake, Message, PeerId};
use std::net::SocketAddr;
use std::time::Duration;

const PIECE: u32 = 256 * 1024;
const BLOCK: u32 = 16 * 1024;
/// 14 pieces: room for two peers' offers and more.
const SIZE: usize = 13 * PIECE as usize + 5000;

/// A fake peer at `seeder` that negotiated fast; returns it with its first message.
fn fast_peer(s: &Scene, seeder: SocketAddr) -> (FakePeer, Message) {
    let mut reserved_bits = [0u8; 8];
    reserved_bits[reserved::FAST.0] |= reserved::FAST.1;
    let mut p = FakePeer::connect(seeder, &Dial::default()).expect("connect to the seeder");
    let hs = Handshake { reserved: reserved_bits, info_hash: s.geo.info_hash, peer_id: PeerId::generate() };
    p.send_handshake(hs).expect("send the handshake");
    assert!(p.expect_handshake(REACT).has(reserved::FAST), "no fast extension in shoal's handshake");
    match p.recv(REACT) {
        Recv::Msg(m) => (p, m),
        other => panic!("no first message from the seeder: {other:?}"),
    }
}

/// The pieces the seeder announces to `p` until it has been quiet for a second.
fn offers(p: &mut FakePeer) -> Vec<u32> {
    let before = p.seen.len();
    assert!(p.settle(Duration::from_secs(1)), "the seeder closed the connection");
    p.seen[before..].iter().filter_map(|m| if let Message::Have { index } = m { Some(*index) } else { None }).collect()
}

/// Reads `p`'s next `have`.
fn next_offer(p: &mut FakePeer) -> u32 {
    match p.wait_msg(REACT, "an offer", |m| matches!(m, Message::Have { .. })) {
        Message::Have { index } => index,
        _ => unreachable!(),
    }
}

#[test]
fn a_super_seeder_offers_two_pieces_at_a_time_rarest_first_then_shows_everything() {
    let s = Scene::new(SIZE, "256KiB", 71);
    let (mut seeder, addr) = s.seeder_with("seeder", &["--super-seed", "--diag", "127.0.0.1:0"]);
    let diag = seeder.diag_addr();
    let (mut p1, first) = fast_peer(&s, addr);
    assert_eq!(first, Message::HaveNone, "a super-seeder shows a fast peer no pieces first");
    let mine = [next_offer(&mut p1), next_offer(&mut p1)];
    assert_ne!(mine[0], mine[1]);
    assert_eq!(offers(&mut p1), Vec::<u32>::new(), "more than two pieces offered at once");
    for index in mine {
        // Our choker may reach it late: its first offers it may fetch while choked.
        assert!(p1.seen.contains(&Message::AllowedFast { index }), "first offer {index} not granted allowed-fast");
    }

    // Outside the offers: rejected; inside: served, the right bytes.
    let outside = (0..s.geo.piece_count).find(|i| !mine.contains(i)).unwrap();
    p1.send(Message::Interested).unwrap();
    p1.wait_unchoke(REACT);
    p1.send(Message::Request { index: outside, begin: 0, length: BLOCK }).unwrap();
    let m = p1.wait_msg(REACT, "the answer", |m| matches!(m, Message::Reject { .. } | Message::Piece { .. }));
    assert_eq!(m, Message::Reject { index: outside, begin: 0, length: BLOCK }, "a piece never offered was served");
    // The last piece is 5000 bytes: asking it for a whole block would be a protocol violation.
    let len = BLOCK.min(s.geo.piece_size(mine[0]));
    let got = p1.fetch_block(mine[0], 0, len, REACT);
    assert!(got[..] == *s.block(mine[0], 0, len), "wrong bytes for an offered block");

    // A second peer is offered pieces nobody was offered.
    let (mut p2, first) = fast_peer(&s, addr);
    assert_eq!(first, Message::HaveNone);
    let theirs = [next_offer(&mut p2), next_offer(&mut p2)];
    assert!(theirs.iter().all(|p| !mine.contains(p)), "offered to both: {mine:?} and {theirs:?}");

    // Having a piece is not enough for one more (peer 2 lacks it: peer 1 is to pass it on);
    // peer 2 announcing it is, and the new piece is one nobody holds or was offered.
    p1.send(Message::Have { index: mine[0] }).unwrap();
    assert_eq!(offers(&mut p1), Vec::<u32>::new(), "offered more before passing a piece on");
    p2.send(Message::Have { index: mine[0] }).unwrap();
    let next = next_offer(&mut p1);
    assert!(![mine[0], mine[1], theirs[0], theirs[1]].contains(&next), "offered {next} again");

    // Every piece reaches a peer: super-seeding ends for newcomers.
    let all: Vec<Message> = (0..s.geo.piece_count).map(|index| Message::Have { index }).collect();
    p2.send_all(all).unwrap();
    wait_json(&seeder, diag, "/debug/p2p/torrents", REACT, |v| {
        (v["torrents"][0]["super_seeding"] == serde_json::Value::Bool(false)).then_some(())
    });
    let (_p3, first) = fast_peer(&s, addr);
    assert_eq!(first, Message::HaveAll, "super-seeding is over: a newcomer sees every piece");
    assert_alive(&mut seeder);
}

#[test]
fn a_piece_its_one_holder_keeps_is_offered_again_with_allowed_fast() {
    let s = Scene::new(SIZE, "256KiB", 72);
    let (mut seeder, addr) = s.seeder_with("seeder", &["--super-seed", "--diag", "127.0.0.1:0"]);
    let diag = seeder.diag_addr();
    let (mut keeper, _) = fast_peer(&s, addr);
    let kept = next_offer(&mut keeper);
    let (mut other, _) = fast_peer(&s, addr);
    let theirs = next_offer(&mut other);
    other.send(Message::Interested).unwrap();
    other.wait_unchoke(REACT);

    // The keeper has its piece and nobody gets it from the keeper: after PASS_WITHIN (5 s)
    // the seeder counts it stranded.
    keeper.send(Message::Have { index: kept }).unwrap();
    let stranded = |v: &serde_json::Value| (v["torrents"][0]["super_seed_stranded"] == 1).then_some(());
    wait_json(&seeder, diag, "/debug/p2p/torrents", Duration::from_secs(30), stranded);

    // The other peer passes a piece on (it has it, then the keeper announces it too): its
    // freed offer is the stranded piece, which it may fetch even while choked.
    other.send(Message::Have { index: theirs }).unwrap();
    let one_each = |v: &serde_json::Value| {
        let peers = v["peers"].as_array()?;
        (peers.len() == 2 && peers.iter().all(|p| p["pieces"] == 1)).then_some(())
    };
    wait_json(&seeder, diag, "/debug/p2p/peers", REACT, one_each);
    keeper.send(Message::Have { index: theirs }).unwrap();
    assert_eq!(next_offer(&mut other), kept, "the stranded piece is offered again first");
    let grant = other.wait_msg(REACT, "the grant", |m| matches!(m, Message::AllowedFast { .. }));
    assert_eq!(grant, Message::AllowedFast { index: kept });
    let len = BLOCK.min(s.geo.piece_size(kept));
    let got = other.fetch_block(kept, 0, len, REACT);
    assert!(got[..] == *s.block(kept, 0, len), "wrong bytes for the stranded piece");
    assert_alive(&mut seeder);
}

#[test]
fn libtorrent_and_shoal_download_everything_from_a_super_seeder_at_once() {
    if skip_on_purpose() {
        return;
    }
    let s = Scene::new(3 * 1024 * 1024 + 777, "256KiB", 72);
    let dir = tempfile::tempdir().unwrap();
    let (lt_out, shoal_out) = (dir.path().join("lt"), dir.path().join("shoal"));
    std::fs::create_dir(&lt_out).unwrap();
    let (seeder, port) = shoal_seeder_with(&s.data, &s.torrent, &["--super-seed"], &[], s.path());
    let seeder_addr = format!("127.0.0.1:{port}");
    let (mut lt, lt_port) = lt_peer("leech", &s.torrent, &lt_out, std::slice::from_ref(&seeder_addr), s.path());
    let mut shoal = shoal_download(&s.torrent, &shoal_out, &[seeder_addr, format!("127.0.0.1:{lt_port}")], s.path());
    lt.expect_success(TRANSFER);
    shoal.expect_success(TRANSFER);
    assert_same_bytes(&s.data, &lt_out.join("data.bin"));
    assert_same_bytes(&s.data, &shoal_out.join("data.bin"));
    let log = seeder.log_text();
    assert!(log.contains("super-seeding (BEP 16)"), "the seeder did not super-seed:\n{log}");
}
