//! The real side of a hostile-peer test: generated data and its torrent, a `shoal seed`
//! process to attack, honest `shoal download` processes that must still complete
//! byte-identical, and the checks that the target survived (still running, no panic in its
//! log). Processes are `crate::common::process::Proc`s: killed by PID on drop.
use super::seeder::Geometry;
use crate::common::process::Proc;
use crate::common::torrent::{assert_same_bytes, data_and_torrent, read_metainfo};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an honest download may take: a hang detector, not a speed requirement.
pub const HONEST: Duration = Duration::from_secs(90);

/// One torrent on disk: `dir/seed/data.bin` and `dir/data.torrent`.
pub struct Scene {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub torrent: PathBuf,
    pub geo: Geometry,
    bytes: Vec<u8>,
}

impl Scene {
    /// `size` bytes of generated data in pieces of `piece` (as `shoal create --piece-size`
    /// takes it, e.g. "256KiB").
    pub fn new(size: usize, piece: &str, seed: u64) -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, torrent) = data_and_torrent(dir.path(), size, seed, piece);
        let meta = read_metainfo(&torrent);
        let bytes = std::fs::read(&data).expect("read the data");
        Scene { geo: Geometry::of(&meta), dir, data, torrent, bytes }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bytes of one block of the original data.
    pub fn block(&self, index: u32, begin: u32, len: u32) -> &[u8] {
        let at = index as usize * self.geo.piece_length as usize + begin as usize;
        &self.bytes[at..at + len as usize]
    }

    /// `shoal seed` for this torrent on 127.0.0.1 (debug log), once it listens.
    pub fn seeder(&self, name: &str) -> (Proc, SocketAddr) {
        self.seeder_with(name, &[])
    }

    /// [`Scene::seeder`] with more flags (`--super-seed`, `--diag ADDR`...).
    pub fn seeder_with(&self, name: &str, extra: &[&str]) -> (Proc, SocketAddr) {
        let mut args: Vec<OsString> = vec!["seed".into(), self.data.clone().into(), "--torrent".into()];
        args.extend([self.torrent.clone().into(), "--listen".into(), "127.0.0.1:0".into(), "--no-kad".into()]);
        args.extend(extra.iter().map(OsString::from));
        let mut p = Proc::spawn(name, self.path(), &args, &[("RUST_LOG", "shoal=debug")]);
        let addr = p.bt_addr();
        (p, addr)
    }

    /// `shoal download` of this torrent into `dir/NAME/`, dialling `peers`; running.
    pub fn download(&self, name: &str, peers: &[SocketAddr]) -> Proc {
        let out = self.path().join(name);
        let mut args: Vec<OsString> = vec!["download".into(), self.torrent.clone().into(), "-o".into(), out.into()];
        args.extend(["--listen", "127.0.0.1:0", "--no-kad", "--quiet"].map(OsString::from));
        for p in peers {
            args.extend(["--peer".into(), p.to_string().into()]);
        }
        Proc::spawn(name, self.path(), &args, &[("RUST_LOG", "shoal=debug")])
    }

    /// An honest `shoal download` from `peers` that must exit 0 within [`HONEST`] with the
    /// data byte-identical. Returns its log.
    pub fn honest_download(&self, name: &str, peers: &[SocketAddr]) -> String {
        let mut p = self.download(name, peers);
        p.expect_success(HONEST);
        assert_same_bytes(&self.data, &self.path().join(name).join("data.bin"));
        assert_no_panic(&p);
        p.log_text()
    }
}

/// Fails if the process's log shows a panic (tokio catches panics in tasks: the process
/// lives on, so its log is where they show).
pub fn assert_no_panic(p: &Proc) {
    if p.log_text().contains("panicked at") {
        p.fail("panicked");
    }
}

/// The target must still be running and must not have panicked.
pub fn assert_alive(p: &mut Proc) {
    if !p.is_running() {
        p.fail("exited under attack");
    }
    assert_no_panic(p);
}
