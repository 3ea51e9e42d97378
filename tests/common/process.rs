//! Child processes: the `shoal` binary and the real clients, each a [`Proc`] whose stdout
//! lines can be awaited with a deadline, whose stderr goes to a log file, and which is killed
//! by PID when dropped (a failed assertion never leaves a process behind). Also `shoal` run to
//! its end ([`run_ok`], [`run_env`]), the flags every networked test process gets
//! ([`net_args`]), memory from `/proc`, and the lock that makes process swarms take turns.
//!
//! Every `shoal download`, `seed` and `daemon` started here gets `--no-dht` unless its
//! arguments name a mainline DHT themselves ([`offline_dht`]): the mainline DHT is on by
//! default with public bootstrap nodes, and no test may ever contact one.
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_shoal");

/// How long a process may take to print its listening lines.
pub const STARTUP: Duration = Duration::from_secs(30);

/// Builds an argument list from anything path- or string-like.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(std::ffi::OsString::from($a)),*] };
}

/// Process swarms share two cores; the tests take turns so their timings mean something.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One running child process. Dropping it kills the process (SIGKILL to its PID) and reaps
/// it; while a test is panicking it first prints the tail of the child's stdout and log.
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
    pub fn spawn<A: AsRef<OsStr>>(name: &str, dir: &Path, args: &[A], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(offline_dht(args)).env("RUST_LOG", "shoal=info").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::start(name, cmd, dir)
    }

    /// Starts any command with stdout piped and stderr written to `dir/NAME.log`.
    pub fn start(name: &str, mut cmd: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let stderr = File::create(&log).unwrap_or_else(|e| panic!("{name}: cannot create {}: {e}", log.display()));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
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
    /// of it. Lines seen before, while waiting for another one, count too.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let line = self.wait_for_line(&format!("`{prefix}` line"), timeout, |l| l.starts_with(prefix));
        line[prefix.len()..].trim().to_string()
    }

    /// Waits up to `timeout` for a stdout line containing `needle` and returns the whole line.
    pub fn wait_line_containing(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line(&format!("line with {needle:?}"), timeout, |l| l.contains(needle))
    }

    fn wait_for_line(&mut self, what: &str, timeout: Duration, matches: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.stdout.iter().find(|l| matches(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.fail(&format!("no {what} within {timeout:?}")),
                Err(RecvTimeoutError::Disconnected) => self.fail(&format!("stdout closed before a {what}")),
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

    pub fn bt_addr(&mut self) -> std::net::SocketAddr {
        let a = self.wait_line("listening bt ", STARTUP);
        a.parse().unwrap_or_else(|e| self.fail(&format!("bad bt address {a}: {e}")))
    }

    pub fn diag_addr(&mut self) -> std::net::SocketAddr {
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
            std::thread::sleep(Duration::from_millis(20));
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
        panic!(
            "{}: {why}\n--- stdout ---\n{}\n--- log tail ({}) ---\n{}",
            self.name,
            self.stdout.join("\n"),
            self.log.display(),
            tail(&self.log_text(), 40)
        );
    }

    /// Prints what the process said, for a test that is failing elsewhere.
    fn dump(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.stdout.push(line);
        }
        eprintln!(
            "----- {} (pid {}) stdout:\n{}\n----- {} log ({}):\n{}\n-----",
            self.name,
            self.child.id(),
            tail(&self.stdout.join("\n"), 60),
            self.name,
            self.log.display(),
            tail(&self.log_text(), 60),
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        self.kill();
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The flags every test process gets: everything on 127.0.0.1, an identity of its own.
pub fn net_args(dir: &Path, name: &str) -> Vec<OsString> {
    let mut a: Vec<OsString> =
        ["--listen", "127.0.0.1:0", "--kad-listen", "/ip4/127.0.0.1/tcp/0", "--identity"].map(OsString::from).to_vec();
    a.push(dir.join(format!("id.{name}")).into_os_string());
    a
}

/// `args` with `--no-dht` added when they run a command that starts the mainline DHT
/// (`download`, `seed`, `daemon`) and name no mainline network of their own
/// (`--dht-bootstrap`, `--dht-listen`, `--no-dht`): no test contacts a public bootstrap node.
pub fn offline_dht<A: AsRef<OsStr>>(args: &[A]) -> Vec<OsString> {
    let mut out: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
    let command = out.first().and_then(|a| a.to_str()).unwrap_or("");
    let own_dht = out.iter().any(|a| matches!(a.to_str(), Some("--dht-bootstrap" | "--dht-listen" | "--no-dht")));
    if matches!(command, "download" | "seed" | "daemon") && !own_dht {
        out.push("--no-dht".into());
    }
    out
}

/// Runs `shoal ARGS` to completion (bounded) and returns stdout; panics on failure.
pub fn run_ok(args: &[OsString], timeout: Duration) -> String {
    let (status, out, err) = run_env(args, &[], timeout);
    assert!(status.success(), "shoal {args:?}: {status}\n{err}");
    out
}

/// Runs `shoal ARGS` with `RUST_LOG=shoal=info` and extra environment to its end (bounded;
/// killed by PID past `timeout`) and returns its exit status, stdout and stderr.
pub fn run_env(args: &[OsString], env: &[(&str, &str)], timeout: Duration) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new(BIN);
    cmd.args(offline_dht(args)).stdin(Stdio::null()).env("RUST_LOG", "shoal=info").env("NO_COLOR", "1");
    cmd.stdout(File::create(&out).unwrap()).stderr(File::create(&err).unwrap());
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

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmPeak`...).
pub fn vm_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}
