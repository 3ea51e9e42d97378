//! ctorrent 3.3 (Enhanced CTorrent dnh3.3.2) downloading from `shoal seed` through a real
//! opentracker, on 127.0.0.1, byte-identical.
//!
//! What this test caught: with 16 MiB pieces ctorrent sends about 2,560 requests at once. It
//! has no BEP 10, so it never sees the `reqq` we advertise; shoal queued 500 and dropped the
//! rest silently, and ctorrent waited for them for ever (the download stalled part way). shoal
//! now queues thousands of request descriptors per peer and reads the blocks as its send
//! buffers allow.
//!
//! A missing client fails the test, unless `SHOAL_SKIP_INTEROP=1` is set to skip on purpose.
mod common;

use common::clients::{ctorrent, shoal_seeder, skip_on_purpose, Opentracker, TRANSFER};
use common::ports::free_port;
use common::torrent::{assert_same_bytes, create_torrent, make_file};

/// Three 16 MiB pieces: ctorrent asks for more blocks at once than one piece holds.
const SIZE: usize = 48 * 1024 * 1024;

#[test]
fn ctorrent_downloads_16_mib_pieces_from_shoal() {
    if skip_on_purpose() {
        return;
    }
    common::clients::require_ctorrent();
    let _turn = common::process::serial();
    let dir = tempfile::tempdir().expect("create tempdir");
    let [seed_dir, out, logs] = ["seed", "out", "logs"].map(|d| dir.path().join(d));
    for d in [&seed_dir, &out, &logs] {
        std::fs::create_dir(d).unwrap();
    }
    let data = make_file(&seed_dir, "payload.bin", SIZE, 16);
    let torrent = dir.path().join("payload.torrent");
    let tport = free_port();
    let hash = create_torrent(&data, &torrent, "16MiB", Some(&Opentracker::url(tport)));
    let tracker = Opentracker::start(tport, &[&hash], &logs);
    let (_seeder, _) = shoal_seeder(&data, &torrent, &[], &logs);
    tracker.wait_for_seeder(&hash);
    let got = out.join("payload.bin");
    let mut leecher = ctorrent(&torrent, &got, free_port(), &logs);
    leecher.expect_success(TRANSFER);
    assert_same_bytes(&data, &got);
}
