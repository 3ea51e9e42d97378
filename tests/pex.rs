//! BEP 11 peer exchange with python3-libtorrent, both ways, over 127.0.0.1:
//!
//! - shoal learns: a shoal leecher is told of one libtorrent peer only, a peer that has half
//!   the data and downloads at 1 KB/s (so it stays a leecher, connected to the two libtorrent
//!   seeders it dialled). shoal can only finish by reaching those seeders, and only PEX names
//!   them: the download completing byte-identical is the proof, and its log shows both
//!   seeders connected with source `pex`.
//! - shoal tells: a libtorrent leecher (capped at 1 KB/s, so it keeps wanting peers) is told
//!   of one shoal seeder, which is connected to a second shoal seeder. The second seeder's
//!   `/debug/p2p/peers` comes to list the libtorrent client: only the first seeder's PEX
//!   could have named it.
//!
//! Every wait has a deadline well past PEX's first message (sent at the first tick after the
//! extension handshake) plus one full minute, the interval between two messages, in case the
//! first one went out before the hub had its seeders.
mod common;

use common::clients::{lt_peer, lt_peer_with, shoal_download, skip_on_purpose, TRANSFER};
use common::http::get_json;
use common::logs::field;
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

/// `connected peer=ADDR ... source=pex` lines of a shoal debug log.
fn pex_connections(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(" connected ") && field(l, "source") == Some("pex"))
        .filter_map(|l| field(l, "peer").map(str::to_string))
        .collect()
}

#[test]
fn shoal_learns_of_libtorrent_seeders_through_libtorrent_pex() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new();
    let (_s2, p2) = lt_peer("seed", &f.torrent, &f.copy("s2", false), &[], &f.logs);
    let (_s3, p3) = lt_peer("seed", &f.torrent, &f.copy("s3", false), &[], &f.logs);
    let seeders = [format!("127.0.0.1:{p2}"), format!("127.0.0.1:{p3}")];
    let hub_extra = ["--download-limit", "1000", "--timeout", "600"];
    let (_hub, hub) = lt_peer_with("leech", &f.torrent, &f.copy("hub", true), &seeders, &hub_extra, &f.logs);

    let out = f.dir.path().join("out");
    let mut leecher = shoal_download(&f.torrent, &out, &[format!("127.0.0.1:{hub}")], &f.logs);
    leecher.expect_success(PEX_WAIT + TRANSFER);
    assert_same_bytes(&f.data, &out.join(NAME));
    let log = leecher.log_text();
    let learned = pex_connections(&log);
    for s in &seeders {
        if !learned.contains(s) {
            leecher.fail(&format!("{s} was not connected as a PEX peer: {learned:?}"));
        }
    }
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
fn libtorrent_learns_of_a_shoal_seeder_through_shoal_pex() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new();
    let mut second = shoal_seed_with_diag(&f.copy("b", false).join(NAME), &f.torrent, &[], &f.logs, "shoal-seed-b");
    let (second_bt, second_diag) = (second.bt_addr(), second.diag_addr());
    let mut first =
        shoal_seed_with_diag(&f.data, &f.torrent, &[second_bt.to_string()], &f.logs, "shoal-seed-a");
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
        if clients.iter().any(|c| c.contains("libtorrent")) {
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
