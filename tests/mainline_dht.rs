//! Issue 13, BEP 5: a bare magnet (`xt=` only: no tracker, no `x.pe`) completes through the
//! mainline DHT, both ways, on a local DHT network.
//!
//! The network is two python3-libtorrent DHT nodes on 127.0.0.1 (`lt_peer.py dht`), the second
//! bootstrapped from the first. (The `mainline` crate's own test network cannot serve here: its
//! nodes read only 4-byte transaction ids and libtorrent sends 2-byte ones, so they never answer
//! libtorrent.) Every client is bootstrapped from these nodes only (`--dht-bootstrap` for shoal,
//! the same flag for `lt_peer.py`, which then turns libtorrent's DHT on with no public node),
//! so nothing leaves loopback.
//!
//! - a python3-libtorrent seeder announces the torrent into the network; `shoal download
//!   'magnet:?xt=urn:btih:<hash>' --no-kad --dht-bootstrap ...` finds it by `get_peers`,
//!   fetches the metadata from it, downloads byte-identical, and the seeder was a peer whose
//!   source is `dht`;
//! - `shoal seed --dht-bootstrap ...` announces the torrent; a python3-libtorrent leecher given
//!   only the bare magnet finds shoal through the network and completes; stopped, shoal saves
//!   its routing table (`mainline-nodes`, beside its identity file) for the next start;
//! - a bad `--dht-listen`, `--dht-bootstrap`, `--no-dht` with `--dht-bootstrap`, or a bad
//!   `mainline_bootstrap` in the config exits 2 with one line naming it (before any network);
//! - with the mainline DHT on, shoal's handshake sets the DHT bit and a peer that sets it too
//!   gets a `port` message naming the DHT node's port (BEP 5); with `--no-dht`, or for a
//!   private torrent (BEP 27), neither;
//! - BEP 42: in a network namespace with public-looking addresses (198.18.0.0/15), the node's
//!   id becomes the one BEP 42 derives from the address the DHT reports;
//! - a shoal whose only bootstrap node is dead joins the network through the node a
//!   libtorrent seeder names in its `port` message, and then announces itself;
//! - a node that finds no node is one warning, and nothing on stderr with `--quiet`.
//!
//! The data is 4 MiB in 16 KiB pieces. Every wait has a deadline of minutes: DHT lookups and
//! announcements take a few seconds each on a loaded machine, and nothing here races a clock.
mod common;

use common::clients::{lt_dht_node, lt_peer_with, skip_on_purpose};
use common::logs::connected_from;
use common::process::{Proc, STARTUP};
use common::torrent::{assert_same_bytes, create_torrent, make_file, read_metainfo};
use shoal::metainfo::Metainfo;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

const NAME: &str = "payload.bin";
const SIZE: usize = 4 * 1024 * 1024 + 777;
const PIECE: &str = "16KiB";
/// Longest wait for a transfer through the DHT: lookups, metadata and data.
const DEADLINE: Duration = Duration::from_secs(300);

/// The local DHT network and one test's files: data in `seed/`, its torrent, an empty
/// `out/`, `logs/` for the children's stderr.
struct Fixture {
    /// The DHT nodes, killed when the test ends.
    _nodes: [Proc; 2],
    /// `127.0.0.1:PORT` of each node.
    bootstrap: Vec<String>,
    _dir: TempDir,
    seed_dir: PathBuf,
    data: PathBuf,
    torrent: PathBuf,
    meta: Metainfo,
    out: PathBuf,
    logs: PathBuf,
}

impl Fixture {
    fn new(seed: u64) -> Fixture {
        let dir = tempfile::tempdir().expect("create tempdir");
        let [seed_dir, out, logs] = ["seed", "out", "logs"].map(|d| dir.path().join(d));
        for d in [&seed_dir, &out, &logs] {
            std::fs::create_dir(d).unwrap();
        }
        let (first, first_port) = lt_dht_node("dht-node-1", &[], &logs);
        let (second, second_port) = lt_dht_node("dht-node-2", &[format!("127.0.0.1:{first_port}")], &logs);
        let bootstrap = vec![format!("127.0.0.1:{first_port}"), format!("127.0.0.1:{second_port}")];
        let data = make_file(&seed_dir, NAME, SIZE, seed);
        let torrent = dir.path().join("payload.torrent");
        create_torrent(&data, &torrent, PIECE, None);
        let meta = read_metainfo(&torrent);
        Fixture { _nodes: [first, second], bootstrap, _dir: dir, seed_dir, data, torrent, meta, out, logs }
    }

