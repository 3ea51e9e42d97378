//! `shoal daemon` (issue 12, its core): the HTTP API and the client commands against a real
//! daemon process on 127.0.0.1.
//!
//! One daemon, fed by a libtorrent seeder: a `.torrent` added over the API completes
//! byte-identical, a `source_path` seeds, a third torrent is added paused by `shoal add`, one
//! is paused by `shoal pause`; after SIGTERM and a restart the same torrents are back in the
//! same states; `shoal remove --delete-data` removes the data. Unauthorised, malformed and
//! oversized requests get 401/400/413 with a JSON error; the clients exit 1 when no daemon
//! answers or the torrent does not exist, 2 for a malformed id.
mod common;

use common::clients::lt_peer;
use common::daemon::{request, Daemon, DEADLINE, IO};
use common::process::{run_env, serial, Proc};
use common::torrent::{assert_same_bytes, create_torrent, data_and_torrent, make_file};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Opens `GET /api/events` and reads until the first whole event (bounded by [`IO`]).
fn first_event(addr: SocketAddr, token: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, IO).unwrap();
    s.set_read_timeout(Some(IO)).unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap_or_else(|e| panic!("events: {e}; so far {:?}", String::from_utf8_lossy(&got)));
        assert!(n > 0, "events ended: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(at) = text.find("event: ") {
            if let Some(end) = text[at..].find("\n\n") {
                return text[at..at + end].to_string();
            }
        }
    }
}

