//! Interop with the BitTorrent clients people run: shoal downloads from python3-libtorrent and
//! aria2c seeders, and those clients download from a shoal seeder, complete and byte-identical.
//!
//! Each direction is shown both ways a peer can be found: with an address given directly
//! (`shoal download --peer`, `lt_peer.py --peer`, or `shoal seed --peer` dialling the client) and
//! through a real opentracker. Everything runs on 127.0.0.1 as child processes (the `shoal`
//! binary, `/usr/bin/python3 tests/common/lt_peer.py`, `aria2c`, `opentracker`), each killed by
//! PID when its test ends; every wait has a deadline, so a stalled transfer fails its test.
//!
//! The data is 6 MiB and 12,345 bytes of random content in 256 KiB pieces: 25 pieces, the last
//! one short and ending in a partial block.
//!
//! A missing client fails the test, unless `SHOAL_SKIP_INTEROP=1` is set to skip on purpose.
//!
//! What these tests caught: aria2c announces the pieces it gains with further `bitfield`
//! messages instead of `have`s, which shoal used to refuse as a protocol violation (the
//! `aria2_downloads_from_shoal_*` tests stalled after aria2's first piece).
mod common;

use common::clients::{
    aria2, lt_peer, require_aria2, require_libtorrent, shoal_download, shoal_seeder, skip_on_purpose, Opentracker,
    TRANSFER,
};
use common::ports::free_port;
use common::torrent::{assert_same_bytes, create_torrent, make_file};
use std::path::PathBuf;
use tempfile::TempDir;

const NAME: &str = "payload.bin";
const SIZE: usize = 6 * 1024 * 1024 + 12_345;
const PIECE: &str = "256KiB";

/// One test's files: the data in `seed/`, its torrent, an empty `out/` for the leecher, and
/// `logs/` for the children's stderr.
struct Fixture {
    _dir: TempDir,
    seed_dir: PathBuf,
    data: PathBuf,
    torrent: PathBuf,
    hash: String,
    out: PathBuf,
    logs: PathBuf,
}

impl Fixture {
    /// Data seeded by `seed`; the torrent announces to a tracker on `tracker_port` if given.
    fn new(seed: u64, tracker_port: Option<u16>) -> Fixture {
        let dir = tempfile::tempdir().expect("create tempdir");
        let [seed_dir, out, logs] = ["seed", "out", "logs"].map(|d| dir.path().join(d));
        for d in [&seed_dir, &out, &logs] {
            std::fs::create_dir(d).unwrap();
        }
        let data = make_file(&seed_dir, NAME, SIZE, seed);
        let torrent = dir.path().join("payload.torrent");
        let url = tracker_port.map(Opentracker::url);
        let hash = create_torrent(&data, &torrent, PIECE, url.as_deref());
        Fixture { _dir: dir, seed_dir, data, torrent, hash, out, logs }
    }

    fn downloaded(&self) -> PathBuf {
        self.out.join(NAME)
    }

    fn check(&self) {
        assert_same_bytes(&self.data, &self.downloaded());
    }
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

// ---- shoal downloads from python3-libtorrent ----

#[test]
fn shoal_downloads_from_libtorrent_given_its_address() {
    if skip_on_purpose() {
        return;
    }
    let f = Fixture::new(1, None);
    let (_seeder, port) = lt_peer("seed", &f.torrent, &f.seed_dir, &[], &f.logs);
    let mut leecher = shoal_download(&f.torrent, &f.out, &[local(port)], &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}

#[test]
fn shoal_downloads_from_libtorrent_found_through_opentracker() {
    if skip_on_purpose() {
        return;
    }
    let tport = free_port();
    let f = Fixture::new(2, Some(tport));
    let tracker = Opentracker::start(tport, &[&f.hash], &f.logs);
    let (_seeder, _) = lt_peer("seed", &f.torrent, &f.seed_dir, &[], &f.logs);
    tracker.wait_for_seeder(&f.hash);
    let mut leecher = shoal_download(&f.torrent, &f.out, &[], &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}

// ---- shoal downloads from aria2c ----

#[test]
fn shoal_downloads_from_aria2_given_its_address() {
    if skip_on_purpose() {
        return;
    }
    let f = Fixture::new(3, None);
    let port = free_port();
    let _seeder = aria2(true, &f.torrent, &f.seed_dir, port, &f.logs);
    let mut leecher = shoal_download(&f.torrent, &f.out, &[local(port)], &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}

#[test]
fn shoal_downloads_from_aria2_found_through_opentracker() {
    if skip_on_purpose() {
        return;
    }
    let tport = free_port();
    let f = Fixture::new(4, Some(tport));
    let tracker = Opentracker::start(tport, &[&f.hash], &f.logs);
    let _seeder = aria2(true, &f.torrent, &f.seed_dir, free_port(), &f.logs);
    tracker.wait_for_seeder(&f.hash);
    let mut leecher = shoal_download(&f.torrent, &f.out, &[], &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}

// ---- python3-libtorrent downloads from shoal ----

#[test]
fn libtorrent_downloads_from_shoal_given_its_address() {
    if skip_on_purpose() {
        return;
    }
    require_libtorrent();
    let f = Fixture::new(5, None);
    let (_seeder, port) = shoal_seeder(&f.data, &f.torrent, &[], &f.logs);
    let (mut leecher, _) = lt_peer("leech", &f.torrent, &f.out, &[local(port)], &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}

#[test]
fn libtorrent_downloads_from_shoal_that_dials_it() {
    if skip_on_purpose() {
        return;
    }
    let f = Fixture::new(6, None);
    let (mut leecher, port) = lt_peer("leech", &f.torrent, &f.out, &[], &f.logs);
    let (_seeder, _) = shoal_seeder(&f.data, &f.torrent, &[local(port)], &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}

#[test]
fn libtorrent_downloads_from_shoal_found_through_opentracker() {
    if skip_on_purpose() {
        return;
    }
    require_libtorrent();
    let tport = free_port();
    let f = Fixture::new(7, Some(tport));
    let tracker = Opentracker::start(tport, &[&f.hash], &f.logs);
    let (_seeder, _) = shoal_seeder(&f.data, &f.torrent, &[], &f.logs);
    tracker.wait_for_seeder(&f.hash);
    let (mut leecher, _) = lt_peer("leech", &f.torrent, &f.out, &[], &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}

// ---- aria2c downloads from shoal ----

#[test]
fn aria2_downloads_from_shoal_that_dials_it() {
    if skip_on_purpose() {
        return;
    }
    let f = Fixture::new(8, None);
    let port = free_port();
    let mut leecher = aria2(false, &f.torrent, &f.out, port, &f.logs);
    let (_seeder, _) = shoal_seeder(&f.data, &f.torrent, &[local(port)], &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}

#[test]
fn aria2_downloads_from_shoal_found_through_opentracker() {
    if skip_on_purpose() {
        return;
    }
    require_aria2();
    let tport = free_port();
    let f = Fixture::new(9, Some(tport));
    let tracker = Opentracker::start(tport, &[&f.hash], &f.logs);
    let (_seeder, _) = shoal_seeder(&f.data, &f.torrent, &[], &f.logs);
    tracker.wait_for_seeder(&f.hash);
    let mut leecher = aria2(false, &f.torrent, &f.out, free_port(), &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}
