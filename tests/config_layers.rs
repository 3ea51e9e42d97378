//! One Options: the network settings are config keys too, and the layers stack as the README
//! says: defaults, the file (`--config`), `SHOAL_<KEY>` variables, then flags.
//!
//! - A file setting `listen`, `diag` and `kad = false` gives a seeder on that address with
//!   diagnostics and no libp2p node (no `listening kad` line).
//! - `SHOAL_LISTEN` overrides the file's `listen`, and `--listen` overrides both.
//! - A bad network value exits 2 naming the key (from the file) or the flag.
//! - `kad_max_established_per_ip` and `kad_max_pending_per_ip` from the file bound what one
//!   address may hold of `shoal node`'s libp2p connections: stock rust-libp2p dialers on
//!   127.0.0.1 are let in, denied once established, or refused in their handshake.
mod common;

use common::process::{run_env, Proc, STARTUP};
use common::torrent::data_and_torrent;
use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// `shoal seed` of `dir`'s data with `extra` flags and `env`; its stdout lines up to
/// `listening bt`, which is printed last, once the data is checked.
fn seed_lines(dir: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> (Proc, Vec<String>) {
    let (data, torrent) = (dir.join("seed/data.bin"), dir.join("data.torrent"));
    let mut args = args!["seed", &data, "--torrent", &torrent];
    args.extend(extra.iter().map(OsString::from));
    let mut p = Proc::spawn(name, dir, &args, env);
    p.bt_addr();
    let lines = p.stdout.clone();
    (p, lines)
}

fn line_starting<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| l.strip_prefix(prefix))
}

#[test]
fn network_keys_come_from_the_file_the_environment_and_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    data_and_torrent(dir.path(), 64 * 1024, 51, "16KiB");
    let config = dir.path().join("shoal.toml");
    std::fs::write(&config, "listen = \"127.0.0.2:0\"\ndiag = \"127.0.0.1:0\"\nkad = false\n").unwrap();
    let cfg = config.to_str().unwrap();

    let (_p, lines) = seed_lines(dir.path(), "from-file", &["--config", cfg], &[]);
    assert!(line_starting(&lines, "listening bt ").unwrap().starts_with("127.0.0.2:"), "{lines:?}");
    assert!(line_starting(&lines, "listening diag ").unwrap().starts_with("127.0.0.1:"), "{lines:?}");
    assert!(line_starting(&lines, "listening kad ").is_none(), "kad = false, yet: {lines:?}");

    let env = [("SHOAL_LISTEN", "127.0.0.3:0")];
    let (_p, lines) = seed_lines(dir.path(), "from-env", &["--config", cfg], &env);
    assert!(line_starting(&lines, "listening bt ").unwrap().starts_with("127.0.0.3:"), "{lines:?}");

    let flags = ["--config", cfg, "--listen", "127.0.0.1:0"];
    let (_p, lines) = seed_lines(dir.path(), "from-flag", &flags, &env);
    assert!(line_starting(&lines, "listening bt ").unwrap().starts_with("127.0.0.1:"), "{lines:?}");
}

#[test]
fn a_bad_network_value_exits_2_naming_the_key_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (data, torrent) = data_and_torrent(dir.path(), 16 * 1024, 52, "16KiB");
    let config = dir.path().join("shoal.toml");
    let base = args!["seed", &data, "--torrent", &torrent, "--listen", "127.0.0.1:0"];
    let cases: [(&str, &[&str], &str); 5] = [
        ("bootstrap = [\"/ip4/127.0.0.1/tcp/9\"]", &[], "`bootstrap`"),
        ("tick = \"1h\"", &[], "`tick`"),
        ("kad_max_established_per_ip = 0", &[], "`kad_max_established_per_ip`"),
        ("", &["--bootstrap", "/ip4/127.0.0.1/tcp/9"], "--bootstrap"),
        ("", &["--kad-listen", "tcp/9"], "--kad-listen"),
    ];
    for (file, flags, named) in cases {
        std::fs::write(&config, file).unwrap();
        let mut args = base.clone();
        args.extend(args!["--config", &config]);
        args.extend(flags.iter().map(OsString::from));
        let (status, _, err) = run_env(&args, &[], STARTUP);
        assert_eq!(status.code(), Some(2), "{file} {flags:?}: {status}\n{err}");
        let line = err.lines().find(|l| l.starts_with("shoal: ")).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains(named), "{file} {flags:?}: the error does not name {named}: {line}");
    }
}

/// A stock dialer: identify (so the node's answer shows it took the connection), TCP with
/// Noise and Yamux, idle connections kept.
fn stock_dialer() -> Swarm<identify::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| identify::Behaviour::new(identify::Config::new("/stock/1".into(), key.public())))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}

/// How a dial of the node ended.
#[derive(Debug, PartialEq)]
enum Dialled {
    /// The node answered identify: it took the connection.
    Taken,
    /// Established on our side, then closed before the node answered.
    ClosedOnceEstablished,
    /// Never established: the handshake failed.
    Refused,
}

async fn dial(swarm: &mut Swarm<identify::Behaviour>, node: PeerId, addr: &Multiaddr) -> Dialled {
    swarm.dial(addr.clone()).unwrap();
    let mut established = false;
    let outcome = async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == node => established = true,
                SwarmEvent::Behaviour(identify::Event::Received { peer_id, .. }) if peer_id == node => {
                    return Dialled::Taken
                }
                SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == node => {
                    return Dialled::ClosedOnceEstablished
                }
                SwarmEvent::OutgoingConnectionError { .. } if !established => return Dialled::Refused,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), outcome).await.expect("the dial ends within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_libp2p_bounds_are_config_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shoal.toml");
    std::fs::write(&config, "kad_max_established_per_ip = 1\nkad_max_pending_per_ip = 1\n").unwrap();
    let identity = dir.path().join("node.key");
    let args = args!["node", "--kad-listen", "/ip4/127.0.0.1/tcp/0", "--identity", &identity, "--config", &config];
    let mut node = Proc::spawn("node", dir.path(), &args, &[]);
    let announced = node.kad_addr();
    let (addr, id) = announced.rsplit_once("/p2p/").expect("the kad address ends in /p2p/<PeerId>");
    let (addr, id): (Multiaddr, PeerId) = (addr.parse().unwrap(), id.parse().unwrap());

    let mut first = stock_dialer();
    assert_eq!(dial(&mut first, id, &addr).await, Dialled::Taken);
    // One established connection from 127.0.0.1 is the bound: the next is closed as its
    // handshake ends (32 by default would take it).
    let mut second = stock_dialer();
    assert_eq!(dial(&mut second, id, &addr).await, Dialled::ClosedOnceEstablished);
    // A silent TCP connection holds the one handshake place of 127.0.0.1, so a dialer is
    // refused as it is accepted and never finishes its handshake (8 by default would take it;
    // then the established bound would close it as above).
    let tcp_addr = announced.split('/').collect::<Vec<_>>();
    let silent = std::net::TcpStream::connect((tcp_addr[2], tcp_addr[4].parse::<u16>().unwrap())).unwrap();
    let mut third = stock_dialer();
    assert_eq!(dial(&mut third, id, &addr).await, Dialled::Refused);
    drop((silent, first));
}
