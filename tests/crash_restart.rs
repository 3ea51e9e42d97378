//! Crash loop (issue 8, "Crash and disk faults"): a download SIGKILLed at random points 50
//! times and restarted always finishes byte-identical, and no start ever claims a piece that
//! is not byte-identical on disk (nor forgets one that is).
//!
//! One `shoal seed` on 127.0.0.1 serves a 32 MiB torrent of 16 KiB pieces; each round starts
//! `shoal download T -o DIR --peer SEEDER --no-kad` and kills it by PID at a point drawn from a
//! seeded RNG (`SHOAL_CRASH_SEED` overrides the seed): mostly after a random number of its
//! `piece verified` lines (spread so the download lasts the 50 rounds), sometimes during
//! start-up before the resume check has printed anything. Before each start the test computes
//! which pieces on disk equal the source; the start's `resume check bitfield` must say exactly
//! those. A process that exits on its own must exit 0 with the whole file identical.
// `args!` builds a Vec because some call sites extend it; others pass it once.
#![allow(clippy::useless_vec)]
mod common;

use common::logs::{count_lines, resume_claims};
use common::process::{serial, Proc};
use common::torrent::{assert_same_bytes, data_and_torrent, pieces_matching};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};

const PIECE: usize = 16 * 1024;
/// Large enough that one round's share of the pieces takes longer than the gap between seeing
/// a log line and the kill landing, so most rounds die mid-download.
const SIZE: usize = 32 * 1024 * 1024 + 4321;
const ROUNDS: usize = 50;
/// The resume bitfield and one line per verified piece, besides the usual info lines.
const LOG: &str = "shoal=info,shoal::storage=debug,shoal::cli::download=debug";
/// Bounds on a start reaching its resume check, and on one whole download.
const CHECKED: Duration = Duration::from_secs(60);
const DOWNLOAD: Duration = Duration::from_secs(180);

fn start(dir: &Path, round: usize, torrent: &Path, out: &Path, peer: &str) -> Proc {
    let a = args!["download", torrent, "-o", out, "--peer", peer, "--no-kad", "--listen", "127.0.0.1:0"];
    Proc::spawn(&format!("round{round}"), dir, &a, &[("RUST_LOG", LOG)])
}

/// Waits for the start's resume claims; a process that exits first has skipped its check.
fn wait_claims(p: &mut Proc, pieces: usize) -> Vec<bool> {
    let deadline = Instant::now() + CHECKED;
    loop {
        if let Some(c) = resume_claims(&p.log_text(), pieces) {
            return c;
        }
        if !p.is_running() {
            // The line may have landed between the read and the exit.
            if let Some(c) = resume_claims(&p.log_text(), pieces) {
                return c;
            }
            p.fail("exited without a resume check line");
        }
        if Instant::now() >= deadline {
            p.fail(&format!("no resume check line within {CHECKED:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every claimed piece is byte-identical on disk, and every identical one is claimed.
fn check_claims(p: &Proc, claims: &[bool], on_disk: &[bool]) {
    for (i, (&claimed, &good)) in claims.iter().zip(on_disk).enumerate() {
        if claimed && !good {
            p.fail(&format!("claims piece {i}, which is not byte-identical on disk"));
        }
        if good && !claimed {
            p.fail(&format!("piece {i} is intact on disk but the resume check did not keep it"));
        }
    }
}

/// Returns once the process has logged `k` verified pieces or has exited.
fn wait_verified(p: &mut Proc, k: usize) {
    let deadline = Instant::now() + DOWNLOAD;
    while p.is_running() && count_lines(&p.log_text(), "piece verified") < k {
        if Instant::now() >= deadline {
            p.fail(&format!("fewer than {k} pieces verified within {DOWNLOAD:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A process that ended by itself must have succeeded with every byte in place.
fn assert_finished(p: &mut Proc, source: &Path, got: &Path) {
    let status = p.wait_exit(Duration::from_secs(10));
    if !status.success() {
        p.fail(&format!("exited on its own with {status}"));
    }
    assert_same_bytes(source, got);
}

#[test]
fn sigkilled_50_times_then_finishes_byte_identical() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, torrent) = data_and_torrent(dir, SIZE, 77, "16KiB");
    let source = std::fs::read(&data).unwrap();
    let pieces = SIZE.div_ceil(PIECE);
    let seed_args = args!["seed", &data, "--torrent", &torrent, "--listen", "127.0.0.1:0", "--no-kad"];
    let mut seeder = Proc::spawn("seeder", dir, &seed_args, &[]);
    let peer = seeder.bt_addr().to_string();
    let (out, got) = (dir.join("out"), dir.join("out/data.bin"));

    let seed = std::env::var("SHOAL_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut checked, mut ended) = (0, 0);
    let mut progress = Vec::new();
    for round in 0..ROUNDS {
        let on_disk = pieces_matching(&source, &got, PIECE);
        let missing = on_disk.iter().filter(|g| !**g).count();
        progress.push(pieces - missing);
        let mut p = start(dir, round, &torrent, &out, &peer);
        if rng.gen_bool(0.1) {
            // Killed during start-up: loading, listening, the resume check itself.
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        } else {
            let claims = wait_claims(&mut p, pieces);
            check_claims(&p, &claims, &on_disk);
            checked += 1;
            // Up to an even share of what is left (the kill lands some pieces later than the
            // line it waited for), so kills land all along the download.
            let k = rng.gen_range(0..=(missing / (ROUNDS - round)).max(1));
            wait_verified(&mut p, k);
            std::thread::sleep(Duration::from_micros(rng.gen_range(0..3_000)));
        }
        if p.is_running() {
            p.kill();
        } else {
            assert_finished(&mut p, &data, &got);
            ended += 1;
        }
    }
    let on_disk = pieces_matching(&source, &got, PIECE);
    let kept = on_disk.iter().filter(|g| **g).count();
    let mut last = start(dir, ROUNDS, &torrent, &out, &peer);
    let claims = wait_claims(&mut last, pieces);
    check_claims(&last, &claims, &on_disk);
    last.expect_success(DOWNLOAD);
    assert_same_bytes(&data, &got);
    assert!(seeder.is_running(), "the seeder survived 50 killed leechers");
    eprintln!(
        "seed {seed:#x}: {ROUNDS} rounds, {checked} resume checks compared with the disk, {ended} ended on their own; \
         {kept} of {pieces} pieces on disk before the last run; before each round: {progress:?}"
    );
}
