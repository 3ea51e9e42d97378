//! Swarms of separate `shoal` processes that find each other only through the Kademlia DHT
//! (issue 4, "How it is shown"): one `shoal node`, seeders and leechers that know nothing but
//! the node's multiaddr. No tracker, no `--peer` (except where TCP is the point).
//!
//! Everything runs on 127.0.0.1 with a fresh identity per process; every wait is bounded and
//! a dropped [`Proc`] kills its process. The tests take turns (two cores, many processes).
//!
//! Evidence is what a process writes and cannot be missed, never what a poll happened to
//! catch: a leecher can finish 10 MiB in half a second, before any poll of its diagnostics.
//! Leechers log at debug level; their `connected peer=...` lines say which peers carried the
//! download, their `DHT lookup providers=N` lines what discovery found, and the `done: ...`
//! summary from how many peers the bytes came. Where a test needs a swarm in a given state
//! (a download half done), the state is built to last (a seeder with half the pieces), so
//! a poll with a generous deadline waits for it rather than races it.
// `args!` builds a Vec because some call sites extend it; others pass it once.
#![allow(clippy::useless_vec)]
mod common;

use common::http::wait_json;
use common::logs::{connected_peers, dht_lookups};
use common::process::{net_args, serial, Proc};
use common::torrent::{assert_same_bytes, copy_into, create_torrent, make_file};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
const PIECE: usize = 64 * 1024;
/// Bound on one leecher's whole download (debug builds on two shared cores).
const DOWNLOAD: Duration = Duration::from_secs(120);
/// Leechers log their connections (`connected peer=...`) at debug level.
const DEBUG_LOG: [(&str, &str); 1] = [("RUST_LOG", "shoal=debug")];

/// Starts `shoal node` and returns it with its bootstrap multiaddr.
fn start_node(dir: &Path) -> (Proc, String) {
    let mut args = args!["node"];
    args.extend(net_args(dir, "node"));
    let mut node = Proc::spawn("node", dir, &args, &[]);
    let boot = node.kad_addr();
    (node, boot)
}

/// `shoal seed DATA --torrent T --bootstrap BOOT`, returned once it prints its magnet.
fn start_seeder(dir: &Path, name: &str, data: &Path, torrent: &Path, boot: &str) -> Proc {
    let mut args = args!["seed", data, "--torrent", torrent, "--bootstrap", boot];
    args.extend(net_args(dir, name));
    let mut p = Proc::spawn(name, dir, &args, &[]);
    p.wait_line("magnet ", Duration::from_secs(60));
    p
}

/// `shoal download T -o DIR/NAME --diag 127.0.0.1:0 EXTRA...`, logging at debug level;
/// returned once its diagnostics listen.
fn start_leecher(dir: &Path, name: &str, torrent: &Path, extra: &[OsString]) -> (Proc, PathBuf) {
    let out = dir.join(name);
    let mut args = args!["download", torrent, "-o", &out, "--diag", "127.0.0.1:0"];
    args.extend(extra.iter().cloned());
    args.extend(net_args(dir, name));
    let mut p = Proc::spawn(name, dir, &args, &DEBUG_LOG);
    p.diag_addr();
    (p, out)
}

/// A config file capping the DHT lookup backoff at `cap_secs`.
fn cap_config(dir: &Path, cap_secs: u32) -> PathBuf {
    let config = dir.join("shoal.toml");
    std::fs::write(&config, format!("discovery_max_interval_cap = \"{cap_secs}s\"\n")).unwrap();
    config
}

fn p2p(id: &str) -> String {
    format!("/p2p/{id}")
}

/// The leecher's peers came through the DHT, shown by its log: a lookup found a provider,
/// every peer it connected to is a libp2p peer and a seeder is among them, and its summary
/// counts at least one peer the bytes came from.
fn assert_dht_peers(leecher: &Proc, seeders: &[&str]) {
    let log = leecher.log_text();
    let lookups = dht_lookups(&log);
    if !lookups.iter().any(|l| l.providers >= 1) {
        leecher.fail(&format!("no DHT lookup found a provider: {lookups:?}"));
    }
    let from_peers = log
        .lines()
        .find(|l| l.starts_with("done: "))
        .and_then(|l| l.split(" from ").nth(1)?.split(' ').next()?.parse::<usize>().ok());
    if from_peers.is_none_or(|n| n < 1) {
        leecher.fail("no `done: ... received ... from N peers` summary with N >= 1");
    }
    let connected = connected_peers(&log);
    if connected.is_empty() || !connected.iter().all(|p| p.starts_with("/p2p/")) {
        leecher.fail(&format!("connected to {connected:?}: expected libp2p peers only"));
    }
    if !seeders.iter().any(|s| connected.contains(&p2p(s))) {
        leecher.fail(&format!("no seeder among the peers it connected to: {connected:?}"));
    }
}

