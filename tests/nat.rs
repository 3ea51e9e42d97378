//! Issue 14, behind a NAT: AutoNAT's verdicts on both sides of a real NAT made of network
//! namespaces, and a download from a seeder behind it through a circuit relay, upgraded to a
//! direct connection by hole punching (root; `SHOAL_SKIP_NETNS=1` skips on purpose).
//!
//! ```text
//!  hub 198.18.0.1 ──┐
//!  helper .3 ───────┼── wan (a bridge) ── router 198.18.0.254 | 10.77.0.1 ── home 10.77.0.2
//!  far .5 ──────────┘                     (nftables masquerade out of the wan side)
//! ```
//!
//! Each host is a namespace of its own, so every address a peer observes is the host's one.
//! The `shoal` processes probe with AutoNAT every 2 s, non-global addresses allowed
//! (`autonat_only_global_ips = false`: 198.18.0.0/15 is what test networks use). The home
//! side dials out through the NAT; the public hosts can dial each other but not the home side
//! (they have no route to 10.77.0.0/24, and the router forwards nothing unsolicited). So the
//! public hosts are judged public at their listen addresses and the home side private.
mod common;

use common::netns::NetNs;
use common::process::{Proc, BIN};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const VERDICT: Duration = Duration::from_secs(120);
const DOWNLOAD: Duration = Duration::from_secs(240);

/// The hosts of the picture, each a namespace.
struct Net {
    _wan: NetNs,
    _router: NetNs,
    home: NetNs,
    hub: NetNs,
    helper: NetNs,
    far: NetNs,
}

/// The picture's network; `tag` keeps the namespaces' names apart.
fn topology(tag: &str) -> Net {
    let ns = |name: &str| NetNs::new(&format!("{tag}{name}"), &[]);
    let (wan, router, home) = (ns("wan"), ns("rt"), ns("home"));
    let (hub, helper, far) = (ns("hub"), ns("help"), ns("far"));
    wan.bridge("br0");
    wan.plug("br0", "p-rt", &router, "up0", "198.18.0.254/24");
    for (port, host, addr) in
        [("p-hub", &hub, "198.18.0.1/24"), ("p-help", &helper, "198.18.0.3/24"), ("p-far", &far, "198.18.0.5/24")]
    {
        wan.plug("br0", port, host, "eth0", addr);
    }
    router.veth("down0", "10.77.0.1/24", &home, "lan0", "10.77.0.2/24");
    home.ip(&["route", "add", "default", "via", "10.77.0.1"]);
    router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"], "");
    common::clients::require("nft", &["--version"], "apt-get install -y nftables");
    let rules = "table ip nat {\n  chain post {\n    type nat hook postrouting priority 100;\n    oifname \"up0\" masquerade\n  }\n}\n";
    router.exec("nft", &["-f", "-"], rules);
    Net { _wan: wan, _router: router, home, hub, helper, far }
}

/// `shoal ARGS` inside `ns` (`node`, `seed` or `download`), its libp2p node listening on
/// `ip` (TCP; QUIC too with `quic`), with diagnostics there too and `config` added to the
/// test's AutoNAT settings. Returns the process, its kad address (the QUIC one with `quic`)
/// and its diagnostics address.
#[allow(clippy::too_many_arguments)]
fn node(
    ns: &NetNs,
    name: &str,
    dir: &Path,
    ip: &str,
    quic: bool,
    bootstrap: Option<&str>,
    config: &str,
    args: &[&str],
) -> (Proc, String, SocketAddr) {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, format!("autonat_interval = \"2s\"\nautonat_only_global_ips = false\n{config}")).unwrap();
    let listen = match quic {
        true => format!("/ip4/{ip}/udp/0/quic-v1"),
        false => format!("/ip4/{ip}/tcp/0"),
    };
    let mut cmd = ns.command(BIN);
    cmd.args(args);
    cmd.args(["--kad-listen", &listen, "--diag", &format!("{ip}:0")]);
    cmd.arg("--identity").arg(dir.join(format!("{name}.key"))).arg("--config").arg(&file);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    cmd.env("RUST_LOG", std::env::var("SHOAL_TEST_LOG").unwrap_or("shoal=info".into())).env("NO_COLOR", "1");
    let mut p = Proc::start(name, cmd, dir);
    let kad = match quic {
        true => p.wait_line_containing("/quic-v1/", Duration::from_secs(30))["listening kad ".len()..].to_string(),
        false => p.kad_addr(),
    };
    let diag = p.diag_addr();
    (p, kad, diag)
}

