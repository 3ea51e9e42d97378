//! The BitTorrent programs people run, as child processes on 127.0.0.1 beside `shoal`:
//! [`Opentracker`] (Debian's, with a whitelist, readiness probed by announcing),
//! python3-libtorrent through `lt_peer.py` ([`lt_peer`]), [`aria2`], [`ctorrent`], and `shoal`
//! seeding or downloading next to them ([`shoal_seeder`], [`shoal_download`]).
//!
//! A missing program fails the test with the command that installs it, unless
//! `SHOAL_SKIP_INTEROP=1` says to skip on purpose ([`skip_on_purpose`]).
use super::http;
use super::process::{Proc, STARTUP};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one transfer of a few MiB may take before the test fails.
pub const TRANSFER: Duration = Duration::from_secs(60);

/// The python3 that has the libtorrent module (Debian's, not the first on PATH).
pub const LT_PYTHON: &str = "/usr/bin/python3";

/// True (and says so) when `SHOAL_SKIP_INTEROP=1` asks to skip the real-client tests.
pub fn skip_on_purpose() -> bool {
    let skip = std::env::var("SHOAL_SKIP_INTEROP").as_deref() == Ok("1");
    if skip {
        eprintln!("skipped on purpose: SHOAL_SKIP_INTEROP=1");
    }
    skip
}

