//! One identity, one process (issue 8): `shoal` processes started side by side on one data
//! directory must be distinct libp2p peers. The default identity file is locked for the life
//! of the process; a second process on it runs with a fresh key and says so once, a second
//! process on an explicit `--identity` is refused (exit 2), and a bootstrap or key peer that
//! carries our own PeerId is refused (exit 2).
//!
//! Every process listens on 127.0.0.1 only and is killed by PID when its [`Proc`] drops.
#![allow(clippy::useless_vec)]
mod common;

use common::logs::{count_lines, dht_lookups};
use common::process::{run_env, serial, Proc};
use common::torrent::{assert_same_bytes, make_file};
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

const WARNING: &str = "is in use by another shoal process";
/// Bound on one download through the DHT (debug build, two shared cores).
const DOWNLOAD: Duration = Duration::from_secs(120);

/// Loopback addresses and nothing else: the identity is left to the default or `extra`.
fn loopback() -> Vec<OsString> {
    args!["--listen", "127.0.0.1:0", "--kad-listen", "/ip4/127.0.0.1/tcp/0"]
}

fn xdg(dir: &Path) -> String {
    dir.join("xdg").to_string_lossy().into_owned()
}

fn node(dir: &Path, name: &str, extra: &[OsString]) -> Proc {
    let mut a = args!["node", "--kad-listen", "/ip4/127.0.0.1/tcp/0"];
    a.extend(extra.iter().cloned());
    Proc::spawn(name, dir, &a, &[("XDG_DATA_HOME", &xdg(dir))])
}

#[test]
fn second_process_on_the_default_identity_gets_a_fresh_key_and_one_warning() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = dir.join("xdg/shoal/identity");
    let mut a = node(dir, "a", &[]);
    let id_a = a.peer_id();
    let mut b = node(dir, "b", &[]);
    let id_b = b.peer_id();
    assert_ne!(id_a, id_b, "two processes on one default identity file share PeerId {id_a}");
    let log_b = b.log_text();
    let warnings: Vec<&str> = log_b.lines().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(warnings.len(), 1, "b: want one warning line, log:\n{log_b}");
    assert!(warnings[0].contains(&file.display().to_string()), "the warning names the file: {}", warnings[0]);
    assert!(warnings[0].contains("--identity"), "the warning names --identity: {}", warnings[0]);
    assert_eq!(count_lines(&a.log_text(), WARNING), 0, "the first process holds the file and does not warn");

    // The lock dies with its process, however it dies: a SIGKILLed holder frees the file,
    // and the next process gets the stored key back (b still runs and holds nothing).
    a.kill();
    let mut c = node(dir, "c", &[]);
    assert_eq!(c.peer_id(), id_a, "the identity file's key survives the holder's death");
    assert_eq!(count_lines(&c.log_text(), WARNING), 0);
}

#[test]
fn explicit_identity_in_use_is_refused_with_exit_2() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = dir.join("my.key");
    let mut a = node(dir, "a", &args!["--identity", &file]);
    a.peer_id();
    let (status, _, err) = run_env(
        &args!["node", "--kad-listen", "/ip4/127.0.0.1/tcp/0", "--identity", &file],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(status.code(), Some(2), "second user of --identity: {status}\n{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr:\n{err}");
    assert!(lines[0].contains(&file.display().to_string()), "names the file: {}", lines[0]);
    assert!(lines[0].contains("another shoal process uses it"), "says why: {}", lines[0]);
    assert!(a.is_running(), "the holder is unaffected");
}

#[test]
fn bootstrap_or_key_peer_with_our_own_peer_id_is_refused_with_exit_2() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let file = dir.join("my.key");
    let mut a = node(dir, "a", &args!["--identity", &file]);
    let own = a.peer_id();
    a.kill();
    let own_addr = format!("/ip4/127.0.0.1/tcp/9/p2p/{own}");
    for (flag, value) in [("--bootstrap", own_addr.as_str()), ("--key-peer", own.as_str())] {
        let (status, _, err) = run_env(
            &args!["node", "--kad-listen", "/ip4/127.0.0.1/tcp/0", "--identity", &file, flag, value],
            &[],
            Duration::from_secs(60),
        );
        assert_eq!(status.code(), Some(2), "{flag} {value}: {status}\n{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{flag}: one line on stderr:\n{err}");
        assert!(lines[0].contains("own PeerId") && lines[0].contains(value), "{flag}: {}", lines[0]);
    }
}

/// The README's side-by-side use: a node, a seeder and a downloader on one machine with the
/// default identity. Before the lock they were one libp2p peer and the download waited
/// forever; now the later two run with fresh keys and the download completes through the DHT.
#[test]
fn node_seed_and_download_side_by_side_on_the_default_identity() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let env = [("XDG_DATA_HOME", xdg(dir))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = make_file(&dir.join("seed"), "data.bin", 3 * 1024 * 1024 + 777, 41);
    let torrent = dir.join("data.torrent");

    let mut node = node(dir, "node", &[]);
    let boot = node.kad_addr();
    let mut a = args!["seed", &data, "--torrent", &torrent, "--bootstrap", &boot];
    a.extend(loopback());
    let mut seed = Proc::spawn("seed", dir, &a, &env);
    seed.wait_line("magnet ", Duration::from_secs(60));

    let out = dir.join("out");
    let mut a = args!["download", &torrent, "-o", &out, "--bootstrap", &boot];
    a.extend(loopback());
    let mut down = Proc::spawn("download", dir, &a, &env);
    let ids = [node.peer_id(), seed.peer_id(), down.peer_id()];
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "PeerIds not distinct: {ids:?}");
    down.expect_success(DOWNLOAD);
    assert_same_bytes(&data, &out.join("data.bin"));
    let lookups = dht_lookups(&down.log_text());
    assert!(lookups.iter().any(|l| l.providers >= 1), "the seeder was found through the DHT: {lookups:?}");
    for p in [&seed, &down] {
        assert_eq!(count_lines(&p.log_text(), WARNING), 1, "{}: one warning about the shared identity", p.name);
    }
}
