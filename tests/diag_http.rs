//! The diagnostics server over real loopback: a seeder and a leecher complete a torrent, then
//! every endpoint is fetched with a plain HTTP client and checked for shape and values, and
//! `/metrics` is linted by `promtool check metrics` (set `SHOAL_SKIP_INTEROP=1` to skip when
//! promtool is not installed).
//!
//! The metrics are process-global: only `served_endpoints_describe_a_completed_swarm` touches
//! the keepalive counters, and the other tests do not read them.
mod common;

use common::http::{fetch, fetch_json};
use common::session::{addr, wait_for};
use common::torrent::{make_file, make_torrent};
use serde_json::json;
use shoal::config::Options;
use shoal::diag::{self, DiagState};
use shoal::metrics::metrics;
use shoal::session::Session;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const KEEPALIVE_KEYS: [&str; 9] = [
    "probe_attempts",
    "probe_success",
    "probe_fail",
    "reconnect_attempts",
    "reconnect_success",
    "repair_triggered",
    "repair_success",
    "repair_fail",
    "reset_events_published",
];

async fn get_metrics(addr: SocketAddr) -> String {
    let r = fetch(addr, "/metrics").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], shoal::metrics::TEXT_CONTENT_TYPE);
    r.text().await.unwrap()
}

/// The value of the one sample named exactly `series` (name and labels as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var("SHOAL_SKIP_INTEROP").as_deref() == Ok("1") => {
            eprintln!("promtool not run ({e}); skipped by SHOAL_SKIP_INTEROP=1");
            return;
        }
        Err(e) => panic!("promtool not found ({e}): install Debian's `prometheus` package or set SHOAL_SKIP_INTEROP=1"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let lint = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check metrics failed:\n{lint}\n--- metrics ---\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_endpoints_describe_a_completed_swarm() {
    let dir = tempfile::tempdir().unwrap();
    let src = make_file(&dir.path().join("seed"), "data.bin", 1024 * 1024 + 777, 7);
    let meta = make_torrent(&src, 64 * 1024);
    // The two stay connected once both are complete: the endpoints describe that swarm.
    let keep = Arc::new(Options { close_redundant_connections: false, ..Options::default() });
    let start = || Session::start(keep.clone(), Some("127.0.0.1:0".parse().unwrap()));
    let seeder = start().await.unwrap();
    let sh = seeder.add_torrent(meta.clone(), dir.path().join("seed"));
    sh.wait_complete().await.unwrap();
    let leecher = start().await.unwrap();
    let unix_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let leech_added_ms = unix_ms();
    let lh = leecher.add_torrent(meta.clone(), dir.path().join("leech"));
    lh.add_peers(vec![addr(&seeder)]).await;
    tokio::time::timeout(Duration::from_secs(60), lh.wait_complete()).await.expect("leecher timed out").unwrap();
    // Stats are republished about once a second; wait for one listing the seeder.
    wait_for(&mut lh.stats(), 30, "seeder listed among peers", |s| s.is_complete() && !s.peers.is_empty()).await;

    let source = diag::torrent_source([lh.clone()]);
    let _scraped = metrics().register_torrents(source.clone());
    let cancel = CancellationToken::new();
    let at = diag::serve("127.0.0.1:0".parse().unwrap(), DiagState::new(source), cancel.clone()).await.unwrap();
    let hash = meta.info_hash.to_hex();

    // Keepalive counters: exactly the nine keys, zero until something counts.
    let ka = fetch_json(at, "/debug/p2p/keepalive/metrics").await;
    let mut keys: Vec<&str> = ka.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    let mut want = KEEPALIVE_KEYS.to_vec();
    want.sort();
    assert_eq!(keys, want);
    assert!(KEEPALIVE_KEYS.iter().all(|k| ka[k] == 0), "{ka}");
    metrics().keepalive.inc_probe_fail();
    metrics().keepalive.inc_probe_fail();
    let ka = fetch_json(at, "/debug/p2p/keepalive/metrics").await;
    assert_eq!(ka["probe_fail"], 2);
    assert_eq!(ka["probe_attempts"], 0);

    let t = fetch_json(at, "/debug/p2p/torrents").await;
    let list = t["torrents"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let t0 = &list[0];
    assert_eq!(t0["info_hash"], hash.as_str());
    assert_eq!(t0["name"], "data.bin");
    assert_eq!(t0["phase"], "seeding");
    let done_ms = t0["completed_at_ms"].as_u64().unwrap_or_else(|| panic!("no completion time in {t0}"));
    assert!((leech_added_ms..=unix_ms()).contains(&done_ms), "completed at {done_ms}, added at {leech_added_ms}");
    assert_eq!(t0["progress"]["pieces_have"], t0["progress"]["pieces_total"]);
    assert_eq!(t0["progress"]["pieces_total"], meta.piece_count());
    assert_eq!(t0["progress"]["bytes_left"], 0);
    // Complete: nothing started, nothing being verified, no assembly buffer held.
    assert_eq!((&t0["progress"]["in_progress"], &t0["progress"]["verifying"]), (&json!(0), &json!(0)), "{t0}");
    assert_eq!(t0["progress"]["assembly_bytes"], 0);
    assert_eq!(t0["progress"]["fraction"], 1.0);
    assert_eq!(t0["hash_failures"], 0);
    assert_eq!(t0["banned"], 0);
    assert!(t0["totals"]["downloaded"].as_u64().unwrap() >= meta.total_length);
    assert!(t0["pool"]["connected"].as_u64().unwrap() >= 1, "{t0}");
    assert!(t0["rates"]["download"].is_number());

    let p = fetch_json(at, "/debug/p2p/peers").await;
    let seeder_addr = seeder.listen_addr().unwrap().to_string();
    let sp = p["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["addr"] == seeder_addr.as_str())
        .unwrap_or_else(|| panic!("seeder not in {p}"));
    assert_eq!(sp["info_hash"], hash.as_str());
    assert_eq!(sp["transport"], "tcp");
    assert_eq!(sp["direction"], "outbound");
    assert_eq!(sp["pieces"], meta.piece_count());
    for k in ["am_choking", "am_interested", "peer_choking", "peer_interested"] {
        assert!(sp[k].is_boolean(), "{k} in {sp}");
    }
    assert!(sp["score"]["total"].is_number(), "{sp}");

    let s = fetch_json(at, "/debug/p2p/swarm").await;
    assert_eq!(s["torrents"], 1);
    assert!(s["connections"]["total"].as_u64().unwrap() >= 1);
    assert!(s["connections"]["by_direction"]["outbound"].as_u64().unwrap() >= 1);
    assert!(s["connections"]["by_transport"]["tcp"].as_u64().unwrap() >= 1);
    assert_eq!(s["bytes"]["downloaded"], t0["totals"]["downloaded"]);

    assert_eq!(fetch_json(at, "/debug/p2p/routing").await, json!({ "enabled": false }));
    assert_eq!(fetch_json(at, "/debug/p2p/keepalive").await, json!({ "enabled": false }));

    let text = get_metrics(at).await;
    promtool_check(&text);
    assert_eq!(sample(&text, "shoal_keepalive_probe_fail_total"), Some(2.0), "{text}");
    for family in [
        "shoal_block_rtt_seconds",
        "shoal_piece_download_seconds",
        "shoal_piece_hash_seconds",
        "shoal_disk_write_seconds",
        "shoal_dht_lookup_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {family} histogram")), "{family} missing");
    }
    let have = format!("shoal_torrent_pieces{{info_hash=\"{hash}\",state=\"have\"}}");
    assert_eq!(sample(&text, &have), Some(f64::from(meta.piece_count())), "{text}");
    let connected = format!("shoal_torrent_peers{{info_hash=\"{hash}\",state=\"connected\"}}");
    assert_eq!(sample(&text, &connected), t0["pool"]["connected"].as_f64());

    // A finished torrent's byte counter agrees with the JSON view of the same source.
    let series = format!("shoal_torrent_downloaded_bytes_total{{info_hash=\"{hash}\"}}");
    let json_downloaded = fetch_json(at, "/debug/p2p/torrents").await["torrents"][0]["totals"]["downloaded"].as_f64();
    assert_eq!(sample(&get_metrics(at).await, &series), json_downloaded);

    // Prometheus itself asks for OpenMetrics.
    let om = reqwest::Client::new()
        .get(format!("http://{at}/metrics"))
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(om.headers()["content-type"], shoal::metrics::OPENMETRICS_CONTENT_TYPE);
    let om = om.text().await.unwrap();
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE shoal_keepalive_probe_fail counter\n"));

    cancel.cancel();
    leecher.shutdown().await;
    seeder.shutdown().await;
}

