//! Issue 14, reachability behind a NAT: AutoNAT's verdicts on both sides of a real NAT made
//! of network namespaces (root; `SHOAL_SKIP_NETNS=1` skips on purpose).
//!
//! ```text
//!  pub                          router                        home
//!  hub 198.18.0.1, helper .3 -- 198.18.0.254 | 10.77.0.1 -- node 10.77.0.2
//!                               (nftables masquerade out of the 198.18 side)
//! ```
//!
//! Three `shoal node`s with AutoNAT probing every 2 s and non-global addresses allowed
//! (`autonat_only_global_ips = false`: 198.18.0.0/15 is what test networks use). The home
//! node dials out through the NAT to the hub; the hub and the helper can dial each other but
//! not the home node (the public side has no route to 10.77.0.0/24, and the router forwards
//! nothing unsolicited). So the hub is judged public at its listen address, and the home node
//! private. Behind the NAT runs a download, whose DHT mode is `auto`: Kademlia follows the
//! verdict and turns client. Relaying and hole punching (DCUtR) are not built yet.
mod common;

use common::netns::NetNs;
use common::process::{Proc, BIN};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const VERDICT: Duration = Duration::from_secs(120);

/// `shoal ARGS` inside `ns` (`node`, or a `download` whose DHT mode is `auto`), its libp2p
/// node listening on `ip`, with diagnostics there too.
fn node(
    ns: &NetNs,
    name: &str,
    dir: &Path,
    ip: &str,
    bootstrap: Option<&str>,
    args: &[&str],
) -> (Proc, String, SocketAddr) {
    let config = dir.join("shoal.toml");
    std::fs::write(&config, "autonat_interval = \"2s\"\nautonat_only_global_ips = false\n").unwrap();
    let mut cmd = ns.command(BIN);
    cmd.args(args);
    cmd.args(["--kad-listen", &format!("/ip4/{ip}/tcp/0"), "--diag", &format!("{ip}:0")]);
    cmd.arg("--identity").arg(dir.join(format!("{name}.key"))).arg("--config").arg(&config);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    cmd.env("RUST_LOG", "shoal=info").env("NO_COLOR", "1");
    let mut p = Proc::start(name, cmd, dir);
    let kad = p.kad_addr();
    let diag = p.diag_addr();
    (p, kad, diag)
}

/// Polls the node's `/debug/p2p/routing` (from inside `ns`) until AutoNAT has a verdict;
/// the whole view.
fn verdict(ns: &NetNs, p: &Proc, diag: SocketAddr) -> Value {
    let deadline = Instant::now() + VERDICT;
    loop {
        let view = ns.run(move || common::http::get_json(diag, "/debug/p2p/routing")).unwrap_or_default();
        if view["reachability"]["status"] == "public" || view["reachability"]["status"] == "private" {
            return view;
        }
        if Instant::now() > deadline {
            p.fail(&format!("no AutoNAT verdict within {VERDICT:?}: {view}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn autonat_judges_the_node_behind_the_nat_private_and_the_hub_public() {
    if common::netns::skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let dir = tempfile::tempdir().unwrap();
    let (public, router, home) = (NetNs::new("pub", &[]), NetNs::new("router", &[]), NetNs::new("home", &[]));
    public.veth("wan0", "198.18.0.1/24", &router, "up0", "198.18.0.254/24");
    public.ip(&["addr", "add", "198.18.0.3/24", "dev", "wan0"]);
    router.veth("down0", "10.77.0.1/24", &home, "lan0", "10.77.0.2/24");
    home.ip(&["route", "add", "default", "via", "10.77.0.1"]);
    router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"], "");
    common::clients::require("nft", &["--version"], "apt-get install -y nftables");
    let rules = "table ip nat {\n  chain post {\n    type nat hook postrouting priority 100;\n    oifname \"up0\" masquerade\n  }\n}\n";
    router.exec("nft", &["-f", "-"], rules);

    let (hub, hub_kad, hub_diag) = node(&public, "hub", dir.path(), "198.18.0.1", None, &["node"]);
    let (_helper, _, _) = node(&public, "helper", dir.path(), "198.18.0.3", Some(&hub_kad), &["node"]);
    // Behind the NAT a download (of a torrent nobody serves): its DHT mode is `auto`.
    let (_, torrent) = common::torrent::data_and_torrent(dir.path(), 16 * 1024, 61, "16KiB");
    let out = dir.path().join("out");
    let torrent = torrent.to_str().unwrap();
    let download = ["download", torrent, "-o", out.to_str().unwrap(), "--listen", "10.77.0.2:0", "--no-dht"];
    let (behind, _, home_diag) = node(&home, "home", dir.path(), "10.77.0.2", Some(&hub_kad), &download);

    let home_view = verdict(&home, &behind, home_diag);
    assert_eq!(home_view["reachability"]["status"], "private", "the node behind the NAT: {home_view}");
    assert_eq!(home_view["kad_mode"], "client", "a private node only asks the DHT: {home_view}");
    let hub_view = verdict(&public, &hub, hub_diag);
    assert_eq!(hub_view["reachability"]["status"], "public", "the hub: {hub_view}");
    assert_eq!(hub_view["reachability"]["address"], hub_kad.as_str(), "the hub is public at its listen address");
    assert_eq!(hub_view["kad_mode"], "server", "{hub_view}");
}
