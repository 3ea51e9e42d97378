//! Helpers for tests that drive the `shoal` binary and real BitTorrent clients as child
//! processes on 127.0.0.1.
//!
//! In reading order:
//! - [`Proc`]: a child process killed by PID when dropped, whose stdout lines can be awaited
//!   with a deadline and whose stderr goes to a log file shown when the test fails;
//! - [`Opentracker`]: Debian's opentracker with a whitelist, readiness probed by announcing;
//! - starting each client: [`shoal`], [`lt_peer`] (python3-libtorrent through `lt_peer.py`),
//!   [`aria2`];
//! - test data: [`random_file`], [`create_torrent`], [`assert_same_file`].
//!
//! Every wait has a deadline: a hung client fails its test instead of hanging the suite.
//! A missing client fails the test with the command that installs it, unless
//! `SHOAL_SKIP_INTEROP=1` says to skip on purpose ([`skip_on_purpose`]).
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};

/// How long one transfer of a few MiB may take before the test fails.
pub const TRANSFER: Duration = Duration::from_secs(60);
/// How long a client may take to start listening.
pub const STARTUP: Duration = Duration::from_secs(20);

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

/// A child process. Dropping it kills it by PID and reaps it; while a test is panicking it
/// first prints the tail of the child's stdout and stderr.
pub struct Proc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr_log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout piped and stderr written to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        let stderr_log = log_dir.join(format!("{name}.log"));
        let err = File::create(&stderr_log).expect("create a log file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let seen = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                seen.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { name: name.to_string(), child, lines, stdout, stderr_log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first stdout line (not yet consumed) containing `needle`, within `within`.
    pub fn wait_line(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: no line with {needle:?} within {within:?}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{}: exited ({:?}) before printing a line with {needle:?}", self.name, self.child.try_wait())
                }
            }
        }
    }

    /// Waits for the process to exit, failing the test after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(Instant::now() < deadline, "{}: still running after {within:?}", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a successful exit within `within`.
    pub fn expect_success(&mut self, within: Duration) {
        let status = self.wait_exit(within);
        assert!(status.success(), "{}: exited with {status}", self.name);
    }

    fn dump(&self) {
        let out = self.stdout.lock().map(|l| l.clone()).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let tail = |s: Vec<&str>| s[s.len().saturating_sub(60)..].join("\n");
        eprintln!(
            "----- {} (pid {}) stdout:\n{}\n----- {} stderr ({}):\n{}\n-----",
            self.name,
            self.child.id(),
            tail(out.iter().map(String::as_str).collect()),
            self.name,
            self.stderr_log.display(),
            tail(err.lines().collect()),
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (for clients that cannot report the port they bound).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

/// Percent-encodes every byte of a hex info-hash, as trackers expect it in a query.
fn url_hash(hex: &str) -> String {
    hex.as_bytes().chunks(2).map(|c| format!("%{}", std::str::from_utf8(c).unwrap())).collect()
}

/// GET `path_and_query` from 127.0.0.1:`port` over HTTP/1.0; the body, or None on any error.
fn http_get(port: u16, path_and_query: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let at = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(resp[at + 4..].to_vec())
}

/// Debian's opentracker on 127.0.0.1, serving the whitelisted info-hashes; killed by PID on drop.
pub struct Opentracker {
    proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Opentracker {
    /// Starts opentracker on 127.0.0.1:`port` (from [`free_port`], so that torrents can name
    /// the tracker before it runs) for `hash_hex`, and waits until it accepts announces for it.
    pub fn start(port: u16, hash_hex: &str, log_dir: &Path) -> Opentracker {
        require("sh", &["-c", "command -v opentracker"], "apt-get install -y opentracker");
        let dir = tempfile::tempdir().expect("create tempdir");
        // It chroots into the directory and drops to `nobody`: both must be world-readable.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let whitelist = dir.path().join("whitelist.txt");
        std::fs::write(&whitelist, format!("{hash_hex}\n")).unwrap();
        std::fs::set_permissions(&whitelist, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut cmd = Command::new("opentracker");
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-P", &port.to_string(), "-d"])
            .arg(dir.path())
            .args(["-w", "whitelist.txt"]);
        let tracker = Opentracker { proc: Proc::spawn("opentracker", cmd, log_dir), port, _dir: dir };
        tracker.wait_ready(hash_hex);
        tracker
    }

    /// The announce URL of a tracker on `port`.
    pub fn url(port: u16) -> String {
        format!("http://127.0.0.1:{port}/announce")
    }

    /// It listens before its whitelist is loaded and refuses every hash until then; a probe
    /// peer announces `started` until accepted, then `stopped`, leaving no trace.
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
            if let Some(body) = http_get(self.port, &query("started")) {
                if body.starts_with(b"d") && !contains(&body, b"failure reason") {
                    http_get(self.port, &query("stopped")).expect("probe peer stops");
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("opentracker on 127.0.0.1:{} not ready in {STARTUP:?}", self.port);
    }

    /// Waits until the tracker counts a seeder (`complete` ≥ 1) for the hash, so that a leecher
    /// started afterwards is given that seeder in its first announce.
    pub fn wait_for_seeder(&self, hash_hex: &str) {
        let query = format!("/scrape?info_hash={}", url_hash(hash_hex));
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Some(body) = http_get(self.port, &query) {
                if let Some(n) = after(&body, b"8:completei") {
                    if n >= 1 {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no seeder announced to opentracker within {STARTUP:?}");
    }
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

/// A `shoal` command, logging at debug level unless `RUST_LOG` says otherwise.
pub fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "shoal=debug");
    }
    cmd
}

/// `shoal seed DATA --torrent TORRENT` on 127.0.0.1, dialling `peers`; returns once it prints
/// `listening bt`, with its port.
pub fn shoal_seeder(data: &Path, torrent: &Path, peers: &[String], logs: &Path) -> (Proc, u16) {
    let mut cmd = shoal();
    cmd.arg("seed").arg(data).arg("--torrent").arg(torrent);
    cmd.args(["--listen", "127.0.0.1:0", "--no-kad", "--quiet"]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    let mut proc = Proc::spawn("shoal-seed", cmd, logs);
    let line = proc.wait_line("listening bt ", STARTUP);
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("shoal seed printed a bad line: {line:?}"));
    (proc, port)
}

/// `shoal download TORRENT -o OUT` on 127.0.0.1 with `peers`; running, not yet waited for.
pub fn shoal_download(torrent: &Path, out: &Path, peers: &[String], logs: &Path) -> Proc {
    let mut cmd = shoal();
    cmd.arg("download").arg(torrent).arg("-o").arg(out);
    cmd.args(["--listen", "127.0.0.1:0", "--no-kad", "--quiet"]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    Proc::spawn("shoal-download", cmd, logs)
}

/// The libtorrent peer script beside this module.
pub fn lt_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/lt_peer.py")
}

/// `lt_peer.py MODE TORRENT SAVE` (see the script); returns once it listens, with its port.
/// A seeder is also waited for until it serves.
pub fn lt_peer(mode: &str, torrent: &Path, save: &Path, peers: &[String], logs: &Path) -> (Proc, u16) {
    require_libtorrent();
    let mut cmd = Command::new(LT_PYTHON);
    cmd.arg(lt_script()).arg(mode).arg(torrent).arg(save);
    cmd.args(["--timeout", &TRANSFER.as_secs().to_string()]);
    for p in peers {
        cmd.args(["--peer", p]);
    }
    let mut proc = Proc::spawn(&format!("libtorrent-{mode}"), cmd, logs);
    let line = proc.wait_line("listening ", STARTUP);
    let port =
        line["listening ".len()..].trim().parse().unwrap_or_else(|_| panic!("lt_peer.py printed a bad line: {line:?}"));
    if mode == "seed" {
        proc.wait_line("seeding", STARTUP);
    }
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
    let mut proc = Proc::spawn(if seed { "aria2c-seed" } else { "aria2c-leech" }, cmd, logs);
    proc.wait_line("listening on TCP port", STARTUP);
    proc
}

/// `len` random bytes (seeded: the same data every run) written to `dir/name`.
pub fn random_file(dir: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let path = dir.join(name);
    std::fs::write(&path, &data).expect("write test data");
    path
}

/// `shoal create DATA -o OUT --piece-size PIECE [--tracker URL]`; returns the hex info-hash.
pub fn create_torrent(data: &Path, out: &Path, piece: &str, tracker: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.arg("create").arg(data).arg("-o").arg(out).args(["--piece-size", piece]);
    if let Some(url) = tracker {
        cmd.args(["--tracker", url]);
    }
    let output = cmd.output().expect("run shoal create");
    assert!(output.status.success(), "shoal create: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("info-hash: "))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("no info-hash in {stdout:?}"))
}

/// Fails unless the two files hold the same bytes.
pub fn assert_same_file(expected: &Path, got: &Path) {
    let a = std::fs::read(expected).unwrap_or_else(|e| panic!("{}: {e}", expected.display()));
    let b = std::fs::read(got).unwrap_or_else(|e| panic!("{}: {e}", got.display()));
    assert_eq!(a.len(), b.len(), "{}: wrong length", got.display());
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(first.is_none(), "{}: differs at byte {first:?}", got.display());
}
