//! `shoal daemon`'s fast resume and rate limits (issue 12), on real daemon processes.
//!
//! - A restarted daemon takes its seeding torrent back without reading its data (and a config
//!   patch reaches it while it runs): the bytes the process read (`rchar` in `/proc/PID/io`) stay far below the data's size, while a
//!   `recheck` reads all of it. A file changed behind the daemon's back is hashed again and
//!   its changed piece is lost.
//! - A download held to a global rate limit (a config patch) moves no faster than the limit;
//!   the daemon is SIGKILLed mid-download, restarted, the config rolled back to no limit, and
//!   the download completes byte-identical, keeping pieces it had recorded.
mod common;

use common::clients::lt_peer;
use common::daemon::Daemon;
use common::process::serial;
use common::torrent::{assert_same_bytes, data_and_torrent, make_file};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes the process has read through read(2) and friends: files and sockets alike.
fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    let line = io.lines().find(|l| l.starts_with("rchar:")).expect("rchar line");
    line["rchar:".len()..].trim().parse().expect("rchar value")
}

/// Waits for the daemon's log to hold `n` resume-check lines and returns the `n`th as
/// (pieces had, pieces in all, pieces hashed).
fn resume_check(daemon: &Daemon, n: usize) -> (u32, u32, u32) {
    let deadline = Instant::now() + common::daemon::DEADLINE;
    loop {
        let log = daemon.proc.log_text();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("resume check: ")).collect();
        if lines.len() >= n {
            // "resume check: H of T pieces on disk match their hashes; K hashed, the rest ..."
            let words: Vec<&str> = lines[n - 1].split("resume check: ").nth(1).unwrap().split(' ').collect();
            let num = |i: usize| words[i].parse().unwrap_or_else(|_| panic!("{}", lines[n - 1]));
            return (num(0), num(2), num(9));
        }
        if Instant::now() > deadline {
            daemon.proc.fail(&format!("fewer than {n} resume check lines"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Flips the byte at `at` of `path` and makes sure its modification time differs from the one
/// recorded in the resume record (file timestamps are coarse: a write within the same tick as
/// the record would keep it).
fn change_behind_its_back(path: &Path, at: u64, record: &Path) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[!byte[0]], at).unwrap();
    let recorded: Value = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    let then = recorded["files"][0]["mtime_ns"].as_i64().expect("a recorded stamp");
    let now = std::fs::metadata(path).unwrap().modified().unwrap();
    let now_ns = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    if now_ns == then {
        file.set_modified(now + Duration::from_secs(1)).unwrap();
    }
}

#[test]
fn a_restart_reads_none_of_the_data_and_a_file_changed_behind_its_back_is_hashed_again() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let size: u64 = 8 * 1024 * 1024 + 3;
    let source = make_file(&dir.join("src"), "big.bin", size as usize, 21);

    let daemon = Daemon::start(dir, "daemon-1");
    let added = daemon.add_json(json!({ "source_path": source }));
    assert_eq!(added.status, 201, "{}", added.json);
    let id = added.json["id"].as_str().unwrap().to_string();
    daemon.wait_state(&id, "seeding");
    let first = rchar(daemon.proc.pid());
    assert!(first >= size, "hashing the data once reads it all: rchar {first} < {size}");
    daemon.stop();

    // Restarted: seeding again from the record, having read none of the data.
    let daemon = Daemon::start(dir, "daemon-2");
    daemon.wait_state(&id, "seeding");
    let (had, total, hashed) = resume_check(&daemon, 1);
    assert_eq!((had, hashed), (total, 0), "every piece from the record, none hashed");
    let resumed = rchar(daemon.proc.pid());
    assert!(resumed < size / 4, "a resumed start read {resumed} bytes of a {size}-byte torrent");
    // A config change reaches the running torrent.
    let patch = daemon.call("PATCH", "/api/config", Some(("application/json", br#"{"unchoke_slots": 2}"#)));
    assert_eq!(patch.status, 200, "{}", patch.json);
    let deadline = Instant::now() + common::daemon::DEADLINE;
    while !daemon.proc.log_text().contains("options changed while running") {
        assert!(Instant::now() < deadline, "the running torrent never took the new options");
        std::thread::sleep(Duration::from_millis(100));
    }
    // `recheck` drops the record: every byte is read again.
    let rechecked = daemon.call("POST", &format!("/api/torrents/{id}/recheck"), None);
    assert_eq!(rechecked.status, 200, "{}", rechecked.json);
    daemon.wait_state(&id, "seeding");
    assert_eq!(resume_check(&daemon, 2), (total, total, total), "a recheck hashes every piece");
    let after = rchar(daemon.proc.pid());
    assert!(after - resumed >= size, "a recheck reads the data: {} bytes", after - resumed);
    daemon.stop();

    // One byte changed while the daemon was down: that piece is lost, and the torrent (which
    // has no peer to fetch it from) waits for it.
    let record = dir.join("state/resume").join(format!("{id}.json"));
    change_behind_its_back(&source, 4 * 1024 * 1024, &record);
    let daemon = Daemon::start(dir, "daemon-3");
    let view = daemon.wait_state(&id, "downloading");
    assert_eq!(resume_check(&daemon, 1), (total - 1, total, total), "the changed file is hashed, one piece lost");
    let left = view["bytes_left"].as_u64().unwrap();
    assert!(left > 0 && left * u64::from(total) <= 2 * size, "one piece left: {view}");
    daemon.stop();
}

/// Block bytes received so far.
fn downloaded(view: &Value) -> u64 {
    view["downloaded"].as_u64().unwrap_or(0)
}

#[test]
fn a_rate_limited_download_killed_mid_way_resumes_and_completes_byte_identical() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let size = 24 * 1024 * 1024 + 11;
    let (data, torrent) = data_and_torrent(&dir.join("a"), size, 22, "256KiB");
    let (_seeder, port) = lt_peer("seed", &torrent, data.parent().unwrap(), &[], dir);
    let out = dir.join("out");
    let limit: u64 = 2 * 1024 * 1024;

    let daemon = Daemon::start(dir, "daemon-1");
    let patched = daemon.call(
        "PATCH",
        "/api/config",
        Some(("application/json", &serde_json::to_vec(&json!({ "download_rate_limit": limit })).unwrap())),
    );
    assert_eq!(patched.status, 200, "{}", patched.json);
    let before_limit = patched.json["version"].as_u64().unwrap() - 1;
    let bytes = std::fs::read(&torrent).unwrap();
    let path = format!("/api/torrents?output={}&peer=127.0.0.1:{port}", out.display());
    let added = daemon.call("POST", &path, Some(("application/x-bittorrent", &bytes)));
    assert_eq!(added.status, 201, "{}", added.json);
    let id = added.json["id"].as_str().unwrap().to_string();

    // The rate follows the limit: between two samples no more than the limit's worth, plus
    // its burst (a quarter second, at least 128 KiB) and one block in flight per request.
    daemon.wait_for(&id, "downloading some", |t| downloaded(t) > 0);
    // Taken before the first sample's request, so the measured time is never shorter than
    // the time between the two samples.
    let t0 = Instant::now();
    let first = daemon.wait_for(&id, "listed", |_| true);
    let mut last = first.clone();
    while last["progress"].as_f64().unwrap_or(0.0) < 0.25 {
        std::thread::sleep(Duration::from_millis(250));
        last = daemon.wait_for(&id, "listed", |_| true);
    }
    let moved = downloaded(&last) - downloaded(&first);
    let allowed = (limit as f64 * t0.elapsed().as_secs_f64()) as u64 + 2 * 1024 * 1024;
    assert!(moved <= allowed, "{moved} bytes in {:?} at a limit of {limit} B/s", t0.elapsed());
    assert!(last["progress"].as_f64().unwrap() < 1.0, "still downloading when killed: {last}");

    // SIGKILL mid-download: the next start keeps what was recorded, hashes what changed since.
    let mut daemon = daemon;
    daemon.proc.kill();
    let daemon = Daemon::start(dir, "daemon-2");
    let (had, total, _) = resume_check(&daemon, 1);
    assert!(had > 0 && had < total, "pieces written before the kill are kept, not more: {had} of {total}");
    let body = serde_json::to_vec(&json!({ "version": before_limit })).unwrap();
    let rolled = daemon.call("POST", "/api/config/rollback", Some(("application/json", &body)));
    assert_eq!(rolled.status, 200, "{}", rolled.json);
    assert_eq!(rolled.json["options"]["download_rate_limit"], 0, "{}", rolled.json);
    daemon.wait_state(&id, "seeding");
    assert_same_bytes(&data, &out.join("data.bin"));

    // A torrent's own limit is kept with it and refused when malformed.
    let set =
        daemon.call("PATCH", &format!("/api/torrents/{id}"), Some(("application/json", br#"{"upload_limit": 65536}"#)));
    assert_eq!((set.status, &set.json["upload_limit"]), (200, &json!(65536)), "{}", set.json);
    let bad = daemon.call("PATCH", &format!("/api/torrents/{id}"), Some(("application/json", br#"{"upload": 1}"#)));
    assert_eq!(bad.status, 400, "{}", bad.json);
    assert!(bad.json["error"].as_str().unwrap().contains("upload"), "{}", bad.json);
    daemon.stop();
    let daemon = Daemon::start(dir, "daemon-3");
    assert_eq!(daemon.wait_state(&id, "seeding")["upload_limit"], 65536);
    daemon.stop();
}
