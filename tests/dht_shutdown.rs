//! A torrent's mainline DHT lookup or announcement under way does not hold up shutdown.
//!
//! The DHT here is [`hostile::dht::EndlessDht`]: every node answers late with closer nodes, so
//! a lookup starts at its first layer, goes on for about 25 s and finds nothing, much as a
//! lookup through the real network runs for its whole deadline. A session with a mainline node
//! bootstrapped from it adds a torrent, which starts a `get_peers` lookup and an announcement
//! at once; once the lookup has gone two layers deep, `Session::shutdown` must return within
//! 10 s, while the lookup is still going. Before the fix it waited for the lookup to end
//! (about 23 s here): the CLI gave up after its 1.5 s grace and printed a warning at the end
//! of every download with the DHT on.
//!
//! Nothing leaves 127.0.0.1. The 10 s bound is against a shutdown that takes milliseconds and
//! a lookup that takes over twice as long; no speed is measured.
mod common;
mod hostile;

use common::session::session_with;
use common::torrent::{make_file, make_torrent};
use hostile::dht::{EndlessDht, DELAY};
use shoal::config::Options;
use shoal::mainline::{MainlineConfig, MainlineHandle};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_a_dht_lookup_under_way() {
    let net = EndlessDht::start();
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(dir.path(), "payload.bin", 256 * 1024, 7);
    let meta = make_torrent(&data, 16 * 1024);
    let options = Options { dht_query_timeout: Duration::from_secs(600), ..Options::default() };
    let mut session = session_with(Arc::new(options)).await;
    let config = MainlineConfig {
        bootstrap: vec![net.bootstrap.to_string()],
        listen: Some("127.0.0.1:0".parse().unwrap()),
        nodes_file: None,
    };
    session.attach_mainline(MainlineHandle::start(config).await.expect("mainline node on 127.0.0.1"));
    let out = dir.path().join("out");
    let handle = session.add_torrent(meta, out);
    let hash = *handle.info_hash.as_bytes();

    // The lookup is under way and going deeper: two layers answered its `get_peers`.
    let deadline = Instant::now() + Duration::from_secs(60);
    while net.get_peers_for(&hash).1 < 2 {
        assert!(
            Instant::now() < deadline,
            "no lookup went two layers deep in 60 s ({} queries in all, get_peers {:?})",
            net.queries(),
            net.get_peers_for(&hash)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let shut = tokio::time::timeout(Duration::from_secs(10), session.shutdown()).await;
    let (asked, depth) = net.get_peers_for(&hash);
    assert!(shut.is_ok(), "shutdown waited for the DHT lookup ({asked} get_peers, {depth} layers deep)");
    // The lookups here go about 21 layers deep; one that had ended would show nothing.
    assert!(depth < 15, "the lookup was {depth} layers deep ({DELAY:?} each) when shutdown returned");
}
