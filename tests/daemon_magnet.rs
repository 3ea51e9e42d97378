//! `shoal daemon` and magnets: a magnet added over the API has its metadata fetched from a
//! python3-libtorrent seeder (its `x.pe`), completes byte-identical, keeps its `.torrent` in
//! the state directory and comes back after a restart; a paused magnet is remembered without
//! its metadata and fetches it once resumed after a restart; `only` (JSON, `?only=` and
//! `shoal add --only`) downloads the chosen files of a multi-file torrent and an index past
//! the last file is named; a magnet whose metadata nobody serves is `faulted` with the error
//! and a fault record, and fetched again (a new fault) by a restarted daemon; pausing or
//! removing a magnet being fetched closes the fetch's connections.
mod common;

use common::clients::{lt_peer, skip_on_purpose};
use common::process::{run_env, serial, Proc, STARTUP};
use common::torrent::{assert_same_bytes, create_torrent, data_and_torrent, make_file, read_metainfo};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bound on a transfer or a state change seen through the API.
const DEADLINE: Duration = Duration::from_secs(180);
const IO: Duration = Duration::from_secs(30);
const KIB: usize = 1024;

/// One HTTP/1.1 request with `Connection: close`: (status, body as JSON or `Null`).
fn request(addr: SocketAddr, method: &str, path: &str, token: &str, body: Option<(&str, &[u8])>) -> (u16, Value) {
    let mut s = TcpStream::connect_timeout(&addr, IO).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO)).unwrap();
    let (kind, bytes) = body.unwrap_or(("application/json", b""));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {kind}\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(bytes).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: no answer"));
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
    (status, serde_json::from_slice(&raw[at + 4..]).unwrap_or(Value::Null))
}

/// The daemon under test.
struct Daemon {
    proc: Proc,
    api: SocketAddr,
    token: String,
}

impl Daemon {
    fn start(dir: &Path, name: &str) -> Daemon {
        Daemon::start_with(dir, name, &[])
    }

    fn start_with(dir: &Path, name: &str, extra: &[OsString]) -> Daemon {
        let state = dir.join("state");
        let mut args: Vec<OsString> =
            args!["daemon", "--api", "127.0.0.1:0", "--state-dir", state, "--listen", "127.0.0.1:0", "--no-kad"];
        args.extend(extra.iter().cloned());
        let mut proc = Proc::spawn(name, dir, &args, &[]);
        let api = proc.wait_line("listening api ", STARTUP);
        let api = api.parse().unwrap_or_else(|e| proc.fail(&format!("bad api address {api}: {e}")));
        let token = std::fs::read_to_string(dir.join("state/api-token")).expect("api-token written before ready");
        Daemon { proc, api, token: token.trim().to_string() }
    }

