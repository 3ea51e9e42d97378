//! Issue 8, "Load" and fault 2: 200 peers connected to one `shoal seed` process, each
//! asking for 1,600 blocks through a 4 KiB receive window and never reading. The seeder's
//! memory stays bounded (its send buffers are bounded in bytes per peer and per session, and
//! a choked peer's unsent blocks are dropped), it still answers a newcomer, and SIGINT still
//! stops it within 2 s. (An honest leecher beside one such peer is `hostile_stall`'s test;
//! with 200 of them ahead of it in the seeding round robin, a newcomer waits its turn.)
//!
//! The stalling peers come from 50 loopback addresses (127.0.1.x, four each), so per-IP
//! limits do not turn them away: the point is what 200 admitted peers cost.
// `args!` builds a Vec because some call sites extend it; here each is passed once.
#![allow(clippy::useless_vec)]
mod common;

use common::http::get_json;
use common::process::{serial, vm_kib, Proc};
use common::torrent::{data_and_torrent, read_metainfo};
use common::wire::{encode, handshake_bytes, peer_id};
use shoal::metainfo::InfoHash;
use shoal::wire::Message;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

const MIB: usize = 1024 * 1024;
const PEERS: usize = 200;
const REQUESTS: u32 = 1600;
/// The bound the issue sets for the seeder under floods.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// Opens one stalling peer: handshake, `interested`, then `REQUESTS` block requests, and
/// never a read.
async fn staller(
    seeder: SocketAddr,
    from: IpAddr,
    n: usize,
    info_hash: InfoHash,
    pieces: u32,
) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = sock.connect(seeder).await.unwrap();
    // A peer id of its own: the seeder refuses a second connection from a peer id it has.
    let hs = handshake_bytes([0; 8], info_hash, peer_id(&format!("-ST0001-{n:012}")));
    s.write_all(&hs).await.unwrap();
    s.write_all(&encode([Message::Interested])).await.unwrap();
    let reqs = encode((0..REQUESTS).map(|i| Message::Request {
        index: (i / 64) % pieces,
        begin: (i % 64) * 16384,
        length: 16384,
    }));
    // Requests sent while still choked are dropped by the seeder; a staller keeps sending
    // them, as an attacker would, so some land once it is unchoked. The kernel's send buffer
    // takes what it takes: a write that would block is abandoned, the socket stays open.
    let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&reqs)).await;
    s
}

fn rss_kib(pid: u32) -> u64 {
    vm_kib(pid, "VmRSS").unwrap_or(0)
}

/// User + system CPU seconds of a process, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[test]
fn two_hundred_stalling_peers_cost_bounded_memory_and_sigint_still_stops_the_seeder() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, torrent) = data_and_torrent(dir, 32 * MIB, 31, "1MiB");
    let config = dir.join("shoal.toml");
    std::fs::write(&config, "max_connections = 260\n").unwrap();
    let mut seeder = Proc::spawn(
        "seeder",
        dir,
        &args![
            "seed",
            &data,
            "--torrent",
            &torrent,
            "--listen",
            "127.0.0.1:0",
            "--no-kad",
            "--config",
            &config,
            "--diag",
            "127.0.0.1:0"
        ],
        &[],
    );
    let bt = seeder.bt_addr();
    let diag = seeder.diag_addr();
    seeder.wait_line("magnet ", Duration::from_secs(60));
    let pid = seeder.pid();
    let base_rss = rss_kib(pid);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let hash = read_metainfo(&torrent).info_hash;
    let stallers: Vec<_> = rt.block_on(async {
        let opens = (0..PEERS).map(|i| {
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, (i / 4 + 1) as u8));
            staller(bt, from, i, hash, 32)
        });
        futures::future::join_all(opens).await
    });
    assert_eq!(stallers.len(), PEERS);
    // Every staller is admitted: the seeder's pool counts them all as connected.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connected = get_json(diag, "/debug/p2p/torrents")
            .and_then(|v| v["torrents"][0]["pool"]["connected"].as_u64())
            .unwrap_or(0);
        if connected as usize >= PEERS {
            break;
        }
        if Instant::now() > deadline {
            seeder.fail(&format!("only {connected} of {PEERS} stallers were admitted"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // Hold on through two choke rounds: stallers get slots, stall, and lose them again.
    let mut peak = 0;
    let hold = Instant::now() + Duration::from_secs(25);
    while Instant::now() < hold {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The seeder still answers a newcomer: our handshake back, then its bitfield.
    let greeting = rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(bt).await.unwrap();
        s.write_all(&handshake_bytes([0; 8], hash, peer_id("-ST0001-newcomer0000"))).await.unwrap();
        let mut buf = vec![0u8; 68 + 5];
        tokio::time::timeout(Duration::from_secs(20), tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)).await
    });
    if !matches!(greeting, Ok(Ok(_))) {
        seeder.fail(&format!("a newcomer got no handshake and bitfield: {greeting:?}"));
    }
    let cpu = cpu_secs(pid);
    eprintln!("seeder RSS: {base_rss} KiB before the stallers, peak {peak} KiB with {PEERS} of them; CPU {cpu:.2} s");
    assert!(peak < MAX_RSS_KIB, "seeder RSS peaked at {peak} KiB with {PEERS} stalling peers");

    // SIGINT with every staller still connected and unread.
    let sent = Instant::now();
    let status = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let exit = seeder.wait_exit(Duration::from_secs(10));
    let took = sent.elapsed();
    eprintln!("seeder exited {exit:?} {took:?} after SIGINT");
    assert!(took <= Duration::from_secs(2), "SIGINT took {took:?} to stop the seeder");
    drop(stallers);
}
