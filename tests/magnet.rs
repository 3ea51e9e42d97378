//! Issue 11, BEP 9: magnet links without a `.torrent`, both ways, against real clients and
//! liars.
//!
//! - shoal fetches the metadata of a magnet from a python3-libtorrent seeder and from an
//!   aria2c seeder (both serve `ut_metadata`), given by `x.pe` or found through the magnet's
//!   tracker (a real opentracker), saves the `.torrent` (next to the data, or where
//!   `--save-torrent` says) and downloads byte-identical;
//! - python3-libtorrent fetches a magnet's metadata from `shoal seed` and downloads it;
//! - a fake peer serving wrong metadata beside an honest seeder is banned from metadata and
//!   the download still completes; one announcing a `metadata_size` over 16 MiB is refused
//!   before it is asked for anything; a magnet nobody serves fails at `--metadata-timeout`;
//! - `shoal seed` answers `ut_metadata` requests with the exact dict, rejects a piece out of
//!   range and rejects past its per-connection bound.
//!
//! The data is 20 MiB and 12,345 bytes in 16 KiB pieces: an info dict of about 26 KB, so the
//! metadata travels in two pieces, the last one short. Everything runs on 127.0.0.1 as child
//! processes killed by PID when the test ends; every wait has a deadline.
mod common;
mod hostile;

use common::clients::{aria2, lt_peer, shoal_seeder, skip_on_purpose, Opentracker, TRANSFER};
use common::ports::free_port;
use common::process::{Proc, STARTUP};
use common::torrent::{assert_same_bytes, create_torrent, make_file, read_metainfo};
use hostile::metadata::{FakeMetadataPeer, MetaLie};
use hostile::{FakePeer, REACT};
use shoal::metainfo::{InfoHash, Metainfo};
use shoal::peer::metadata::served_cap;
use shoal::wire::extension::ExtHandshake;
use shoal::wire::metadata::{piece_count, MetadataMsg, MAX_METADATA_SIZE};
use shoal::wire::{Handshake, Message, PeerId};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

const NAME: &str = "payload.bin";
const SIZE: usize = 20 * 1024 * 1024 + 12_345;
const PIECE: &str = "16KiB";

/// One test's files: the data in `seed/`, its torrent (for the seeders only), an empty
/// `out/` for the magnet's downloader, and `logs/` for the children's stderr.
struct Fixture {
    dir: TempDir,
    seed_dir: PathBuf,
    data: PathBuf,
    torrent: PathBuf,
    meta: Metainfo,
    out: PathBuf,
    logs: PathBuf,
}

impl Fixture {
    fn new(seed: u64) -> Fixture {
        Fixture::announcing(seed, None)
    }

    /// The torrent (which only the seeders see) announces to a tracker on `tracker_port`.
    fn announcing(seed: u64, tracker_port: Option<u16>) -> Fixture {
        let dir = tempfile::tempdir().expect("create tempdir");
        let [seed_dir, out, logs] = ["seed", "out", "logs"].map(|d| dir.path().join(d));
        for d in [&seed_dir, &out, &logs] {
            std::fs::create_dir(d).unwrap();
        }
        let data = make_file(&seed_dir, NAME, SIZE, seed);
        let torrent = dir.path().join("payload.torrent");
        let url = tracker_port.map(Opentracker::url);
        create_torrent(&data, &torrent, PIECE, url.as_deref());
        let meta = read_metainfo(&torrent);
        Fixture { dir, seed_dir, data, torrent, meta, out, logs }
    }

    /// `magnet:?xt=urn:btih:<hash>` with an `x.pe` per peer and nothing else.
    fn magnet(&self, peers: &[String]) -> String {
        let mut m = format!("magnet:?xt=urn:btih:{}", self.meta.info_hash);
        for p in peers {
            m.push_str(&format!("&x.pe={p}"));
        }
        m
    }

    fn check(&self) {
        assert_same_bytes(&self.data, &self.out.join(NAME));
    }
}

fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// `shoal download MAGNET -o OUT` on 127.0.0.1 without the DHT, not quiet (the progress
/// lines land in its log), at debug level; running.
fn download_magnet(f: &Fixture, magnet: &str, extra: &[&str]) -> Proc {
    let mut args = args!["download", magnet, "-o", &f.out, "--listen", "127.0.0.1:0", "--no-kad"];
    args.extend(extra.iter().map(std::ffi::OsString::from));
    Proc::spawn("shoal-magnet", &f.logs, &args, &[("RUST_LOG", "shoal=debug")])
}

/// The saved `.torrent` is a torrent for the same info-hash.
fn assert_saved_torrent(path: &Path, hash: InfoHash) {
    assert!(path.is_file(), "no .torrent saved at {}", path.display());
    assert_eq!(read_metainfo(path).info_hash, hash, "{} has another info-hash", path.display());
}

// ---- shoal fetches metadata from real clients ----

