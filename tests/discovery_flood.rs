//! Issue 8, fault 1: floods of peer addresses cannot stall the pool.
//!
//! - A tracker answering every announce with 20,000 compact peers (a 120 KB body): the
//!   download from a real seeder still completes, and the pool keeps a bounded set.
//! - An inbound peer sending 30,000 extension handshakes, each with a new listen port: the
//!   seeder drops it after a few and remembers at most one address for it, and a fresh
//!   leecher then completes.
//!
//! Every address is on 127.0.0.0/8 (nothing listens on the flooded ones: dials are refused
//! at once). Each wait is bounded; no timing is asserted.
// `args!` builds a Vec because some call sites extend it; here each is passed once.
#![allow(clippy::useless_vec)]
mod common;

use common::http::get_json;
use common::process::{serial, Proc};
use common::torrent::{assert_same_bytes, create_torrent, data_and_torrent, make_file, read_metainfo};
use common::wire::{encode, handshake_bytes, peer_id};
use shoal::wire::Message;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
const FLOOD_PEERS: u32 = 20_000;
const EXT_HANDSHAKES: u32 = 30_000;

/// A tracker on `listener` that answers every request with `FLOOD_PEERS` compact peers: the
/// real seeder first, then addresses on 127.1.0.0/16 where nothing listens.
fn flooding_tracker(listener: TcpListener, seeder: SocketAddr) {
    let std::net::IpAddr::V4(ip) = seeder.ip() else { panic!("the seeder listens on IPv4") };
    let mut peers = ip.octets().to_vec();
    peers.extend_from_slice(&seeder.port().to_be_bytes());
    for i in 1..FLOOD_PEERS {
        peers.extend_from_slice(&[127, 1, (i >> 8) as u8, i as u8]);
        peers.extend_from_slice(&(10_000 + (i % 50_000) as u16).to_be_bytes());
    }
    let mut body = format!("d8:intervali1800e5:peers{}:", peers.len()).into_bytes();
    body.extend_from_slice(&peers);
    body.push(b'e');
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
}

fn pool_known(diag: SocketAddr) -> Option<u64> {
    get_json(diag, "/debug/p2p/torrents").and_then(|v| v["torrents"][0]["pool"]["known"].as_u64())
}

fn seed(dir: &Path, name: &str, data: &Path, torrent: &Path) -> (Proc, SocketAddr, SocketAddr) {
    let args =
        args!["seed", data, "--torrent", torrent, "--listen", "127.0.0.1:0", "--no-kad", "--diag", "127.0.0.1:0"];
    let mut p = Proc::spawn(name, dir, &args, &[]);
    let (bt, diag) = (p.bt_addr(), p.diag_addr());
    p.wait_line("magnet ", Duration::from_secs(60));
    (p, bt, diag)
}

fn download(dir: &Path, name: &str, torrent: &Path, seeder: SocketAddr) -> (Proc, std::path::PathBuf) {
    let out = dir.join(name);
    let args = args![
        "download",
        torrent,
        "-o",
        &out,
        "--peer",
        seeder.to_string(),
        "--no-kad",
        "--listen",
        "127.0.0.1:0",
        "--diag",
        "127.0.0.1:0"
    ];
    (Proc::spawn(name, dir, &args, &[]), out)
}

#[test]
fn a_tracker_answering_twenty_thousand_peers_does_not_stall_the_download() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = make_file(&dir.join("seed"), "data.bin", 4 * MIB, 41);
    let torrent = dir.join("data.torrent");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tracker = format!("http://{}/announce", listener.local_addr().unwrap());
    create_torrent(&data, &torrent, "256KiB", Some(&tracker));
    let (_seeder, bt, _) = seed(dir, "seeder", &data, &torrent);
    flooding_tracker(listener, bt);
    // The leecher learns of the seeder only through the tracker's 20,000-peer reply.
    let out = dir.join("leecher");
    let args = args!["download", &torrent, "-o", &out, "--no-kad", "--listen", "127.0.0.1:0", "--diag", "127.0.0.1:0"];
    let mut leecher = Proc::spawn("leecher", dir, &args, &[("RUST_LOG", "shoal=debug")]);
    let diag = leecher.diag_addr();
    let mut known_max = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while leecher.is_running() {
        known_max = known_max.max(pool_known(diag).unwrap_or(0));
        if Instant::now() > deadline {
            leecher.fail("the download did not finish in 120 s beside a 20,000-peer tracker");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    leecher.expect_success(Duration::from_secs(5));
    assert_same_bytes(&data, &out.join("data.bin"));
    eprintln!("leecher's pool held at most {known_max} known peers while it ran");
    assert!(known_max <= 2000, "the known set grew to {known_max}");
    // The flood did arrive: the reply was cut to 1,000 addresses, the batch to 200.
    let log = leecher.log_text();
    if !log.lines().any(|l| l.contains("peer batch truncated") && l.contains("count=1000")) {
        leecher.fail("no `peer batch truncated count=1000` line: the tracker's reply never reached the torrent");
    }
}

/// One extension handshake (BEP 10, extended message 0) announcing listen port `port`.
fn ext_handshake(port: u16) -> Message {
    Message::Extended { id: 0, payload: format!("d1:pi{port}ee").into_bytes().into() }
}

#[test]
fn thirty_thousand_extension_handshakes_are_cut_off_and_a_leecher_still_completes() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, torrent) = data_and_torrent(dir, 4 * MIB, 42, "256KiB");
    let (seeder, bt, diag) = seed(dir, "seeder", &data, &torrent);
    let meta = read_metainfo(&torrent);

    let mut s = TcpStream::connect(bt).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let bep10 = [0, 0, 0, 0, 0, 0x10, 0, 0]; // the extension protocol bit
    s.write_all(&handshake_bytes(bep10, meta.info_hash, peer_id("-FL0001-extfloodxxxx"))).unwrap();
    let flood = encode((0..EXT_HANDSHAKES).map(|i| ext_handshake(20_000 + (i % 40_000) as u16)));
    // The seeder closes the connection partway through: the rest of the write fails.
    let written = s.write_all(&flood);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut sink = Vec::new();
    let closed = s.read_to_end(&mut sink);
    eprintln!("flood write: {written:?}; read until close: {closed:?}");
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut);
    let was_closed = match &closed {
        Ok(_) => true,
        Err(e) => !timed_out(e),
    };
    assert!(was_closed, "the seeder did not close the flooding connection (write {written:?}, read {closed:?})");

    let known = pool_known(diag).unwrap_or_else(|| seeder.fail("no diagnostics"));
    assert!(known <= 2, "the seeder learned {known} addresses from one connection's handshakes");
    let (mut leecher, out) = download(dir, "leecher", &torrent, bt);
    leecher.expect_success(Duration::from_secs(120));
    assert_same_bytes(&data, &out.join("data.bin"));
}
