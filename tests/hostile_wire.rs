//! The wire rules against hostile peers, with the fake-peer kit (`tests/hostile/`) aimed at
//! real `shoal` processes on 127.0.0.1.
//!
//! Against a `shoal seed`: each malformed or out-of-range message gets the connection dropped
//! (the close is seen within a generous bound; this is not a timing test); storms of legal
//! messages (cancels, choke/unchoke, keep-alives, interest flips) leave the seeder serving.
//! Against a `shoal download`: a fake seeder it dials answers with blocks out of range or too
//! big (dropped), wrong data, unasked-for blocks or nothing. In every case the target does not
//! panic and an honest `shoal download` afterwards completes byte-identical.
mod common;
mod hostile;

use common::logs::log_lines;
use common::process::{vm_kib, Proc};
use common::wire::{encode, full_bitfield};
use hostile::scene::{assert_alive, Scene};
use hostile::seeder::{FakeSeeder, Serve};
use hostile::{random_info_hash, raw, CloseKind, Dial, FakeListener, FakePeer, Recv, REACT};
use shoal::wire::{Handshake, Message, PeerId};
use std::net::SocketAddr;
use std::time::Duration;

const PIECE: u32 = 256 * 1024;
const BLOCK: u32 = 16 * 1024;
/// 14 pieces: the bitfield has two spare bits and the last piece is 5,000 bytes.
const SIZE: usize = 13 * PIECE as usize + 5000;
/// Waiting for an unchoke: the seeder gives a free slot at once, rounds are 5 s.
const UNCHOKE: Duration = Duration::from_secs(30);

fn scene() -> Scene {
    Scene::new(SIZE, "256KiB", 8)
}

/// A fresh peer at the seeder past the handshake and the seeder's bitfield.
fn attacker(s: &Scene, seeder: SocketAddr) -> FakePeer {
    let mut p = FakePeer::connect(seeder, &Dial::default()).expect("connect to the seeder");
    let hs = p.handshake(s.geo.info_hash);
    assert_eq!(hs.info_hash, s.geo.info_hash);
    p.wait_msg(REACT, "the seeder's bitfield", |m| matches!(m, Message::Bitfield(_)));
    p
}

/// Interested, unchoked, and one block served right: the connection works before the offence,
/// so a close afterwards is the offence's doing.
fn served(s: &Scene, p: &mut FakePeer) {
    p.send(Message::Interested).expect("send interested");
    p.wait_unchoke(UNCHOKE);
    let got = p.fetch_block(1, BLOCK, BLOCK, REACT);
    assert!(got[..] == *s.block(1, BLOCK, BLOCK), "the seeder served wrong bytes");
}

/// Sends `offence`, expects the seeder to close within [`REACT`], then checks the seeder
/// lives and an honest download completes.
fn offence_is_dropped(s: &Scene, seeder: &mut Proc, addr: SocketAddr, serve_first: bool, offence: &[u8]) {
    let mut p = attacker(s, addr);
    if serve_first {
        served(s, &mut p);
    }
    // The seeder may close while we are still writing: that is the close we want.
    let _ = p.send_raw(offence);
    let c = p.expect_closed(REACT);
    eprintln!("closed ({:?})", c.kind);
    assert_alive(seeder);
    s.honest_download("honest", &[addr]);
    assert_alive(seeder);
}

fn one_offence(serve_first: bool, offence: impl FnOnce(&Scene) -> Vec<u8>) {
    let s = scene();
    let (mut seeder, addr) = s.seeder("seeder");
    let bytes = offence(&s);
    offence_is_dropped(&s, &mut seeder, addr, serve_first, &bytes);
}

#[test]
fn bitfield_of_wrong_length_is_dropped() {
    one_offence(false, |s| raw::frame(5, &vec![0xff; s.geo.piece_count.div_ceil(8) as usize + 1]));
}

#[test]
fn bitfield_with_spare_bits_set_is_dropped() {
    one_offence(false, |s| {
        let mut bits = full_bitfield(s.geo.piece_count).to_vec();
        *bits.last_mut().unwrap() = 0xff;
        raw::frame(5, &bits)
    });
}

#[test]
fn have_out_of_range_is_dropped() {
    one_offence(false, |s| encode([Message::Have { index: s.geo.piece_count }]));
}

#[test]
fn request_out_of_range_is_dropped() {
    one_offence(true, |s| encode([Message::Request { index: s.geo.piece_count, begin: 0, length: BLOCK }]));
}