    fn call(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> (u16, Value) {
        request(self.api, method, path, &self.token, body)
    }

    /// `POST /api/torrents` with a JSON body.
    fn add_json(&self, body: Value) -> (u16, Value) {
        self.call("POST", "/api/torrents", Some(("application/json", &serde_json::to_vec(&body).unwrap())))
    }

    /// Polls until `pred` holds for the torrent's JSON; fails past [`DEADLINE`].
    fn wait_for(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (status, json) = self.call("GET", &format!("/api/torrents/{id}"), None);
            if status == 200 && pred(&json) {
                return json;
            }
            if Instant::now() > deadline {
                self.proc.fail(&format!("torrent {id} not {what} within {DEADLINE:?}; last: {status} {json}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn wait_state(&self, id: &str, want: &str) -> Value {
        self.wait_for(id, want, |t| t["state"] == want)
    }

    /// Polls `/api/faults` until it holds a `metadata` fault of `id`; returns its message.
    fn wait_metadata_fault(&self, id: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_, faults) = self.call("GET", "/api/faults", None);
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

    /// SIGTERM, then a clean exit.
    fn stop(mut self) {
        let pid = self.proc.pid() as i32;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM to the daemon");
        let status = self.proc.wait_exit(Duration::from_secs(30));
        assert!(status.success(), "daemon exited with {status}");
    }

    /// `shoal ARGS --api A --state-dir S`, to its end: (exit code, stdout, stderr).
    fn client(&self, dir: &Path, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
        all.extend(args!["--api", self.api.to_string(), "--state-dir", dir.join("state")]);
        let (status, out, err) = run_env(&all, &[], Duration::from_secs(60));
        (status.code().unwrap_or(-1), out, err)
    }
}

fn magnet(hash: &str, peers: &[u16]) -> String {
    let mut m = format!("magnet:?xt=urn:btih:{hash}&dn=payload");
    for p in peers {
        m.push_str(&format!("&x.pe=127.0.0.1:{p}"));
    }
    m
}

#[test]
fn a_magnet_added_over_the_api_completes_keeps_its_torrent_and_survives_a_restart() {
    if skip_on_purpose() {
        return;
    }
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, torrent) = data_and_torrent(&dir.join("seed"), 2 * 1024 * 1024 + 99, 31, "64KiB");
    let hash = create_torrent(&data, &torrent, "64KiB", None);
    let (_lt, port) = lt_peer("seed", &torrent, data.parent().unwrap(), &[], dir);
    let out = dir.join("out");

    let daemon = Daemon::start(dir, "daemon-1");
    let (status, added) = daemon.add_json(json!({ "magnet": magnet(&hash, &[port]), "output": out }));
    assert_eq!(status, 201, "{added}");
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(id, hash);
    daemon.wait_state(&id, "seeding");
    assert_same_bytes(&data, &out.join("data.bin"));
    let kept = dir.join("state/torrents").join(format!("{id}.torrent"));
    assert_eq!(read_metainfo(&kept).info_hash.to_hex(), hash, "the kept .torrent is the magnet's torrent");
    let (status, again) = daemon.add_json(json!({ "magnet": magnet(&hash, &[port]), "output": out }));
    assert_eq!(status, 409, "adding it twice is a conflict: {again}");
    daemon.stop();

    let daemon = Daemon::start(dir, "daemon-2");
    let view = daemon.wait_state(&id, "seeding");
    assert_eq!(view["name"], "data.bin");
    daemon.stop();
}

#[test]
fn a_paused_magnet_is_remembered_without_metadata_and_fetches_it_once_resumed() {
    if skip_on_purpose() {
        return;
    }
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, torrent) = data_and_torrent(&dir.join("seed"), 700 * 1024 + 5, 32, "64KiB");
    let hash = create_torrent(&data, &torrent, "64KiB", None);
    let (_lt, port) = lt_peer("seed", &torrent, data.parent().unwrap(), &[], dir);
    let out = dir.join("out");

    let daemon = Daemon::start(dir, "daemon-1");
    let (status, added) = daemon.add_json(json!({ "magnet": magnet(&hash, &[port]), "output": out, "paused": true }));
    assert_eq!(status, 201, "{added}");
    let view = daemon.wait_state(&hash, "paused");
    assert_eq!(view["name"], "payload", "the magnet's dn names it until the metadata comes");
    daemon.stop();
    assert!(!dir.join("state/torrents").join(format!("{hash}.torrent")).exists(), "a paused magnet fetched nothing");

    let daemon = Daemon::start(dir, "daemon-2");
    daemon.wait_state(&hash, "paused");
    let (status, body) = daemon.call("POST", &format!("/api/torrents/{hash}/resume"), None);
    assert_eq!(status, 200, "{body}");
    daemon.wait_state(&hash, "seeding");
    assert_same_bytes(&data, &out.join("data.bin"));
    daemon.stop();
}

/// The album of tests/file_selection.rs: a (300 KiB + 7), b (500 KiB + 3), c (200 KiB).
#[test]
fn only_downloads_the_chosen_files_and_an_index_past_the_last_is_named() {
    if skip_on_purpose() {
        return;
    }
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seed = dir.join("seed");
    let album = seed.join("album");
    let a = make_file(&album, "a", 300 * KIB + 7, 11);
    let _b = make_file(&album, "b", 500 * KIB + 3, 12);
    let c = make_file(&album, "c", 200 * KIB, 13);
    let torrent = dir.join("album.torrent");
    let hash = create_torrent(&album, &torrent, "256KiB", None);
    let (_lt, port) = lt_peer("seed", &torrent, &seed, &[], dir);
    let out = dir.join("out");
    let daemon = Daemon::start(dir, "daemon-1");

    // A magnet's bad index is known only once its metadata is: faulted, naming it.
    let (status, added) = daemon.add_json(json!({ "magnet": magnet(&hash, &[port]), "output": out, "only": [0, 5] }));
    assert_eq!(status, 201, "{added}");
    let view = daemon.wait_state(&hash, "faulted");
    let error = view["error"].as_str().unwrap_or_default();
    assert!(error.contains("file 5 does not exist"), "{view}");
    assert!(daemon.wait_metadata_fault(&hash).contains("file 5"));
    assert_eq!(daemon.call("DELETE", &format!("/api/torrents/{hash}"), None).0, 204);

    // A .torrent body's bad index is refused at once.
    let path = format!("/api/torrents?output={}&only=0,7", out.display());
    let (status, refused) =
        daemon.call("POST", &path, Some(("application/x-bittorrent", &std::fs::read(&torrent).unwrap())));
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"].as_str().unwrap_or_default().contains("file 7"), "{refused}");

    let (code, stdout, err) =
        daemon.client(dir, &["add", &magnet(&hash, &[port]), "-o", out.to_str().unwrap(), "--only", "0,2"]);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(stdout.contains(&hash), "{stdout}");
    daemon.wait_state(&hash, "seeding");
    assert_same_bytes(&a, &out.join("album/a"));
    assert_same_bytes(&c, &out.join("album/c"));
    assert!(!out.join("album/b").exists(), "the unselected file was created");
    daemon.stop();

    // The selection is kept across a restart.
    let daemon = Daemon::start(dir, "daemon-2");
    daemon.wait_state(&hash, "seeding");
    assert!(!out.join("album/b").exists(), "a restart forgot the selection");
    daemon.stop();
}

#[test]
fn a_magnet_nobody_serves_is_faulted_and_fetched_again_after_a_restart() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A port nobody listens on: every dial is refused, so the fetch ends without waiting out
    // its deadline (and the deadline bounds it anyway).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let hash = "ab".repeat(20);
    let daemon = Daemon::start(dir, "daemon-1");
    let body = json!({ "magnet": magnet(&hash, &[closed]), "output": dir.join("out"), "metadata_timeout_secs": 5 });
    let (status, added) = daemon.add_json(body);
    assert_eq!(status, 201, "{added}");
    let view = daemon.wait_state(&hash, "faulted");
    assert!(view["error"].as_str().unwrap_or_default().starts_with("metadata: "), "{view}");
    daemon.wait_metadata_fault(&hash);
    let (status, bad) = daemon.add_json(
        json!({ "magnet": magnet(&"cd".repeat(20), &[]), "output": dir.join("out"), "metadata_timeout_secs": 0 }),
    );
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"].as_str().unwrap_or_default().contains("metadata_timeout_secs"), "{bad}");
    daemon.stop();

    // The fault log lives in memory: a metadata fault after the restart is a new fetch.
    let daemon = Daemon::start(dir, "daemon-2");
    daemon.wait_metadata_fault(&hash);
    daemon.wait_state(&hash, "faulted");
    daemon.stop();
}

/// Every connection accepted on a listener the test holds, passed on as it comes.
fn accepting() -> (u16, std::sync::mpsc::Receiver<TcpStream>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if tx.send(conn).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// Reads until the daemon closes `conn`; fails when it is still open after [`DEADLINE`].
fn assert_closed(mut conn: TcpStream, why: &str) {
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{why}: the connection is still open after {DEADLINE:?} ({e})"),
        }
    }
}

