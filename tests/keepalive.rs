//! The key-peer monitor across separate `shoal` processes on loopback: a key peer restarted on
//! a new port is repaired through the DHT; a key peer that never returns makes the monitor
//! publish resets no faster than the cool-down; an invalid config (file or `SHOAL_<KEY>`
//! variable) exits 2 naming the key.
//!
//! Every child is killed by PID when its guard drops; every wait is bounded.
mod common;

use common::http::expect_json;
use common::logs::{dht_lookups, event_times};
use common::process::{run_env, Proc, STARTUP};
use common::session::spawn_node;
use common::torrent::{create_torrent, make_file};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const PIECE: usize = 64 * 1024;
const PIECES: usize = 64;
/// Info lines, and the DHT task's debug line saying a reset brought a lookup forward.
const LOG: [(&str, &str); 1] = [("RUST_LOG", "warn,shoal=info,shoal::discovery::dht=debug")];

/// `shoal ARGS` logging [`LOG`] to `dir/NAME.log`; killed by PID when dropped.
fn start(name: &str, dir: &Path, args: &[&str]) -> Proc {
    Proc::spawn(name, dir, args, &LOG)
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `secs`.
fn eventually<T>(secs: u64, what: &str, logs: &[&Proc], mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|p| format!("--- {} ---\n{}", p.name, p.log_text())).collect();
            panic!("{what}: not within {secs} s\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn counter(metrics: &Value, key: &str) -> u64 {
    metrics[key].as_u64().unwrap_or_else(|| panic!("no counter {key} in {metrics}"))
}

fn write_config(dir: &Path, name: &str, threshold: u32, extra: &str) -> String {
    let path = dir.join(name);
    let text = format!(
        "key_peer_probe_interval = \"1s\"\nper_peer_min_probe_interval = \"1s\"\nprobe_timeout = \"1s\"\nprobe_fail_threshold = {threshold}\ndht_query_timeout = \"5s\"\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `shoal create FILE -o DIR/data.torrent` in pieces of [`PIECE`]; the torrent's path.
fn torrent_of(dir: &Path, file: &Path) -> String {
    let torrent = dir.join("data.torrent");
    create_torrent(file, &torrent, &PIECE.to_string(), None);
    s(&torrent)
}

fn start_dht_node(dir: &Path, name: &str, config: &str, extra: &[&str]) -> (Proc, String) {
    let identity = s(&dir.join(format!("{name}.key")));
    let mut args = vec!["node", "--kad-listen", "/ip4/127.0.0.1/tcp/0", "--identity", &identity, "--config", config];
    args.extend_from_slice(extra);
    let mut p = start(name, dir, &args);
    let addr = p.kad_addr();
    (p, addr)
}

fn start_seeder(dir: &Path, name: &str, data_dir: &Path, torrent: &str, node: &str, config: &str) -> (Proc, String) {
    let (file, identity) = (s(&data_dir.join("data.bin")), s(&dir.join("seeder.key")));
    let args = [
        "seed",
        &file,
        "--torrent",
        torrent,
        "--listen",
        "127.0.0.1:0",
        "--kad-listen",
        "/ip4/127.0.0.1/tcp/0",
        "--bootstrap",
        node,
        "--identity",
        &identity,
        "--config",
        config,
    ];
    let mut p = start(name, dir, &args);
    let kad = p.kad_addr();
    p.wait_line("magnet ", STARTUP);
    (p, kad)
}

/// The leecher holds the seeder as key peer. The first seeder has only the first half of the
/// data, so the download stalls at half; it is killed, and restarted with all the data on a
/// new port under the same identity. The leecher is a DHT client advertising an address no
/// one listens on, so the restarted seeder cannot find and dial it: the leecher's monitor has
/// to notice the failures and repair the connection through the DHT.
#[test]
fn key_peer_restarted_on_a_new_port_is_repaired_through_the_dht() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (full, half) = (dir.join("full"), dir.join("half"));
    let bytes = std::fs::read(make_file(&full, "data.bin", PIECE * PIECES, 9)).unwrap();
    std::fs::create_dir_all(&half).unwrap();
    let mut partial = bytes.clone();
    partial[PIECE * PIECES / 2..].fill(0);
    std::fs::write(half.join("data.bin"), &partial).unwrap();
    let torrent = torrent_of(dir, &full.join("data.bin"));
    // Reset-driven DHT lookups of the leecher are kept rare, so that its own provider lookups
    // do not race the monitor's repair.
    let config = write_config(
        dir,
        "shoal.toml",
        3,
        "discovery_reset_min_interval = \"60s\"\ndiscovery_reset_cool_down = \"5s\"\n",
    );
    let leecher_config = write_config(
        dir,
        "leecher.toml",
        3,
        "discovery_reset_min_interval = \"60s\"\ndiscovery_reset_cool_down = \"5s\"\ndht_mode = \"client\"\n",
    );

    let (node, node_addr) = start_dht_node(dir, "node", &config, &[]);
    let (mut seeder, seeder_kad) = start_seeder(dir, "seeder1", &half, &torrent, &node_addr, &config);
    let out = dir.join("out");
    let leecher_key = s(&dir.join("leecher.key"));
    let mut leecher = start(
        "leecher",
        dir,
        &[
            "download",
            &torrent,
            "-o",
            &s(&out),
            "--seed",
            "--listen",
            "127.0.0.1:0",
            "--kad-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--external-addr",
            "/ip4/127.0.0.1/tcp/9",
            "--bootstrap",
            &node_addr,
            "--key-peer",
            &seeder_kad,
            "--identity",
            &leecher_key,
            "--diag",
            "127.0.0.1:0",
            "--config",
            &leecher_config,
        ],
    );
    let diag = leecher.diag_addr();
    let pieces =
        |diag: SocketAddr| expect_json(diag, "/debug/p2p/torrents")["torrents"][0]["progress"]["pieces_have"].as_u64();
    eventually(60, "the leecher has the first half", &[&leecher, &seeder, &node], || {
        pieces(diag).filter(|n| *n == PIECES as u64 / 2)
    });
    let view = expect_json(diag, "/debug/p2p/keepalive");
    let seeder_id = seeder_kad.rsplit('/').next().unwrap().to_string();
    let key_peer = view["key_peers"].as_array().unwrap().iter().find(|p| p["peer_id"] == seeder_id.as_str()).cloned();
    assert!(key_peer.is_some_and(|p| p["connected"] == true), "the seeder is a connected key peer: {view}");

    // The probes fail and a first repair fails too (a dead peer is in no lookup's answer);
    // its reset brings the leecher's next provider lookup forward, which finds nothing
    // either. The seeder comes back only after that lookup, so the next lookup is far off
    // (backoff, and reset-driven lookups at least 60 s apart) and the repair must do the work.
    // Which lookup a reset brought forward is read from the leecher's log, which keeps every
    // line: the DHT task writes `next DHT lookup brought forward` and only then runs that
    // lookup, so a `DHT lookup` line after it cannot be an earlier one, and cannot be missed
    // the way a lookup ending between two polls of the diagnostics can. (The pool running dry
    // may be what brings it forward, the monitor's reset then falling in the cool-down.)
    let brought = |log: &str| event_times(log, "next DHT lookup brought forward");
    let before_kill = brought(&leecher.log_text()).len();
    seeder.kill();
    eventually(30, "a failed repair", &[&leecher], || {
        let m = expect_json(diag, "/debug/p2p/keepalive/metrics");
        (counter(&m, "probe_fail") >= 3 && counter(&m, "reset_events_published") >= 1).then_some(())
    });
    eventually(30, "the lookup a reset brought forward", &[&leecher], || {
        let log = leecher.log_text();
        // The first one after the kill: later resets are held to 60 s after its lookup.
        let first = *brought(&log).get(before_kill)?;
        dht_lookups(&log).iter().any(|l| l.at > first).then_some(())
    });
    let (seeder2, seeder2_kad) = start_seeder(dir, "seeder2", &full, &torrent, &node_addr, &config);
    assert_ne!(seeder2_kad, seeder_kad, "restarted on another port");
    assert!(seeder2_kad.ends_with(&seeder_id), "same identity");

    eventually(60, "the leecher completes", &[&leecher, &seeder2, &node], || {
        pieces(diag).filter(|n| *n == PIECES as u64)
    });
    let m = expect_json(diag, "/debug/p2p/keepalive/metrics");
    assert!(counter(&m, "probe_fail") >= 3, "{m}");
    assert!(counter(&m, "repair_triggered") >= 1, "{m}");
    assert!(counter(&m, "repair_success") >= 1, "{m}\n{}", leecher.log_text());
    assert!(counter(&m, "reconnect_success") >= 1, "{m}");
    assert!(counter(&m, "reconnect_attempts") >= counter(&m, "reconnect_success"), "{m}");
    let finished = counter(&m, "probe_success") + counter(&m, "probe_fail");
    assert!(
        (finished..=finished + 5).contains(&counter(&m, "probe_attempts")),
        "at most probe_max_concurrent in flight: {m}"
    );
    let log = leecher.log_text();
    for line in [
        "key-peer monitor started",
        "probe failed",
        "repair started",
        "reconnected with a new address",
        "reset event published",
    ] {
        assert!(log.contains(line), "log lacks `{line}`:\n{log}");
    }
    assert_eq!(std::fs::read(out.join("data.bin")).unwrap(), bytes, "byte-identical");
    drop((leecher, seeder2, node));
}

/// A key peer that is gone for good: every repair fails, and the resets the monitor publishes
/// over a measured window are no more than window / cool-down + 1.
#[test]
fn resets_for_a_key_peer_that_never_returns_respect_the_cool_down() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cool_down = Duration::from_secs(3);
    let config =
        write_config(dir, "shoal.toml", 1, &format!("discovery_reset_cool_down = \"{}s\"\n", cool_down.as_secs()));
    let (node, node_addr) = start_dht_node(dir, "node", &config, &[]);
    let (mut gone, gone_addr) = start_dht_node(dir, "gone", &config, &["--bootstrap", &node_addr]);
    std::thread::sleep(Duration::from_secs(1));
    gone.kill();
    let (mut watcher, _) = start_dht_node(
        dir,
        "watcher",
        &config,
        &["--bootstrap", &node_addr, "--key-peer", &gone_addr, "--diag", "127.0.0.1:0"],
    );
    let diag = watcher.diag_addr();
    let resets = || counter(&expect_json(diag, "/debug/p2p/keepalive/metrics"), "reset_events_published");
    eventually(30, "a first reset", &[&watcher], || (resets() >= 1).then_some(()));
    let (r0, t0) = (resets(), Instant::now());
    // At least 12 s (four cool-downs), and on until two more resets came: on a loaded machine
    // the repairs behind them may run late, which only widens the window the bound allows for.
    std::thread::sleep(Duration::from_secs(12));
    eventually(60, "two more resets", &[&watcher], || (resets() >= r0 + 2).then_some(()));
    let (r1, window) = (resets(), t0.elapsed());
    let allowed = window.as_secs_f64() / cool_down.as_secs_f64() + 1.0;
    let published = (r1 - r0) as f64;
    assert!(published <= allowed, "{published} resets in {window:?}, at most {allowed}");
    assert!(published >= 2.0, "repairs keep failing and resets keep coming: {published}");
    let m = expect_json(diag, "/debug/p2p/keepalive/metrics");
    let view = expect_json(diag, "/debug/p2p/keepalive");
    assert!(counter(&m, "repair_fail") > counter(&m, "reset_events_published"), "some resets were held back: {m}");
    assert!(view["resets_suppressed"].as_u64().unwrap() >= 1, "{view}");
    assert_eq!(counter(&m, "repair_success"), 0, "{m}");
    let peer = &view["key_peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| gone_addr.ends_with(p["peer_id"].as_str().unwrap()))
        .cloned()
        .unwrap();
    assert_eq!(peer["source"], "configured");
    assert_eq!(peer["connected"], false);
    assert!(peer["consecutive_failures"].as_u64().unwrap() >= 3, "{peer}");
    drop((watcher, node));
}

/// The node's own troubles bring discovery forward too: its only bootstrap node is gone, so
/// the Kademlia bootstrap (a closest-peers lookup) finds nobody, and a reset is published
/// with that cause. (The bootstrap node's address-book entry expires too, but the node is a
/// key peer: its probes and repair judge it. The book's expiry is unit-tested in
/// `p2p/book.rs`.)
#[test]
fn a_failed_lookup_publishes_a_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = write_config(dir, "shoal.toml", 1, "discovery_reset_cool_down = \"0s\"\n");
    let (mut gone, gone_addr) = start_dht_node(dir, "gone", &config, &[]);
    gone.kill();
    let gone_id = gone_addr.rsplit('/').next().unwrap().to_string();
    let (watcher, _) = start_dht_node(dir, "watcher", &config, &["--bootstrap", &gone_addr]);
    eventually(60, "a reset for the failed lookup", &[&watcher], || {
        let log = watcher.log_text();
        log.contains("reset event published: a closest-peers lookup found nobody").then_some(())
    });
    let expired = format!("reset event published: the address-book entry of {gone_id} expired");
    assert!(!watcher.log_text().contains(&expired), "a key peer's expiry is its repair's to judge");
}

/// With `key_peers_from_routing_table`, a peer the watcher only learned through the DHT (it
/// is in its Kademlia routing table) becomes a key peer with source `routing_table`.
#[test]
fn routing_table_peers_become_key_peers_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = write_config(dir, "shoal.toml", 3, "key_peers_from_routing_table = true\n");
    let (_hub, hub_addr) = start_dht_node(dir, "hub", &config, &[]);
    let (_other, other_addr) = start_dht_node(dir, "other", &config, &["--bootstrap", &hub_addr]);
    let other_id = other_addr.rsplit('/').next().unwrap().to_string();
    let extra = ["--bootstrap", hub_addr.as_str(), "--diag", "127.0.0.1:0"];
    let (mut watcher, _) = start_dht_node(dir, "watcher", &config, &extra);
    let diag = watcher.diag_addr();
    let source = eventually(60, "the other node as a routing-table key peer", &[&watcher], || {
        let view = expect_json(diag, "/debug/p2p/keepalive");
        let peers = view["key_peers"].as_array()?.clone();
        peers.into_iter().find(|p| p["peer_id"] == other_id.as_str()).map(|p| p["source"].clone())
    });
    assert_eq!(source, "routing_table");
}

