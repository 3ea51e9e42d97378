//! Driving the `shoal` binary as separate processes, for swarms that talk only through the
//! network: spawning with stdout piped and stderr logged to a file, waiting for an announced
//! line with a deadline, killing by PID when a [`Proc`] is dropped (a failed assertion never
//! leaves a process behind), a tiny HTTP/1.1 client for the diagnostics endpoints, generated
//! data and log parsing.
//!
//! Every wait here is bounded: a process that hangs is a failed test, never a hung one.
#![allow(dead_code)]
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal");

/// Process swarms share two cores; the tests take turns so their timings mean something.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One running `shoal` process. Dropping it kills the process (SIGKILL to its PID) and reaps it.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line read so far.
    pub stdout: Vec<String>,
    /// Where stderr (the log) goes.
    pub log: PathBuf,
    pub started: Instant,
}

impl Proc {
    /// Starts `shoal ARGS` with `RUST_LOG=shoal=info` (overridable in `env`), stderr to
    /// `dir/NAME.log`.
    pub fn spawn(name: &str, dir: &Path, args: &[OsString], env: &[(&str, &str)]) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        cmd.env("RUST_LOG", "shoal=info").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: cannot start {BIN}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Proc { name: name.to_string(), child, lines, stdout: Vec::new(), log, started: Instant::now() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for a stdout line starting with `prefix` and returns the rest
    /// of it. Lines seen before, while waiting for another prefix, count too.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        if let Some(l) = self.stdout.iter().find(|l| l.starts_with(prefix)) {
            return l[prefix.len()..].trim().to_string();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.fail(&format!("no `{prefix}` line within {timeout:?}")),
                Err(RecvTimeoutError::Disconnected) => self.fail(&format!("stdout closed before a `{prefix}` line")),
            }
        }
    }

    /// Reads the rest of stdout (every line up to its end), for a process that has exited:
    /// [`Proc::stdout`] then holds every line it printed.
    pub fn read_stdout_to_end(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => self.fail(&format!("stdout still open after {timeout:?}")),
            }
        }
    }

    /// The libp2p address announced on stdout (`listening kad <multiaddr>/p2p/<PeerId>`).
    pub fn kad_addr(&mut self) -> String {
        self.wait_line("listening kad ", STARTUP)
    }

    /// The PeerId at the end of the announced kad address.
    pub fn peer_id(&mut self) -> String {
        let addr = self.kad_addr();
        addr.rsplit_once("/p2p/")
            .map(|(_, id)| id.to_string())
            .unwrap_or_else(|| self.fail(&format!("no /p2p/ in {addr}")))
    }

    pub fn bt_addr(&mut self) -> SocketAddr {
        let a = self.wait_line("listening bt ", STARTUP);
        a.parse().unwrap_or_else(|e| self.fail(&format!("bad bt address {a}: {e}")))
    }

    pub fn diag_addr(&mut self) -> SocketAddr {
        let a = self.wait_line("listening diag ", STARTUP);
        a.parse().unwrap_or_else(|e| self.fail(&format!("bad diag address {a}: {e}")))
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("still running after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a successful exit and returns how long the process ran.
    pub fn expect_success(&mut self, timeout: Duration) -> Duration {
        let status = self.wait_exit(timeout);
        let ran = self.started.elapsed();
        if !status.success() {
            self.fail(&format!("exited with {status}"));
        }
        ran
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL to this process's PID, then reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the process's name, stdout and the tail of its log.
    pub fn fail(&self, why: &str) -> ! {
        let log = self.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "{}: {why}\n--- stdout ---\n{}\n--- log tail ({}) ---\n{}",
            self.name,
            self.stdout.join("\n"),
            self.log.display(),
            tail.join("\n")
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long a process may take to print its listening lines.
pub const STARTUP: Duration = Duration::from_secs(30);

/// The flags every test process gets: everything on 127.0.0.1, an identity of its own.
pub fn net_args(dir: &Path, name: &str) -> Vec<OsString> {
    let mut a: Vec<OsString> =
        ["--listen", "127.0.0.1:0", "--kad-listen", "/ip4/127.0.0.1/tcp/0", "--identity"].map(OsString::from).to_vec();
    a.push(dir.join(format!("id.{name}")).into_os_string());
    a
}

/// Builds an argument list from anything path- or string-like.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(std::ffi::OsString::from($a)),*] };
}

/// Runs `shoal ARGS` to completion (bounded) and returns stdout; panics on failure.
pub fn run_ok(args: &[OsString], timeout: Duration) -> String {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shoal {args:?}: still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success(), "shoal {args:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[path = "../harness/data.rs"]
mod data;
#[allow(unused_imports)] // not every test binary that includes this module uses it
pub use data::make_file;

/// Copies `src` into `dir` under the same file name (a second seeder's own copy).
pub fn copy_into(src: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let to = dir.join(src.file_name().unwrap());
    std::fs::copy(src, &to).unwrap();
    to
}

pub fn assert_same_bytes(expected: &Path, got: &Path) {
    let (x, y) =
        (std::fs::read(expected).unwrap(), std::fs::read(got).unwrap_or_else(|e| panic!("{}: {e}", got.display())));
    assert_eq!(x.len(), y.len(), "{} and {} differ in length", expected.display(), got.display());
    assert!(x == y, "{} and {} differ", expected.display(), got.display());
}

/// `GET path` on a diagnostics server, parsed as JSON; `None` if the server is gone or the
/// answer is not 200 JSON. Bounded by short socket timeouts.
pub fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// Polls `GET path` on `diag` (a diagnostics server of `p`) every 200 ms until `pick`
/// finds what it wants in the answer; fails `p` when `timeout` passes first. For states that
/// last once reached (a counter that only grows, a download stopped where its sources end).
pub fn wait_json<T>(
    p: &Proc,
    diag: SocketAddr,
    path: &str,
    timeout: Duration,
    mut pick: impl FnMut(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Some(v) = get_json(diag, path) {
            if let Some(t) = pick(&v) {
                return t;
            }
            last = Some(v);
        }
        if Instant::now() > deadline {
            p.fail(&format!("GET {path}: not as expected within {timeout:?}; last answer {last:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a [`PeerWatch`] saw of one peer (keyed by its address as the diagnostics print it).
#[derive(Debug, Clone, Default)]
pub struct SeenPeer {
    pub transport: String,
    pub max_downloaded: u64,
}

/// Polls `/debug/p2p/peers` of a running process every 100 ms in a thread, remembering
/// every peer seen and the most bytes received from it, until stopped or the server goes.
pub struct PeerWatch {
    seen: Arc<Mutex<BTreeMap<String, SeenPeer>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerWatch {
    pub fn start(diag: SocketAddr) -> PeerWatch {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut misses = 0;
            while !st.load(Ordering::Relaxed) && misses < 20 {
                match get_json(diag, "/debug/p2p/peers") {
                    Some(v) => {
                        misses = 0;
                        record_peers(&s, &v);
                    }
                    None => misses += 1,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        PeerWatch { seen, stop, thread: Some(thread) }
    }

    pub fn seen(&self) -> BTreeMap<String, SeenPeer> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops polling and returns everything seen.
    pub fn finish(mut self) -> BTreeMap<String, SeenPeer> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen()
    }
}

impl Drop for PeerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn record_peers(seen: &Mutex<BTreeMap<String, SeenPeer>>, v: &Value) {
    let mut seen = seen.lock().unwrap();
    for p in v["peers"].as_array().into_iter().flatten() {
        let addr = p["addr"].as_str().unwrap_or_default().to_string();
        let e = seen.entry(addr).or_default();
        e.transport = p["transport"].as_str().unwrap_or_default().to_string();
        e.max_downloaded = e.max_downloaded.max(p["downloaded"].as_u64().unwrap_or(0));
    }
}

/// One `DHT lookup` log line: when (seconds since midnight UTC, from the log's timestamp)
/// and how many providers it found.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    pub at: f64,
    pub providers: usize,
}

/// Every `DHT lookup ... providers=N` line of a log, in order.
pub fn dht_lookups(log: &str) -> Vec<Lookup> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(" DHT lookup "))
        .filter_map(|l| {
            let at = timestamp_secs(l.split_whitespace().next()?)?;
            let providers = field(&l, "providers")?.parse().ok()?;
            Some(Lookup { at, providers })
        })
        .collect()
}

/// The peers of every `connected peer=ADDR` debug line (`/p2p/<PeerId>` or `ip:port`), in order.
pub fn connected_peers(log: &str) -> Vec<String> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(" DEBUG connected "))
        .filter_map(|l| field(&l, "peer").map(str::to_string))
        .collect()
}

/// When each log line containing `needle` was written (seconds since midnight UTC, as in
/// [`Lookup::at`]), in order.
pub fn event_times(log: &str, needle: &str) -> Vec<f64> {
    log.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(needle))
        .filter_map(|l| timestamp_secs(l.split_whitespace().next()?))
        .collect()
}

/// The value of `name=value` in a tracing line.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
}

/// `2025-01-02T03:04:05.678901Z` → seconds since that day's midnight.
fn timestamp_secs(ts: &str) -> Option<f64> {
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `shoal ARGS` with `RUST_LOG=shoal=info` and extra environment to its end (bounded;
/// killed by PID past `timeout`) and returns its exit status, stdout and stderr.
pub fn run_env(args: &[OsString], env: &[(&str, &str)], timeout: Duration) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null()).env("RUST_LOG", "shoal=info").env("NO_COLOR", "1");
    cmd.stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn shoal");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shoal {args:?}: still running after {timeout:?}\n{}", std::fs::read_to_string(&err).unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out), read(&err))
}

/// The pieces a `resume check bitfield have=HEX` debug line (shoal::storage) says were
/// found on disk, one bool per piece; `None` until the line is in `log`.
pub fn resume_claims(log: &str, pieces: usize) -> Option<Vec<bool>> {
    let line = log.lines().map(strip_ansi).find(|l| l.contains("resume check bitfield"))?;
    let hex = field(&line, "have")?.to_string();
    let bytes: Vec<u8> =
        (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect::<Option<_>>()?;
    Some((0..pieces).map(|i| bytes.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0)).collect())
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

/// Lines of `text` containing `needle`.
pub fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

/// The bytes received, from a download's closing `done: ... received 1.50 MiB from ...` line.
pub fn summary_received(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.starts_with("done: "))?;
    let rest = line.split(" received ").nth(1)?;
    let mut words = rest.split_whitespace();
    let value: f64 = words.next()?.parse().ok()?;
    let unit = match words.next()? {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((value * unit) as u64)
}