#[test]
fn shoal_downloads_a_magnet_from_libtorrent() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new(11);
    let (_seeder, port) = lt_peer("seed", &f.torrent, &f.seed_dir, &[], &f.logs);
    let mut leecher = download_magnet(&f, &f.magnet(&[local(port)]), &[]);
    leecher.expect_success(TRANSFER);
    f.check();
    assert_saved_torrent(&f.out.join(format!("{NAME}.torrent")), f.meta.info_hash);
    let log = leecher.log_text();
    assert!(log.contains(&format!("fetching metadata for {}", f.meta.info_hash)), "no metadata phase shown:\n{log}");
}

#[test]
fn shoal_downloads_a_magnet_from_aria2_and_saves_the_torrent_where_asked() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new(12);
    let port = free_port();
    let _seeder = aria2(true, &f.torrent, &f.seed_dir, port, &f.logs);
    let saved = f.dir.path().join("fetched.torrent");
    let saved_arg = saved.to_str().unwrap();
    let mut leecher = download_magnet(&f, &f.magnet(&[local(port)]), &["--save-torrent", saved_arg]);
    leecher.expect_success(TRANSFER);
    f.check();
    assert_saved_torrent(&saved, f.meta.info_hash);
    assert!(!f.out.join(format!("{NAME}.torrent")).exists(), "--save-torrent chose another place");
}

/// The magnet names no peer, only its tracker (`tr`): shoal announces to it while fetching
/// the metadata, gets the libtorrent seeder from it, and the saved `.torrent` keeps the tracker.
#[test]
fn shoal_downloads_a_magnet_whose_only_source_is_its_tracker() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let tport = free_port();
    let f = Fixture::announcing(18, Some(tport));
    let hash = f.meta.info_hash.to_hex();
    let tracker = Opentracker::start(tport, &[&hash], &f.logs);
    let (_seeder, _) = lt_peer("seed", &f.torrent, &f.seed_dir, &[], &f.logs);
    tracker.wait_for_seeder(&hash);
    let url = tracker.http();
    let magnet = format!("{}&tr={}", f.magnet(&[]), url.replace(':', "%3A").replace('/', "%2F"));
    let mut leecher = download_magnet(&f, &magnet, &[]);
    leecher.expect_success(TRANSFER);
    f.check();
    let saved = f.out.join(format!("{NAME}.torrent"));
    assert_saved_torrent(&saved, f.meta.info_hash);
    assert_eq!(read_metainfo(&saved).trackers, vec![vec![url]], "the magnet's tracker is kept");
}

// ---- a real client fetches metadata from shoal ----

#[test]
fn libtorrent_downloads_a_magnet_from_shoal_seed() {
    if skip_on_purpose() {
        return;
    }
    let _turn = common::process::serial();
    let f = Fixture::new(13);
    let (_seeder, port) = shoal_seeder(&f.data, &f.torrent, &[], &f.logs);
    let magnet = PathBuf::from(f.magnet(&[]));
    let (mut leecher, _) = lt_peer("leech", &magnet, &f.out, &[local(port)], &f.logs);
    leecher.expect_success(TRANSFER);
    f.check();
}

// ---- liars ----

/// A liar serving wrong metadata is asked first (the honest seeder's port has nothing on
/// it yet), caught by the info-hash check and banned; the seeder then starts, and the
/// download completes from it. The liar is asked for metadata on one connection only: it is
/// never asked again, though the fetch retries the seeder's address meanwhile.
#[test]
fn a_peer_sending_wrong_metadata_is_banned_and_the_download_completes() {
    let _turn = common::process::serial();
    let f = Fixture::new(14);
    let size = f.meta.info_bytes.len() as u64;
    let liar = FakeMetadataPeer::spawn(f.meta.info_hash, MetaLie::WrongBytes { size });
    let honest_port = free_port();
    let magnet = f.magnet(&[liar.addr.to_string()]);
    let mut leecher = download_magnet(&f, &magnet, &["--peer", &local(honest_port)]);
    let seen = liar.wait_dropped_after_requests(REACT);
    assert_eq!(seen.requests_per_connection, vec![piece_count(size) as usize], "asked for every piece once");

    let seed_args = args!["seed", &f.data, "--torrent", &f.torrent, "--listen", local(honest_port), "--no-kad"];
    let mut seeder = Proc::spawn("shoal-seed", &f.logs, &seed_args, &[]);
    seeder.bt_addr();
    leecher.expect_success(hostile::scene::HONEST);
    f.check();
    assert_saved_torrent(&f.out.join(format!("{NAME}.torrent")), f.meta.info_hash);
    let log = leecher.log_text();
    let bans = common::logs::log_lines(&log, &["metadata peer banned", &liar.addr.to_string(), "info-hash check"]);
    assert_eq!(bans.len(), 1, "the liar is banned once, naming why:\n{log}");
    assert_eq!(liar.log().requests_per_connection.len(), 1, "the liar was asked for metadata again");
}