#[test]
fn dht_only_swarm_two_seeders_three_leechers() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = make_file(&dir.join("s1"), "data.bin", 10 * MIB + 12345, 11);
    let torrent = dir.join("data.torrent");
    let (_node, boot) = start_node(dir);
    let mut s1 = start_seeder(dir, "s1", &data, &torrent, &boot);
    assert!(torrent.exists(), "the first seeder writes the .torrent");
    let data2 = copy_into(&data, &dir.join("s2"));
    let mut s2 = start_seeder(dir, "s2", &data2, &torrent, &boot);
    let seeders = [s1.peer_id(), s2.peer_id()];

    let t0 = Instant::now();
    let mut leechers: Vec<_> =
        (0..3).map(|i| start_leecher(dir, &format!("l{i}"), &torrent, &args!["--bootstrap", &boot])).collect();
    for (mut p, out) in leechers.drain(..) {
        let ran = p.expect_success(DOWNLOAD);
        assert_same_bytes(&data, &out.join("data.bin"));
        assert_dht_peers(&p, &[&seeders[0], &seeders[1]]);
        let log = p.log_text();
        eprintln!(
            "{}: done in {ran:.1?} ({:.1?} after the first start); lookups {:?}; connected {:?}",
            p.name,
            t0.elapsed(),
            dht_lookups(&log),
            connected_peers(&log)
        );
    }
}

