//! What a seeder and a downloader tell a tracker: a seeder's very first announce already says
//! `left=0` (its check finished before it announced) and it never sends `completed`; a
//! download that really happens announces `started` with bytes left, then `completed` once.
//!
//! The tracker is a tiny fake on 127.0.0.1 that records each announce's query string and
//! answers `interval 1` with no peers, so announces come every second or so (with
//! `tracker_min_interval = "1s"`).
mod common;

use common::process::Proc;
use common::torrent::{assert_same_bytes, create_torrent, make_file};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

/// Records the query string of every `GET /announce?...` it is sent.
struct FakeTracker {
    addr: SocketAddr,
    queries: Arc<Mutex<Vec<String>>>,
}

impl FakeTracker {
    fn start() -> FakeTracker {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let queries = Arc::new(Mutex::new(Vec::new()));
        let q = queries.clone();
        // Ends with the test process; it only ever talks to the shoal children on loopback.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                if let Some(query) = line.split_whitespace().nth(1).and_then(|p| p.split_once('?')).map(|x| x.1) {
                    q.lock().unwrap().push(query.to_string());
                }
                let body = b"d8:intervali1e5:peers0:e";
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let mut s = &stream;
                let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(body));
            }
        });
        FakeTracker { addr, queries }
    }

    fn url(&self) -> String {
        format!("http://{}/announce", self.addr)
    }

    /// The announces whose query carries `peer_id` (raw, as it was encoded).
    fn announces_of(&self, peer_id: &str) -> Vec<String> {
        self.queries.lock().unwrap().iter().filter(|q| param(q, "peer_id") == Some(peer_id)).cloned().collect()
    }

    /// The distinct peer ids seen so far, in order of first announce.
    fn peer_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for q in self.queries.lock().unwrap().iter() {
            if let Some(id) = param(q, "peer_id").filter(|id| !ids.iter().any(|i| i == id)) {
                ids.push(id.to_string());
            }
        }
        ids
    }

    /// Waits until `pred` holds for the recorded queries.
    fn wait(&self, what: &str, pred: impl Fn(&FakeTracker) -> bool) {
        let start = Instant::now();
        while !pred(self) {
            assert!(
                start.elapsed() < DEADLINE,
                "{what}: not within {DEADLINE:?}; got {:?}",
                self.queries.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("shoal.toml");
    std::fs::write(&path, "tracker_min_interval = \"1s\"\n").unwrap();
    path
}

#[test]
fn a_seeder_announces_left_zero_first_and_never_completed() {
    let _turn = common::process::serial();
    let dir = tempfile::tempdir().unwrap();
    let (seed_dir, out) = (dir.path().join("seed"), dir.path().join("out"));
    std::fs::create_dir_all(&seed_dir).unwrap();
    let data = make_file(&seed_dir, "payload.bin", 3 * 1024 * 1024 + 77, 11);
    let torrent = dir.path().join("payload.torrent");
    let tracker = FakeTracker::start();
    create_torrent(&data, &torrent, "256KiB", Some(&tracker.url()));
    let conf = config(dir.path());
    let net = crate::args!["--listen", "127.0.0.1:0", "--no-kad", "--quiet", "--config", &conf];

    let mut seed_args = crate::args!["seed", &data, "--torrent", &torrent];
    seed_args.extend(net.clone());
    let mut seeder = Proc::spawn("shoal-seed", dir.path(), &seed_args, &[]);
    let seeder_addr = seeder.bt_addr();
    // Three announces: the buggy seeder's second one was `completed`.
    tracker.wait("three announces from the seeder", |t| {
        t.peer_ids().first().is_some_and(|id| t.announces_of(id).len() >= 3)
    });
    let seeder_id = tracker.peer_ids()[0].clone();
    let announces = tracker.announces_of(&seeder_id);
    assert_eq!(param(&announces[0], "event"), Some("started"), "first announce: {}", announces[0]);
    for a in &announces {
        assert_eq!(param(a, "left"), Some("0"), "a seeder announced bytes left: {a}");
        assert_ne!(param(a, "event"), Some("completed"), "a seeder announced completed: {a}");
    }

    // `--seed` keeps the leecher running once complete, so its `completed` goes out.
    let mut dl_args = crate::args!["download", &torrent, "-o", &out, "--seed", "--peer", seeder_addr.to_string()];
    dl_args.extend(net);
    let mut leecher = Proc::spawn("shoal-download", dir.path(), &dl_args, &[]);
    let is_completed = |a: &String| param(a, "event") == Some("completed");
    tracker
        .wait("the leecher's completed", |t| t.peer_ids().iter().any(|id| t.announces_of(id).iter().any(is_completed)));
    let leecher_id = tracker.peer_ids().into_iter().find(|id| *id != seeder_id).expect("the leecher announced");
    let announces = tracker.announces_of(&leecher_id);
    assert_eq!(param(&announces[0], "event"), Some("started"));
    assert_ne!(param(&announces[0], "left"), Some("0"), "the leecher had bytes to fetch: {}", announces[0]);
    let completed: Vec<&String> = announces.iter().filter(|a| is_completed(a)).collect();
    assert_eq!(completed.len(), 1, "one completed from the real download: {announces:?}");
    assert_eq!(param(completed[0], "left"), Some("0"));
    assert!(tracker.announces_of(&seeder_id).iter().all(|a| !is_completed(a)), "the seeder announced completed");
    let start = Instant::now();
    while std::fs::read(out.join("payload.bin")).ok() != std::fs::read(&data).ok() {
        assert!(start.elapsed() < DEADLINE, "the download is not byte-identical within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_same_bytes(&data, &out.join("payload.bin"));
    leecher.kill();
    seeder.kill();
}