    /// The bare magnet: the info-hash and nothing else.
    fn magnet(&self) -> String {
        format!("magnet:?xt=urn:btih:{}", self.meta.info_hash)
    }

    /// `--dht-bootstrap NODE` for every node of the network.
    fn bootstrap_args(&self) -> Vec<String> {
        self.bootstrap.iter().flat_map(|b| ["--dht-bootstrap".to_string(), b.clone()]).collect()
    }

    /// shoal's flags: loopback only, no Kademlia, the mainline DHT on the local network, its
    /// saved routing table (`mainline-nodes`, beside the identity file) in the test's directory.
    fn shoal_args(&self, mut args: Vec<OsString>) -> Vec<OsString> {
        args.extend(args!["--listen", "127.0.0.1:0", "--no-kad", "--dht-listen", "127.0.0.1:0"]);
        args.extend(args!["--identity", self.logs.join("id")]);
        args.extend(self.bootstrap_args().into_iter().map(OsString::from));
        args
    }
}

/// The `listening dht` line names a loopback address.
fn assert_dht_on_loopback(p: &mut Proc) {
    let addr = p.wait_line("listening dht ", STARTUP);
    assert!(addr.starts_with("127.0.0.1:"), "the mainline node listens on {addr}");
}

#[test]
fn shoal_downloads_a_bare_magnet_found_in_the_mainline_dht() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new(31);
    let mut lt_args = f.bootstrap_args();
    lt_args.extend(["--timeout".into(), DEADLINE.as_secs().to_string()]);
    let lt_args: Vec<&str> = lt_args.iter().map(String::as_str).collect();
    let (_seeder, _port) = lt_peer_with("seed", &f.torrent, &f.seed_dir, &[], &lt_args, &f.logs);

    let args = f.shoal_args(args!["download", f.magnet(), "-o", &f.out, "--metadata-timeout", "5m"]);
    let mut leecher = Proc::spawn("shoal-magnet", &f.logs, &args, &[("RUST_LOG", "shoal=debug")]);
    assert_dht_on_loopback(&mut leecher);
    leecher.expect_success(DEADLINE);
    assert_same_bytes(&f.data, &f.out.join(NAME));
    let log = leecher.log_text();
    assert!(!connected_from(&log, "dht").is_empty(), "no peer connected with source dht:\n{log}");
}

