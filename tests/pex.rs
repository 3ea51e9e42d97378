//! BEP 11 peer exchange with python3-libtorrent, both ways, over 127.0.0.1:
//!
//! - shoal learns: a shoal leecher is told of one libtorrent peer only, a peer that has half
//!   the data and downloads at 1 KB/s (so it stays a leecher, connected to the two libtorrent
//!   seeders it dialled). The leecher's log shows both seeders' addresses learned through PEX,
//!   and it completes byte-identical (the half-peer alone could not serve it). Whether it
//!   dials them or they dial it first (libtorrent's PEX tells them of it) is a race this test
//!   does not judge; `pex_swarm.rs` shows shoal dialling a peer only PEX named.
//! - shoal tells: a libtorrent leecher (capped at 1 KB/s, so it keeps wanting peers) is told
//!   of one shoal seeder, which is connected to a shoal leecher (half the data, capped at
//!   8 KB/s: it stays a leecher, since two seeds close their connection). The shoal leecher's
//!   `/debug/p2p/peers` comes to list the libtorrent client: only the seeder's PEX could have
//!   named it.
//!
//! Every wait has a deadline well past PEX's first message (sent at the first tick after the
//! extension handshake) plus one full minute, the interval between two messages, in case the
//! first one went out before the hub had its seeders.
mod common;

use common::clients::{lt_peer, lt_peer_with, skip_on_purpose, TRANSFER};
use common::http::get_json;
use common::process::{Proc, STARTUP};
use common::torrent::{assert_same_bytes, create_torrent, make_file};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const NAME: &str = "payload.bin";
const SIZE: usize = 4 * 1024 * 1024 + 4321;
const PEX_WAIT: Duration = Duration::from_secs(150);

struct Fixture {
    dir: TempDir,
    data: PathBuf,
    torrent: PathBuf,
    logs: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::create_dir_all(&logs).unwrap();
        let data = make_file(&seed, NAME, SIZE, 5);
        let torrent = dir.path().join("payload.torrent");
        create_torrent(&data, &torrent, "256KiB", None);
        Fixture { dir, data, torrent, logs }
    }

    /// A directory holding a copy of the data, or of its first half only (the rest zeros).
    fn copy(&self, name: &str, half: bool) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = std::fs::read(&self.data).unwrap();
        if half {
            bytes[SIZE / 2..].fill(0);
        }
        std::fs::write(dir.join(NAME), bytes).unwrap();
        dir
    }
}

/// The addresses in the `peers learned via PEX ... addrs=[...]` lines of a shoal debug log.
fn learned_via_pex(log: &str) -> String {
    log.lines().filter(|l| l.contains("peers learned via PEX")).collect::<Vec<_>>().join("\n")
}

#[test]
fn shoal_learns_of_libtorrent_seeders_through_libtorrent_pex() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new();
    let (s2, p2) = lt_peer("seed", &f.torrent, &f.copy("s2", false), &[], &f.logs);
    let (s3, p3) = lt_peer("seed", &f.torrent, &f.copy("s3", false), &[], &f.logs);
    let seeders = [format!("127.0.0.1:{p2}"), format!("127.0.0.1:{p3}")];
    let hub_extra = ["--download-limit", "1000", "--timeout", "600"];
    let (_hub, hub) = lt_peer_with("leech", &f.torrent, &f.copy("hub", true), &seeders, &hub_extra, &f.logs);
    // Let the hub reach both seeders first. libtorrent names them in a PEX message within a
    // minute or so of our connection (the deadline allows two of its one-minute intervals).
    let start = Instant::now();
    while ![&s2, &s3].iter().all(|s| s.log_text().contains("incoming connection")) && start.elapsed() < STARTUP {
        std::thread::sleep(Duration::from_millis(100));
    }

    // `--seed` keeps the leecher connected to the hub after it completes, so a second PEX
    // message (a minute after the first) still reaches it.
    let out = f.dir.path().join("out");
    let mut args = crate::args!["download", &f.torrent, "-o", &out, "--seed", "--listen", "127.0.0.1:0"];
    args.extend(crate::args!["--no-kad", "--quiet", "--peer", format!("127.0.0.1:{hub}")]);
    let leecher = Proc::spawn("shoal-download", &f.logs, &args, &[("RUST_LOG", "shoal=debug")]);
    let start = Instant::now();
    loop {
        let learned = learned_via_pex(&leecher.log_text());
        if seeders.iter().all(|s| learned.contains(s.as_str())) {
            break;
        }
        if start.elapsed() > PEX_WAIT {
            leecher.fail(&format!("the seeders {seeders:?} never came through PEX: {learned}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let got = out.join(NAME);
    while std::fs::read(&got).ok() != std::fs::read(&f.data).ok() {
        if start.elapsed() > PEX_WAIT + TRANSFER {
            leecher.fail("the download is not byte-identical");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_same_bytes(&f.data, &got);
}

/// `shoal seed` with diagnostics, dialling `peers`, logging at debug level.
fn shoal_seed_with_diag(data: &Path, torrent: &Path, peers: &[String], logs: &Path, name: &str) -> Proc {
    let mut args = crate::args!["seed", data, "--torrent", torrent, "--listen", "127.0.0.1:0", "--no-kad", "--quiet"];
    args.extend(crate::args!["--diag", "127.0.0.1:0"]);
    for p in peers {
        args.extend(crate::args!["--peer", p]);
    }
    Proc::spawn(name, logs, &args, &[("RUST_LOG", "shoal=debug")])
}

#[test]
fn libtorrent_learns_of_a_shoal_peer_through_shoal_pex() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new();
    let mut args = crate::args!["download", &f.torrent, "-o", f.copy("b", true), "--listen", "127.0.0.1:0"];
    args.extend(crate::args!["--no-kad", "--quiet", "--diag", "127.0.0.1:0"]);
    let env = [("RUST_LOG", "shoal=debug"), ("SHOAL_DOWNLOAD_RATE_LIMIT", "8192")];
    let mut second = Proc::spawn("shoal-leech-b", &f.logs, &args, &env);
    let (second_bt, second_diag) = (second.bt_addr(), second.diag_addr());
    let mut first = shoal_seed_with_diag(&f.data, &f.torrent, &[second_bt.to_string()], &f.logs, "shoal-seed-a");
    let first_bt = first.bt_addr();
    let extra = ["--download-limit", "1000", "--timeout", "600"];
    let out = f.dir.path().join("lt-out");
    std::fs::create_dir_all(&out).unwrap();
    let (_lt, _) = lt_peer_with("leech", &f.torrent, &out, &[first_bt.to_string()], &extra, &f.logs);

    let start = Instant::now();
    loop {
        let peers = get_json(second_diag, "/debug/p2p/peers").unwrap_or_default();
        let clients: Vec<String> = peers["peers"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["client"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let lt = peers["peers"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["client"].as_str().is_some_and(|c| c.contains("libtorrent"))).cloned());
        if let Some(lt) = lt {
            // libtorrent offers both extensions shoal speaks, and BEP 6.
            assert_eq!(lt["extensions"], serde_json::json!(["ut_metadata", "ut_pex"]), "{lt}");
            assert_eq!(lt["fast"], true, "{lt}");
            break;
        }
        if start.elapsed() > PEX_WAIT + STARTUP {
            second.fail(&format!("libtorrent never reached the second seeder; its peers: {clients:?}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let sent = first.log_text().lines().filter(|l| l.contains("PEX sent")).count();
    assert!(sent >= 1, "the first seeder logged no PEX message");
}