/// Fails the test unless `program args` runs and exits 0; `install` names what provides it.
pub fn require(program: &str, args: &[&str], install: &str) {
    let ok = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{program} {}` failed: install it with `{install}`, or set SHOAL_SKIP_INTEROP=1 to skip",
        args.join(" ")
    );
}

pub fn require_libtorrent() {
    require(LT_PYTHON, &["-c", "import libtorrent"], "apt-get install -y python3-libtorrent");
}

pub fn require_aria2() {
    require("aria2c", &["--version"], "apt-get install -y aria2");
}

pub fn require_ctorrent() {
    require("sh", &["-c", "command -v ctorrent"], "apt-get install -y ctorrent");
}

pub fn require_transmission() {
    require("transmission-show", &["--version"], "apt-get install -y transmission-cli");
}

/// Debian's opentracker on 127.0.0.1, serving whitelisted info-hashes; killed by PID on drop.
pub struct Opentracker {
    proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Opentracker {
    /// Starts opentracker on 127.0.0.1:`port` (from [`super::ports::free_port`], so that
    /// torrents can name the tracker before it runs) for the hex info-hashes `hashes`, and
    /// waits until it accepts announces for the first. Its stderr goes to `log_dir`.
    pub fn start(port: u16, hashes: &[impl AsRef<str>], log_dir: &Path) -> Opentracker {
        require("sh", &["-c", "command -v opentracker"], "apt-get install -y opentracker");
        let dir = tempfile::tempdir().expect("create tempdir");
        // It chroots into the directory and drops to `nobody`: both must be world-readable.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let whitelist = dir.path().join("whitelist.txt");
        std::fs::write(&whitelist, hashes.iter().map(|h| format!("{}\n", h.as_ref())).collect::<String>()).unwrap();
        std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cmd = Command::new("opentracker");
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-P", &port.to_string(), "-d"])
            .arg(dir.path())
            .args(["-w", "whitelist.txt"]);
        let tracker = Opentracker { proc: Proc::start("opentracker", cmd, log_dir), port, _dir: dir };
        tracker.wait_ready(hashes[0].as_ref());
        tracker
    }

    /// The HTTP announce URL of a tracker on `port`.
    pub fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/announce")
    }

    pub fn http(&self) -> String {
        Opentracker::url(self.port)
    }

    pub fn udp(&self) -> String {
        format!("udp://127.0.0.1:{}/announce", self.port)
    }

    fn get(&self, path_and_query: &str) -> Option<Vec<u8>> {
        http::get(SocketAddr::from(([127, 0, 0, 1], self.port)), path_and_query).map(|r| r.body)
    }

    /// It listens before its whitelist is loaded and refuses every hash until then (a
    /// `stopped` announce is no probe: it succeeds for any hash). A probe peer on port 9
    /// announces `started` until accepted, then `stopped`, leaving no trace.
    fn wait_ready(&self, hash_hex: &str) {
        let query = |event: &str| {
            format!(
                "/announce?info_hash={}&peer_id=-XX0000-probeprobepr&port=9&uploaded=0\
                 &downloaded=0&left=0&compact=1&event={event}",
                url_hash(hash_hex)
            )
        };
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Some(body) = self.get(&query("started")) {
                if body.starts_with(b"d") && !contains(&body, b"failure reason") {
                    self.get(&query("stopped")).expect("probe peer stops");
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.proc.fail(&format!("not ready on 127.0.0.1:{} within {STARTUP:?}", self.port));
    }

    /// Waits until the tracker counts a seeder (`complete` ≥ 1) for the hash, so that a leecher
    /// started afterwards is given that seeder in its first announce.
    pub fn wait_for_seeder(&self, hash_hex: &str) {
        let query = format!("/scrape?info_hash={}", url_hash(hash_hex));
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Some(body) = self.get(&query) {
                if after(&body, b"8:completei").is_some_and(|n| n >= 1) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no seeder announced to opentracker within {STARTUP:?}");
    }
}

/// Percent-encodes every byte of a hex info-hash, as trackers expect it in a query.
fn url_hash(hex: &str) -> String {
    hex.as_bytes().chunks(2).map(|c| format!("%{}", std::str::from_utf8(c).unwrap())).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The decimal number right after `key` in `hay`.
fn after(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = hay.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: String = hay[at..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
    digits.parse().ok()
}

/// `shoal MODE ... --listen 127.0.0.1:0 --no-kad --quiet --peer P...` with stderr in `logs`,
/// logging at debug level unless `RUST_LOG` says otherwise.
fn shoal_beside(name: &str, mut args: Vec<std::ffi::OsString>, peers: &[String], logs: &Path) -> Proc {
    args.extend(crate::args!["--listen", "127.0.0.1:0", "--no-kad", "--quiet"]);
    for p in peers {
        args.extend(crate::args!["--peer", p]);
    }
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "shoal=debug".into());
    Proc::spawn(name, logs, &args, &[("RUST_LOG", &log)])
}

/// `shoal seed DATA --torrent TORRENT` on 127.0.0.1, dialling `peers`; returns once it prints
/// `listening bt`, with its port.
pub fn shoal_seeder(data: &Path, torrent: &Path, peers: &[String], logs: &Path) -> (Proc, u16) {
    shoal_seeder_with(data, torrent, &[], peers, logs)
}

/// [`shoal_seeder`] with more flags (`--super-seed`...).
pub fn shoal_seeder_with(data: &Path, torrent: &Path, extra: &[&str], peers: &[String], logs: &Path) -> (Proc, u16) {
    let mut args = crate::args!["seed", data, "--torrent", torrent];
    args.extend(extra.iter().map(std::ffi::OsString::from));
    let mut proc = shoal_beside("shoal-seed", args, peers, logs);
    let port = proc.bt_addr().port();
    (proc, port)
}

/// `shoal download TORRENT -o OUT` on 127.0.0.1 with `peers`; running, not yet waited for.
pub fn shoal_download(torrent: &Path, out: &Path, peers: &[String], logs: &Path) -> Proc {
    shoal_beside("shoal-download", crate::args!["download", torrent, "-o", out], peers, logs)
}

/// `shoal download TORRENT -o OUT EXTRA...` on 127.0.0.1 with `peers`; running, not yet waited for.
pub fn shoal_download_with(torrent: &Path, out: &Path, extra: &[&str], peers: &[String], logs: &Path) -> Proc {
    let mut args = crate::args!["download", torrent, "-o", out];
    args.extend(extra.iter().map(std::ffi::OsString::from));
    shoal_beside("shoal-download", args, peers, logs)
}

/// The libtorrent peer script beside this module.
pub fn lt_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/lt_peer.py")
}

/// `lt_peer.py MODE TORRENT SAVE` (see the script); returns once it listens, with its port.
/// A seeder is also waited for until it serves.
pub fn lt_peer(mode: &str, torrent: &Path, save: &Path, peers: &[String], logs: &Path) -> (Proc, u16) {
    lt_peer_with(mode, torrent, save, peers, &[], logs)
}

/// [`lt_peer`] with more flags for the script (`--download-limit`, a longer `--timeout`...).
pub fn lt_peer_with(
    mode: &str,
    torrent: &Path,
    save: &Path,
    peers: &[String],
    extra: &[&str],
    logs: &Path,
) -> (Proc, u16) {
    require_libtorrent();
    let mut cmd = Command::new(LT_PYTHON);
    cmd.arg(lt_script()).arg(mode).arg(torrent).arg(save);
    cmd.args(["--timeout", &TRANSFER.as_secs().to_string()]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    cmd.args(extra);
    let mut proc = Proc::start(&format!("libtorrent-{mode}"), cmd, logs);
    let rest = proc.wait_line("listening ", STARTUP);
    let port = rest.parse().unwrap_or_else(|_| proc.fail(&format!("lt_peer.py printed a bad line: {rest:?}")));
    if mode == "seed" {
        proc.wait_line_containing("seeding", STARTUP);
    }
    (proc, port)
}

/// `lt_peer.py dht`: a libtorrent DHT node on 127.0.0.1 bootstrapped from `bootstrap` only
/// (none: the first node of a network), its log `logs/NAME.log`; returns once it listens,
/// with its (UDP) port.
pub fn lt_dht_node(name: &str, bootstrap: &[String], logs: &Path) -> (Proc, u16) {
    require_libtorrent();
    let mut cmd = Command::new(LT_PYTHON);
    cmd.arg(lt_script()).arg("dht");
    for b in bootstrap {
        cmd.args(["--dht-bootstrap", b]);
    }
    let mut proc = Proc::start(name, cmd, logs);
    let rest = proc.wait_line("listening ", STARTUP);
    let port = rest.parse().unwrap_or_else(|_| proc.fail(&format!("lt_peer.py printed a bad line: {rest:?}")));
    (proc, port)
}

/// aria2c on 127.0.0.1:`port` for TORRENT with data in DIR: seeding the data as it is
/// (`seed`), or downloading and exiting once complete. Returns once it listens.
pub fn aria2(seed: bool, torrent: &Path, dir: &Path, port: u16, logs: &Path) -> Proc {
    require_aria2();
    let mut cmd = Command::new("aria2c");
    cmd.arg(format!("--listen-port={port}")).arg("-d").arg(dir).args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        "--file-allocation=none",
        "--summary-interval=0",
        "--console-log-level=notice",
        "--bt-tracker-connect-timeout=5",
        "--bt-tracker-timeout=5",
        "--no-conf=true",
    ]);
    if seed {
        cmd.args(["--seed-ratio=0.0", "--bt-seed-unverified=true"]);
    } else {
        cmd.args(["--seed-time=0", "--bt-hash-check-seed=true"]);
    }
    cmd.arg(torrent);
    let mut proc = Proc::start(if seed { "aria2c-seed" } else { "aria2c-leech" }, cmd, logs);
    proc.wait_line_containing("listening on TCP port", STARTUP);
    proc
}

/// ctorrent 3.3 (Enhanced CTorrent dnh3.3.2) downloading TORRENT into the file `out`, bound to
/// 127.0.0.2:`port` and exiting once complete (`-e 0`). It finds peers only through the
/// torrent's tracker, and drops tracker peers whose address is its own: binding it to
/// 127.0.0.2 lets it take a seeder that announced from 127.0.0.1.
pub fn ctorrent(torrent: &Path, out: &Path, port: u16, logs: &Path) -> Proc {
    require_ctorrent();
    let mut cmd = Command::new("ctorrent");
    cmd.args(["-e", "0", "-M", "20", "-i", "127.0.0.2", "-p", &port.to_string(), "-s"])
        .arg(out)
        .arg("-b")
        .arg(out.with_extension("bf"))
        .arg(torrent);
    Proc::start("ctorrent", cmd, logs)
}
