//! Swarms of separate `shoal` processes that find each other only through the Kademlia DHT
//! (issue 4, "How it is shown"): one `shoal node`, seeders and leechers that know nothing but
//! the node's multiaddr. No tracker, no `--peer` (except where TCP is the point).
//!
//! Everything runs on 127.0.0.1 with a fresh identity per process; every wait is bounded and
//! a dropped [`Proc`] kills its process. The tests take turns (two cores, many processes).
//! Evidence that peers came through the DHT: each leecher's `DHT lookup providers=N` log lines
//! and its `/debug/p2p/peers`, polled while it runs, which must list only `libp2p` peers.
// `args!` builds a Vec because some call sites extend it; others pass it once.
#![allow(clippy::useless_vec)]
mod procs;

use procs::*;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
/// Bound on one leecher's whole download (debug builds on two shared cores).
const DOWNLOAD: Duration = Duration::from_secs(120);

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

/// `shoal download T -o DIR/NAME --diag 127.0.0.1:0 EXTRA...`, with a watch on its peers.
fn start_leecher(dir: &Path, name: &str, torrent: &Path, extra: &[OsString]) -> (Proc, PeerWatch, PathBuf) {
    start_leecher_env(dir, name, torrent, extra, &[])
}

fn start_leecher_env(
    dir: &Path,
    name: &str,
    torrent: &Path,
    extra: &[OsString],
    env: &[(&str, &str)],
) -> (Proc, PeerWatch, PathBuf) {
    let out = dir.join(name);
    let mut args = args!["download", torrent, "-o", &out, "--diag", "127.0.0.1:0"];
    args.extend(extra.iter().cloned());
    args.extend(net_args(dir, name));
    let mut p = Proc::spawn(name, dir, &args, env);
    let watch = PeerWatch::start(p.diag_addr());
    (p, watch, out)
}

/// `shoal create DATA -o T --piece-size 64KiB`.
fn create_torrent(data: &Path, torrent: &Path) {
    run_ok(&args!["create", data, "-o", torrent, "--piece-size", "64KiB"], Duration::from_secs(60));
}

fn p2p(id: &str) -> String {
    format!("/p2p/{id}")
}

/// The leecher's peers came through the DHT: its log shows a lookup that found a provider and
/// a summary with at least one peer; whatever `/debug/p2p/peers` showed while it ran is libp2p
/// only, with a seeder among them. A download shorter than the torrent's once-a-second
/// statistics may show no peers there: `require_diag` says whether it must.
fn assert_dht_peers(leecher: &Proc, seen: &BTreeMap<String, SeenPeer>, seeders: &[&str], require_diag: bool) {
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
    if seen.is_empty() {
        if require_diag {
            leecher.fail("/debug/p2p/peers never listed a peer");
        }
        return;
    }
    let tcp: Vec<_> = seen.iter().filter(|(_, p)| p.transport != "libp2p").collect();
    if !tcp.is_empty() {
        leecher.fail(&format!("peers not from the DHT: {tcp:?}"));
    }
    if !seeders.iter().any(|s| seen.contains_key(&p2p(s))) {
        leecher.fail(&format!("no seeder among its peers {seen:?}"));
    }
}

#[test]
fn dht_only_swarm_two_seeders_three_leechers() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Big enough that each download spans a few of the torrent's once-a-second statistics.
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
    for (p, watch, out) in leechers.drain(..) {
        let mut p = p;
        let ran = p.expect_success(DOWNLOAD);
        let seen = watch.finish();
        assert_same_bytes(&data, &out.join("data.bin"));
        assert_dht_peers(&p, &seen, &[&seeders[0], &seeders[1]], true);
        let lookups = dht_lookups(&p.log_text());
        eprintln!(
            "{}: done in {ran:.1?} ({:.1?} after the first start); lookups {lookups:?}; peers {seen:?}",
            p.name,
            t0.elapsed()
        );
    }
}

#[test]
fn leecher_started_before_any_seeder_backs_off_and_completes() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    const CAP: f64 = 4.0;
    let config = dir.join("shoal.toml");
    std::fs::write(&config, "discovery_max_interval_cap = \"4s\"\n").unwrap();
    let data = make_file(&dir.join("s1"), "data.bin", 2 * MIB + 777, 12);
    let torrent = dir.join("data.torrent");
    create_torrent(&data, &torrent);
    let (_node, boot) = start_node(dir);

    let (mut leecher, watch, out) =
        start_leecher(dir, "l0", &torrent, &args!["--bootstrap", &boot, "--config", &config]);
    std::thread::sleep(Duration::from_secs(9));
    assert!(leecher.is_running(), "the leecher has nobody to download from yet");
    let early = dht_lookups(&leecher.log_text());
    assert!(early.len() >= 3 && early.iter().all(|l| l.providers == 0), "lookups before any seeder: {early:?}");

    let mut seeder = start_seeder(dir, "s1", &data, &torrent, &boot);
    let seeder_ready = Instant::now();
    let seeder_id = seeder.peer_id();
    leecher.expect_success(DOWNLOAD);
    let after_seeder = seeder_ready.elapsed();
    let seen = watch.finish();
    assert_same_bytes(&data, &out.join("data.bin"));
    assert_dht_peers(&leecher, &seen, &[&seeder_id], false);

    let lookups = dht_lookups(&leecher.log_text());
    let gaps: Vec<f64> = lookups.windows(2).map(|w| w[1].at - w[0].at).collect();
    eprintln!("completed {after_seeder:.1?} after the seeder was ready; lookups {lookups:?}; gaps {gaps:?}");
    // Discovery starts at 2 s and doubles up to the cap: 2, 4, 4, ...
    assert!((1.5..3.5).contains(&gaps[0]), "first gap {:.2} s, expected about 2 s: {gaps:?}", gaps[0]);
    assert!(gaps[1] > gaps[0] + 1.0, "the second gap does not grow: {gaps:?}");
    assert!(gaps.windows(2).all(|w| w[1] >= w[0] - 0.5), "gaps shrink: {gaps:?}");
    assert!(gaps.iter().all(|g| *g <= CAP + 1.5), "a gap beyond the {CAP} s cap: {gaps:?}");
    assert!(
        after_seeder <= Duration::from_secs_f64(CAP + 8.0),
        "completed {after_seeder:?} after the seeder came up; cap {CAP} s"
    );
}

