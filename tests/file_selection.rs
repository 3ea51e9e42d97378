//! BEP 53 file selection: `shoal download --only` fetches the chosen files of a multi-file
//! torrent from a python3-libtorrent seeder, byte-identical, never creates the others, keeps
//! the unselected share of pieces shared with chosen files in the part file, and finds all of
//! it again on a restart with no peer at all. A magnet's `so=` does the same once its metadata
//! is fetched from the seeder. Mistakes in the list exit 2 naming them.
//!
//! The torrent: `album/` with a (300 KiB + 7), b (500 KiB + 3) and c (200 KiB) in 256 KiB
//! pieces, so pieces 1 and 3 are shared (a|b and b|c) and piece 2 is b's alone.
mod common;

use common::clients::{lt_peer, shoal_download_with, skip_on_purpose, TRANSFER};
use common::process::run_env;
use common::torrent::{assert_same_bytes, create_torrent, make_file};
use std::path::{Path, PathBuf};
use std::time::Duration;

const KIB: usize = 1024;

/// The album's three files (data from `seed`, `seed + 1`, `seed + 2`), its torrent and its
/// info-hash, with `seed/`, `out/` and `logs/` below `dir`.
struct Album {
    files: [PathBuf; 3],
    torrent: PathBuf,
    hash: String,
    seed: PathBuf,
    out: PathBuf,
    logs: PathBuf,
}

fn album(dir: &Path, seed: u64) -> Album {
    let [seed_dir, out, logs] = ["seed", "out", "logs"].map(|d| dir.join(d));
    let root = seed_dir.join("album");
    let sizes = [300 * KIB + 7, 500 * KIB + 3, 200 * KIB];
    let files = [0, 1, 2].map(|i| make_file(&root, ["a", "b", "c"][i], sizes[i], seed + i as u64));
    let torrent = dir.join("album.torrent");
    let hash = create_torrent(&root, &torrent, "256KiB", None);
    std::fs::create_dir_all(&logs).unwrap();
    Album { files, torrent, hash, seed: seed_dir, out, logs }
}

#[test]
fn only_the_chosen_files_are_downloaded_and_the_rest_never_created() {
    if skip_on_purpose() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Album { files: [a, _b, c], torrent, hash, seed, out, logs } = album(dir.path(), 11);

    let (_seeder, port) = lt_peer("seed", &torrent, &seed, &[], &logs);
    let mut leecher = shoal_download_with(&torrent, &out, &["--only", "0,2"], &[format!("127.0.0.1:{port}")], &logs);
    leecher.expect_success(TRANSFER);
    assert_same_bytes(&a, &out.join("album/a"));
    assert_same_bytes(&c, &out.join("album/c"));
    assert!(!out.join("album/b").exists(), "the unselected file was created");
    // b's share of pieces 1 and 3: at most two piece-sized slots, far less than b.
    let parts = out.join(format!(".{hash}.parts"));
    let held = std::fs::metadata(&parts).expect("the part file holds b's share of shared pieces").len();
    assert!(held <= 2 * 256 * KIB as u64, "part file of {held} bytes");

    // A restart with no peer finds every chosen piece on disk, shared ones included.
    let args = args!["download", &torrent, "-o", &out, "--only", "0,2", "--listen", "127.0.0.1:0", "--no-kad"];
    let (status, _, err) = run_env(&args, &[], Duration::from_secs(60));
    assert!(status.success(), "restart did not complete from disk: {err}");
    assert!(err.contains("3 of 4 pieces on disk match"), "resume check found less than the chosen pieces:\n{err}");
    assert!(!out.join("album/b").exists());
}

#[test]
fn a_magnets_so_selects_files_once_its_metadata_is_fetched() {
    if skip_on_purpose() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Album { files: [_a, b, _c], torrent, hash, seed, out, logs } = album(dir.path(), 21);

    let (_seeder, port) = lt_peer("seed", &torrent, &seed, &[], &logs);
    let magnet = format!("magnet:?xt=urn:btih:{hash}&x.pe=127.0.0.1:{port}&so=1");
    let mut leecher = shoal_download_with(Path::new(&magnet), &out, &[], &[], &logs);
    leecher.expect_success(TRANSFER);
    assert_same_bytes(&b, &out.join("album/b"));
    for other in ["a", "c"] {
        assert!(!out.join("album").join(other).exists(), "{other} was created though so=1 leaves it out");
    }
}

#[test]
fn a_bad_selection_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let album = dir.path().join("album");
    make_file(&album, "a", 40 * KIB, 1);
    make_file(&album, "b", 40 * KIB, 2);
    let torrent = dir.path().join("album.torrent");
    create_torrent(&album, &torrent, "16KiB", None);
    let out = dir.path().join("out");
    for (list, named) in [("0,5", "file 5 does not exist"), ("1-x", "bad file list"), ("3-1", "bad file list")] {
        let args = args!["download", &torrent, "-o", &out, "--only", list, "--no-kad"];
        let (status, _, err) = run_env(&args, &[], Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "--only {list}: {err}");
        assert!(err.contains("--only") && err.contains(named), "--only {list}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}
