//! Transmission 3.00 (`transmission-cli`) as the leecher of `shoal seed FILE --peer <it>`,
//! complete and byte-identical.
//!
//! shoal starts first, so its first dial finds Transmission not yet listening (a Transmission
//! that has only just added the torrent closes the connection during the handshake, which
//! is retried the same way). The peer was named with `--peer`, so shoal retries after 1 s,
//! doubling up to `reconnect_delay`; it used to wait out `reconnect_delay` (60 s by default;
//! ten minutes here, so the test fails without the quick retry).
//!
//! Transmission runs with a config directory of its own: bound to 127.0.0.1, no DHT, no local
//! peer discovery, no port mapping, no uTP, plaintext tolerated.
mod common;

use common::clients::{require, skip_on_purpose, TRANSFER};
use common::logs::connected_peers;
use common::ports::free_port;
use common::process::{Proc, STARTUP};
use common::torrent::{assert_same_bytes, create_torrent, make_file};
use std::process::Command;
use std::time::{Duration, Instant};

const NAME: &str = "payload.bin";

#[test]
fn transmission_downloads_from_shoal_seed_dialling_it() {
    if skip_on_purpose() {
        return;
    }
    require("transmission-cli", &["--version"], "apt-get install -y transmission-cli");
    let _turn = common::process::serial();
    let dir = tempfile::tempdir().unwrap();
    let (seed, out, cfg, logs) =
        (dir.path().join("seed"), dir.path().join("out"), dir.path().join("cfg"), dir.path().join("logs"));
    for d in [&seed, &out, &cfg, &logs] {
        std::fs::create_dir_all(d).unwrap();
    }
    let data = make_file(&seed, NAME, 2 * 1024 * 1024 + 333, 21);
    let torrent = dir.path().join("payload.torrent");
    create_torrent(&data, &torrent, "256KiB", None);
    let port = free_port();
    let settings = format!(
        r#"{{"dht-enabled": false, "lpd-enabled": false, "pex-enabled": false, "utp-enabled": false,
            "port-forwarding-enabled": false, "bind-address-ipv4": "127.0.0.1", "bind-address-ipv6": "::1",
            "peer-port": {port}, "encryption": 1}}"#
    );
    std::fs::write(cfg.join("settings.json"), settings).unwrap();

    // shoal first: its first dial is refused (nobody listens yet). With `reconnect_delay` at
    // ten minutes, only the quick retry of a `--peer` can reach Transmission in time.
    let conf = dir.path().join("shoal.toml");
    std::fs::write(&conf, "reconnect_delay = \"10m\"\n").unwrap();
    let peer = format!("127.0.0.1:{port}");
    let mut args = crate::args!["seed", &data, "--torrent", &torrent, "--listen", "127.0.0.1:0", "--no-kad", "--quiet"];
    args.extend(crate::args!["--config", &conf, "--peer", &peer]);
    let seeder = Proc::spawn("shoal-seed", &logs, &args, &[("RUST_LOG", "shoal=debug")]);
    let start = Instant::now();
    while !seeder.log_text().lines().any(|l| l.contains("connection failed") && l.contains(&peer)) {
        if start.elapsed() > STARTUP {
            seeder.fail("no refused first dial logged");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cmd = Command::new("transmission-cli");
    cmd.arg("-g").arg(&cfg).arg("-w").arg(&out).args(["-p", &port.to_string(), "-M", "-et"]).arg(&torrent);
    let _transmission = Proc::start("transmission-cli", cmd, &logs);

    let got = out.join(NAME);
    let (start, deadline) = (Instant::now(), STARTUP + TRANSFER);
    while std::fs::read(&got).ok() != std::fs::read(&data).ok() {
        if start.elapsed() > deadline {
            seeder.fail(&format!("Transmission has not got the file within {deadline:?}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_same_bytes(&data, &got);
    assert!(connected_peers(&seeder.log_text()).contains(&peer), "shoal never logged a connection to {peer}");
}
