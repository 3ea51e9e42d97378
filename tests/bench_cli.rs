//! `shoal bench` through the built binary: a small loopback swarm over each transport (plain
//! TCP, libp2p over TCP, libp2p over QUIC) completes, every leecher verified, and the JSON
//! report says what ran. A transport it does not know is the user's mistake.
mod common;

use common::process::{run_env, run_ok};
use std::time::Duration;

const BENCH: Duration = Duration::from_secs(120);

#[test]
fn bench_completes_a_swarm_over_each_transport() {
    let _turn = common::process::serial();
    for transport in ["tcp", "libp2p", "quic"] {
        let args = args![
            "bench",
            "--size",
            "3MiB",
            "--piece-size",
            "256KiB",
            "--leechers",
            "2",
            "--transport",
            transport,
            "--json"
        ];
        let out = run_ok(&args, BENCH);
        let report: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{transport}: {e}: {out}"));
        assert_eq!(report["transport"], transport, "{report}");
        assert_eq!(report["size"], 3 * 1024 * 1024);
        let leechers = report["per_leecher"].as_array().expect("per_leecher");
        assert_eq!(leechers.len(), 2, "{report}");
        assert!(leechers.iter().all(|l| l["seconds"].as_f64().is_some_and(|s| s > 0.0)), "{report}");
    }
}

#[test]
fn an_unknown_transport_is_the_users_mistake() {
    let args = args!["bench", "--transport", "pigeon"];
    let (status, _, err) = run_env(&args, &[], Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("pigeon"), "{err}");
}
