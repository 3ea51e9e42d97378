//! Hostile HTTP trackers on 127.0.0.1 (issue 8, faults 3 and 7, and the per-reply address
//! bound): absurd intervals, floods of peers, redirect loops and redirects into the local
//! network. Each fake tracker is a few lines of tokio serving canned HTTP replies; it counts
//! the requests it saw so a test can say what shoal fetched.
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal::discovery::tracker::announcer::{self, AnnouncerConfig, AnnouncerLinks};
use shoal::discovery::tracker::http;
use shoal::discovery::tracker::redirect::{self, Reach, MAX_REDIRECTS};
use shoal::discovery::tracker::{AnnounceParams, TrackerError, TransferTotals, MAX_PEERS_PER_ANNOUNCE};
use shoal::metainfo::InfoHash;
use shoal::wire::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Generous bound for anything on this loaded machine to happen.
const DEADLINE: Duration = Duration::from_secs(60);

/// A fake tracker: answers request number `n` (from 0) with `reply(n, path)`.
struct Tracker {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Tracker {
    async fn start(ip: &str, reply: impl Fn(usize, &str) -> Vec<u8> + Send + Sync + 'static) -> Tracker {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind fake tracker");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (count, seen, reply) = (requests.clone(), paths.clone(), Arc::new(reply));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (count, seen, reply) = (count.clone(), seen.clone(), reply.clone());
                tokio::spawn(async move {
                    let Some(path) = read_request_path(&mut sock).await else { return };
                    let n = {
                        let mut seen = seen.lock().unwrap();
                        seen.push(path.clone());
                        count.fetch_add(1, Ordering::SeqCst)
                    };
                    let _ = sock.write_all(&reply(n, &path)).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Tracker { addr, requests, paths }
    }

    fn url(&self) -> String {
        format!("http://{}/announce", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

/// Reads a request head and returns its path, or `None` if the client went away.
async fn read_request_path(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head).lines().next()?.to_string();
    line.split(' ').nth(1).map(str::to_string)
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

fn redirect_to(location: &str) -> Vec<u8> {
    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A bencoded announce reply with `interval`, an optional `min interval` and `peers` compact.
fn announce_body(interval: &str, min_interval: Option<&str>, peers: &[u8]) -> Vec<u8> {
    let mut b = format!("d8:intervali{interval}e").into_bytes();
    if let Some(m) = min_interval {
        b.extend_from_slice(format!("12:min intervali{m}e").as_bytes());
    }
    b.extend_from_slice(format!("5:peers{}:", peers.len()).as_bytes());
    b.extend_from_slice(peers);
    b.push(b'e');
    b
}

/// `n` distinct compact IPv4 peers (10.x.y.z:6881).
fn compact_peers(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| [10, (i >> 16) as u8, (i >> 8) as u8, i as u8, 0x1a, 0xe1]).collect()
}

fn params() -> AnnounceParams {
    AnnounceParams {
        info_hash: InfoHash([3; 20]),
        peer_id: PeerId(*b"-SH0100-hostiletest1"),
        port: 6881,
        uploaded: 0,
        downloaded: 0,
        left: 100,
        event: None,
        numwant: 50,
        key: 1,
    }
}

struct RunningAnnouncer {
    peers: mpsc::Receiver<Vec<SocketAddr>>,
    nudge: mpsc::Sender<()>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _totals: watch::Sender<TransferTotals>,
}

/// The real announcer task for one tracker, with our floor (`tracker_min_interval`) at
/// `min_interval`.
fn spawn_announcer(url: String, min_interval: Duration) -> RunningAnnouncer {
    let cfg = AnnouncerConfig {
        peer_id: PeerId(*b"-SH0100-hostiletest2"),
        info_hash: InfoHash([4; 20]),
        port: 6881,
        numwant: 50,
        timeout: Duration::from_secs(30),
        min_interval,
    };
    let (totals, totals_rx) = watch::channel(TransferTotals { uploaded: 0, downloaded: 0, left: 100 });
    let (peers_tx, peers) = mpsc::channel(16);
    let (nudge, nudge_rx) = mpsc::channel(1);
    let cancel = CancellationToken::new();
    let links = AnnouncerLinks { need_peers: Some(nudge_rx), status: None };
    let task = announcer::spawn(vec![vec![url]], cfg, totals_rx, peers_tx, links, cancel.clone());
    RunningAnnouncer { peers, nudge, cancel, task, _totals: totals }
}

async fn next_peers(a: &mut RunningAnnouncer, what: &str) -> Vec<SocketAddr> {
    match tokio::time::timeout(DEADLINE, a.peers.recv()).await {
        Ok(Some(p)) => p,
        Ok(None) => panic!("{what}: the announcer stopped (did it panic?)"),
        Err(_) => panic!("{what}: no peers within {DEADLINE:?}"),
    }
}

/// Fault 3: `interval` and `min interval` of i64::MAX panicked the announcer ("overflow when
/// adding duration to instant") before it handed over the peers, and the torrent never
/// announced again. Now both are clamped: the peers arrive, and the task is alive to send
/// `stopped` when cancelled.
#[tokio::test]
async fn interval_of_i64_max_does_not_panic_the_announcer() {
    let max = i64::MAX.to_string();
    let tracker =
        Tracker::start("127.0.0.1", move |_, _| ok(&announce_body(&max, Some(&max), &compact_peers(1)))).await;
    let mut a = spawn_announcer(tracker.url(), Duration::from_secs(1));
    assert_eq!(next_peers(&mut a, "first announce").await.len(), 1);
    a.cancel.cancel();
    let joined = tokio::time::timeout(DEADLINE, a.task).await.expect("announcer ends after cancel");
    assert!(joined.is_ok(), "announcer task panicked: {joined:?}");
    let paths = tracker.paths();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(paths[1].contains("event=stopped"), "{paths:?}");
}

/// The same with `interval` of i64::MAX and no `min interval`: the nudge brings the second
/// announce forward to our floor, which would never happen had the task panicked.
#[tokio::test]
async fn nudge_after_an_i64_max_interval_announces_again() {
    let tracker = Tracker::start("127.0.0.1", |n, _| {
        let peer = [127, 0, 0, 1, 0x1a, 0xe1 + n as u8];
        ok(&announce_body(&i64::MAX.to_string(), None, &peer))
    })
    .await;
    let mut a = spawn_announcer(tracker.url(), Duration::from_secs(1));
    next_peers(&mut a, "first announce").await;
    a.nudge.send(()).await.expect("announcer takes nudges");
    let second = next_peers(&mut a, "second announce after the nudge").await;
    assert_eq!(second, ["127.0.0.1:6882".parse().unwrap()]);
    assert_eq!(tracker.requests(), 2);
    a.cancel.cancel();
    let joined = tokio::time::timeout(DEADLINE, a.task).await.expect("announcer ends after cancel");
    assert!(joined.is_ok(), "announcer task panicked: {joined:?}");
    assert_eq!(tracker.requests(), 3, "stopped was sent on the way out");
}

/// Negative intervals are "now", raised to our floor: the torrent keeps announcing, with no
/// nudge at all, at the floor.
#[tokio::test]
async fn negative_interval_is_raised_to_our_floor() {
    let tracker = Tracker::start("127.0.0.1", |_, _| ok(&announce_body("-5", Some("-9"), &compact_peers(1)))).await;
    let mut a = spawn_announcer(tracker.url(), Duration::from_secs(1));
    for i in 0..3 {
        next_peers(&mut a, &format!("announce {i}")).await;
    }
    a.cancel.cancel();
    let _ = tokio::time::timeout(DEADLINE, a.task).await;
}

/// Address bound: 50,000 compact peers in one reply; the announcer hands over the cap.
#[tokio::test]
async fn fifty_thousand_peers_are_cut_to_the_cap() {
    let body = announce_body("1800", None, &compact_peers(50_000));
    assert!(body.len() > 290_000);
    let tracker = Tracker::start("127.0.0.1", move |_, _| ok(&body)).await;
    let mut a = spawn_announcer(tracker.url(), Duration::from_secs(30));
    let peers = next_peers(&mut a, "flooded announce").await;
    assert_eq!(peers.len(), MAX_PEERS_PER_ANNOUNCE);
    assert_eq!(peers[0], "10.0.0.0:6881".parse().unwrap(), "the first ones, in order");
    a.cancel.cancel();
    let _ = tokio::time::timeout(DEADLINE, a.task).await;
}

/// Fault 7: a redirect loop stops after MAX_REDIRECTS hops with an error naming the limit, and
/// nothing more is fetched.
#[tokio::test]
async fn redirect_loop_stops_at_the_hop_limit() {
    let tracker = Tracker::start("127.0.0.1", |n, _| redirect_to(&format!("/announce/{n}"))).await;
    let err = http::announce(&tracker.url(), &params(), DEADLINE).await.unwrap_err();
    assert!(matches!(err, TrackerError::Redirect { .. }), "{err}");
    assert!(err.to_string().contains(&format!("more than {MAX_REDIRECTS} redirects")), "{err}");
    assert_eq!(tracker.requests(), 1 + MAX_REDIRECTS, "the original request and {MAX_REDIRECTS} hops, no more");
}

/// A tracker on loopback redirecting to another on loopback (by address and by the name
/// `localhost`) is a local chain and is followed.
#[tokio::test]
async fn loopback_to_loopback_redirects_work() {
    let real = Tracker::start("127.0.0.1", |_, _| ok(&announce_body("1800", None, &compact_peers(2)))).await;
    let by_name = format!("http://localhost:{}/announce", real.addr.port());
    let hop2 = Tracker::start("127.0.0.1", move |_, _| redirect_to(&by_name)).await;
    let hop2_url = hop2.url();
    let first = Tracker::start("127.0.0.1", move |_, _| redirect_to(&hop2_url)).await;
    let answer = http::announce(&first.url(), &params(), DEADLINE).await.expect("local chain followed");
    assert_eq!(answer.peers.len(), 2);
    assert_eq!((first.requests(), hop2.requests(), real.requests()), (1, 1, 1));
}

/// A redirect to another scheme is refused before anything is fetched from it.
#[tokio::test]
async fn redirect_to_another_scheme_is_refused() {
    let tracker = Tracker::start("127.0.0.1", |_, _| redirect_to("file:///etc/passwd")).await;
    let err = http::announce(&tracker.url(), &params(), DEADLINE).await.unwrap_err();
    assert!(err.to_string().contains("only http and https"), "{err}");
}

/// Treats 127.0.0.2 as a public address and everything else by the real rules: the test seam
/// that lets a loopback test show the public → local refusal end to end.
fn public_127_0_0_2(ip: IpAddr) -> Reach {
    if ip == IpAddr::from([127, 0, 0, 2]) {
        Reach::Global
    } else {
        redirect::reach(ip)
    }
}

/// Fault 7: a "public" tracker redirecting to a loopback admin page, by address and by a name
/// resolving to loopback (`localhost`), is refused, and the target never sees a request.
#[tokio::test]
async fn public_tracker_cannot_redirect_into_the_local_network() {
    let admin = Tracker::start("127.0.0.1", |_, _| ok(b"secret")).await;
    let admin_url = format!("http://{}/internal-admin", admin.addr);
    let evil = Tracker::start("127.0.0.2", move |_, _| redirect_to(&admin_url)).await;
    let err = http::announce_with(&evil.url(), &params(), DEADLINE, public_127_0_0_2).await.unwrap_err();
    assert!(matches!(err, TrackerError::Redirect { .. }), "{err}");
    assert!(err.to_string().contains("redirect from a public host to 127.0.0.1"), "{err}");
    assert_eq!(admin.requests(), 0, "the local target was never fetched");

    let by_name = format!("http://localhost:{}/internal-admin", admin.addr.port());
    let evil = Tracker::start("127.0.0.2", move |_, _| redirect_to(&by_name)).await;
    let err = http::announce_with(&evil.url(), &params(), DEADLINE, public_127_0_0_2).await.unwrap_err();
    assert!(err.to_string().contains("redirect from a public host to localhost"), "{err}");
    assert_eq!(admin.requests(), 0);

    // The same classifier lets a "public" → "public" hop through: the refusal is about the
    // target's address, not about redirects as such.
    let real = Tracker::start("127.0.0.2", |_, _| ok(&announce_body("1800", None, &compact_peers(1)))).await;
    let real_url = real.url();
    let fine = Tracker::start("127.0.0.2", move |_, _| redirect_to(&real_url)).await;
    let answer = http::announce_with(&fine.url(), &params(), DEADLINE, public_127_0_0_2).await.unwrap();
    assert_eq!(answer.peers.len(), 1);
}