/// With `--no-kad` there is no libp2p node, so no key peer can be watched: the monitor says
/// so once in the log and its diagnostics view says it is off and why.
#[test]
fn without_kademlia_the_monitor_says_once_it_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(dir.path(), "data.bin", PIECE, 44);
    let torrent = torrent_of(dir.path(), &data);
    let args =
        ["seed", &s(&data), "--torrent", &torrent, "--listen", "127.0.0.1:0", "--no-kad", "--diag", "127.0.0.1:0"];
    let mut seeder = Proc::spawn("shoal-seed", dir.path(), &args, &[("RUST_LOG", "shoal=debug")]);
    let diag = seeder.diag_addr();
    let view = expect_json(diag, "/debug/p2p/keepalive");
    assert_eq!(view["enabled"], false, "{view}");
    assert!(view["reason"].as_str().is_some_and(|r| r.contains("--no-kad")), "{view}");
    // The line is written before the session accepts peers, so before `listening diag`.
    let log = seeder.log_text();
    assert_eq!(log.matches("key-peer monitor idle").count(), 1, "{log}");
}

/// An invalid config file exits 2 with a message naming the key at fault.
#[test]
fn invalid_config_exits_2_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = make_file(dir, "x.bin", 100_000, 10);
    let torrent = torrent_of(dir, &file);
    for (text, key) in [
        ("no_such_key = 1\n", "no_such_key"),
        ("probe_timeout = \"soon\"\n", "probe_timeout"),
        ("probe_fail_threshold = 0\n", "probe_fail_threshold"),
        ("key_peers = [\"/ip4/127.0.0.1/tcp/1\"]\n", "key_peers"),
    ] {
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let args = args!["download", &torrent, "-o", dir.join("d"), "--config", &bad];
        let (status, _, stderr) = run_env(&args, &[], Duration::from_secs(60));
        assert_eq!(status.code(), Some(2), "{text}: {stderr}");
        assert!(stderr.contains(key), "{text}: {stderr}");
    }
    // The environment layer: a bad value names its variable, a valid one is checked as any.
    for (var, value, named) in [
        ("SHOAL_PROBE_TIMEOUT", "soon", "SHOAL_PROBE_TIMEOUT"),
        ("SHOAL_PROBE_FAIL_THRESHOLD", "0", "probe_fail_threshold"),
    ] {
        let args = args!["download", &torrent, "-o", dir.join("d")];
        let (status, _, stderr) = run_env(&args, &[(var, value)], Duration::from_secs(60));
        assert_eq!(status.code(), Some(2), "{var}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(named), "{var}={value}: {stderr}");
    }
}