#[test]
fn the_daemon_manages_torrents_over_its_api_and_restarts_into_them() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data_a, torrent_a) = data_and_torrent(&dir.join("a"), 3 * 1024 * 1024 + 77, 11, "64KiB");
    let (_lt, lt_port) = lt_peer("seed", &torrent_a, data_a.parent().unwrap(), &[], dir);
    let source_b = make_file(&dir.join("src"), "b.bin", 1024 * 1024 + 5, 12);
    let data_c = make_file(&dir.join("c"), "c.bin", 200 * 1024, 13);
    let torrent_c = dir.join("c.torrent");
    let id_c = create_torrent(&data_c, &torrent_c, "16KiB", None);
    let out = dir.join("out");

    let daemon = Daemon::start(dir, "daemon-1");
    let no_token = request(daemon.api, "GET", "/api/torrents", None, None, None);
    assert_eq!(no_token.status, 401);
    assert!(no_token.json["error"].is_string(), "401 carries a JSON error: {}", no_token.json);
    let wrong = request(daemon.api, "GET", "/api/torrents", Some(&"0".repeat(64)), None, None);
    assert_eq!(wrong.status, 401, "a wrong token is refused");

    // A .torrent fed by libtorrent completes byte-identical; adding it twice is a conflict.
    let bytes = std::fs::read(&torrent_a).unwrap();
    let path = format!("/api/torrents?output={}&peer=127.0.0.1:{lt_port}", out.display());
    let added = daemon.call("POST", &path, Some(("application/x-bittorrent", &bytes)));
    assert_eq!(added.status, 201, "{}", added.json);
    let id_a = added.json["id"].as_str().unwrap().to_string();
    assert_eq!(daemon.call("POST", &path, Some(("application/x-bittorrent", &bytes))).status, 409);
    let done = daemon.wait_state(&id_a, "seeding");
    assert_eq!(done["progress"], 1.0);
    assert_same_bytes(&data_a, &out.join("data.bin"));

    // Existing data seeds, like `shoal seed PATH`.
    let body = serde_json::to_vec(&serde_json::json!({ "source_path": source_b })).unwrap();
    let added = daemon.call("POST", "/api/torrents", Some(("application/json", &body)));
    assert_eq!(added.status, 201, "{}", added.json);
    let id_b = added.json["id"].as_str().unwrap().to_string();
    daemon.wait_state(&id_b, "seeding");
    assert!(dir.join("state/torrents").join(format!("{id_b}.torrent")).exists(), "its torrent is kept");

    // The clients: add paused, pause, list.
    let (code, stdout, err) =
        daemon.client(dir, &["add", torrent_c.to_str().unwrap(), "-o", out.to_str().unwrap(), "--paused"]);
    assert_eq!((code, stdout.trim()), (0, format!("added {id_c}").as_str()), "{err}");
    let (code, _, err) = daemon.client(dir, &["pause", &id_b]);
    assert_eq!(code, 0, "{err}");
    let (code, listed, err) = daemon.client(dir, &["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    let mut before = daemon.states();
    before.sort();
    daemon.stop();

    // Restarted: the same torrents, paused ones still paused, the complete one seeding again.
    let daemon = Daemon::start(dir, "daemon-2");
    let mut after = daemon.states();
    after.sort();
    assert_eq!(after.len(), 3, "{after:?}");
    for (id, state) in &after {
        if *id == id_b || *id == id_c {
            assert_eq!(state, "paused", "{id} after restart: {after:?} (before {before:?})");
        }
    }
    daemon.wait_state(&id_a, "seeding");
    let (code, _, err) = daemon.client(dir, &["resume", &id_b]);
    assert_eq!(code, 0, "{err}");
    daemon.wait_state(&id_b, "seeding");
    let rechecked = daemon.call("POST", &format!("/api/torrents/{id_a}/recheck"), None);
    assert_eq!((rechecked.status, rechecked.json["state"].as_str()), (200, Some("checking")), "{}", rechecked.json);
    let a = daemon.wait_state(&id_a, "seeding");
    let size = std::fs::metadata(&data_a).unwrap().len();
    assert_eq!(a["files"], serde_json::json!([{ "path": "data.bin", "length": size }]));

    // Remove with its data: only DIR/<name> goes.
    let (code, stdout, err) = daemon.client(dir, &["remove", &id_a, "--delete-data"]);
    assert_eq!((code, stdout.trim()), (0, format!("removed {id_a}").as_str()), "{err}");
    assert!(!out.join("data.bin").exists(), "the data is deleted");
    assert!(out.exists() && source_b.exists(), "nothing else is");
    assert_eq!(daemon.call("GET", &format!("/api/torrents/{id_a}"), None).status, 404);
    assert_eq!(daemon.states().len(), 2);

    // The clients' mistakes and failures.
    let (code, _, err) = daemon.client(dir, &["pause", "not-an-id"]);
    assert_eq!(code, 2, "a malformed id is the user's mistake: {err}");
    let (code, _, err) = daemon.client(dir, &["resume", &"ab".repeat(20)]);
    assert_eq!(code, 1, "no such torrent: {err}");
    assert!(err.contains("no torrent"), "{err}");
    daemon.stop();
    let gone = common::ports::free_port();
    let all = args!["list", "--api", format!("127.0.0.1:{gone}"), "--state-dir", dir.join("state")];
    let (status, _, err) = run_env(&all, &[], Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "no daemon: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("no daemon answering"), "{err}");
}

/// The daemon's config file and its libp2p node on loopback, with a key file in `dir`.
fn daemon_node_args(dir: &std::path::Path, config: &std::path::Path) -> Vec<std::ffi::OsString> {
    args!["--config", config, "--kad-listen", "/ip4/127.0.0.1/tcp/0", "--identity", dir.join("daemon.key")]
}

/// A key peer gone for good (a `shoal node` killed by PID) raises one `key_peer_lost` alert
/// once the daemon's monitor has failed to probe and to repair it; the alert can be resolved.
#[test]
fn a_key_peer_lost_for_good_raises_an_alert() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = dir.join("shoal.toml");
    let text = "key_peer_probe_interval = \"1s\"\nper_peer_min_probe_interval = \"1s\"\nprobe_timeout = \"1s\"\n\
                probe_fail_threshold = 1\ndht_query_timeout = \"5s\"\n";
    std::fs::write(&config, text).unwrap();
    let node_args = |name: &str| {
        args![
            "node",
            "--kad-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--identity",
            dir.join(format!("{name}.key")),
            "--config",
            &config
        ]
    };
    let mut node = Proc::spawn("node", dir, &node_args("node"), &[]);
    let node_addr = node.kad_addr();
    let mut gone_args = node_args("gone");
    gone_args.extend(args!["--bootstrap", &node_addr]);
    let mut gone = Proc::spawn("gone", dir, &gone_args, &[]);
    let gone_addr = gone.kad_addr();
    let gone_id = gone_addr.rsplit('/').next().unwrap().to_string();
    gone.kill();

    let mut extra = daemon_node_args(dir, &config);
    extra.extend(args!["--bootstrap", &node_addr, "--key-peer", &gone_addr]);
    let daemon = Daemon::start_kad(dir, "daemon", &extra);
    let deadline = Instant::now() + DEADLINE;
    let alert = loop {
        let alerts = daemon.call("GET", "/api/alerts", None).json;
        let found = alerts.as_array().into_iter().flatten().find(|a| a["kind"] == "key_peer_lost").cloned();
        if let Some(a) = found {
            break a;
        }
        if Instant::now() > deadline {
            daemon.proc.fail(&format!("no key_peer_lost alert within {DEADLINE:?}: {alerts}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!((alert["name"].as_str(), alert["torrent"].as_str()), (Some(gone_id.as_str()), Some("")), "{alert}");
    let resolved = daemon.call("POST", &format!("/api/alerts/{}/resolve", alert["id"]), None);
    assert_eq!((resolved.status, &resolved.json["resolved"]), (200, &Value::Bool(true)), "{}", resolved.json);
    let all = daemon.call("GET", "/api/alerts", None).json;
    let lost = all.as_array().unwrap().iter().filter(|a| a["kind"] == "key_peer_lost").count();
    assert_eq!(lost, 1, "raised once while the peer stays gone: {all}");
    daemon.stop();
    node.kill();
}

/// `key_peers` patched while the daemon runs: the monitor takes the new key peer at once and
/// probes it (connected), and lets it go when the key is emptied again.
#[test]
fn key_peers_patched_while_running_join_and_leave_the_monitor() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = dir.join("shoal.toml");
    std::fs::write(&config, "key_peer_probe_interval = \"1s\"\nper_peer_min_probe_interval = \"1s\"\n").unwrap();
    let node_args = args!["node", "--kad-listen", "/ip4/127.0.0.1/tcp/0", "--identity", dir.join("node.key")];
    let mut node = Proc::spawn("node", dir, &node_args, &[]);
    let node_addr = node.kad_addr();
    let node_id = node_addr.rsplit('/').next().unwrap().to_string();
    let mut extra = daemon_node_args(dir, &config);
    extra.extend(args!["--diag", "127.0.0.1:0"]);
    let mut daemon = Daemon::start_kad(dir, "daemon", &extra);
    let diag = daemon.proc.diag_addr();
    let key_peer = |view: &Value| {
        view["key_peers"].as_array().into_iter().flatten().find(|p| p["peer_id"] == node_id.as_str()).cloned()
    };
    let watch = |what: &str, done: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let view = common::http::get_json(diag, "/debug/p2p/keepalive").unwrap_or_default();
            if done(&view) {
                return view;
            }
            if Instant::now() > deadline {
                daemon.proc.fail(&format!("{what} within {DEADLINE:?}: {view}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert!(key_peer(&watch("no view", &|v| v["enabled"] == true)).is_none(), "not a key peer yet");

    let patch = |list: Value| {
        let body = serde_json::to_vec(&serde_json::json!({ "key_peers": list })).unwrap();
        let answer = daemon.call("PATCH", "/api/config", Some(("application/json", &body)));
        assert_eq!(answer.status, 200, "{}", answer.json);
    };
    patch(serde_json::json!([node_addr]));
    let view = watch("the patched key peer not probed and connected", &|v| {
        key_peer(v).is_some_and(|p| p["connected"] == true && p["source"] == "configured")
    });
    assert_eq!(view["key_peers"].as_array().unwrap().len(), 1, "{view}");
    patch(serde_json::json!([]));
    watch("the key peer still there", &|v| v["enabled"] == true && key_peer(v).is_none());
    daemon.stop();
    node.kill();
}

/// Method, path, body (content type, bytes), the status wanted, words the error must hold.
type Case<'a> = (&'a str, String, Option<(&'a str, &'a [u8])>, u16, &'a str);

#[test]
fn bad_requests_get_json_errors_and_bodies_are_bounded() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let daemon = Daemon::start(dir, "daemon");
    let out = dir.join("out");
    let cases: Vec<Case> = vec![
        ("POST", "/api/torrents".into(), Some(("application/json", b"{")), 400, "bad JSON body"),
        ("POST", "/api/torrents".into(), Some(("application/json", br#"{"sauce": 1}"#)), 400, "unknown field"),
        ("POST", "/api/torrents".into(), Some(("application/json", br#"{"source_path": "rel/x"}"#)), 400, "absolute"),
        ("POST", "/api/torrents".into(), Some(("application/json", br#"{"magnet": "magnet:?xt=x"}"#)), 400, "output"),
        (
            "POST",
            "/api/torrents".into(),
            Some(("application/json", br#"{"magnet": "magnet:?xt=x", "output": "/tmp/shoal-unused"}"#)),
            400,
            "magnet",
        ),
        (
            "POST",
            format!("/api/torrents?output={}", out.display()),
            Some(("application/x-bittorrent", b"d4:junk")),
            400,
            "bad torrent",
        ),
        ("POST", "/api/torrents".into(), Some(("application/x-bittorrent", b"d4:infoe")), 400, "output"),
        ("POST", "/api/torrents".into(), Some(("text/plain", b"hi")), 415, "content type"),
        ("GET", "/api/torrents/xyz".into(), None, 400, "torrent id"),
        ("POST", format!("/api/torrents/{}/pause", "cd".repeat(20)), None, 404, "no torrent"),
        ("DELETE", format!("/api/torrents/{}?shred=1", "cd".repeat(20)), None, 400, "unknown query parameter"),
        ("GET", "/api/nothing".into(), None, 404, "not found"),
    ];
    for (method, path, body, status, words) in cases {
        let a = daemon.call(method, &path, body);
        assert_eq!(a.status, status, "{method} {path}: {}", a.json);
        let msg = a.json["error"].as_str().unwrap_or_else(|| panic!("{method} {path}: no JSON error: {}", a.json));
        assert!(msg.contains(words), "{method} {path}: {msg:?} should say {words:?}");
    }
    // Announced bodies past the bounds are refused before they are read.
    let big = request(
        daemon.api,
        "POST",
        "/api/torrents?output=/tmp",
        Some(&daemon.token),
        Some(("application/x-bittorrent", b"")),
        Some(20 << 20),
    );
    assert_eq!(big.status, 413, "{}", big.json);
    assert!(big.json["error"].as_str().is_some_and(|m| m.contains("body over")), "{}", big.json);
    let json = request(
        daemon.api,
        "POST",
        "/api/torrents",
        Some(&daemon.token),
        Some(("application/json", b"")),
        Some(10 << 20),
    );
    assert_eq!(json.status, 413, "{}", json.json);
    // The page needs no token; the events do, and carry the torrent list.
    let page = request(daemon.api, "GET", "/", None, None, None);
    assert_eq!(page.status, 200);
    assert_eq!(request(daemon.api, "GET", "/api/events", None, None, None).status, 401);
    let first = first_event(daemon.api, &daemon.token);
    assert!(first.contains("event: torrents\ndata: []"), "{first:?}");
    assert!(daemon.proc.log_text().find("panicked").is_none(), "no handler panicked");
    assert_eq!(daemon.states().len(), 0, "nothing was added");
    daemon.stop();
}

#[test]
fn config_patches_are_validated_versioned_rolled_back_and_kept() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let daemon = Daemon::start(dir, "daemon-1");
    let start = daemon.call("GET", "/api/config", None);
    assert_eq!(start.status, 200, "{}", start.json);
    assert_eq!(start.json["version"], 1);
    assert_eq!(start.json["options"]["max_connections"], 50);

    let json = "application/json";
    let a = daemon.call("PATCH", "/api/config", Some((json, br#"{"max_connections": 80, "request_timeout": "45s"}"#)));
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!((a.json["version"].as_u64(), a.json["options"]["request_timeout"].as_str()), (Some(2), Some("45s")));
    for (bad, key) in [
        (&br#"{"max_connections": 0}"#[..], "max_connections"),
        (br#"{"unchoke_slots": "four"}"#, "unchoke_slots"),
        (br#"{"speed_limit": 5}"#, "speed_limit"),
    ] {
        let a = daemon.call("PATCH", "/api/config", Some((json, bad)));
        assert_eq!(a.status, 400, "{}", a.json);
        let msg = a.json["error"].as_str().unwrap();
        assert!(msg.contains(&format!("`{key}`")), "{msg:?} names {key}");
    }
    let a = daemon.call("POST", "/api/config/rollback", Some((json, br#"{"version": 1}"#)));
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!((a.json["version"].as_u64(), a.json["options"]["max_connections"].as_u64()), (Some(3), Some(50)));
    assert_eq!(daemon.call("POST", "/api/config/rollback", Some((json, br#"{"version": 9}"#))).status, 400);
    let versions = daemon.call("GET", "/api/config/versions", None).json;
    let notes: Vec<&str> = versions.as_array().unwrap().iter().map(|v| v["note"].as_str().unwrap()).collect();
    assert_eq!(notes, ["start", "patch: max_connections, request_timeout", "rollback to 1"]);
    let diff = daemon.call("GET", "/api/config/diff?from=1&to=2", None);
    assert_eq!(diff.status, 200, "{}", diff.json);
    let changed = &diff.json["changed"];
    assert_eq!(changed["max_connections"], serde_json::json!({ "from": 50, "to": 80 }), "{changed}");
    assert_eq!(changed.as_object().unwrap().len(), 2, "only the two patched keys: {changed}");
    assert_eq!(daemon.call("GET", "/api/config/diff?from=1&to=3", None).json["changed"], serde_json::json!({}));
    assert_eq!(daemon.call("GET", "/api/config/diff?from=1", None).status, 400);

    // The same through `shoal config`.
    let (code, out, err) = daemon.client(dir, &["config", "set", "unchoke_slots=6", "request_timeout=1m 5s"]);
    assert_eq!((code, out.trim()), (0, "config version 4"), "{err}");
    let (code, out, err) = daemon.client(dir, &["config", "get", "request_timeout"]);
    assert_eq!((code, out.trim()), (0, "\"1m 5s\""), "{err}");
    let (code, _, err) = daemon.client(dir, &["config", "set", "unchoke_slots=0"]);
    assert_eq!(code, 2, "an invalid value is the user's mistake: {err}");
    assert!(err.contains("`unchoke_slots`"), "{err}");
    let (code, out, err) = daemon.client(dir, &["config", "history"]);
    assert_eq!((code, out.lines().count()), (0, 4), "{out}{err}");
    let versions = daemon.call("GET", "/api/config/versions", None).json;
    daemon.stop();

    let daemon = Daemon::start(dir, "daemon-2");
    let kept = daemon.call("GET", "/api/config/versions", None).json;
    assert_eq!(kept, versions, "the history survives a restart");
    assert_eq!(daemon.call("GET", "/api/config", None).json["version"], 4);
    daemon.stop();
}

#[test]
fn a_torrent_whose_storage_fails_is_faulted_and_retried_while_the_others_run() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (data, torrent) = data_and_torrent(&dir.join("f"), 1024 * 1024 + 3, 21, "64KiB");
    let (_seeder, port) = common::clients::shoal_seeder(&data, &torrent, &[], dir);
    let source = make_file(&dir.join("src"), "other.bin", 300 * 1024, 22);
    let out = dir.join("out");
    // A directory where the torrent's file must go: every open of it fails.
    std::fs::create_dir_all(out.join("data.bin").join("in-the-way")).unwrap();

    let daemon = Daemon::start(dir, "daemon");
    let body = serde_json::to_vec(&serde_json::json!({ "source_path": source })).unwrap();
    let other = daemon.call("POST", "/api/torrents", Some(("application/json", &body)));
    let other = other.json["id"].as_str().unwrap_or_else(|| panic!("{}", other.json)).to_string();
    daemon.wait_state(&other, "seeding");
    let bytes = std::fs::read(&torrent).unwrap();
    let path = format!("/api/torrents?output={}&peer=127.0.0.1:{port}", out.display());
    let added = daemon.call("POST", &path, Some(("application/x-bittorrent", &bytes)));
    let id = added.json["id"].as_str().unwrap_or_else(|| panic!("{}", added.json)).to_string();
    let faulted = daemon.wait_state(&id, "faulted");
    assert!(faulted["error"].as_str().is_some_and(|e| !e.is_empty()), "{faulted}");
    // The supervisor looks once a second: wait for its record.
    let deadline = Instant::now() + DEADLINE;
    let fault = loop {
        let faults = daemon.call("GET", "/api/faults", None).json;
        if let Some(f) = faults.as_array().unwrap().iter().find(|f| f["id"] == id.as_str()) {
            break f.clone();
        }
        if Instant::now() > deadline {
            daemon.proc.fail(&format!("no fault listed for {id}: {faults}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(fault["kind"], "storage", "{fault}");
    assert!(fault["recovery"].as_str().unwrap().starts_with("restart in"), "{fault}");
    assert!(fault["message"].as_str().unwrap().contains("data.bin"), "the message names the file: {fault}");
    let alerts = daemon.call("GET", "/api/alerts", None).json;
    let alert = alerts.as_array().unwrap().iter().find(|a| a["torrent"] == id.as_str() && a["kind"] == "disk_error");
    let alert = alert.unwrap_or_else(|| panic!("a disk_error alert is raised with the fault: {alerts}")).clone();
    assert_eq!(alert["resolved"], false);
    let resolved = daemon.call("POST", &format!("/api/alerts/{}/resolve", alert["id"]), None);
    assert_eq!((resolved.status, &resolved.json["resolved"]), (200, &Value::Bool(true)), "{}", resolved.json);
    assert_eq!(daemon.call("POST", "/api/alerts/999999/resolve", None).status, 404);
    assert_eq!(
        daemon.call("GET", &format!("/api/torrents/{other}"), None).json["state"],
        "seeding",
        "the other runs on"
    );

    // Fixed behind its back: the next retry (backoff 2 s, doubling) finishes it.
    std::fs::remove_dir_all(out.join("data.bin")).unwrap();
    daemon.wait_state(&id, "seeding");
    assert_same_bytes(&data, &out.join("data.bin"));
    daemon.stop();
}