#[test]
fn request_beyond_the_piece_end_is_dropped() {
    // Inside piece 0 but running over its end by half a block.
    one_offence(true, |_| encode([Message::Request { index: 0, begin: PIECE - BLOCK / 2, length: BLOCK }]));
}

#[test]
fn request_beyond_the_short_last_piece_is_dropped() {
    // The last piece is 5,000 bytes: a whole block from it is out of range.
    one_offence(true, |s| encode([Message::Request { index: s.geo.piece_count - 1, begin: 0, length: BLOCK }]));
}

#[test]
fn request_of_length_zero_is_dropped() {
    one_offence(true, |_| encode([Message::Request { index: 0, begin: 0, length: 0 }]));
}

#[test]
fn request_over_128_kib_is_dropped() {
    // Within the 256 KiB piece, so only the length is wrong.
    one_offence(true, |_| encode([Message::Request { index: 0, begin: 0, length: 128 * 1024 + BLOCK }]));
}

#[test]
fn a_4_gib_length_prefix_is_refused_before_allocating() {
    let s = scene();
    let (mut seeder, addr) = s.seeder("seeder");
    let mut p = attacker(&s, addr);
    let peak_before = vm_kib(seeder.pid(), "VmPeak").expect("VmPeak of the seeder");
    let mut offence = raw::prefix(u32::MAX);
    offence.extend_from_slice(&[7; 64]);
    let _ = p.send_raw(&offence);
    p.expect_closed(REACT);
    // A buffer reserved for the frame would show in the peak of virtual memory even if never
    // touched (or abort the process if the kernel refused it). New threads and their malloc
    // arenas cost at most about 1 GiB of address space on this 2-core machine: 2 GiB apart.
    let peak_after = vm_kib(seeder.pid(), "VmPeak").expect("VmPeak of the seeder");
    assert!(
        peak_after < peak_before + (2 << 20),
        "VmPeak grew from {peak_before} KiB to {peak_after} KiB: the frame was allocated"
    );
    assert_alive(&mut seeder);
    s.honest_download("honest", &[addr]);
    assert_alive(&mut seeder);
}

#[test]
fn wrong_info_hash_in_the_handshake_is_dropped() {
    let s = scene();
    let (mut seeder, addr) = s.seeder("seeder");
    let mut p = FakePeer::connect(addr, &Dial::default()).unwrap();
    p.send_handshake(Handshake { reserved: [0; 8], info_hash: random_info_hash(), peer_id: PeerId::generate() })
        .unwrap();
    match p.recv(REACT) {
        Recv::Closed(c) => eprintln!("closed ({:?})", c.kind),
        other => panic!("a handshake for another torrent got {other:?}"),
    }
    assert_alive(&mut seeder);
    s.honest_download("honest", &[addr]);
}

