//! `shoal bench` through the built binary: a small loopback swarm over each transport (plain
//! TCP, libp2p over TCP, libp2p over QUIC) completes, every leecher verified, and the JSON
//! report says what ran and what its CPU cost. A transport it does not know is the user's
//! mistake.
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
        // The transfer's CPU time is read from /proc in ticks of 10 ms (a small swarm may show 0).
        let cpu = report["cpu_seconds"].as_f64().unwrap_or_else(|| panic!("no cpu_seconds: {report}"));
        let wall = report["wall_seconds"].as_f64().expect("wall_seconds");
        assert!(cpu >= 0.0 && cpu <= wall * num_cpus() + 0.05, "{report}");
        let per_gib = report["cpu_seconds_per_gib"].as_f64().expect("cpu_seconds_per_gib");
        assert!((per_gib - cpu * 1024.0 / 6.0).abs() < 1e-6, "2 leechers × 3 MiB: {report}");
    }
}

fn num_cpus() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

#[test]
fn an_unknown_transport_is_the_users_mistake() {
    let args = args!["bench", "--transport", "pigeon"];
    let (status, _, err) = run_env(&args, &[], Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("pigeon"), "{err}");
}
