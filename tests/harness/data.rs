//! Generated test data shared by the test helper modules (`harness`, `procs`).
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `size` deterministic pseudo-random bytes to `dir/name`.
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