#[test]
fn one_of_two_seeders_killed_mid_download() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = make_file(&dir.join("s1"), "data.bin", 48 * MIB + 4321, 13);
    let torrent = dir.join("data.torrent");
    create_torrent(&data, &torrent);
    let (_node, boot) = start_node(dir);
    let mut s1 = start_seeder(dir, "s1", &data, &torrent, &boot);
    let data2 = copy_into(&data, &dir.join("s2"));
    let mut s2 = start_seeder(dir, "s2", &data2, &torrent, &boot);
    let (id1, id2) = (s1.peer_id(), s2.peer_id());

    let mut leechers: Vec<_> =
        (0..3).map(|i| start_leecher(dir, &format!("l{i}"), &torrent, &args!["--bootstrap", &boot])).collect();
    let diags: Vec<_> = leechers.iter_mut().map(|(p, _, _)| p.diag_addr()).collect();
    // Kill the first seeder a leecher has received bytes from.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let seen = leechers[0].1.seen();
        let fed_by = |id: &str| seen.get(&p2p(id)).is_some_and(|p| p.max_downloaded > 0);
        if fed_by(&id1) {
            break 1;
        }
        if fed_by(&id2) {
            break 2;
        }
        assert!(Instant::now() < deadline, "l0 got no bytes from a seeder: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let (killed, kept) = if victim == 1 { (&mut s1, &id2) } else { (&mut s2, &id1) };
    let killed_at = Instant::now();
    killed.kill();
    let progress: Vec<f64> = diags
        .iter()
        .map(|d| {
            get_json(*d, "/debug/p2p/torrents")
                .and_then(|v| v["torrents"][0]["progress"]["fraction"].as_f64())
                .unwrap_or(1.0)
        })
        .collect();
    eprintln!("killed seeder s{victim} (pid {}) with leechers at {progress:?}", killed.pid());
    assert!(progress.iter().any(|f| *f < 0.9), "the leechers were (nearly) done before the kill: {progress:?}");

    for (p, watch, out) in leechers.drain(..) {
        let mut p = p;
        p.expect_success(DOWNLOAD);
        let seen = watch.finish();
        assert_same_bytes(&data, &out.join("data.bin"));
        assert_dht_peers(&p, &seen, &[kept], true);
        eprintln!("{}: done {:.1?} after the kill; peers {seen:?}", p.name, killed_at.elapsed());
    }
}

#[test]
fn same_torrent_over_libp2p_and_over_tcp_gives_identical_files() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Big enough that both downloads show their peers in a few statistics snapshots.
    let data = make_file(&dir.join("s1"), "data.bin", 16 * MIB + 999, 14);
    let torrent = dir.join("data.torrent");
    create_torrent(&data, &torrent);
    let (_node, boot) = start_node(dir);
    let mut seeder = start_seeder(dir, "s1", &data, &torrent, &boot);
    let seeder_id = seeder.peer_id();
    let seeder_bt = seeder.bt_addr();

    // Each download is over in well under a second, often before a statistics snapshot lists
    // its peer, so the debug log's `connected peer=...` lines say which transport carried it.
    let debug = [("RUST_LOG", "shoal=debug")];
    let (mut over_p2p, p2p_watch, p2p_out) =
        start_leecher_env(dir, "via-dht", &torrent, &args!["--bootstrap", &boot], &debug);
    let p2p_time = over_p2p.expect_success(DOWNLOAD);
    let p2p_seen = p2p_watch.finish();
    assert_dht_peers(&over_p2p, &p2p_seen, &[&seeder_id], false);
    let p2p_peers = connected_peers(&over_p2p.log_text());
    assert!(
        p2p_peers.contains(&p2p(&seeder_id)) && p2p_peers.iter().all(|p| p.starts_with("/p2p/")),
        "via-dht connected to {p2p_peers:?}"
    );

    let (mut over_tcp, tcp_watch, tcp_out) =
        start_leecher_env(dir, "via-tcp", &torrent, &args!["--no-kad", "--peer", seeder_bt.to_string()], &debug);
    let tcp_time = over_tcp.expect_success(DOWNLOAD);
    let tcp_seen = tcp_watch.finish();
    // With --no-kad there is no libp2p node at all: TCP to --peer is the only way in.
    assert!(
        tcp_seen.iter().all(|(addr, p)| p.transport == "tcp" && *addr == seeder_bt.to_string()),
        "--no-kad peers: {tcp_seen:?}"
    );
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