#[tokio::test]
async fn plugged_sources_unknown_paths_and_shutdown() {
    let routing = json!({ "enabled": true, "mode": "server", "routing_table_size": 3 });
    let reported = routing.clone();
    let state = DiagState::new(Arc::new(Vec::new))
        .with_routing(Arc::new(move || reported.clone()))
        .with_keepalive(Arc::new(|| json!({ "enabled": true, "key_peers": [] })));
    let cancel = CancellationToken::new();
    let at = diag::serve("127.0.0.1:0".parse().unwrap(), state, cancel.clone()).await.unwrap();

    assert_eq!(fetch_json(at, "/debug/p2p/routing").await, routing);
    assert_eq!(fetch_json(at, "/debug/p2p/keepalive").await["key_peers"], json!([]));
    assert_eq!(fetch_json(at, "/debug/p2p/torrents").await, json!({ "torrents": [] }));
    assert_eq!(fetch_json(at, "/debug/p2p/peers").await, json!({ "peers": [] }));
    assert_eq!(fetch_json(at, "/debug/p2p/swarm").await["connections"]["total"], 0);
    for path in ["/", "/debug/p2p", "/debug/p2p/nope", "/metrics/x"] {
        assert_eq!(fetch(at, path).await.status(), 404, "{path}");
    }

    cancel.cancel();
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(at).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused).await.expect("diag server still accepting after cancel");
}

#[tokio::test]
async fn bind_failure_names_the_address() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = diag::serve(addr, DiagState::new(Arc::new(Vec::new)), CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