/// Bound of each Kademlia query of the in-process nodes.
const QUERY: Duration = Duration::from_secs(5);

/// `find_peer`, retried every 200 ms while the DHT learns of the peer (the bootstrap node
/// must first have identified it), for at most 30 s: a generous bound on a loaded machine,
/// not a window the lookup has to hit.
async fn find_soon(node: &shoal::p2p::NodeHandle, id: libp2p::PeerId) -> Result<Vec<libp2p::Multiaddr>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = node.find_peer(id).await.map_err(|e| e.to_string());
        if last.is_ok() || Instant::now() > deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the repair chain relies on, over the library: a peer restarted on a new port under
/// the same key is found again by PeerId through the DHT, and `dial` reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_found_by_peer_id_and_dialled() {
    use libp2p::identity::Keypair;
    use shoal::p2p::DhtMode;
    tokio::time::timeout(Duration::from_secs(120), async {
        let boot = spawn_node(Keypair::generate_ed25519(), DhtMode::Server, &[], QUERY).await;
        let boot_addrs = boot.listen_addrs().await.unwrap();
        let key = Keypair::generate_ed25519();
        let a = spawn_node(key.clone(), DhtMode::Server, &boot_addrs, QUERY).await;
        let id = a.peer_id();
        let b = spawn_node(Keypair::generate_ed25519(), DhtMode::Client, &boot_addrs, QUERY).await;
        // No "B cannot dial A yet" here: B's own bootstrap may already have met A through the
        // bootstrap node, and that is a race, not what this test is about.
        let found = find_soon(&b, id).await.expect("found");
        b.dial(id).await.expect("dialled");
        assert!(b.is_connected(id).await.unwrap());
        a.shutdown().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.is_connected(id).await.unwrap() {
            assert!(Instant::now() < deadline, "connection never closed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(b.dial(id).await.is_err(), "down");
        assert!(b.find_peer(id).await.is_err(), "a dead peer is in no lookup's answer");
        let a2 = spawn_node(key, DhtMode::Server, &boot_addrs, QUERY).await;
        let new_addrs = a2.listen_addrs().await.unwrap();
        let again = find_soon(&b, id).await.expect("found again");
        assert_ne!(again, found);
        assert!(
            new_addrs.iter().any(|n| again.iter().any(|a| n.to_string().starts_with(&a.to_string()))),
            "{again:?} vs {new_addrs:?}"
        );
        b.dial(id).await.expect("redialled");
    })
    .await
    .expect("bounded");
}