/// A peer announcing a dict over 16 MiB is banned before it is asked for any piece; with
/// nobody else to ask, the download fails at once (exit 1) with one line saying why.
#[test]
fn a_metadata_size_over_16_mib_is_refused() {
    let f = Fixture::new(15);
    let liar = FakeMetadataPeer::spawn(f.meta.info_hash, MetaLie::HugeSize(MAX_METADATA_SIZE + 1));
    let mut leecher = download_magnet(&f, &f.magnet(&[liar.addr.to_string()]), &[]);
    let status = leecher.wait_exit(REACT);
    let log = leecher.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("magnet {}: every peer (1) sent wrong metadata", f.meta.info_hash)), "{log}");
    assert_eq!(common::logs::log_lines(&log, &["metadata peer banned", "over the limit"]).len(), 1, "{log}");
    assert!(liar.log().requests_per_connection.is_empty(), "a piece was requested from it");
}

/// A magnet whose only peer never offers the metadata fails once `--metadata-timeout` has
/// passed: exit 1, one line naming the magnet and the bound.
#[test]
fn metadata_nobody_serves_times_out() {
    let f = Fixture::new(16);
    let silent = FakeMetadataPeer::spawn(f.meta.info_hash, MetaLie::Silent);
    let mut leecher = download_magnet(&f, &f.magnet(&[silent.addr.to_string()]), &["--metadata-timeout", "3s"]);
    let status = leecher.wait_exit(STARTUP * 2);
    let log = leecher.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let want = format!("shoal: magnet {}: no peer sent the metadata within 3 s", f.meta.info_hash);
    assert_eq!(common::logs::count_lines(&log, &want), 1, "{log}");
    assert!(silent.log().accepted >= 1, "the peer was never asked");
}

/// A magnet with nothing to ask (no `x.pe`, `--peer`, tracker, and the DHT off) is the
/// user's mistake: exit 2 at once, naming the magnet.
#[test]
fn a_magnet_with_no_source_of_peers_is_bad_input() {
    let f = Fixture::new(19);
    let mut leecher = download_magnet(&f, &f.magnet(&[]), &[]);
    let status = leecher.wait_exit(REACT);
    let log = leecher.log_text();
    assert_eq!(status.code(), Some(2), "{log}");
    let want = format!("shoal: magnet {}: no peers to ask for the metadata", f.meta.info_hash);
    assert_eq!(common::logs::count_lines(&log, &want), 1, "{log}");
}

// ---- shoal serving metadata, seen on the wire ----

/// Sends one `ut_metadata` request and returns the answer.
fn ask(peer: &mut FakePeer, id: u8, piece: u32) -> MetadataMsg {
    let payload = MetadataMsg::Request { piece }.encode();
    peer.send(Message::Extended { id, payload }).expect("send a request");
    let m = peer.wait_msg(REACT, "a ut_metadata answer", |m| matches!(m, Message::Extended { id: 3, .. }));
    let Message::Extended { payload, .. } = m else { unreachable!() };
    MetadataMsg::decode(&payload).expect("a well-formed answer").expect("a known message type")
}

#[test]
fn shoal_seed_serves_the_exact_dict_and_rejects_out_of_range_and_past_its_bound() {
    let f = Fixture::new(17);
    let (mut seeder, port) = shoal_seeder(&f.data, &f.torrent, &[], &f.logs);
    let mut peer = FakePeer::connect(([127, 0, 0, 1], port).into(), &Default::default()).expect("connect");
    peer.send_handshake(Handshake::new(f.meta.info_hash, PeerId::generate())).unwrap();
    peer.expect_handshake(REACT);
    let mut ours = ExtHandshake::default();
    ours.m.insert("ut_metadata".into(), 3);
    peer.send(Message::Extended { id: 0, payload: ours.encode() }).unwrap();
    let Message::Extended { payload, .. } =
        peer.wait_msg(REACT, "its extension handshake", |m| matches!(m, Message::Extended { id: 0, .. }))
    else {
        unreachable!()
    };
    let theirs = ExtHandshake::decode(&payload).expect("a bencoded dict");
    let size = f.meta.info_bytes.len();
    assert_eq!(theirs.metadata_size, Some(size as u64));
    let id = *theirs.m.get("ut_metadata").expect("ut_metadata offered");

    let mut dict = Vec::new();
    for piece in 0..piece_count(size as u64) {
        match ask(&mut peer, id, piece) {
            MetadataMsg::Data { piece: p, total_size, data } if p == piece && total_size == size as u64 => {
                dict.extend_from_slice(&data)
            }
            other => panic!("piece {piece}: {other:?}"),
        }
    }
    assert_eq!(InfoHash::of_info(&dict), f.meta.info_hash, "served bytes are the info dict");
    let past = piece_count(size as u64);
    assert_eq!(ask(&mut peer, id, past), MetadataMsg::Reject { piece: past });

    let served = piece_count(size as u64);
    for _ in served..served_cap(size) {
        assert!(matches!(ask(&mut peer, id, 0), MetadataMsg::Data { .. }), "within the bound");
    }
    assert_eq!(ask(&mut peer, id, 0), MetadataMsg::Reject { piece: 0 }, "past the bound");
    hostile::scene::assert_alive(&mut seeder);
}
