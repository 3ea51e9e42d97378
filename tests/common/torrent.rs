//! Test data and torrents: generated files, `.torrent` files made by `shoal create` (for
//! process tests) or in process (for library tests), and byte-for-byte comparisons.
use super::process::run_ok;
use shoal::metainfo::create::{create_torrent as create_in_process, CreateOptions};
use shoal::metainfo::Metainfo;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Writes `size` deterministic pseudo-random bytes (the same for the same `seed`) to
/// `dir/name`, creating `dir`.
pub fn make_file(dir: &Path, name: &str, size: usize, seed: u64) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let mut state = seed | 1;
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
    path
}

/// Copies `src` into `dir` under the same file name (a second seeder's own copy).
pub fn copy_into(src: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let to = dir.join(src.file_name().unwrap());
    std::fs::copy(src, &to).unwrap();
    to
}

/// `shoal create DATA -o TORRENT --piece-size PIECE [--tracker URL]` (bounded); returns the
/// hex info-hash it prints.
pub fn create_torrent(data: &Path, torrent: &Path, piece: &str, tracker: Option<&str>) -> String {
    let mut args: Vec<OsString> = crate::args!["create", data, "-o", torrent, "--piece-size", piece];
    if let Some(url) = tracker {
        args.extend(crate::args!["--tracker", url]);
    }
    let stdout = run_ok(&args, Duration::from_secs(60));
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("info-hash: "))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("shoal create printed no info-hash: {stdout:?}"))
}

/// `size` bytes of generated data in `dir/seed/data.bin` and their torrent, in pieces of
/// `piece` (as `--piece-size` takes it, e.g. "256KiB"), in `dir/data.torrent`.
pub fn data_and_torrent(dir: &Path, size: usize, seed: u64, piece: &str) -> (PathBuf, PathBuf) {
    let data = make_file(&dir.join("seed"), "data.bin", size, seed);
    let torrent = dir.join("data.torrent");
    create_torrent(&data, &torrent, piece, None);
    (data, torrent)
}

/// The parsed `.torrent` file at `path`.
pub fn read_metainfo(path: &Path) -> Metainfo {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Metainfo::from_bytes(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The torrent of the file at `path` in pieces of `piece_length`, made in process.
pub fn make_torrent(path: &Path, piece_length: u32) -> Arc<Metainfo> {
    let opts = CreateOptions { piece_length: Some(piece_length), ..Default::default() };
    let bytes = create_in_process(path, &opts).unwrap();
    Arc::new(Metainfo::from_bytes(&bytes).unwrap())
}

/// Fails unless the two files hold the same bytes, naming the first byte that differs.
pub fn assert_same_bytes(expected: &Path, got: &Path) {
    let a = std::fs::read(expected).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
    let b = std::fs::read(got).unwrap_or_else(|e| panic!("{}: {e}", got.display()));
    assert_eq!(a.len(), b.len(), "{} and {} differ in length", expected.display(), got.display());
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(first.is_none(), "{} and {} differ, first at byte {first:?}", expected.display(), got.display());
}

/// Which pieces of `got` (possibly missing or short) are byte-identical to `source`.
pub fn pieces_matching(source: &[u8], got: &Path, piece_len: usize) -> Vec<bool> {
    let disk = std::fs::read(got).unwrap_or_default();
    source
        .chunks(piece_len)
        .enumerate()
        .map(|(i, want)| disk.get(i * piece_len..i * piece_len + want.len()) == Some(want))
        .collect()
}