/// Polls the node's `/debug/p2p/routing` (from inside `ns`) until `done` likes it; the view.
fn routing_until(ns: &NetNs, p: &Proc, diag: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + VERDICT;
    loop {
        let view = ns.run(move || common::http::get_json(diag, "/debug/p2p/routing")).unwrap_or_default();
        if done(&view) {
            return view;
        }
        if Instant::now() > deadline {
            p.fail(&format!("no {what} within {VERDICT:?}: {view}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The view once AutoNAT has a verdict.
fn verdict(ns: &NetNs, p: &Proc, diag: SocketAddr) -> Value {
    routing_until(ns, p, diag, "AutoNAT verdict", |v| {
        v["reachability"]["status"] == "public" || v["reachability"]["status"] == "private"
    })
}

/// The value of the metric line starting with `series` on `diag`'s `/metrics`.
fn metric(ns: &NetNs, diag: SocketAddr, series: &str) -> f64 {
    let reply = ns.run(move || common::http::get(diag, "/metrics")).expect("/metrics answers");
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn autonat_judges_the_node_behind_the_nat_private_and_the_hub_public() {
    if common::netns::skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let dir = tempfile::tempdir().unwrap();
    let net = topology("v");

    let (hub, hub_kad, hub_diag) = node(&net.hub, "hub", dir.path(), "198.18.0.1", false, None, "", &["node"]);
    let (_helper, _, _) = node(&net.helper, "helper", dir.path(), "198.18.0.3", false, Some(&hub_kad), "", &["node"]);
    // Behind the NAT a download (of a torrent nobody serves): its DHT mode is `auto`.
    let (_, torrent) = common::torrent::data_and_torrent(dir.path(), 16 * 1024, 61, "16KiB");
    let out = dir.path().join("out");
    let torrent = torrent.to_str().unwrap();
    let download = ["download", torrent, "-o", out.to_str().unwrap(), "--listen", "10.77.0.2:0", "--no-dht"];
    let (behind, _, home_diag) = node(&net.home, "home", dir.path(), "10.77.0.2", false, Some(&hub_kad), "", &download);

    let home_view = verdict(&net.home, &behind, home_diag);
    assert_eq!(home_view["reachability"]["status"], "private", "the node behind the NAT: {home_view}");
    assert_eq!(home_view["kad_mode"], "client", "a private node only asks the DHT: {home_view}");
    let hub_view = verdict(&net.hub, &hub, hub_diag);
    assert_eq!(hub_view["reachability"]["status"], "public", "the hub: {hub_view}");
    assert_eq!(hub_view["reachability"]["address"], hub_kad.as_str(), "the hub is public at its listen address");
    assert_eq!(hub_view["kad_mode"], "server", "{hub_view}");
}

/// The seeder sits behind the NAT; the hub is a relay (`shoal node --relay`, libp2p's default
/// circuit bounds: 2 minutes and 128 KiB, far less than the torrent); the leecher is public
/// and knows only the hub. Once AutoNAT judges it private the seeder listens through the hub,
/// and the leecher finds it in the DHT at that circuit address. The relayed connection lets
/// DCUtR punch a hole through the NAT (QUIC); the download then runs on the direct connection
/// and completes byte-identical.
#[test]
fn a_seeder_behind_the_nat_is_reached_through_a_relay_and_a_hole_punch() {
    if common::netns::skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let dir = tempfile::tempdir().unwrap();
    let net = topology("r");
    let (data, torrent) = common::torrent::data_and_torrent(dir.path(), 4 * 1024 * 1024 + 7, 62, "256KiB");
    let (data_s, torrent_s) = (data.to_str().unwrap(), torrent.to_str().unwrap());

    let (hub, hub_kad, hub_diag) =
        node(&net.hub, "hub", dir.path(), "198.18.0.1", true, None, "", &["node", "--relay"]);
    let (_helper, _, _) = node(&net.helper, "helper", dir.path(), "198.18.0.3", true, Some(&hub_kad), "", &["node"]);
    let seed = ["seed", data_s, "--torrent", torrent_s, "--listen", "10.77.0.2:0", "--no-dht"];
    let (seeder, _, seeder_diag) = node(&net.home, "seeder", dir.path(), "10.77.0.2", true, Some(&hub_kad), "", &seed);
    let view = routing_until(&net.home, &seeder, seeder_diag, "relay circuit", |v| {
        v["listen_addrs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a.as_str().unwrap_or("").contains("/p2p-circuit")))
    });
    assert_eq!(view["reachability"]["status"], "private", "a relay is used only when private: {view}");
    assert_eq!(metric(&net.home, seeder_diag, "shoal_p2p_relay_reservations "), 1.0);

    let out = dir.path().join("out");
    let download = ["download", torrent_s, "-o", out.to_str().unwrap(), "--listen", "198.18.0.5:0", "--no-dht"];
    // A lookup may find the seeder's first provider record (before the relay): redial soon.
    let config = "reconnect_delay = \"2s\"\n";
    let (mut leecher, _, leecher_diag) =
        node(&net.far, "leecher", dir.path(), "198.18.0.5", true, Some(&hub_kad), config, &download);
    let ran = leecher.expect_success(DOWNLOAD);
    let name = data.file_name().unwrap();
    assert_eq!(std::fs::read(out.join(name)).unwrap(), std::fs::read(&data).unwrap(), "byte-identical");
    let punched = metric(&net.home, seeder_diag, "shoal_p2p_hole_punches_total{result=\"success\"}");
    assert!(punched >= 1.0, "the seeder's hole punch succeeded ({punched})");
    let hub_view = verdict(&net.hub, &hub, hub_diag);
    assert_eq!(hub_view["reachability"]["status"], "public", "the relay: {hub_view}");
    eprintln!("downloaded 4 MiB from behind the NAT in {ran:?}; leecher diag {leecher_diag}");
}