/// Discovery backs off 2 s, 4 s, then holds at the cap while nobody provides the torrent, and
/// the leecher completes once a seeder appears.
///
/// Only the lookups before the seeder exists are pure backoff: the leecher is alone, its pool
/// is dry from the start and raises "need peers" once (its first tick, which must not cost
/// a second lookup at start-up). Once peers come and go the pool's need-peers edges may bring
/// a lookup forward (within the reset limits), so later gaps are only checked against the cap.
#[test]
fn leecher_started_before_any_seeder_backs_off_and_completes() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    const CAP: f64 = 4.0;
    // A lookup is logged when it ends; its length (a query on loopback, longer on a loaded
    // machine) adds to the gap it closes.
    const SLACK: f64 = 2.5;
    let config = cap_config(dir, CAP as u32);
    let data = make_file(&dir.join("s1"), "data.bin", 2 * MIB + 777, 12);
    let torrent = dir.join("data.torrent");
    create_torrent(&data, &torrent, "64KiB", None);
    let (_node, boot) = start_node(dir);

    let (mut leecher, out) = start_leecher(dir, "l0", &torrent, &args!["--bootstrap", &boot, "--config", &config]);
    // 0, 2, 6, 10 s: four lookups show the first gap, the doubling and the cap.
    let deadline = Instant::now() + Duration::from_secs(90);
    let early = loop {
        let lookups = dht_lookups(&leecher.log_text());
        if lookups.len() >= 4 {
            break lookups;
        }
        if Instant::now() > deadline {
            leecher.fail(&format!("fewer than 4 DHT lookups in 90 s: {lookups:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(leecher.is_running(), "the leecher has nobody to download from yet");
    assert!(early.iter().all(|l| l.providers == 0), "lookups before any seeder: {early:?}");
    let gaps: Vec<f64> = early[..4].windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!((1.5..2.0 + SLACK).contains(&gaps[0]), "first gap {:.2} s, expected about 2 s: {gaps:?}", gaps[0]);
    assert!(gaps[1] > gaps[0] + 1.0, "the second gap does not grow: {gaps:?}");
    assert!(gaps[2] >= gaps[1] - 0.5, "gaps shrink before any peer exists: {gaps:?}");

    let mut seeder = start_seeder(dir, "s1", &data, &torrent, &boot);
    let seeder_ready = Instant::now();
    let seeder_id = seeder.peer_id();
    leecher.expect_success(DOWNLOAD);
    let after_seeder = seeder_ready.elapsed();
    assert_same_bytes(&data, &out.join("data.bin"));
    assert_dht_peers(&leecher, &[&seeder_id]);

    let lookups = dht_lookups(&leecher.log_text());
    let gaps: Vec<f64> = lookups.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!("completed {after_seeder:.1?} after the seeder was ready; lookups {lookups:?}; gaps {gaps:?}");
    assert!(gaps.iter().all(|g| *g <= CAP + SLACK), "a gap beyond the {CAP} s cap: {gaps:?}");
}

/// A seeder killed mid-download, and the leechers finish from another one found through the
/// DHT. Built to be mid-download rather than timed to be: the first seeder has only the first
/// half of the pieces, so the leechers stop at exactly half (a state that lasts, so waiting
/// for it cannot miss it) with that seeder as their only source. It is killed there, and only
/// then does a full seeder start, which the leechers must find through the DHT (lookups capped
/// at 4 s) to finish.
#[test]
fn leechers_finish_from_a_new_seeder_after_theirs_is_killed_mid_download() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let size = 8 * MIB + 4321;
    let data = make_file(&dir.join("full"), "data.bin", size, 13);
    let torrent = dir.join("data.torrent");
    create_torrent(&data, &torrent, "64KiB", None);
    let half = size.div_ceil(PIECE) / 2;
    let half_data = copy_into(&data, &dir.join("half"));
    let mut bytes = std::fs::read(&half_data).unwrap();
    bytes[half * PIECE..].fill(0);
    std::fs::write(&half_data, bytes).unwrap();
    let config = cap_config(dir, 4);
    let (_node, boot) = start_node(dir);
    let mut s1 = start_seeder(dir, "s1", &half_data, &torrent, &boot);
    let id1 = s1.peer_id();

    let mut leechers: Vec<_> = (0..3)
        .map(|i| start_leecher(dir, &format!("l{i}"), &torrent, &args!["--bootstrap", &boot, "--config", &config]))
        .collect();
    for (p, _) in &mut leechers {
        let diag = p.diag_addr();
        let have = wait_json(p, diag, "/debug/p2p/torrents", Duration::from_secs(90), |v| {
            v["torrents"][0]["progress"]["pieces_have"].as_u64().filter(|n| *n >= half as u64)
        });
        assert_eq!(have, half as u64, "{}: more pieces than the only seeder has", p.name);
    }
    s1.kill();
    let killed_at = Instant::now();
    for (p, _) in &mut leechers {
        assert!(p.is_running(), "{}: finished with half the pieces", p.name);
    }

    let data2 = copy_into(&data, &dir.join("s2"));
    let mut s2 = start_seeder(dir, "s2", &data2, &torrent, &boot);
    let id2 = s2.peer_id();
    for (mut p, out) in leechers.drain(..) {
        p.expect_success(DOWNLOAD);
        assert_same_bytes(&data, &out.join("data.bin"));
        assert_dht_peers(&p, &[&id2]);
        let connected = connected_peers(&p.log_text());
        eprintln!("{}: done {:.1?} after the kill; connected {connected:?}", p.name, killed_at.elapsed());
        if !connected.contains(&p2p(&id2)) {
            p.fail(&format!("never connected to the second seeder {id2}: {connected:?}"));
        }
    }
    // The first half came from s1 alone (the other leechers had nothing else to offer).
    let leecher_logs: Vec<String> =
        (0..3).map(|i| std::fs::read_to_string(dir.join(format!("l{i}.log"))).unwrap()).collect();
    assert!(
        leecher_logs.iter().any(|l| connected_peers(l).contains(&p2p(&id1))),
        "no leecher connected to the first seeder {id1}"
    );
}

#[test]
fn same_torrent_over_libp2p_and_over_tcp_gives_identical_files() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = make_file(&dir.join("s1"), "data.bin", 16 * MIB + 999, 14);
    let torrent = dir.join("data.torrent");
    create_torrent(&data, &torrent, "64KiB", None);
    let (_node, boot) = start_node(dir);
    let mut seeder = start_seeder(dir, "s1", &data, &torrent, &boot);
    let seeder_id = seeder.peer_id();
    let seeder_bt = seeder.bt_addr();

    // Each download is over in well under a second, so the debug log's `connected peer=...`
    // lines say which transport carried it.
    let (mut over_p2p, p2p_out) = start_leecher(dir, "via-dht", &torrent, &args!["--bootstrap", &boot]);
    let p2p_time = over_p2p.expect_success(DOWNLOAD);
    assert_dht_peers(&over_p2p, &[&seeder_id]);
    let p2p_peers = connected_peers(&over_p2p.log_text());

    let (mut over_tcp, tcp_out) =
        start_leecher(dir, "via-tcp", &torrent, &args!["--no-kad", "--peer", seeder_bt.to_string()]);
    let tcp_time = over_tcp.expect_success(DOWNLOAD);
    over_tcp.read_stdout_to_end(Duration::from_secs(10));
    // With --no-kad there is no libp2p node at all: TCP to --peer is the only way in.
    assert_eq!(connected_peers(&over_tcp.log_text()), vec![seeder_bt.to_string()], "via-tcp connected peers");
    assert!(dht_lookups(&over_tcp.log_text()).is_empty(), "--no-kad looked up the DHT");
    assert!(
        !over_tcp.stdout.iter().any(|l| l.starts_with("listening kad ")),
        "--no-kad started a node: {:?}",
        over_tcp.stdout
    );

    assert_same_bytes(&data, &p2p_out.join("data.bin"));
    assert_same_bytes(&data, &tcp_out.join("data.bin"));
    assert_same_bytes(&p2p_out.join("data.bin"), &tcp_out.join("data.bin"));
    eprintln!("libp2p {p2p_time:.1?} (connected {p2p_peers:?}), tcp {tcp_time:.1?}");
}
