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
use common::daemon::{Answer, Daemon, DEADLINE};
use common::process::serial;
use common::torrent::{assert_same_bytes, create_torrent, data_and_torrent, make_file, read_metainfo};
use serde_json::json;
use std::ffi::OsString;
use std::io::Read;
use std::net::TcpStream;

const KIB: usize = 1024;

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
    let Answer { status, json: added } = daemon.add_json(json!({ "magnet": magnet(&hash, &[port]), "output": out }));
    assert_eq!(status, 201, "{added}");
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(id, hash);
    daemon.wait_state(&id, "seeding");
    assert_same_bytes(&data, &out.join("data.bin"));
    let kept = dir.join("state/torrents").join(format!("{id}.torrent"));
    assert_eq!(read_metainfo(&kept).info_hash.to_hex(), hash, "the kept .torrent is the magnet's torrent");
    let Answer { status, json: again } = daemon.add_json(json!({ "magnet": magnet(&hash, &[port]), "output": out }));
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
    let Answer { status, json: added } =
        daemon.add_json(json!({ "magnet": magnet(&hash, &[port]), "output": out, "paused": true }));
    assert_eq!(status, 201, "{added}");
    let view = daemon.wait_state(&hash, "paused");
    assert_eq!(view["name"], "payload", "the magnet's dn names it until the metadata comes");
    daemon.stop();
    assert!(!dir.join("state/torrents").join(format!("{hash}.torrent")).exists(), "a paused magnet fetched nothing");

    let daemon = Daemon::start(dir, "daemon-2");
    daemon.wait_state(&hash, "paused");
    let Answer { status, json: body } = daemon.call("POST", &format!("/api/torrents/{hash}/resume"), None);
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
    let Answer { status, json: added } =
        daemon.add_json(json!({ "magnet": magnet(&hash, &[port]), "output": out, "only": [0, 5] }));
    assert_eq!(status, 201, "{added}");
    let view = daemon.wait_state(&hash, "faulted");
    let error = view["error"].as_str().unwrap_or_default();
    assert!(error.contains("file 5 does not exist"), "{view}");
    assert!(daemon.wait_metadata_fault(&hash).contains("file 5"));
    assert_eq!(daemon.call("DELETE", &format!("/api/torrents/{hash}"), None).status, 204);

    // A .torrent body's bad index is refused at once.
    let path = format!("/api/torrents?output={}&only=0,7", out.display());
    let Answer { status, json: refused } =
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
    let closed = common::ports::free_port();
    let hash = "ab".repeat(20);
    let daemon = Daemon::start(dir, "daemon-1");
    let body = json!({ "magnet": magnet(&hash, &[closed]), "output": dir.join("out"), "metadata_timeout_secs": 5 });
    let Answer { status, json: added } = daemon.add_json(body);
    assert_eq!(status, 201, "{added}");
    let view = daemon.wait_state(&hash, "faulted");
    assert!(view["error"].as_str().unwrap_or_default().starts_with("metadata: "), "{view}");
    daemon.wait_metadata_fault(&hash);
    let Answer { status, json: bad } = daemon.add_json(
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
    let Answer { status, json: added } = daemon.add_json(body);
    assert_eq!(status, 201, "{added}");
    let first = conns.recv_timeout(DEADLINE).expect("the daemon dials the magnet's x.pe");
    daemon.wait_state(&hash, "fetching_metadata");

    let Answer { status, json: paused } = daemon.call("POST", &format!("/api/torrents/{hash}/pause"), None);
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")), "{paused}");
    assert_closed(first, "pause");

    let Answer { status, json: resumed } = daemon.call("POST", &format!("/api/torrents/{hash}/resume"), None);
    assert_eq!((status, resumed["state"].as_str()), (200, Some("fetching_metadata")), "{resumed}");
    let second = conns.recv_timeout(DEADLINE).expect("a resume fetches again");
    assert_eq!(daemon.call("DELETE", &format!("/api/torrents/{hash}"), None).status, 204);
    assert_closed(second, "remove");
    assert_eq!(daemon.call("GET", &format!("/api/torrents/{hash}"), None).status, 404);
    daemon.stop();
}