/// The peer accepts and never answers; the daemon's handshake timeout (600 s) and the
/// fetch's deadline (an hour) are both past [`DEADLINE`], so a closed connection within it is
/// the pause or the removal cancelling the fetch.
#[test]
fn pausing_or_removing_a_magnet_being_fetched_cancels_the_fetch() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = dir.join("daemon.toml");
    std::fs::write(&config, "handshake_timeout = \"600s\"\n").unwrap();
    let (port, conns) = accepting();
    let hash = "ef".repeat(20);
    let extra: Vec<OsString> = args!["--config", &config];
    let daemon = Daemon::start_with(dir, "daemon-1", &extra);
    let body = json!({ "magnet": magnet(&hash, &[port]), "output": dir.join("out"), "metadata_timeout_secs": 3600 });
    let (status, added) = daemon.add_json(body);
    assert_eq!(status, 201, "{added}");
    let first = conns.recv_timeout(DEADLINE).expect("the daemon dials the magnet's x.pe");
    daemon.wait_state(&hash, "fetching_metadata");

    let (status, paused) = daemon.call("POST", &format!("/api/torrents/{hash}/pause"), None);
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")), "{paused}");
    assert_closed(first, "pause");

    let (status, resumed) = daemon.call("POST", &format!("/api/torrents/{hash}/resume"), None);
    assert_eq!((status, resumed["state"].as_str()), (200, Some("fetching_metadata")), "{resumed}");
    let second = conns.recv_timeout(DEADLINE).expect("a resume fetches again");
    assert_eq!(daemon.call("DELETE", &format!("/api/torrents/{hash}"), None).0, 204);
    assert_closed(second, "remove");
    assert_eq!(daemon.call("GET", &format!("/api/torrents/{hash}"), None).0, 404);
    daemon.stop();
}