#[test]
fn a_stranger_speaking_http_is_dropped() {
    one_offence(false, |_| b"GET /announce HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
}

#[test]
fn a_known_id_with_a_bad_length_is_dropped() {
    // `have` with a 2-byte payload: a framing error, not something to skip.
    one_offence(true, |_| raw::frame(4, &[0, 1]));
}

/// After a storm of legal messages the seeder must still serve: on the same connection (the
/// messages are legal, so ignoring them is what BEP 3 expects), or, if it chose to drop the
/// stormer, to a fresh peer. Either way an honest download then completes.
fn storm(name: &str, msgs: impl IntoIterator<Item = Message>) {
    let s = scene();
    let (mut seeder, addr) = s.seeder("seeder");
    let mut p = attacker(&s, addr);
    served(&s, &mut p);
    let sent = p.send_all(msgs);
    let mut fresh;
    let p = if sent.is_ok() && p.settle(Duration::from_millis(500)) {
        &mut p
    } else {
        eprintln!("{name}: the seeder dropped the stormer ({:?}); a fresh peer must be served", p.closed);
        fresh = attacker(&s, addr);
        &mut fresh
    };
    p.send(Message::Interested).unwrap();
    p.wait_unchoke(UNCHOKE);
    let got = p.fetch_block(2, 0, BLOCK, REACT);
    assert!(got[..] == *s.block(2, 0, BLOCK), "{name}: wrong bytes after the storm");
    assert_alive(&mut seeder);
    s.honest_download("honest", &[addr]);
    assert_alive(&mut seeder);
}

fn any_block(i: u32) -> (u32, u32) {
    (i % 13, (i % 16) * BLOCK)
}

#[test]
fn cancel_storm_leaves_the_seeder_serving() {
    storm(
        "10,000 cancels",
        (0..10_000).map(|i| {
            let (index, begin) = any_block(i);
            Message::Cancel { index, begin, length: BLOCK }
        }),
    );
}

#[test]
fn choke_unchoke_storm_leaves_the_seeder_serving() {
    storm("10,000 choke/unchoke pairs", (0..10_000).flat_map(|_| [Message::Choke, Message::Unchoke]));
}

#[test]
fn keepalive_flood_leaves_the_seeder_serving() {
    storm("100,000 keep-alives", (0..100_000).map(|_| Message::KeepAlive));
}

#[test]
fn interest_storm_leaves_the_seeder_serving() {
    storm(
        "10,000 interested/not-interested pairs",
        (0..10_000).flat_map(|_| [Message::Interested, Message::NotInterested]),
    );
}

// ---- a fake seeder dialled by `shoal download` ----

/// A download that knows only the fake must drop it within [`REACT`] of its bad block and
/// stay up; then a download from the fake and an honest seeder completes byte-identical.
fn leecher_drops(serve: Serve) {
    let s = scene();
    let fake = FakeSeeder::spawn(s.geo, serve);
    let mut victim = s.download("victim", &[fake.addr]);
    let log = fake.wait_dropped(REACT);
    assert!(log.requests >= 1, "{serve:?}: dropped before it asked for anything: {log:?}");
    assert_alive(&mut victim);
    drop(victim);
    let (_seeder, addr) = s.seeder("seeder");
    s.honest_download("honest", &[fake.addr, addr]);
}

#[test]
fn block_of_a_piece_out_of_range_gets_the_sender_dropped() {
    leecher_drops(Serve::PieceOutOfRange);
}

#[test]
fn block_over_128_kib_gets_the_sender_dropped() {
    leecher_drops(Serve::OversizedPiece);
}

/// The download has the fake and an honest seeder from the start and must complete
/// byte-identical however the fake behaves, without ever banning the honest seeder (issue 8,
/// fault 6: a liar must not get honest peers framed). Returns the download's log.
fn completes_beside(serve: Serve) -> String {
    let s = scene();
    let fake = FakeSeeder::spawn(s.geo, serve);
    let (mut seeder, addr) = s.seeder("seeder");
    let log = s.honest_download("honest", &[fake.addr, addr]);
    assert_alive(&mut seeder);
    eprintln!("{serve:?}: {:?}", fake.log());
    let framed = log_lines(&log, &["banned", &addr.to_string()]);
    assert!(framed.is_empty(), "{serve:?}: the honest seeder {addr} was banned: {framed:?}");
    log
}

#[test]
fn download_completes_beside_a_seeder_sending_wrong_data() {
    completes_beside(Serve::WrongData);
}

#[test]
fn unrequested_blocks_are_dropped_and_poison_no_piece() {
    let log = completes_beside(Serve::Unrequested);
    // Blocks nobody asked for never enter a piece, so no piece can fail because of them.
    let failed = log_lines(&log, &["piece failed its hash check"]);
    assert!(failed.is_empty(), "unrequested garbage reached {} pieces: {failed:?}", failed.len());
}

#[test]
fn download_completes_beside_a_seeder_that_never_answers() {
    completes_beside(Serve::Nothing);
}

// ---- the kit itself ----

#[test]
fn the_kit_binds_127_0_0_2_shrinks_its_window_and_tells_eof_from_reset() {
    let l = FakeListener::bind();
    let dial = Dial { recv_buffer: Some(4096), ..Dial::from_ip("127.0.0.2") };
    let mut a = FakePeer::connect(l.addr, &dial).unwrap();
    // Linux doubles the request for bookkeeping; a default buffer is 128 KiB or more.
    assert!(a.recv_buffer() <= 8192, "receive buffer {} bytes", a.recv_buffer());
    let b = l.accept(REACT).expect("the listener accepts");
    assert_eq!(b.remote.ip().to_string(), "127.0.0.2");
    drop(b);
    assert_eq!(a.expect_closed(REACT).kind, CloseKind::Eof);

    let mut a = FakePeer::connect(l.addr, &Dial::default()).unwrap();
    let b = l.accept(REACT).expect("the listener accepts");
    a.send_raw(b"never read").unwrap();
    // Loopback delivers during the write; the pause is only a margin. Closing with unread
    // data makes the kernel answer with RST.
    std::thread::sleep(Duration::from_millis(200));
    drop(b);
    assert_eq!(a.expect_closed(REACT).kind, CloseKind::Reset);
}
