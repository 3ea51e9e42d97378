//! A `shoal daemon` process under test and plain HTTP/1.1 requests to its API (with a
//! `Connection: close` per request, so nothing here depends on an HTTP client's pooling).
use super::process::{run_env, Proc, STARTUP};
use serde_json::Value;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bound on a transfer or a state change seen through the API.
pub const DEADLINE: Duration = Duration::from_secs(180);
/// Bound on one request.
pub const IO: Duration = Duration::from_secs(30);

/// A whole HTTP answer: status and body as JSON (`Null` when empty or not JSON).
pub struct Answer {
    pub status: u16,
    pub json: Value,
}

/// One HTTP/1.1 request with `Connection: close`. `body` is `(content type, bytes)`;
/// `declared` overrides `Content-Length` (to announce a body that is never sent).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
    declared: Option<usize>,
) -> Answer {
    request_within(addr, method, path, token, body, declared, IO)
}

/// [`request`] with `io` in place of [`IO`] as the bound on each read and write (a WebDriver
/// request that starts a browser answers only once the browser runs).
pub fn request_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
    declared: Option<usize>,
    io: Duration,
) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, io).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(io)).unwrap();
    s.set_write_timeout(Some(io)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let (kind, bytes) = body.unwrap_or(("application/json", b""));
    head.push_str(&format!("Content-Type: {kind}\r\nContent-Length: {}\r\n\r\n", declared.unwrap_or(bytes.len())));
    s.write_all(head.as_bytes()).unwrap();
    if declared.is_none() {
        s.write_all(bytes).unwrap();
    }
    let raw = read_answer(&mut s);
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: no HTTP answer"));
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
    Answer { status, json: serde_json::from_slice(&raw[at + 4..]).unwrap_or(Value::Null) }
}

/// Reads an answer: up to its `Content-Length` (a server may keep the connection open in spite
/// of `Connection: close`, as chromedriver does), or to the end of the stream without one.
/// The server may close as soon as it answered; what was read by then is the answer.
fn read_answer(s: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
            if length.is_some_and(|len| raw.len() >= at + 4 + len) {
                return raw;
            }
        }
    }
}

/// A `shoal daemon` under test, with its API address and token.
pub struct Daemon {
    pub proc: Proc,
    pub api: SocketAddr,
    pub token: String,
}

impl Daemon {
    pub fn start(dir: &Path, name: &str) -> Daemon {
        Daemon::start_with(dir, name, &[])
    }

    pub fn start_with(dir: &Path, name: &str, extra: &[OsString]) -> Daemon {
        let mut args = crate::args!["--no-kad"];
        args.extend(extra.iter().cloned());
        Daemon::start_kad(dir, name, &args)
    }

    /// Like [`Daemon::start_with`], with the libp2p node on unless `extra` says `--no-kad`.
    pub fn start_kad(dir: &Path, name: &str, extra: &[OsString]) -> Daemon {
        let state = dir.join("state");
        let mut args: Vec<OsString> =
            crate::args!["daemon", "--api", "127.0.0.1:0", "--state-dir", state, "--listen", "127.0.0.1:0"];
        args.extend(extra.iter().cloned());
        let mut proc = Proc::spawn(name, dir, &args, &[]);
        let api = proc.wait_line("listening api ", STARTUP);
        let api = api.parse().unwrap_or_else(|e| proc.fail(&format!("bad api address {api}: {e}")));
        let token = std::fs::read_to_string(dir.join("state/api-token")).expect("api-token written before ready");
        Daemon { proc, api, token: token.trim().to_string() }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Answer {
        request(self.api, method, path, Some(&self.token), body, None)
    }

    /// `POST /api/torrents` with a JSON body.
    pub fn add_json(&self, body: Value) -> Answer {
        self.call("POST", "/api/torrents", Some(("application/json", &serde_json::to_vec(&body).unwrap())))
    }

    /// Polls until `pred` holds for the torrent's JSON; fails past [`DEADLINE`].
    pub fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let Answer { status, json } = self.call("GET", &format!("/api/torrents/{id}"), None);
            if status == 200 && pred(&json) {
                return json;
            }
            if Instant::now() > deadline {
                self.proc.fail(&format!("torrent {id} not {what} within {DEADLINE:?}; last: {status} {json}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn wait_state(&self, id: &str, want: &str) -> Value {
        self.wait_for(id, want, |t| t["state"] == want)
    }

    /// Polls `/api/faults` until it holds a `metadata` fault of `id`; returns its message.
    pub fn wait_metadata_fault(&self, id: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let faults = self.call("GET", "/api/faults", None).json;
            let found = faults.as_array().into_iter().flatten().find(|f| f["id"] == id && f["kind"] == "metadata");
            if let Some(f) = found {
                return f["message"].as_str().unwrap_or_default().to_string();
            }
            if Instant::now() > deadline {
                self.proc.fail(&format!("no metadata fault for {id} within {DEADLINE:?}; faults: {faults}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Every torrent as (id, state).
    pub fn states(&self) -> Vec<(String, String)> {
        let a = self.call("GET", "/api/torrents", None);
        assert_eq!(a.status, 200, "list: {}", a.json);
        a.json
            .as_array()
            .expect("a list")
            .iter()
            .map(|t| (t["id"].as_str().unwrap().into(), t["state"].as_str().unwrap().into()))
            .collect()
    }

    /// SIGTERM, then a clean exit.
    pub fn stop(mut self) {
        let pid = self.proc.pid() as i32;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM to the daemon");
        let status = self.proc.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "daemon exited with {status}");
    }

    /// `shoal ARGS --api A --state-dir S`, to its end: (exit code, stdout, stderr).
    pub fn client(&self, dir: &Path, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
        all.extend(crate::args!["--api", self.api.to_string(), "--state-dir", dir.join("state")]);
        let (status, out, err) = run_env(&all, &[], Duration::from_secs(60));
        (status.code().unwrap_or(-1), out, err)
    }
}