#[test]
fn libtorrent_finds_shoal_seed_in_the_mainline_dht() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new(32);
    let args = f.shoal_args(args!["seed", &f.data, "--torrent", &f.torrent]);
    let mut seeder = Proc::spawn("shoal-seed", &f.logs, &args, &[("RUST_LOG", "shoal=debug")]);
    seeder.bt_addr();
    assert_dht_on_loopback(&mut seeder);

    let mut lt_args = f.bootstrap_args();
    lt_args.extend(["--timeout".into(), DEADLINE.as_secs().to_string()]);
    let lt_args: Vec<&str> = lt_args.iter().map(String::as_str).collect();
    let magnet = PathBuf::from(f.magnet());
    let (mut leecher, _) = lt_peer_with("leech", &magnet, &f.out, &[], &lt_args, &f.logs);
    leecher.wait_line("done", DEADLINE);
    assert_same_bytes(&f.data, &f.out.join(NAME));
    // The leecher could only have found shoal by its announcement; the line saying so is
    // written once the nodes answered, which may trail the leecher by a moment.
    let deadline = std::time::Instant::now() + STARTUP;
    while !seeder.log_text().contains("announced in the mainline DHT") {
        if std::time::Instant::now() > deadline {
            seeder.fail("no `announced in the mainline DHT` line");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // Stopped as a user would, the seeder saves its routing table, marked with its bootstrap list.
    assert_eq!(unsafe { libc::kill(seeder.pid() as i32, libc::SIGTERM) }, 0, "SIGTERM to shoal seed");
    let status = seeder.wait_exit(STARTUP);
    assert!(status.success(), "shoal seed exited with {status}");
    let saved = std::fs::read_to_string(f.logs.join("mainline-nodes")).unwrap_or_else(|e| seeder.fail(&e.to_string()));
    let mut lines = saved.lines();
    assert_eq!(lines.next(), Some(format!("# bootstrap: {}", f.bootstrap.join(",")).as_str()), "{saved}");
    assert!(lines.any(|l| f.bootstrap.iter().any(|b| b == l)), "no DHT node of the network saved:\n{saved}");
}

#[test]
fn shoal_joins_the_dht_through_a_peers_port_message() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new(35);
    // A libtorrent seeder in the network: its handshake sets the DHT bit and its `port`
    // message names its node.
    let mut lt_args = f.bootstrap_args();
    lt_args.extend(["--timeout".into(), DEADLINE.as_secs().to_string()]);
    let lt_args: Vec<&str> = lt_args.iter().map(String::as_str).collect();
    let (_lt_seeder, lt_port) = lt_peer_with("seed", &f.torrent, &f.seed_dir, &[], &lt_args, &f.logs);

    // shoal's only bootstrap node never answers (nothing runs on port 9 of loopback); it
    // keeps seeding after the download, and retries its announce every few seconds instead of
    // backing off to minutes.
    let mut args = args!["download", &f.torrent, "-o", &f.out, "--seed", "--listen", "127.0.0.1:0", "--no-kad"];
    args.extend(args!["--peer", format!("127.0.0.1:{lt_port}")]);
    args.extend(args!["--dht-listen", "127.0.0.1:0", "--dht-bootstrap", "127.0.0.1:9"]);
    args.extend(args!["--identity", f.logs.join("id")]);
    let env = [("RUST_LOG", "shoal=debug"), ("SHOAL_DISCOVERY_MAX_INTERVAL_CAP", "4s")];
    let mut shoal = Proc::spawn("shoal-download", &f.logs, &args, &env);
    assert_dht_on_loopback(&mut shoal);

    let offered = format!("node=127.0.0.1:{lt_port}");
    let deadline = std::time::Instant::now() + DEADLINE;
    let log = loop {
        let log = shoal.log_text();
        if log.contains("announced in the mainline DHT") && log.contains("download complete") {
            break log;
        }
        if std::time::Instant::now() > deadline {
            shoal.fail("never announced in the mainline DHT, or never complete");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let line_of = |needle: &str| log.find(needle).unwrap_or_else(|| panic!("no `{needle}` line:\n{log}"));
    let offer = line_of("mainline DHT node offered by a peer");
    assert!(log[offer..].lines().next().unwrap().contains(&offered), "not the seeder's node:\n{log}");
    // Nothing could be announced before the node restarted with the seeder's node: the
    // bootstrap node is dead.
    assert!(offer < line_of("restarted with the nodes its peers named"));
    assert!(line_of("restarted with the nodes its peers named") < line_of("announced in the mainline DHT"));
    assert_same_bytes(&f.data, &f.out.join(NAME));
}

/// BEP 42: once the DHT tells the node its public address, its id is derived from it. On
/// loopback (and private ranges) any id is valid, so this runs in a network namespace with
/// 198.18.0.0/15 addresses, which count as public: two libtorrent nodes on 198.18.0.2 and .3,
/// shoal on 198.18.0.1. A random id fits an address with odds of 1 in 2^21.
#[test]
fn the_node_id_follows_bep_42_for_the_public_address() {
    use common::netns::NetNs;
    if skip_on_purpose() || common::netns::skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let ns = NetNs::new("bep42", &["198.18.0.1", "198.18.0.2", "198.18.0.3"]);
    let logs = tempfile::tempdir().unwrap();
    let lt_node = |name: &str, ip: &str, bootstrap: Option<String>| {
        let mut cmd = ns.command(common::clients::LT_PYTHON);
        cmd.arg(common::clients::lt_script()).args(["dht", "--ip", ip]);
        cmd.args(bootstrap.iter().flat_map(|b| ["--dht-bootstrap", b.as_str()]));
        let mut p = Proc::start(name, cmd, logs.path());
        let port = p.wait_line("listening ", STARTUP);
        (p, format!("{ip}:{port}"))
    };
    let (_first, first) = lt_node("dht-node-1", "198.18.0.2", None);
    let (_second, second) = lt_node("dht-node-2", "198.18.0.3", Some(first.clone()));

    let data = make_file(logs.path(), "data.bin", 64 * 1024, 36);
    let torrent = logs.path().join("data.torrent");
    create_torrent(&data, &torrent, PIECE, None);
    let mut cmd = ns.command(common::process::BIN);
    cmd.args(args!["seed", &data, "--torrent", &torrent, "--listen", "198.18.0.1:0", "--no-kad"]);
    cmd.args(args!["--dht-listen", "198.18.0.1:0", "--dht-bootstrap", &first, "--dht-bootstrap", &second]);
    cmd.args(args!["--identity", logs.path().join("id"), "--diag", "198.18.0.1:0"]);
    cmd.env("RUST_LOG", "shoal=info").env("NO_COLOR", "1");
    let mut shoal = Proc::start("shoal-seed", cmd, logs.path());
    let diag = shoal.diag_addr();
    let deadline = std::time::Instant::now() + DEADLINE;
    let view = loop {
        let view = ns.run(move || common::http::get_json(diag, "/debug/p2p/routing"));
        let mainline = view.map(|v| v["mainline"].clone()).unwrap_or_default();
        if mainline["public_address"].is_string() {
            break mainline;
        }
        if std::time::Instant::now() > deadline {
            shoal.fail(&format!("the node never learned its public address: {mainline}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(view["public_address"], view["listen"], "{view}");
    let id: mainline::Id = view["node_id"].as_str().unwrap().parse().unwrap();
    assert!(id.is_valid_for_ip("198.18.0.1".parse().unwrap()), "id {id} is not BEP 42's for 198.18.0.1: {view}");
    // The address is not one BEP 42 exempts: the same id with its first bit flipped fails.
    let mut flipped = *id.as_bytes();
    flipped[0] ^= 0x80;
    assert!(!mainline::Id::from_bytes(flipped).unwrap().is_valid_for_ip("198.18.0.1".parse().unwrap()));
}

#[test]
fn bad_mainline_values_exit_2_naming_the_flag_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_data, torrent) = common::torrent::data_and_torrent(dir.path(), 64 * 1024, 33, "16KiB");
    let config = dir.path().join("shoal.toml");
    let out = dir.path().join("out");
    let base = args!["download", &torrent, "-o", &out, "--listen", "127.0.0.1:0", "--no-kad"];
    let cases: [(&[&str], &str); 5] = [
        (&["--dht-listen", "nowhere"], "--dht-listen nowhere"),
        (&["--dht-listen", "[::1]:7000"], "--dht-listen [::1]:7000"),
        (&["--dht-bootstrap", "router.example"], "--dht-bootstrap router.example"),
        (&["--no-dht", "--dht-bootstrap", "127.0.0.1:9"], "--no-dht"),
        (&["--config", config.to_str().unwrap()], "mainline_bootstrap"),
    ];
    std::fs::write(&config, "mainline_bootstrap = [\"no-port.example\"]\n").unwrap();
    for (extra, named) in cases {
        let mut args = base.clone();
        args.extend(extra.iter().map(OsString::from));
        let (status, _, err) = common::process::run_env(&args, &[], STARTUP);
        assert_eq!(status.code(), Some(2), "{extra:?}: {status}\n{err}");
        let line = err.lines().find(|l| l.starts_with("shoal: ")).unwrap_or_else(|| panic!("{extra:?}: {err}"));
        assert!(line.contains(named), "{extra:?}: the error does not name {named}: {line}");
    }
}

/// Connects to a `shoal seed` run with `dht` flags as a peer setting the DHT bit and saying
/// it is interested; returns shoal's reserved bytes, its `listening dht` port, and the port of
/// any `port` message before the `unchoke` that answers the interest. shoal queues its whole
/// greeting (piece state, then `port`) before it reads anything from the peer, so a `port`
/// it sends always comes before that `unchoke`: no wait on a silence.
fn greeting(dht: &[&str], private: bool) -> ([u8; 8], Option<u16>, Option<u16>) {
    use shoal::wire::Message;
    use std::io::{Read, Write};
    use tokio_util::codec::Decoder;
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(&dir.path().join("seed"), "data.bin", 64 * 1024, 34);
    let torrent = dir.path().join("data.torrent");
    let mut create = args!["create", &data, "-o", &torrent, "--piece-size", "16KiB"];
    if private {
        create.push("--private".into());
    }
    common::process::run_ok(&create, STARTUP);
    let mut args = args!["seed", &data, "--torrent", &torrent, "--listen", "127.0.0.1:0", "--no-kad"];
    args.extend(args!["--identity", dir.path().join("id")]);
    args.extend(dht.iter().map(OsString::from));
    let mut seeder = Proc::spawn("shoal-seed", dir.path(), &args, &[]);
    let bt = seeder.bt_addr();
    let dht_port = (!dht.contains(&"--no-dht")).then(|| {
        let a = seeder.wait_line("listening dht ", STARTUP);
        a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| seeder.fail(&format!("bad {a}")))
    });
    let meta = read_metainfo(&torrent);
    let mut s = std::net::TcpStream::connect(bt).unwrap();
    s.set_read_timeout(Some(STARTUP)).unwrap();
    let id = common::wire::peer_id("-ST0001-000000000013");
    s.write_all(&common::wire::handshake_bytes([0, 0, 0, 0, 0, 0, 0, 0x01], meta.info_hash, id)).unwrap();
    s.write_all(&common::wire::encode([Message::Interested])).unwrap();
    let mut theirs = [0u8; 68];
    s.read_exact(&mut theirs).unwrap();
    let reserved: [u8; 8] = theirs[20..28].try_into().unwrap();
    let (mut buf, mut codec, mut port) = (bytes::BytesMut::new(), shoal::wire::MessageCodec::default(), None);
    loop {
        match codec.decode(&mut buf).unwrap() {
            Some(Message::Port(p)) => port = Some(p),
            Some(Message::Unchoke) => return (reserved, dht_port, port),
            Some(_) => {}
            None => {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).unwrap_or_else(|e| seeder.fail(&format!("no unchoke: {e}")));
                if n == 0 {
                    seeder.fail("closed before an unchoke");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[test]
fn the_handshake_sets_the_dht_bit_and_sends_port_only_with_the_mainline_dht() {
    // A bootstrap node nobody answers on loopback: no network is needed here.
    let dht = ["--dht-listen", "127.0.0.1:0", "--dht-bootstrap", "127.0.0.1:9"];
    let (reserved, dht_port, port) = greeting(&dht, false);
    assert_eq!(reserved[7] & 0x01, 0x01, "no DHT bit in {reserved:?}");
    assert!(dht_port.is_some() && port == dht_port, "port message {port:?}, dht node on {dht_port:?}");
    let (reserved, _, port) = greeting(&["--no-dht"], false);
    assert_eq!(reserved[7] & 0x01, 0, "a DHT bit without a DHT: {reserved:?}");
    assert_eq!(port, None);
    // BEP 27: a private torrent never uses the DHT, so it does not offer it either.
    let (reserved, _, port) = greeting(&dht, true);
    assert_eq!(reserved[7] & 0x01, 0, "a DHT bit for a private torrent: {reserved:?}");
    assert_eq!(port, None, "a port message for a private torrent");
}

/// A node whose bootstrap finds nobody is no error of the user's: shoal warns once, and with
/// `--quiet` prints nothing on stderr. (The `mainline` crate logs `Could not bootstrap the
/// routing table` as an ERROR every two seconds; it is not shown.) The warning comes when the
/// table is still empty 10 s after the start, by which time the crate has said so five times.
#[test]
fn a_dht_that_finds_no_node_is_one_warning_and_silent_when_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let data = make_file(dir.path(), NAME, 64 * 1024, 36);
    let torrent = dir.path().join("payload.torrent");
    create_torrent(&data, &torrent, PIECE, None);
    let start = |name: &str, quiet: bool| {
        let mut cmd = std::process::Command::new(common::process::BIN);
        cmd.args(args!["seed", &data, "--torrent", &torrent, "--listen", "127.0.0.1:0", "--no-kad"]);
        cmd.args(["--dht-listen", "127.0.0.1:0", "--dht-bootstrap", "127.0.0.1:9"]);
        cmd.args(quiet.then_some("--quiet")).env_remove("RUST_LOG").env("NO_COLOR", "1");
        Proc::start(name, cmd, dir.path())
    };
    let mut quiet = start("quiet", true);
    let mut loud = start("loud", false);
    quiet.wait_line("listening bt", STARTUP);
    loud.wait_line("listening bt", STARTUP);
    let warning = "no mainline DHT node answered";
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !loud.log_text().contains(warning) {
        if std::time::Instant::now() > deadline {
            loud.fail("no warning that the DHT found no node");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = loud.log_text();
    assert_eq!(log.matches(warning).count(), 1, "{log}");
    assert!(!log.contains("ERROR") && !log.contains("Could not bootstrap"), "{log}");
    assert!(quiet.is_running(), "the quiet seeder exited");
    quiet.kill();
    assert_eq!(quiet.log_text(), "", "--quiet printed on stderr");
}
